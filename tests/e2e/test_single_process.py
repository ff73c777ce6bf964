"""End-to-end tests of one ``twistd goto`` process: HTTP contract, durability, shutdown, start-up checks.

Each test starts real processes on 127.0.0.1 (port picked by the OS) through the ``goto_processes``
fixture and talks HTTP to them with the blocking client in :mod:`.harness`.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPException
from pathlib import Path

from tests.helpers import live_records

from .harness import DEFAULT_HOST, GotoProcess, GotoProcesses, add_url, get, key_of, request


def read_data_file(path: Path) -> dict[str, str]:
    """Parse a data file the way its format is documented: one ``{"key", "url"}`` object per line
    (and while a master runs, zeros after the last).

    Fails the test on a line that is not such a record or on a key stored twice.
    """
    urls: dict[str, str] = {}
    data = live_records(path)
    assert data.endswith(b"\n"), f"{path} does not end with a newline: {data[-80:]!r}"
    for line_number, line in enumerate(data.decode("ascii").splitlines(), start=1):
        record = json.loads(line)
        assert set(record) == {"key", "url"}, f"{path}, line {line_number}: {line!r}"
        assert record["key"] not in urls, f"{path}, line {line_number}: key stored twice"
        urls[record["key"]] = record["url"]
    return urls


def shorten(process: GotoProcess, long_url: str, method: str = "GET") -> str:
    """Add ``long_url`` and return its key, asserting the documented 200 ``text/plain`` answer."""
    reply = add_url(process.base_url, long_url, method=method)
    assert reply.status == 200, (reply, process.output())
    assert reply.headers.get_content_type() == "text/plain", reply.headers
    return key_of(reply.text)


def assert_redirects(process: GotoProcess, key: str, long_url: str) -> None:
    """Assert that ``GET /KEY`` answers 302 with exactly ``long_url`` as ``Location``."""
    reply = get(f"{process.base_url}/{key}")
    assert (reply.status, reply.headers["Location"]) == (302, long_url), (key, reply)


def test_add_redirect_and_errors(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """``/add`` by GET and POST answers ``http://HOST/KEY``; ``/KEY`` redirects with 302.

    Adding a stored URL again (by either method) answers its existing key; distinct URLs get
    distinct keys; ``Location`` is the URL exactly as added (a non-ASCII one in its ASCII URI form);
    an unknown key is 404; a refused URL is 400 and the process goes on serving afterwards; every
    acknowledged pair is in the data file, one JSON record per line.
    """
    data_file = tmp_path / "data.json"
    process = goto_processes(data_file=data_file)
    # (long URL as added, method, Location expected)
    cases = [
        ("http://example.com/", "GET", "http://example.com/"),
        ("https://example.org/a/b?q=1&r=a%20b#frag", "POST", "https://example.org/a/b?q=1&r=a%20b#frag"),
        ("http://example.net:8080/x;p?z=%2F", "GET", "http://example.net:8080/x;p?z=%2F"),
        ("https://bücher.example/ä", "POST", "https://xn--bcher-kva.example/%C3%A4"),
    ]
    keys = {}
    for long_url, method, _ in cases:
        keys[long_url] = shorten(process, long_url, method)
    assert len(set(keys.values())) == len(cases), keys

    for long_url, method, location in cases:
        other_method = "POST" if method == "GET" else "GET"
        assert shorten(process, long_url, other_method) == keys[long_url], long_url
        assert_redirects(process, keys[long_url], location)

    assert "zzzz" not in keys.values()
    assert get(f"{process.base_url}/zzzz").status == 404

    for bad_url in (
        "ftp://example.com/",
        "not a url",
        "http://",
        "http://exa mple.com/",
        "javascript:alert(1)",
    ):
        for method in ("GET", "POST"):
            reply = add_url(process.base_url, bad_url, method=method)
            assert reply.status == 400, (bad_url, method, reply)
            assert reply.headers.get_content_type() == "text/plain", reply.headers

    later = "https://example.com/added-after-errors"
    later_key = shorten(process, later)
    assert later_key not in keys.values()
    assert_redirects(process, later_key, later)
    assert_redirects(process, keys["http://example.com/"], "http://example.com/")

    expected = {key: location for (long_url, _, location) in cases for key in [keys[long_url]]}
    expected[later_key] = later
    assert read_data_file(data_file) == expected


def test_kill_9_loses_no_acknowledged_add(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """An add answered 200 survives SIGKILL; after a restart no acknowledged key is ever reused.

    Eight clients add distinct URLs concurrently (so records are written in groups); the process
    is SIGKILLed as soon as 200 adds have been answered, with more still in flight. Restarted on
    the same data file, every key answered before the kill redirects to its URL, and new adds
    (and re-adds of URLs whose answers were lost) get keys that no other URL was ever answered.
    """
    data_file = tmp_path / "data.json"
    process = goto_processes(data_file=data_file)
    target, total = 200, 320
    urls = [f"https://example.com/crash/{i}" for i in range(total)]
    acknowledged: dict[str, str] = {}  # URL -> key, for every add answered 200
    lock = threading.Lock()

    def add(long_url: str) -> None:
        try:
            reply = add_url(process.base_url, long_url)
        except (OSError, HTTPException):
            return  # in flight at the kill: never acknowledged
        assert reply.status == 200, reply
        with lock:
            acknowledged[long_url] = key_of(reply.text)
            if len(acknowledged) == target:
                process.kill()

    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(add, long_url) for long_url in urls]:
            future.result()

    assert process.returncode == -signal.SIGKILL, process.output()
    assert data_file.read_bytes().endswith(b"\0"), "the kill left zeros written ahead for the restart to read"
    assert target <= len(acknowledged) < total, len(acknowledged)
    assert len(set(acknowledged.values())) == len(acknowledged), "two URLs were answered the same key"

    restarted = goto_processes.restart(process)
    for long_url, key in acknowledged.items():
        assert_redirects(restarted, key, long_url)

    url_of_key = {key: long_url for long_url, key in acknowledged.items()}
    lost = [long_url for long_url in urls if long_url not in acknowledged]
    fresh = [f"https://example.com/after-crash/{i}" for i in range(20)]
    for long_url in lost[:20] + fresh:
        key = shorten(restarted, long_url)
        assert url_of_key.setdefault(key, long_url) == long_url, f"key {key} reused for {long_url}"
        assert_redirects(restarted, key, long_url)


def test_sigterm_stops_cleanly_and_restart_keeps_everything(
    goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """SIGTERM shuts twistd down cleanly (exit by SIGTERM after "Server Shut Down."); nothing is lost.

    The restarted process, on the same data file and port, redirects every key, answers the same
    key for a URL added before, and gives a new URL a key of its own.
    """
    data_file = tmp_path / "data.json"
    process = goto_processes(data_file=data_file)
    keys = {f"http://example.com/term/{i}": "" for i in range(10)}
    for long_url in keys:
        keys[long_url] = shorten(process, long_url, "POST")
    old_port = process.port

    status = process.stop()
    assert status == -signal.SIGTERM, process.output()
    assert not process.stop_timed_out
    assert "Server Shut Down." in process.output()
    assert data_file.read_bytes().endswith(b"}\n"), "a clean stop trims the zeros written ahead"

    restarted = goto_processes.restart(process, keep_port=True)
    assert restarted.port == old_port
    for long_url, key in keys.items():
        assert_redirects(restarted, key, long_url)
        assert shorten(restarted, long_url) == key
    new_key = shorten(restarted, "http://example.com/term/new")
    assert new_key not in keys.values()
    assert read_data_file(data_file) == {
        **{k: u for u, k in keys.items()},
        new_key: "http://example.com/term/new",
    }


def test_corrupt_record_stops_start_up(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """A record that does not parse, before the last line, makes start-up fail and never listen.

    The process exits with a non-zero status (not a signal), says which file and line are bad,
    and leaves the data file exactly as it was.
    """
    data_file = tmp_path / "data.json"
    original = (
        b'{"key":"0","url":"http://example.com/0"}\n'
        b'{"key":"1","url":"http://exa\n'
        b'{"key":"2","url":"http://example.com/2"}\n'
    )
    data_file.write_bytes(original)
    process = goto_processes(data_file=data_file, wait=False)

    status = process.wait_exit()
    output = process.output()
    assert status > 0, output
    assert f"{data_file}, line 2" in output, output
    assert process.ports() == [], output
    assert data_file.read_bytes() == original


def test_torn_last_line_is_cut_off(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """A last line without its newline (a write torn by a crash) is cut off with a warning.

    The process serves the complete records, does not serve the torn one, appends the next record
    on a line of its own, and the file it leaves behind loads again.
    """
    data_file = tmp_path / "data.json"
    good = b'{"key":"0","url":"http://example.com/0"}\n{"key":"1","url":"http://example.com/1"}\n'
    data_file.write_bytes(good + b'{"key":"2","url":"http://exa')
    process = goto_processes(data_file=data_file)

    assert "torn record" in process.output()
    assert data_file.read_bytes() == good
    assert_redirects(process, "0", "http://example.com/0")
    assert_redirects(process, "1", "http://example.com/1")
    assert get(f"{process.base_url}/2").status == 404

    key = shorten(process, "http://example.com/after-tear")
    assert key not in ("0", "1")
    assert read_data_file(data_file) == {
        "0": "http://example.com/0",
        "1": "http://example.com/1",
        key: "http://example.com/after-tear",
    }
    restarted = goto_processes.restart(process)
    assert "torn record" not in restarted.output()
    assert_redirects(restarted, key, "http://example.com/after-tear")


def test_short_urls_name_the_configured_host(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """``--host`` is written verbatim into the short URLs ``/add`` answers."""
    process = goto_processes(data_file=tmp_path / "data.json", host="go.example:8443")
    reply = add_url(process.base_url, "http://example.com/")
    assert reply.status == 200
    assert key_of(reply.text, "go.example:8443") == "0"
    assert DEFAULT_HOST not in reply.text


def test_short_urls_over_https(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """``--host https://HOST`` hands out https short links, in the form answer and in the JSON API."""
    process = goto_processes(data_file=tmp_path / "data.json", host="https://go.example.com")
    reply = add_url(process.base_url, "http://example.com/")
    assert (reply.status, reply.text) == (200, "https://go.example.com/0\n")
    created = request(
        "POST",
        process.base_url + "/api/v1/links",
        body=json.dumps({"url": "http://example.com/b"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert created.status == 201
    assert json.loads(created.body)["short_url"] == "https://go.example.com/1"


def test_a_host_that_is_not_an_origin_is_refused(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """``--host https://https://x`` (or a path, a user...) stops start-up naming the option."""
    process = goto_processes(
        data_file=tmp_path / "data.json", host="https://https://go.example.com", wait=False
    )
    process.wait_exit()  # twistd's status for a usage error is 1 on Twisted 26, 0 on Twisted 25
    output = process.output()
    assert "--host: expected [http:// or https://]HOST[:PORT]" in output, output
    assert process.ports() == [], output
    assert not (tmp_path / "data.json").exists()


def test_busy_port_leaves_no_data_file_behind(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """A master that cannot open its port exits 1 and creates neither its data file nor its key bound.

    The data file is created only once start-up has succeeded (the port is open), so a mistyped
    port never leaves an empty file that a later, correct start would take for an empty store.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        data_file = tmp_path / "absent" / "data.json"
        data_file.parent.mkdir()
        process = goto_processes(data_file=data_file, http=f"tcp:{port}:interface=127.0.0.1", wait=False)
        status = process.wait_exit()
    assert status == 1, process.output()
    assert list(data_file.parent.iterdir()) == [], process.output()


def test_a_second_master_on_the_same_file_changes_nothing(
    goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """Issue 9 item 9: a second master on a data file in use exits 1 saying so, before it reads or
    repairs the file: the running master's tail (here a record in flight, torn-looking) is untouched."""
    data_file = tmp_path / "data.json"
    first = goto_processes(data_file=data_file)
    shorten(first, "http://example.com/first")
    with data_file.open("ab") as in_flight:
        in_flight.write(b'{"key":"1","url":"http://exa')
    before = data_file.read_bytes()

    second = goto_processes(data_file=data_file, wait=False)
    status = second.wait_exit()
    assert status == 1, second.output()
    assert "in use by another goto process" in second.output()
    assert second.ports() == []
    assert data_file.read_bytes() == before
    data_file.write_bytes(before[: before.rindex(b"\n") + 1])  # let the first master stop on a clean file


def test_start_up_checks_each_stored_url_and_keeps_a_whole_last_record(
    goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """Issue 9 items 6 and 18: a stored URL the service would refuse (a CR LF that would split the
    Location header) stops start-up naming file and line; a whole last record without its newline
    is served, and the next add goes on a line of its own."""
    data_file = tmp_path / "data.json"
    bad = b'{"key":"0","url":"http://example.com/"}\n{"key":"1","url":"http://a/\\r\\nSet-Cookie: x=1"}\n'
    data_file.write_bytes(bad)
    refused = goto_processes(data_file=data_file, wait=False)
    assert refused.wait_exit() == 1, refused.output()
    assert f"{data_file}, line 2: the URL is refused" in refused.output()
    assert data_file.read_bytes() == bad

    data_file.write_bytes(
        b'{"key":"0","url":"http://example.com/0"}\n{"key":"1","url":"http://example.com/1"}'
    )
    process = goto_processes(data_file=data_file)
    assert_redirects(process, "1", "http://example.com/1")
    key = shorten(process, "http://example.com/next")
    assert read_data_file(data_file) == {
        "0": "http://example.com/0",
        "1": "http://example.com/1",
        key: "http://example.com/next",
    }
