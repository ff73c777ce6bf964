"""Unit tests of issue 10's pieces: negotiation, pages, QR codes, custom keys in the store and the
data file, and click counting on both paths (no sockets; ``tests.wire`` drives a real site)."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from goto_tw.clicks import ClickCounter
from goto_tw.errors import InvalidKey, KeyExists
from goto_tw.keys import is_valid_key
from goto_tw.metrics import Metrics
from goto_tw.negotiation import head_prefers_html, prefers_html
from goto_tw.pages import CONTENT_SECURITY_POLICY, SCRIPT, STYLE, error_page, info_page, result_page
from goto_tw.persistence import CorruptDataFile, encode_custom_record, load_records, open_data_file
from goto_tw.qr import qr_png, qr_svg
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from goto_tw.tap import make_root
from tests.helpers import failure_of, result_of
from tests.wire import Connection

CHROME_ACCEPT = b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (CHROME_ACCEPT, True),
        (b"text/html", True),
        (b"*/*", False),
        (None, False),
        (b"", False),
        (b"text/plain, text/html", False),  # a tie keeps the plain answer
        (b"text/html;q=0.5, text/plain", False),
        (b"text/html;q=0, */*", False),
        (b"text/html;q=bogus", False),
        (b"text/html;q=2", False),
        (b"application/json", False),
        (b"text/html," + b"x" * 2000, False),  # too long to look at
    ],
)
def test_prefers_html(accept: bytes | None, html: bool) -> None:
    """Only a client that ranks HTML strictly above plain text gets HTML."""
    assert prefers_html(accept) is html


def test_head_prefers_html() -> None:
    """The fast path reads the Accept line of a raw head, case-insensitively."""
    assert head_prefers_html(b"GET /add?url=x HTTP/1.1\r\nHost: h\r\naCCept: text/html\r\n\r\n")
    assert not head_prefers_html(b"GET /add?url=x HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n")
    assert not head_prefers_html(b"GET /add?url=x HTTP/1.1\r\nX-Accept: text/html\r\n\r\n")


def _sha256(source: str) -> bytes:
    return b"'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()) + b"'"


def test_csp_names_exactly_the_inline_style_and_script() -> None:
    """The CSP allows the page's own stylesheet and script by hash and nothing inline besides; both
    appear in every page byte for byte (so the hashes match what the browser sees)."""
    assert _sha256(STYLE) in CONTENT_SECURITY_POLICY and _sha256(SCRIPT) in CONTENT_SECURITY_POLICY
    assert (
        b"unsafe-inline" not in CONTENT_SECURITY_POLICY and b"default-src 'none'" in CONTENT_SECURITY_POLICY
    )
    for page in (
        result_page("http://s/k", "https://a/", "k", True),
        info_page("http://s/k", "https://a/", "k", 3, None),
        error_page(400, "bad"),
    ):
        assert b"<style>" + STYLE.encode() + b"</style>" in page
        assert b"<script>" + SCRIPT.encode() + b"</script>" in page
        assert b"http://" not in page.replace(b"http://s/k", b"")  # no external resource


def test_pages_escape_what_they_are_given() -> None:
    """A hostile URL or message never becomes markup."""
    evil = 'https://a/"><script>alert(1)</script>'
    for page in (
        result_page("http://s/k", evil, "k", True),
        info_page("http://s/k", evil, "k", 0, 1.7e9),
        error_page(400, evil, url=evil, key='"><b>'),
    ):
        assert b"<script>alert" not in page and b'"><b>' not in page
        assert b"&lt;script&gt;" in page


def test_info_page_shows_clicks_and_created() -> None:
    """Clicks and a UTC creation time (or "unknown")."""
    page = info_page("http://s/k", "https://a/", "k", 42, 0.0).decode()
    assert 'id="clicks">42<' in page and "1970-01-01 00:00 UTC" in page
    assert "unknown" in info_page("http://s/k", "https://a/", "k", 0, None).decode()


def test_qr_codes_are_svg_and_png() -> None:
    """segno's SVG (no script) and PNG."""
    svg = qr_svg("http://go.example/abc")
    assert svg.startswith(b"<svg") and b"script" not in svg
    assert qr_png("http://go.example/abc").startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize("key", ["my-launch", "a_b", "X", "x" * 64, "0", "abc"])
def test_custom_keys_that_are_valid(key: str) -> None:
    assert is_valid_key(key)


@pytest.mark.parametrize("key", ["", "x" * 65, "a.b", "a/b", "ü", "add", "_x", "api", "a b", "a+"])
def test_custom_keys_that_are_not(key: str) -> None:
    """Same charset as generated keys plus ``-`` and ``_``, 1 to 64, reserved set still rules."""
    assert not is_valid_key(key)


def test_store_add_with_custom_keys() -> None:
    """A custom key is stored; the same pair again is (key, False); another URL is KeyExists; an invalid
    key is InvalidKey; the counter skips custom keys that look like counter values."""
    store = URLStore()
    assert result_of(store.add("https://a.example/", "1")) == ("1", True)
    assert result_of(store.add("https://a.example/", "1")) == ("1", False)
    assert failure_of(store.add("https://b.example/", "1")).check(KeyExists)
    assert failure_of(store.add("https://b.example/", "add")).check(InvalidKey)
    assert [result_of(store.put(f"https://g.example/{n}")) for n in range(3)] == ["0", "2", "3"]
    assert result_of(store.add("https://g.example/0")) == ("0", False)
    assert result_of(store.add("https://g.example/new")) == ("4", True)


