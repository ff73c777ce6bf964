"""End-to-end tests of issue 10 (pages, QR codes, custom keys, clicks) against real ``twistd goto`` processes.

A module-wide cluster (a master and slaves A and B) serves the tests that keep it healthy; each uses
URLs and keys of its own. Tests that restart or kill a master start their own processes.
"""

from __future__ import annotations

import json
import re
import signal
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import live_records

from .harness import (
    A_HOST,
    B_HOST,
    MASTER_HOST,
    Cluster,
    GotoProcesses,
    Reply,
    add_url,
    get,
    poll_until,
    request,
    rpc_proxy,
    running_cluster,
)

#: What a browser sends (Chromium's Accept for a navigation).
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
#: Seconds for clicks counted on a slave to reach the master (flushed once a second).
FLUSH_DEADLINE = 10.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One healthy cluster for the tests that keep it healthy; stopped (and checked) at the end."""
    with running_cluster(tmp_path_factory.mktemp("people")) as started:
        yield started


def add(base_url: str, long_url: str, key: str | None = None, accept: str | None = None) -> Reply:
    """``GET /add?url=...[&key=...]`` with an optional ``Accept``."""
    fields = {"url": long_url} if key is None else {"url": long_url, "key": key}
    headers = {} if accept is None else {"Accept": accept}
    return request("GET", f"{base_url}/add?{urllib.parse.urlencode(fields)}", headers=headers)


def api_get(base_url: str, key: str) -> dict[str, object]:
    reply = get(f"{base_url}/api/v1/links/{key}")
    assert reply.status == 200, reply
    document = json.loads(reply.body)
    assert isinstance(document, dict)
    return document


def api_post(base_url: str, document: dict[str, str]) -> Reply:
    return request(
        "POST",
        f"{base_url}/api/v1/links",
        body=json.dumps(document).encode("utf-8"),
        headers={"Content-Type": "application/json"},
    )


# --- pages ------------------------------------------------------------------------------------


def test_plain_clients_keep_the_plain_answer_byte_for_byte(cluster: Cluster) -> None:
    """curl's ``Accept: */*``, no Accept at all, or HTML ranked below plain text: the seed's text answer."""
    for number, accept in enumerate((None, "*/*", "text/plain, text/html;q=0.5")):
        reply = add(cluster.a.base_url, f"https://plain.example/{number}", accept=accept)
        assert reply.status == 200, reply
        assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert re.fullmatch(rb"http://a\.test/[0-9A-Za-z]+\n", reply.body), reply.body


def test_a_browser_gets_the_result_page(cluster: Cluster) -> None:
    """A browser's add answers an HTML page: the link, the URL escaped, the QR code, the info link,
    the form, a strict CSP; on a slave (general path) and on the master (same page)."""
    long_url = "https://page.example/?q=<script>alert(1)</script>"
    for process, host in ((cluster.a, A_HOST), (cluster.master, MASTER_HOST)):
        reply = add(process.base_url, long_url, accept=BROWSER_ACCEPT)
        assert reply.status == 200, reply
        assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
        csp = reply.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "unsafe-inline" not in csp, csp
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        page = reply.text
        match = re.search(rf'<a href="(http://{re.escape(host)}/([0-9A-Za-z]+))" id="short"', page)
        assert match is not None, page
        key = match.group(2)
        assert "<script>alert" not in page and "&lt;script&gt;alert" in page  # escaped
        assert f'src="/{key}.qr"' in page and f'href="/{key}+"' in page
        assert 'type="url"' in page and '<form method="POST" action="/add">' in page


def test_a_browser_gets_errors_as_small_pages_with_the_same_status(cluster: Cluster) -> None:
    """A refused URL is a 400 HTML page with the reason and the form (the typed value escaped)."""
    reply = add(cluster.b.base_url, 'javascript:"><b>x', accept=BROWSER_ACCEPT)
    assert reply.status == 400, reply
    assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Content-Security-Policy" in reply.headers
    assert "<b>x" not in reply.text and "&lt;b&gt;x" in reply.text
    assert 'id="error"' in reply.text and "<form" in reply.text


def test_the_form_page_is_for_phones_and_safe(cluster: Cluster) -> None:
    """``GET /``: a labelled, autofocused URL input, a viewport for phones, no external resource, CSP."""
    reply = get(f"{cluster.b.base_url}/")
    assert reply.status == 200 and reply.headers["Content-Security-Policy"], reply
    page = reply.text
    assert '<label for="url">' in page and 'type="url"' in page and "autofocus" in page
    assert 'name="viewport"' in page and "http" not in page.replace("https://example.com/a/long/link", "")


def test_info_page_and_qr_codes(cluster: Cluster) -> None:
    """``/KEY+`` shows the link (404 page for an unknown key); ``/KEY.qr`` is SVG, ``?format=png`` PNG."""
    reply = add(cluster.a.base_url, "https://info.example/", key="info-page")
    assert reply.status == 200, reply
    for process in (cluster.a, cluster.b, cluster.master):
        info = get(f"{process.base_url}/info-page+")
        assert info.status == 200, (process.name, info)
        assert "https://info.example/" in info.text and 'id="clicks"' in info.text
        assert info.headers["Content-Security-Policy"]
        svg = get(f"{process.base_url}/info-page.qr")
        assert svg.status == 200 and svg.headers["Content-Type"] == "image/svg+xml", svg
        assert svg.body.startswith(b"<svg") and b"<script" not in svg.body
        png = get(f"{process.base_url}/info-page.qr?format=png")
        assert png.status == 200 and png.body.startswith(b"\x89PNG"), png.status
    missing = get(f"{cluster.a.base_url}/no-such-key+")
    assert missing.status == 404 and missing.headers["Content-Type"] == "text/html; charset=utf-8"
    assert get(f"{cluster.a.base_url}/no-such-key.qr").status == 404


# --- custom keys ------------------------------------------------------------------------------


def test_custom_keys_work_through_slaves(cluster: Cluster) -> None:
    """A custom key added through slave A redirects everywhere; taken is 409, invalid or reserved 400;
    the same pair again is the same link; the data file records it as custom."""
    reply = add(cluster.a.base_url, "https://launch.example/", key="my-launch")
    assert (reply.status, reply.text) == (200, "http://a.test/my-launch\n"), reply
    for process in (cluster.b, cluster.master):
        assert get(f"{process.base_url}/my-launch").headers["Location"] == "https://launch.example/"
    assert add(cluster.b.base_url, "https://launch.example/", key="my-launch").status == 200
    assert add(cluster.b.base_url, "https://other.example/", key="my-launch").status == 409
    for bad in ("add", "_x", "a.b", "x" * 65, "ü"):
        assert add(cluster.a.base_url, "https://bad.example/", key=bad).status == 400, bad
    records = [json.loads(line) for line in live_records(cluster.data_file).splitlines()]
    custom = [record for record in records if record["key"] == "my-launch"]
    assert len(custom) == 1 and custom[0]["custom"] == 1 and custom[0]["url"] == "https://launch.example/"


def test_the_json_api_takes_keys_and_answers_200_for_an_existing_link(cluster: Cluster) -> None:
    """201 for a new link, 200 with the same key for an existing one, 409 problem for a taken key,
    400 problem for an invalid key; reading a link gives its clicks and created time."""
    created = api_post(cluster.b.base_url, {"url": "https://api.example/", "key": "api-key"})
    assert created.status == 201, created
    again = api_post(cluster.b.base_url, {"url": "https://api.example/", "key": "api-key"})
    assert again.status == 200 and json.loads(again.body)["key"] == "api-key", again
    generated = api_post(cluster.a.base_url, {"url": "https://api.example/generated"})
    assert generated.status == 201
    dated = api_get(cluster.master.base_url, json.loads(generated.body)["key"])
    assert isinstance(dated["created"], str), dated  # a counter key is dated too (by the click file's marks)
    repeated = api_post(cluster.a.base_url, {"url": "https://api.example/generated"})
    assert repeated.status == 200 and json.loads(repeated.body)["key"] == json.loads(generated.body)["key"]
    taken = api_post(cluster.a.base_url, {"url": "https://api.example/other", "key": "api-key"})
    assert taken.status == 409 and taken.headers["Content-Type"] == "application/problem+json", taken
    invalid = api_post(cluster.a.base_url, {"url": "https://api.example/other", "key": "no/slash"})
    assert invalid.status == 400 and invalid.headers["Content-Type"] == "application/problem+json"
    document = api_get(cluster.a.base_url, "api-key")
    assert document["clicks"] == 0 and isinstance(document["created"], str), document
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", str(document["created"]))


def test_a_generated_key_never_equals_a_custom_one(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """Custom keys that look like counter values (``1``, ``3``) are skipped by the counter, before and
    after a restart, and they do not push the counter far ahead (keys stay short)."""
    data = tmp_path / "data.json"
    master = goto_processes("--rpc", data_file=data)
    for key in ("1", "3"):
        assert add(master.base_url, f"https://custom.example/{key}", key=key).status == 200
    keys = [
        add_url(master.base_url, f"https://generated.example/{n}").text.rsplit("/", 1)[1] for n in range(3)
    ]
    assert keys == ["0\n", "2\n", "4\n"], keys
    master = goto_processes.restart(master)
    assert get(f"{master.base_url}/3").headers["Location"] == "https://custom.example/3"
    after = add_url(master.base_url, "https://generated.example/after").text
    assert after.endswith("/5\n"), after


# --- clicks -----------------------------------------------------------------------------------


def test_redirects_through_slaves_become_exactly_that_many_clicks(cluster: Cluster) -> None:
    """GET redirects on A, B and the master count; HEAD and link-preview bots do not; the master's
    info page, the API and ``goto_clicks_total`` show them once flushed."""
    assert add(cluster.a.base_url, "https://clicks.example/", key="clicky").status == 200
    for process in (cluster.a, cluster.a, cluster.b, cluster.master, cluster.b):
        assert get(f"{process.base_url}/clicky").status == 302
    assert request("HEAD", f"{cluster.a.base_url}/clicky").status == 302
    bot = request("GET", f"{cluster.b.base_url}/clicky", headers={"User-Agent": "Slackbot-LinkExpanding 1.0"})
    assert bot.status == 302
    poll_until(
        lambda: True if api_get(cluster.master.base_url, "clicky")["clicks"] == 5 else None,
        FLUSH_DEADLINE,
        "5 clicks on the master",
    )
    assert 'id="clicks">5<' in get(f"{cluster.master.base_url}/clicky+").text
    metrics = get(f"{cluster.master.base_url}/_goto/metrics").text
    assert re.search(r"^goto_clicks_total \d", metrics, re.MULTILINE), metrics


def test_clicks_the_master_acknowledged_survive_kill_9(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """``Store.Clicks`` answers only once the batch is in the click file: kill -9 then loses none."""
    data = tmp_path / "data.json"
    master = goto_processes("--rpc", data_file=data)
    assert add(master.base_url, "https://durable.example/", key="durable").status == 200
    with rpc_proxy(master.base_url) as proxy:
        assert proxy.Store.Clicks({"durable": 7}) is True
        assert proxy.Store.Clicks({"durable": 3}) is True
    master.kill()
    master = goto_processes.restart(master)
    assert api_get(master.base_url, "durable")["clicks"] == 10
    master = goto_processes.restart(master)  # and after a clean stop
    assert api_get(master.base_url, "durable")["clicks"] == 10


def test_bad_click_batches_are_refused(cluster: Cluster) -> None:
    """``Store.Clicks`` checks what a slave sends: a struct of valid keys and positive counts, bounded."""
    import xmlrpc.client as xmlrpclib

    for batch in ({"a.b": 1}, {"ok": 0}, {"ok": -3}, ["ok"], {f"k{n}": 1 for n in range(5001)}):
        with rpc_proxy(cluster.master.base_url) as proxy, pytest.raises(xmlrpclib.Fault) as raised:
            proxy.Store.Clicks(batch)
        assert raised.value.faultCode == 400, batch


def test_a_slave_stopping_sends_its_pending_clicks(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """SIGTERM on a slave sends what it has counted before it exits."""
    master = goto_processes("--rpc", data_file=tmp_path / "data.json")
    slave = goto_processes("--master", f"127.0.0.1:{master.port}", data_file=None, host=B_HOST)
    assert add(slave.base_url, "https://stop.example/", key="stopping").status == 200
    for _ in range(4):
        assert get(f"{slave.base_url}/stopping").status == 302
    assert slave.stop() == -signal.SIGTERM  # a clean shutdown
    poll_until(
        lambda: True if api_get(master.base_url, "stopping")["clicks"] == 4 else None,
        FLUSH_DEADLINE,
        "the slave's clicks on the master",
    )


def test_plain_xml_rpc_clients_put_with_an_optional_key(cluster: Cluster) -> None:
    """``Store.Put(url)`` is unchanged; ``Store.Put(url, key)`` stores under the key, fault 409 when it is
    taken, 400 when invalid; ``Store.Add`` tells whether the link is new."""
    import xmlrpc.client as xmlrpclib

    with rpc_proxy(cluster.master.base_url) as proxy:
        plain = proxy.Store.Put("https://rpc.example/plain")
        assert isinstance(plain, str) and plain.isalnum()
        assert proxy.Store.Put("https://rpc.example/custom", "rpc-custom") == "rpc-custom"
        assert proxy.Store.Add("https://rpc.example/custom", "rpc-custom") == {
            "key": "rpc-custom",
            "new": False,
        }
        assert proxy.Store.Add("https://rpc.example/fresh", "") == {
            "key": proxy.Store.Put("https://rpc.example/fresh"),
            "new": True,
        }
        for args, code in (
            (("https://rpc.example/other", "rpc-custom"), 409),
            (("https://rpc.example/x", "a.b"), 400),
        ):
            with pytest.raises(xmlrpclib.Fault) as raised:
                proxy.Store.Put(*args)
            assert raised.value.faultCode == code, args
