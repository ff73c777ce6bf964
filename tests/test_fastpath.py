"""The redirect fast path: which requests it takes, and byte-for-byte equality with twisted.web."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from goto_tw.fastpath import (
    _CONTENT_LENGTH_NAME,
    _SIMPLE_GET,
    MAX_FAST_HEAD_BYTES,
    MAX_FAST_HEADERS,
    _match_head,
    parse_simple_get,
)
from goto_tw.metrics import Metrics
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from goto_tw.tap import make_root
from tests.conftest import LogCapture
from tests.fakes import ManualLog
from tests.wire import Connection, goto_site

URLS = {"abc": "https://a.example/x?y=1", "Z9": "http://b.example/"}


def make_site(fast: bool, log: ManualLog | None = None) -> tuple[GotoSite, Metrics]:
    """A site over the same store, with the fast path on or off (the general path only); with a
    ``log``, the store's writes wait for the test."""
    return goto_site(URLStore(dict(URLS), log), fast=fast)


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
    # 501 short lines: a head far under MAX_FAST_HEAD_BYTES that twisted.web refuses (maxHeaders 500)
    "too many short headers": [b"GET /abc HTTP/1.1\r\n" + b"A:1\r\n" * 501 + b"\r\n"],
    "add by GET": [b"GET /add?url=https%3A%2F%2Fnew.example%2Fq%3Fa%3D1 HTTP/1.1\r\nHost: x\r\n\r\n"],
    "add by POST, then redirect to it": [POST_ADD + b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"],
    "add body split across reads": [POST_ADD[:-10], POST_ADD[-10:-3], POST_ADD[-3:]],
    "add of a refused URL": [b"GET /add?url=ftp%3A%2F%2Fx HTTP/1.1\r\nHost: x\r\n\r\n", GET],
    "add of bad UTF-8": [b"GET /add?url=%FF HTTP/1.1\r\nHost: x\r\n\r\n"],
    "add without url shows the form": [b"GET /add?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", GET],
    "POST add with a query": [POST_ADD.replace(b"POST /add ", b"POST /add?url=http%3A%2F%2Fq%2F ")],
    "POST add with another type": [POST_ADD.replace(b"x-www-form-urlencoded", b"json")],
    "POST add twice the same URL": [POST_ADD + POST_ADD],
    "POST add with two urls": [
        b"POST /add HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 35\r\n\r\n"
        b"url=http%3A%2F%2Fa%2F&url=http%3A%2F%2Fb"
    ],
    "add then Connection: close": [POST_ADD + b"GET /abc HTTP/1.1\r\nConnection: close\r\n\r\n"],
}


@pytest.mark.parametrize("chunks", CONVERSATIONS.values(), ids=CONVERSATIONS.keys())
def test_fast_path_sends_the_same_bytes_as_twisted_web(chunks: list[bytes]) -> None:
    """Whatever the conversation, the fast site answers byte for byte what twisted.web alone does,
    and closes (or keeps) the connection the same way."""
    assert converse(True, *chunks) == converse(False, *chunks)


def logged_site(fast: bool) -> tuple[GotoSite, ManualLog]:
    """A site whose store's writes wait for the test, fast path on or off."""
    log = ManualLog()
    return make_site(fast, log)[0], log


def test_a_pending_add_holds_back_the_answers_behind_it() -> None:
    """Answers go out in request order: a redirect pipelined after an add waits for the add's write."""
    outcomes = []
    for fast in (True, False):
        site, log = logged_site(fast)
        connection = Connection(site)
        connection.send(POST_ADD + GET)
        assert connection.received() == b"", "nothing may be answered before the add is durable"
        log.complete_all()
        outcomes.append(normalized(connection.received()))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0].count(b"HTTP/1.1 ") == 2
    assert outcomes[0].index(b"200 OK") < outcomes[0].index(b"302 Found")


def test_a_failed_write_answers_503_like_the_general_path() -> None:
    """A disk failure during a fast add is the general path's 503 with Retry-After, byte for byte."""
    outcomes = []
    for fast in (True, False):
        site, log = logged_site(fast)
        connection = Connection(site)
        connection.send(POST_ADD)
        log.fail_all()
        outcomes.append(normalized(connection.received()))
    assert outcomes[0] == outcomes[1]
    assert b"HTTP/1.1 503 Service Unavailable\r\n" in outcomes[0] and b"Retry-After: 5\r\n" in outcomes[0]