def test_custom_records_load_and_do_not_move_the_counter(tmp_path: Path) -> None:
    """A custom record that looks like a far counter value is loaded as custom: the counter resumes
    right after the counter keys, and the record's time is kept."""
    path = tmp_path / "data.json"
    path.write_bytes(
        b'{"key":"0","url":"https://a/"}\n'
        + encode_custom_record("zzzz", "https://c/", 1_700_000_000)
        + encode_custom_record("my-launch", "https://d/", 1_700_000_001)
        + b'{"key":"1","url":"https://b/"}\n'
    )
    data = open_data_file(str(path))
    data.record_file.close()
    assert data.next_index == 2
    assert data.urls["zzzz"] == "https://c/" and data.urls["my-launch"] == "https://d/"
    assert data.urls.custom_created == {"zzzz": 1_700_000_000.0, "my-launch": 1_700_000_001.0}


@pytest.mark.parametrize(
    "record",
    [
        b'{"key":"k","url":"https://a/","custom":2,"created":1}',
        b'{"key":"k","url":"https://a/","custom":1}',
        b'{"key":"k","url":"https://a/","custom":1,"created":"x"}',
        b'{"key":"k","url":"https://a/","custom":1,"created":-1}',
    ],
)
def test_bad_custom_records_name_their_line(tmp_path: Path, record: bytes) -> None:
    """A custom record without a proper mark and time is corruption, named by line."""
    path = tmp_path / "data.json"
    path.write_bytes(
        b'{"key":"0","url":"https://a/"}\n' + record + b"\n" + b'{"key":"1","url":"https://b/"}\n'
    )
    with pytest.raises(CorruptDataFile, match="line 2"):
        load_records(str(path))


def test_a_canonical_chunk_after_a_custom_key_still_loads_fast_and_refuses_a_clash(tmp_path: Path) -> None:
    """A counter run that would overwrite a custom key that looks like one of its keys is corruption."""
    path = tmp_path / "data.json"
    path.write_bytes(
        encode_custom_record("1", "https://c/", 1)
        + b'{"key":"0","url":"https://a/"}\n{"key":"1","url":"https://b/"}\n'
    )
    with pytest.raises(CorruptDataFile, match="stored twice"):
        load_records(str(path))


def click_site(fast: bool) -> tuple[GotoSite, ClickCounter]:
    store = URLStore({"abc": "https://a.example/"})
    counter = ClickCounter()
    metrics = Metrics("master")
    site = GotoSite(
        make_root(store, "go.example", metrics, clicks=counter),
        metrics,
        reactor=Clock(),
        store=store if fast else None,
        host="go.example",
        clicks=counter,
    )
    return site, counter


@pytest.mark.parametrize("fast", [True, False])
def test_redirects_count_clicks_but_not_head_or_bots_or_misses(fast: bool) -> None:
    """On the fast path and the general path alike: GETs count, HEADs and preview bots do not."""
    site, counter = click_site(fast)
    connection = Connection(site)
    for head in (
        b"GET /abc HTTP/1.1\r\nHost: go.example\r\nUser-Agent: Mozilla/5.0\r\n\r\n",
        b"GET /abc HTTP/1.1\r\nHost: go.example\r\n\r\n",
        b"HEAD /abc HTTP/1.1\r\nHost: go.example\r\n\r\n",
        b"GET /abc HTTP/1.1\r\nHost: go.example\r\nUser-Agent: Discordbot/2.0\r\n\r\n",
        b"GET /nope HTTP/1.1\r\nHost: go.example\r\n\r\n",
        b"GET /abc+ HTTP/1.1\r\nHost: go.example\r\n\r\n",
    ):
        connection.send(head)
    received = connection.received()
    assert received.count(b"HTTP/1.1 302 Found") == 4, received
    assert counter.pending == {"abc": 2}


def test_the_fast_path_leaves_browser_adds_and_custom_keys_to_twisted_web() -> None:
    """A browser's add gets the HTML page; an add with a key the custom answer; both on a fast site."""
    site, _ = click_site(True)
    connection = Connection(site)
    connection.send(
        b"GET /add?url=https%3A%2F%2Fn.example%2F HTTP/1.1\r\nHost: go.example\r\nAccept: "
        + CHROME_ACCEPT
        + b"\r\n\r\n"
    )
    connection.send(
        b"GET /add?url=https%3A%2F%2Fm.example%2F&key=my-key HTTP/1.1\r\nHost: go.example\r\n\r\n"
    )
    received = connection.received()
    assert b"Content-Type: text/html; charset=utf-8" in received and b"Content-Security-Policy" in received
    assert re.search(rb"\r\n\r\nhttp://go\.example/my-key\n", received), received


def test_store_clicks_keeps_only_keys_the_master_holds(tmp_path: Path) -> None:
    """``Store.Clicks`` from a slave is checked where it enters: unknown keys are dropped, not counted."""
    from goto_tw.clicks import ClickBook, ClickTotals
    from goto_tw.rpc import StoreHandler

    clock = Clock()
    store = URLStore({"abc": "https://a.example/"})
    book = ClickBook(str(tmp_path / "c.clicks"), ClickTotals(), clock, fsync=False, run_in_thread=None)
    book.startService()
    handler = StoreHandler(store, book)
    answer = handler.xmlrpc_Clicks({"abc": 2, "never-stored": 5})
    clock.advance(0)
    assert result_of(answer) is True
    assert (book.clicks("abc"), book.clicks("never-stored")) == (2, 0)
    result_of(book.stopService())
