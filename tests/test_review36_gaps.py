"""Tests a second mutation audit (stop 36) found missing: each asserts what a user or operator sees,
and fails under the mutation it is named for (the audit's IDs: tp12, ls06, um02...)."""

from __future__ import annotations

import json
import signal
import xmlrpc.client as xmlrpclib
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python import usage
from zope.interface import implementer

from goto_tw.api import MAX_PAGE
from goto_tw.clients import ClientAddresses
from goto_tw.errors import KeyExists
from goto_tw.interfaces import IDatabaseHealth
from goto_tw.linkstats import stats_struct
from goto_tw.metrics import Metrics
from goto_tw.negotiation import prefers_html
from goto_tw.openapi import openapi_document
from goto_tw.pages import CONTENT_SECURITY_POLICY
from goto_tw.qr import QRCodes
from goto_tw.reload import ReloadOnSighup
from goto_tw.store import URLStore
from goto_tw.tap import Options, make_root
from goto_tw.urlmap import URLMap
from goto_tw.xmlrpcbody import parse_call
from tests.conftest import LogCapture
from tests.helpers import failure_of, result_of
from tests.stub_client import Client


def test_private_without_a_keys_file_stops_start_up() -> None:
    """tp12: without the check, --private quietly took adds from anyone (no keys, no refusal)."""
    with pytest.raises(usage.UsageError, match="--api-keys-file"):
        Options().parseOptions(["--private"])


def test_stats_of_a_link_of_unknown_age_cross_the_rpc() -> None:
    """ls06: XML-RPC carries no None; a ``created`` of None made every such link's Store.Stats a
    fault (older links: their info page and API on a slave)."""
    assert stats_struct({"clicks": 3, "created": None}) == {"clicks": 3.0}
    assert stats_struct({"clicks": 3, "created": 12.5}) == {"clicks": 3.0, "created": 12.5}
    xmlrpclib.dumps((stats_struct({"clicks": 0, "created": None}),), methodresponse=True)


def test_paging_after_a_custom_key_that_looks_like_a_counter_key_goes_on() -> None:
    """um02: ``after=abc`` (a custom key, and also a counter key's shape) went back into the counter
    links: a client walking every page looped or saw links twice."""
    urls = URLMap.of({str(n): f"https://c.example/{n}" for n in range(10)})
    urls.add_custom("abc", "https://custom.example/abc", 1.0)
    urls.add_custom("zz", "https://custom.example/zz", 1.0)
    assert [key for key, _ in urls.page("abc", 100)] == ["zz"]
    seen: list[str] = []
    after = None
    while True:
        page = urls.page(after, 3)
        if not page:
            break
        seen += [key for key, _ in page]
        after = page[-1][0]
    assert sorted(seen) == sorted([str(n) for n in range(10)] + ["abc", "zz"])
    assert len(seen) == len(set(seen))


def test_a_disabled_custom_key_is_not_given_back_to_its_own_url() -> None:
    """st05: adding the same URL under the same custom key after the key was disabled answered
    "already there" with a dead link; the key is taken for good (409)."""
    clock = Clock()
    store = URLStore(clock=clock)
    assert result_of(store.add("https://mine.example/", "mine")) == ("mine", True)
    result_of(store.disable("mine"))
    assert failure_of(store.add("https://mine.example/", "mine")).check(KeyExists)


def test_a_plain_add_never_answers_a_disabled_key_after_a_restart() -> None:
    """st01 (caught only end to end before): loaded with its key disabled, a URL added again gets
    a new key, never the dead one."""
    store = URLStore(URLMap.of({"0": "https://gone.example/"}), disabled={"0": 1}, next_index=1)
    assert result_of(store.put("https://gone.example/")) != "0"


@implementer(IDatabaseHealth)
class _DatabaseDown(URLStore):
    database_reachable = False

    def check_database(self) -> Deferred[bool]:
        return succeed(False)


def test_a_master_whose_database_is_down_says_so_in_its_health() -> None:
    """op09: the answer stayed "ok" (only its status code said otherwise): a health check reading
    the document saw a healthy master."""
    client = Client(make_root(_DatabaseDown(), "h", Metrics("master")))
    status, _, body = client.request("GET", "/_goto/health")
    document = json.loads(body)
    assert status == 503
    assert document["status"] == "database unreachable" and document["database_reachable"] is False


def test_an_unreadable_forwarded_entry_stops_the_walk_at_the_proxy() -> None:
    """cl03: an entry a trusted proxy wrote that is no address (``unknown``, ``ip:port``) must not
    let the client's own entries to its left be believed (a forged client for the rate limit and
    the access log)."""
    clients = ClientAddresses(frozenset({"10.0.0.2"}))
    assert clients.client("10.0.0.2", [b"6.6.6.6, unknown"]) == "10.0.0.2"
    assert clients.client("10.0.0.2", [b"6.6.6.6, 192.0.2.1:443"]) == "10.0.0.2"
    assert clients.client("10.0.0.2", [b"6.6.6.6, 192.0.2.1"]) == "192.0.2.1"


def test_pages_may_not_be_framed_nor_rebased() -> None:
    """pg04: the policy's other directives had no test (clickjacking with frame-ancestors gone)."""
    directives = {part.strip() for part in CONTENT_SECURITY_POLICY.decode("ascii").split(";")}
    assert {
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "default-src 'none'",
    } <= directives


