"""The redirect fast path: which requests it takes, and byte-for-byte equality with twisted.web."""

from __future__ import annotations

import re

import pytest
from twisted.internet.task import Clock

from goto_tw.fastpath import parse_simple_get
from goto_tw.metrics import Metrics
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from goto_tw.tap import make_root
from tests.conftest import LogCapture
from tests.wire import Connection

URLS = {"abc": "https://a.example/x?y=1", "Z9": "http://b.example/"}


def make_site(fast: bool) -> tuple[GotoSite, Metrics]:
    """A site over the same store, with the fast path on or off (the general path only)."""
    store = URLStore(dict(URLS))
    metrics = Metrics("master")
    site = GotoSite(
        make_root(store, "go.example", metrics),
        metrics,
        reactor=Clock(),
        lookup=store.lookup if fast else None,
    )
    return site, metrics


def normalized(answer: bytes) -> bytes:
    """Dates differ with the clock, not with the path taken: blank them out."""
    return re.sub(rb"\r\nDate: [^\r]*\r\n", b"\r\nDate: -\r\n", answer)


def converse(fast: bool, *chunks: bytes) -> tuple[bytes, bool]:
    """Send ``chunks`` one read at a time; return all the answer bytes and whether the connection closes."""
    site, _ = make_site(fast)
    connection = Connection(site)
    for chunk in chunks:
        connection.send(chunk)
    return normalized(connection.received()), bool(connection.transport.disconnecting)


GET = b"GET /abc HTTP/1.1\r\nHost: go.example\r\nUser-Agent: t\r\n\r\n"
HEAD = b"HEAD /abc HTTP/1.1\r\nHost: go.example\r\n\r\n"
FORM = b"url=https%3A%2F%2Fnew.example%2F"
POST_ADD = (
    b"POST /add HTTP/1.1\r\nHost: go.example\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(FORM), FORM)
)

CONVERSATIONS = {
    "get": [GET],
    "head": [HEAD],
    "keep-alive header": [b"GET /abc HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"],
    "two requests, two reads": [GET, HEAD],
    "pipelined in one read": [GET + HEAD + GET],
    "split byte by byte": [bytes([b]) for b in GET],
    "split mid-terminator": [GET[:-2], GET[-2:]],
    "HTTP/1.0": [b"GET /abc HTTP/1.0\r\n\r\n"],
    "HTTP/1.0 keep-alive": [b"GET /abc HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", GET],
    "Connection: close": [b"GET /abc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
    "close after fast ones": [GET + b"GET /Z9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
    "unknown key": [b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", GET],
    "reserved path": [b"GET /add HTTP/1.1\r\nHost: x\r\n\r\n", GET],
    "query string": [b"GET /abc?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"],
    "escaped key": [b"GET /%61bc HTTP/1.1\r\nHost: x\r\n\r\n"],
    "mixed pipeline with a body": [GET + POST_ADD + GET + b"GET /0 HTTP/1.1\r\nHost: x\r\n\r\n"],
    "body on a GET": [
        b"GET /abc HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /abc HTTP/1.1\r\n\r\n"
    ],
    "chunked GET": [b"GET /abc HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"],
    "lower-case method": [b"get /abc HTTP/1.1\r\nHost: x\r\n\r\n"],
    "folded header": [b"GET /abc HTTP/1.1\r\nX-A: 1\r\n  2\r\n\r\n"],
    "header without colon": [b"GET /abc HTTP/1.1\r\nBroken\r\n\r\n"],
    "bare LF": [b"GET /abc HTTP/1.1\nHost: x\n\n"],
    "too many headers": [b"GET /abc HTTP/1.1\r\n" + b"X-A: 1\r\n" * 600 + b"\r\n"],
}


@pytest.mark.parametrize("chunks", CONVERSATIONS.values(), ids=CONVERSATIONS.keys())
def test_fast_path_sends_the_same_bytes_as_twisted_web(chunks: list[bytes]) -> None:
    """Whatever the conversation, the fast site answers byte for byte what twisted.web alone does,
    and closes (or keeps) the connection the same way."""
    assert converse(True, *chunks) == converse(False, *chunks)


def test_the_conversations_do_exercise_the_fast_path() -> None:
    """Guard against a vacuous comparison: the simple requests are really answered without twisted.web."""
    site, _ = make_site(True)
    connection = Connection(site)
    connection.send(GET + HEAD)
    assert connection.protocol.requests == []  # twisted.web never saw a request
    assert connection.received().count(b"HTTP/1.1 302 Found\r\n") == 2
    assert not connection.protocol._general


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /abc HTTP/1.1\r\n\r\n", ("GET", "abc")),
        (b"HEAD /abc HTTP/1.1\r\nHost: x\r\n\r\n", ("HEAD", "abc")),
        (b"GET /abc HTTP/1.1\r\nconnection: Keep-Alive\r\n\r\n", ("GET", "abc")),
        (b"GET /abc HTTP/1.1\r\nEmpty:\r\n\r\n", ("GET", "abc")),
        (b"GET /abc HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", None),
        (b"GET /abc HTTP/1.1\r\nConnection: upgrade\r\n\r\n", None),
        (b"GET /abc HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", None),
        (b"GET /abc HTTP/1.1\r\nX: \xff\r\n\r\n", None),
        (b"POST /abc HTTP/1.1\r\n\r\n", None),
        (b"GET /abc HTTP/1.0\r\n\r\n", None),
        (b"GET /RPC2 HTTP/1.1\r\n\r\n", None),
        (b"GET /_goto HTTP/1.1\r\n\r\n", None),
        (b"GET http://x/abc HTTP/1.1\r\n\r\n", None),
        (b"GET /a/b HTTP/1.1\r\n\r\n", None),
    ],
)
def test_which_requests_take_the_fast_path(head: bytes, expected: tuple[str, str] | None) -> None:
    """Only plain HTTP/1.1 GET/HEAD of a key, with harmless headers, is taken."""
    assert parse_simple_get(head) == expected


def test_fast_path_logs_and_counts_like_the_general_path(log_events: LogCapture) -> None:
    """The access log line, its fields, and the metrics are the same whichever path answered."""
    outcomes = []
    for fast in (True, False):
        site, metrics = make_site(fast)
        Connection(site).send(GET + HEAD)
        events = [e for e in log_events.events if e.get("log_namespace") == "goto.access"]
        log_events.events.clear()
        fields = [
            {k: e[k] for k in ("client", "method", "path", "protocol", "status", "size", "route")}
            for e in events
        ]
        outcomes.append((fields, dict(metrics.requests), metrics.redirects))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][2] == 2


def test_fast_path_answers_the_current_date() -> None:
    """The Date header follows the injected clock, like a fresh response would."""
    store = URLStore(dict(URLS))
    metrics = Metrics("master")
    clock = Clock()
    site = GotoSite(make_root(store, "h", metrics), metrics, reactor=clock, lookup=store.lookup)
    connection = Connection(site)
    connection.send(GET)
    assert b"\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n" in connection.received()
    clock.advance(86400)
    connection.send(GET)
    assert b"\r\nDate: Fri, 02 Jan 1970 00:00:00 GMT\r\n" in connection.received()


def test_slow_split_request_still_times_out() -> None:
    """Gathering a split request does not defeat the idle timeout."""
    store = URLStore(dict(URLS))
    metrics = Metrics("master")
    clock = Clock()
    site = GotoSite(make_root(store, "h", metrics), metrics, reactor=clock, lookup=store.lookup)
    connection = Connection(site)
    connection.send(GET[:10])
    clock.advance(61)
    assert connection.transport.disconnecting