def test_held_back_general_requests_wait_for_owed_fast_answers() -> None:
    """A request for twisted.web pipelined behind a pending fast add is answered after it."""
    site, log = logged_site(True)
    connection = Connection(site)
    connection.send(POST_ADD + b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert connection.received() == b""
    log.complete_all()
    answer = connection.received()
    assert answer.index(b"200 OK") < answer.index(b"404 Not Found")


def test_the_conversations_do_exercise_the_fast_path() -> None:
    """Guard against a vacuous comparison: the simple requests are really answered without twisted.web."""
    site, _ = make_site(True)
    connection = Connection(site)
    connection.send(GET + HEAD + POST_ADD + b"GET /add?url=http%3A%2F%2Fb.example%2F HTTP/1.1\r\n\r\n")
    assert connection.protocol.requests == []  # twisted.web never saw a request
    answer = connection.received()
    assert answer.count(b"HTTP/1.1 302 Found\r\n") == 2
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 2
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


def test_a_redirect_head_past_the_fast_limits_is_left_to_twisted_web() -> None:
    """``parse_simple_get`` checks the head's size and its number of lines itself (it no longer
    goes through ``_match_head``): a head one byte or one line past either limit is left to
    twisted.web, whose own limits then apply; at the limits it is taken."""
    start = b"GET /abc HTTP/1.1\r\n"
    pad = b"X-Pad: " + b"p" * (MAX_FAST_HEAD_BYTES - len(start) - len(b"X-Pad: \r\n\r\n"))
    assert len(start + pad + b"\r\n\r\n") == MAX_FAST_HEAD_BYTES
    assert parse_simple_get(start + pad + b"\r\n\r\n") == ("GET", "abc")
    assert parse_simple_get(start + pad + b"p\r\n\r\n") is None
    lines = b"A:1\r\n" * MAX_FAST_HEADERS
    assert parse_simple_get(start + lines + b"\r\n") == ("GET", "abc")
    assert parse_simple_get(start + lines + b"A:1\r\n\r\n") is None


_HEADER_NAMES = [
    "Host",
    "Connection",
    "connection",
    "CONNECTION",
    "Content-Length",
    "content-length",
    "Transfer-Encoding",
    "TE",
    "te",
    "Trailer",
    "Expect",
    "Upgrade",
    "Accept",
    "Tea",
    "X-Te",
]
_HEADER_VALUES = [
    "keep-alive",
    "Keep-Alive",
    " keep-alive ",
    "close",
    "0",
    "5",
    "chunked",
    "x",
    "",
    "keep-alive, TE",
]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(_HEADER_NAMES), st.sampled_from(["", " ", "\t"]), st.sampled_from(_HEADER_VALUES)
        ),
        max_size=4,
    ),
    st.sampled_from(["GET", "HEAD", "POST"]),
)
def test_a_redirect_head_is_checked_as_every_fast_head_is(
    headers: list[tuple[str, str, str]], method: str
) -> None:
    """``parse_simple_get`` takes exactly the heads ``_match_head`` takes that have no
    ``Content-Length`` (its shortcut for heads without those names, or with only a keep-alive,
    changes nothing), whatever the mix and case of framing, length and keep-alive lines."""
    lines = "".join(f"{name}:{space}{value}\r\n" for name, space, value in headers)
    head = f"{method} /abc HTTP/1.1\r\n{lines}\r\n".encode()
    match = _match_head(_SIMPLE_GET, head)
    expected = None if match is None or _CONTENT_LENGTH_NAME.search(match.group(3)) else (method, "abc")
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
    site = GotoSite(make_root(store, "h", metrics), metrics, reactor=clock, store=store)
    connection = Connection(site)
    connection.send(GET)
    assert b"\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n" in connection.received()
    clock.advance(86400)
    connection.send(GET)
    assert b"\r\nDate: Fri, 02 Jan 1970 00:00:00 GMT\r\n" in connection.received()


def test_slow_split_request_still_times_out() -> None:
    """Gathering a split request does not defeat the idle timeout: with an idle timeout shorter than
    the request deadline, a client that sends half a request and falls silent is closed by the
    idle timeout (the deadline, 30 s, would come later)."""
    store = URLStore(dict(URLS))
    metrics = Metrics("master")
    clock = Clock()
    site = GotoSite(make_root(store, "h", metrics), metrics, reactor=clock, store=store, timeout=10)
    connection = Connection(site)
    connection.send(GET[:10])
    clock.advance(9)
    assert not connection.transport.disconnecting
    clock.advance(2)
    assert connection.transport.disconnecting