def test_a_custom_keys_own_creation_time_is_its_stats(tmp_path: Path) -> None:
    """ls08: the info page and API showed "unknown" (or a counter mark's time) for a custom key."""
    from goto_tw.clicks import ClickBook, ClickTotals
    from goto_tw.linkstats import MasterLinkStats

    urls = URLMap.of({"0": "https://zero.example/"})
    urls.add_custom("abc", "https://custom.example/", 1234.0)
    store = URLStore(urls, next_index=1)
    book = ClickBook(str(tmp_path / "clicks"), ClickTotals(), Clock(), fsync=False, run_in_thread=None)
    stats = result_of(MasterLinkStats(store, store, book).stats("abc"))
    assert stats["created"] == 1234.0


def test_one_reloader_that_fails_does_not_stop_the_others(log_events: LogCapture) -> None:
    """rl01: a block file that cannot be read must not keep a revoked API key working."""
    called: list[str] = []

    def broken() -> None:
        raise OSError("no such file")

    reload = ReloadOnSighup(Clock(), [broken, lambda: called.append("keys")])
    reload.reload()
    assert called == ["keys"]
    assert len([m for m in log_events.messages() if "A reload failed" in m]) == 1


def test_stopping_puts_back_the_previous_sighup_handler() -> None:
    """rl02: the handler outlived the service (a test's or an embedding program's SIGHUP)."""
    previous = signal.getsignal(signal.SIGHUP)
    reload = ReloadOnSighup(Clock(), [])
    reload.startService()
    assert signal.getsignal(signal.SIGHUP) != previous
    reload.stopService()
    assert signal.getsignal(signal.SIGHUP) == previous


def test_the_api_document_states_every_limit_and_refusal() -> None:
    """oa01-03: the page limit, a disabled link's 410 and the add limit's 429 could be dropped from
    the document with the schemathesis run still passing."""
    paths: Any = openapi_document()["paths"]
    links, link = paths["/api/v1/links"], paths["/api/v1/links/{key}"]
    limit = next(p for p in links["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == MAX_PAGE
    assert "410" in link["get"]["responses"] and "429" in links["post"]["responses"]
    assert "403" in links["post"]["responses"], "a slave without --private, of a private master"


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (b"text/html;q=0.5, text/plain, */*;q=0.1", False),  # text/plain's own range decides: 1.0
        (b"text/html, text/plain;q=0.1, */*", True),  # text/plain's own range: 0.1, not */*'s 1.0
        (b"text/html;q=0.5, text/*;q=0.9", False),
    ],
)
def test_the_most_specific_range_decides_text_plains_quality(accept: bytes, html: bool) -> None:
    """ng05: RFC 9110 12.5.1; reversed, a client that ranked text/plain first got HTML."""
    assert prefers_html(accept) is html


def test_qr_codes_read_recently_are_kept_longest(monkeypatch: pytest.MonkeyPatch) -> None:
    """qr02: the cache dropped the oldest made, not the least recently read: popular codes were
    rendered again (CPU, and 429s or 503s for them)."""
    import goto_tw.qr as qr

    monkeypatch.setattr(qr, "qr_svg", lambda text: text.encode())
    codes = QRCodes(max_codes=2)
    codes.make("a", "svg")
    codes.make("b", "svg")
    assert codes.kept("a", "svg") == b"a"
    codes.make("c", "svg")
    assert codes.kept("a", "svg") == b"a" and codes.kept("b", "svg") is None


def test_a_bodys_encoding_declaration_is_ignored() -> None:
    """xb03: a UTF-8 body declaring ISO-8859-1 had its non-ASCII strings garbled."""
    body = (
        "<?xml version='1.0' encoding='ISO-8859-1'?><methodCall><methodName>Store.Put</methodName>"
        "<params><param><value><string>https://é.example/</string></value></param></params></methodCall>"
    ).encode()
    assert parse_call(body) == (("https://é.example/",), "Store.Put")


@pytest.mark.parametrize("answer", [{"clicks": -1.0}, {"clicks": True}, {"clicks": "3"}, {"created": 1.0}])
def test_a_masters_stats_answer_is_checked_before_it_is_shown(answer: dict[str, object]) -> None:
    """ls04: a master's answer crosses a trust boundary; negative clicks (or none) were shown."""
    from goto_tw.clicks import ClickCounter, ClickForwarder
    from goto_tw.errors import StoreUnavailable
    from goto_tw.linkstats import RemoteLinkStats
    from goto_tw.proxystore import ProxyStore
    from tests.fakes import FakeMaster

    store = ProxyStore(FakeMaster(), Clock())
    forwarder = ClickForwarder(ClickCounter(), lambda batch: succeed(True), Clock())
    stats = RemoteLinkStats(store, lambda method, *params: succeed(answer), forwarder)
    assert failure_of(stats.stats("k")).check(StoreUnavailable)


def test_only_a_preflight_gets_the_preflight_answer() -> None:
    """co07: any OPTIONS from a listed origin was answered 204 as if it were a preflight; without
    Access-Control-Request-Method it is what it is without CORS (405)."""
    from tests.test_operators_finish import cors_client

    client, _ = cors_client()
    status, _, _ = client.request("OPTIONS", "/api/v1/links/abc", headers={"Origin": "https://app.example"})
    assert status == 405
