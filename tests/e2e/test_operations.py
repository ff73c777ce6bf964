"""End to end, the operator's view: the JSON API across master and slave, health, metrics, logs."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from .harness import (
    DEFAULT_HOST,
    HTTP_TIMEOUT,
    LISTENING,
    LOOPBACK_ANY_PORT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    TWISTD,
    GotoProcesses,
    add_url,
    get,
    key_of,
    poll_until,
    request,
)


def samples(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Scrape /_goto/metrics and return every sample by name and labels."""
    reply = get(f"{base_url}/_goto/metrics")
    assert reply.status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def post_json(url: str, document: object) -> tuple[int, dict[str, object], str | None]:
    reply = request(
        "POST", url, body=json.dumps(document).encode(), headers={"Content-Type": "application/json"}
    )
    return reply.status, json.loads(reply.body), reply.headers.get("Location")


def test_json_api_through_a_slave_and_the_master(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """A link created with the JSON API on a slave is readable through the API on the master and
    redirects everywhere; API errors are problem documents on both."""
    master = goto_processes("--rpc", data_file=tmp_path / "data.json", name="master")
    slave = goto_processes(
        "--master", f"127.0.0.1:{master.port}", data_file=None, name="slave", host="slave.test"
    )
    status, created, location = post_json(f"{slave.base_url}/api/v1/links", {"url": "https://api.example/x"})
    assert status == 201
    key = str(created["key"])
    assert created == {"key": key, "url": "https://api.example/x", "short_url": f"http://slave.test/{key}"}
    assert location == f"/api/v1/links/{key}"
    for process in (master, slave):
        reply = get(f"{process.base_url}/api/v1/links/{key}")
        document = json.loads(reply.body)
        assert (reply.status, document["key"], document["url"]) == (200, key, "https://api.example/x")
        assert isinstance(document["clicks"], int) and isinstance(document["created"], str)  # issue 10
        assert get(f"{process.base_url}/{key}").headers["Location"] == "https://api.example/x"
        status, problem, _ = post_json(f"{process.base_url}/api/v1/links", {"link": "nope"})
        assert status == 400 and problem["status"] == 400
        reply = get(f"{process.base_url}/api/v1/links/zzzz")
        assert reply.status == 404 and reply.headers["Content-Type"] == "application/problem+json"


def test_health_and_metrics_after_traffic(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """After real adds and redirects, health and metrics tell the operator what happened."""
    master = goto_processes("--rpc", data_file=tmp_path / "data.json", name="master")
    slave = goto_processes("--master", f"127.0.0.1:{master.port}", data_file=None, name="slave")
    key = key_of(add_url(slave.base_url, "https://metrics.example/").text, DEFAULT_HOST)
    for _ in range(3):
        assert get(f"{slave.base_url}/{key}").status == 302
    assert get(f"{slave.base_url}/nokey").status == 404

    assert json.loads(get(f"{master.base_url}/_goto/health").body) == {
        "status": "ok",
        "role": "master",
        "keys": 1,
    }
    assert json.loads(get(f"{slave.base_url}/_goto/health").body)["master_reachable"] is True

    on_master, on_slave = samples(master.base_url), samples(slave.base_url)
    assert on_master[("goto_store_keys", (("role", "master"),))] == 1
    assert on_master[("goto_data_file_write_seconds_count", ())] >= 1
    assert (
        on_master[("goto_http_requests_total", (("method", "POST"), ("route", "rpc"), ("status", "200")))]
        >= 1
    )
    assert on_master[("goto_data_file_refused_records_total", ())] == 0
    assert not [name for name, _ in on_slave if name.startswith("goto_data_file_")], (
        "a slave has no data file"
    )
    assert on_slave[("goto_redirects_total", ())] == 3
    assert on_slave[("goto_adds_total", ())] == 1
    assert on_slave[("goto_cache_hits_total", ())] >= 3
    assert on_slave[("goto_rpc_call_seconds_count", (("method", "Store.Put"), ("outcome", "ok")))] == 1
    # The health check's look-up of a reserved key is answered "unknown" by a healthy master: no error.
    assert on_slave[("goto_rpc_call_seconds_count", (("method", "Store.Get"), ("outcome", "ok")))] >= 1
    assert not [labels for (name, labels), _ in on_slave.items() if ("outcome", "error") in labels]
    assert (
        on_slave[("goto_http_requests_total", (("method", "GET"), ("route", "redirect"), ("status", "404")))]
        == 1
    )


def test_an_access_log_file_moved_aside_is_opened_again_on_sighup(
    goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """Log rotation (README, "Running it"): move the file, send SIGHUP, and new lines go to a new
    file at the same path."""
    path = tmp_path / "access.log"
    master = goto_processes("--access-log", str(path), data_file=tmp_path / "data.json", name="master")
    get(f"{master.base_url}/before")
    poll_until(lambda: "/before " in path.read_text() or None, 10, "the first line")
    path.rename(tmp_path / "access.log.1")
    os.kill(master.pid, signal.SIGHUP)

    def rotated() -> bool | None:
        get(f"{master.base_url}/after")
        return (path.exists() and "/after " in path.read_text()) or None

    poll_until(rotated, 10, "a new access log file")
    master.stop()
    assert "/before " in (tmp_path / "access.log.1").read_text()
    assert "/before " not in path.read_text()


def test_access_log_lines(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """Every request leaves one Common Log Format line on the process's output."""
    master = goto_processes(data_file=tmp_path / "data.json", name="master")
    get(f"{master.base_url}/nokey")
    master.stop()
    assert '"GET /nokey HTTP/1.1" 404 ' in master.output()


def test_a_daemonized_twistd_says_its_access_log_is_lost(tmp_path: Path) -> None:
    """A new user's trial (stop 41): ``twistd goto`` without ``-n`` daemonizes, its standard output
    becomes /dev/null, and the default access log (standard output) was lost without a word. Its
    log file says so now, and the requests are answered all the same."""
    log_file, pid_file = tmp_path / "twistd.log", tmp_path / "twistd.pid"
    command = [str(TWISTD), f"--pidfile={pid_file}", f"--logfile={log_file}", "goto"]
    command += ["--http", LOOPBACK_ANY_PORT, "--file", str(tmp_path / "data.json"), "--host", DEFAULT_HOST]
    subprocess.run(command, check=True, timeout=STOP_TIMEOUT, cwd=tmp_path)  # returns once daemonized
    pid = poll_until(
        lambda: (pid_file.exists() and int(pid_file.read_text())) or None, START_TIMEOUT, "its pid"
    )
    try:
        port = int(poll_until(lambda: LISTENING.search(_text(log_file)), START_TIMEOUT, "listening")[1])
        assert get(f"http://127.0.0.1:{port}/nokey").status == 404
        poll_until(
            lambda: "The access log goes to standard output, which is /dev/null" in _text(log_file) or None,
            START_TIMEOUT,
            "the warning",
        )
    finally:
        os.kill(pid, signal.SIGTERM)
        poll_until(lambda: not pid_file.exists() or None, STOP_TIMEOUT, "its exit")
    assert '"GET /nokey' not in _text(log_file)


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_a_stopped_reader_of_standard_output_stops_no_request(tmp_path: Path) -> None:
    """An operations audit (stop 41): a master whose standard output (the access log) goes to a
    pipe nobody reads (a stuck journal, ``| tee`` on hold) froze after a few hundred requests: the
    blocking write waited for the reader, and so did every client. Every request is answered now;
    once the reader reads, the lines come, and those past the bound held meanwhile are counted."""
    log_file = tmp_path / "twistd.log"
    command = [str(TWISTD), "-n", "--pidfile=", f"--logfile={log_file}", "goto", "--http", LOOPBACK_ANY_PORT]
    command += ["--file", str(tmp_path / "data.json"), "--host", DEFAULT_HOST]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        port = int(poll_until(lambda: LISTENING.search(_text(log_file)), START_TIMEOUT, "listening")[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
        count = 3000  # about 230 KB of lines: more than a pipe holds
        for number in range(count):
            connection.request("GET", f"/nokey{number}")
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 404, number
        connection.close()
        lost = samples(f"http://127.0.0.1:{port}")[("goto_access_log_lost_lines_total", ())]
        assert child.stdout is not None
        os.set_blocking(child.stdout.fileno(), False)
        received = b""
        deadline = time.monotonic() + STOP_TIMEOUT
        while received.count(b"/nokey") + lost < count and time.monotonic() < deadline:
            with contextlib.suppress(BlockingIOError, TypeError):
                received += child.stdout.read() or b""
        assert received.count(b'"GET /nokey') + lost == count
    finally:
        child.terminate()
        child.wait(STOP_TIMEOUT)
        if child.stdout is not None:
            child.stdout.close()
