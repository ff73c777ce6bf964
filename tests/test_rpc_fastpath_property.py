"""Issue 13, the master's RPC on the fast path: for any conversation of XML-RPC calls (the canonical
shapes goto's slaves send, and odd ones: other methods, faults, bad XML, bad arguments, a wrong or
missing secret, other Content-Types, bodies over the fast cap), pipelined with redirects, adds and
pages, split at any read points, with the data file acknowledging writes at any point, a master
with the fast path sends the very bytes (Date included, pinned to the injected clock), closes,
logs, counts and stores what the same master sends with the fast path off; and the connection
never leaves the fast path for good."""

from __future__ import annotations

import urllib.parse
import xmlrpc.client as xmlrpclib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.web.http import datetimeToString

from goto_tw.fastpath import MAX_FAST_RPC_BYTES
from goto_tw.metrics import Metrics
from goto_tw.rpc import RPCResource
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from goto_tw.tap import make_root
from tests.fakes import ManualLog
from tests.test_fastpath_bounds import refused_then_more_than_the_budget
from tests.wire import Connection, ListAccessLog

URLS = {"abc": "https://a.example/x?y=1", "Z9": "http://b.example/", "1": "https://c.example/" + "p" * 300}
SECRET = b"s3cret-token"
KEYS = ["abc", "Z9", "1", "nope", "7", "0", "add", "bad key", ""]
PUT_URLS = [
    "https://new.example/",
    "https://new.example/q?a=1&b=<c>&d=%20",
    "http://b.example/",
    "ftp://refused.example/",
    "https://\u00e9t\u00e9.example/\u20ac",
]
#: The clock's start: a real date, so that the Date header has every field to get wrong.
START = 1_800_000_000.25


def _call(draw: st.DrawFn) -> dict[str, Any]:
    """One call of a slave's multicall."""
    if draw(st.booleans()):
        return {"methodName": "Store.Get", "params": [draw(st.sampled_from(KEYS))]}
    return {"methodName": "Store.Put", "params": [draw(st.sampled_from(PUT_URLS))]}


@st.composite
def rpc_bodies(draw: st.DrawFn) -> bytes:
    """An XML-RPC body: mostly the canonical shapes, some odd ones."""
    kind = draw(
        st.sampled_from(
            [
                "get",
                "put",
                "multicall",
                "multicall",
                "add",
                "clicks",
                "unknown",
                "bad-args",
                "bad-multicall",
                "bad-xml",
                "empty",
                "latin-1",
                "doctype",
                "other-form",
                "response",
                "big",
            ]
        )
    )
    if kind == "get":
        return xmlrpclib.dumps((draw(st.sampled_from(KEYS)),), "Store.Get").encode()
    if kind == "put":
        return xmlrpclib.dumps((draw(st.sampled_from(PUT_URLS)),), "Store.Put").encode()
    if kind == "multicall":
        calls = [_call(draw) for _ in range(draw(st.integers(min_value=0, max_value=5)))]
        return xmlrpclib.dumps((calls,), "system.multicall").encode()
    if kind == "add":
        url, key = draw(st.sampled_from(PUT_URLS)), draw(st.sampled_from(["", "my-key", "abc", "a b"]))
        return xmlrpclib.dumps((url, key), "Store.Add").encode()
    if kind == "clicks":
        return xmlrpclib.dumps(({"abc": 2, "nope": 1},), "Store.Clicks").encode()
    if kind == "unknown":
        return xmlrpclib.dumps(
            (), draw(st.sampled_from(["Store.Nope", "nope", "system.listMethods"]))
        ).encode()
    if kind == "bad-args":
        return xmlrpclib.dumps(draw(st.sampled_from([(1,), (), ("a", "b", "c")])), "Store.Get").encode()
    if kind == "bad-multicall":
        return xmlrpclib.dumps(
            ([{"methodName": "system.multicall", "params": []}, 3],), "system.multicall"
        ).encode()
    if kind == "bad-xml":
        return b"<?xml version='1.0'?>\n<methodCall>\n<methodName>Store.Get</methodName>\n"
    if kind == "empty":
        return b""
    if kind == "latin-1":
        return xmlrpclib.dumps(("caf\u00e9",), "Store.Get", encoding="iso-8859-1").encode("latin-1")
    if kind == "doctype":
        return (
            b'<?xml version="1.0"?>\n<!DOCTYPE m [<!ENTITY a "abc">]>\n'
            b"<methodCall><methodName>Store.Get</methodName><params><param><value>&a;</value></param>"
            b"</params></methodCall>"
        )
    if kind == "other-form":
        return (
            b'<?xml version="1.0" encoding="UTF-8"?>\r\n<methodCall>  <methodName>Store.Get</methodName>'
            b"<params><param><value>abc</value></param></params></methodCall>"
        )
    if kind == "response":
        return xmlrpclib.dumps(("abc",), methodresponse=True).encode()
    # Over the fast cap: lent to twisted.web (its body streamed, not held), then back on the fast path.
    calls = [{"methodName": "Store.Get", "params": ["abc"]}] * (MAX_FAST_RPC_BYTES // 200)
    return xmlrpclib.dumps((calls,), "system.multicall").encode()


#: Header lines of an RPC call: Content-Types, secrets, and others (a few the fast path leaves).
CONTENT_TYPES = [
    b"Content-Type: text/xml\r\n",
    b"Content-Type: text/xml\r\n",
    b"content-type: text/xml; charset=utf-8\r\n",
    b"Content-Type: TEXT/XML;charset=UTF-8\r\n",
    b"Content-Type: application/xml\r\n",
    b"Content-Type: application/x-www-form-urlencoded\r\n",
    b"Content-Type: multipart/form-data; boundary=xyz\r\n",
    b"Content-Type: =?utf-8?q?text/xml?=\r\n",
    b"Content-Type: text/xml\r\nContent-Type: text/xml\r\n",
    b"",
]
AUTHORIZATIONS = [
    b"Authorization: Bearer " + SECRET + b"\r\n",
    b"Authorization: Bearer " + SECRET + b"\r\n",
    b"authorization:bearer  " + SECRET + b" \r\n",
    b"Authorization: Bearer wrong\r\n",
    b"Authorization: Basic czNjcmV0\r\n",
    b"Authorization:\r\n",
    b"Authorization: Bearer " + SECRET + b"\r\nAuthorization: Bearer " + SECRET + b"\r\n",
    b"",
]
OTHER_HEADERS = [
    b"Host: master.example:8081\r\n",
    b"User-Agent: Python-xmlrpc/3.11\r\n",
    b"Accept-Encoding: gzip\r\n",
    b"Connection: keep-alive\r\n",
    b"X-Empty:\r\n",
]
#: Header lines that make a request one the fast path cannot lend: it hands the connection over.
HAND_OVER_HEADERS = [b"X-Pad: " + b"p" * 5000 + b"\r\n", b"X-Folded: a\r\n  b\r\n", b"Connection: close\r\n"]


@st.composite
def rpc_requests(draw: st.DrawFn) -> bytes:
    """One ``POST /RPC2``, its headers in any order."""
    body = draw(rpc_bodies())
    lines = [draw(st.sampled_from(CONTENT_TYPES)), draw(st.sampled_from(AUTHORIZATIONS))]
    lines += draw(st.lists(st.sampled_from(OTHER_HEADERS), max_size=3, unique=True))
    if draw(st.integers(min_value=0, max_value=20)) == 0:
        lines.append(draw(st.sampled_from(HAND_OVER_HEADERS)))
    lines.append(b"Content-Length: %d\r\n" % len(body))
    order = draw(st.permutations(range(len(lines))))
    return b"POST /RPC2 HTTP/1.1\r\n%s\r\n%s" % (b"".join(lines[index] for index in order), body)


FORM = urllib.parse.urlencode({"url": "https://new.example/"}).encode()
OTHER_REQUESTS = [
    b"GET /abc HTTP/1.1\r\n\r\n",
    b"HEAD /Z9 HTTP/1.1\r\n\r\n",
    b"GET /nope HTTP/1.1\r\n\r\n",
    b"GET /0 HTTP/1.1\r\n\r\n",
    b"GET /add?" + urllib.parse.urlencode({"url": "https://form.example/"}).encode() + b" HTTP/1.1\r\n\r\n",
    b"POST /add HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
    % (len(FORM), FORM),
    b"GET /abc+ HTTP/1.1\r\n\r\n",
    b"GET /RPC2 HTTP/1.1\r\n\r\n",
    b"POST /RPC2/x HTTP/1.1\r\nContent-Length: 2\r\n\r\nxx",
]


@st.composite
def rpc_conversations(draw: st.DrawFn) -> tuple[list[bytes], list[bool], bool]:
    """RPC calls pipelined with other requests, split at random read points; when the data file
    acknowledges writes; whether the master has a shared secret."""
    requests = draw(
        st.lists(
            st.one_of(rpc_requests(), rpc_requests(), st.sampled_from(OTHER_REQUESTS)), min_size=1, max_size=6
        )
    )
    data = b"".join(requests)
    cuts = sorted(set(draw(st.lists(st.integers(min_value=1, max_value=max(1, len(data) - 1)), max_size=6))))
    chunks = [data[start:end] for start, end in zip([0, *cuts], [*cuts, len(data)]) if data[start:end]]
    complete_after = draw(st.lists(st.booleans(), min_size=len(chunks), max_size=len(chunks)))
    return chunks, complete_after, draw(st.booleans())


@contextmanager
def pinned_dates(clock: Clock) -> Iterator[None]:
    """twisted.web dates its answers by the wall clock: make it read the injected clock, as the
    fast path does, so that the Date headers compare too."""
    with mock.patch(
        "twisted.web.server.datetimeToString", lambda when=None: datetimeToString(clock.seconds())
    ):
        yield


def rpc_master(
    fast: bool, secret: bytes | None, clock: Clock, log: ManualLog, lines: list[tuple[Any, ...]]
) -> tuple[GotoSite, URLStore, Metrics]:
    """A master serving ``--rpc`` over a store whose writes complete when the test says so."""
    store = URLStore(dict(URLS), log)
    metrics = Metrics("master")
    site = GotoSite(
        make_root(store, "go.example", metrics, RPCResource(store, secret)),
        metrics,
        reactor=clock,
        store=store if fast else None,
        host="go.example",
        access_log=ListAccessLog(lines),
    )
    return site, store, metrics


def converse(fast: bool, chunks: list[bytes], complete_after: list[bool], secret: bool) -> tuple[Any, ...]:
    """Play a conversation against a fresh master; return everything a client, an operator and the
    store can tell: the bytes, the close, the access log, the counts, the keys stored."""
    clock = Clock()
    clock.advance(START)
    log = ManualLog()
    lines: list[tuple[Any, ...]] = []
    site, store, metrics = rpc_master(fast, SECRET if secret else None, clock, log, lines)
    with pinned_dates(clock):
        connection = Connection(site)
        for chunk, complete in zip(chunks, complete_after):
            if connection.transport.disconnecting:
                break  # closed (Connection: close): what the client still sends never arrives
            connection.send(chunk)
            clock.advance(0.5)  # the Date of an answer owed later is its request's
            if complete:
                log.complete_all()
        while log.appended:  # one request at a time: complete until none is left
            clock.advance(0.5)
            log.complete_all()
        received = connection.received()
    stored = sorted((key, store.lookup(key)) for key in [*KEYS, "2", "3", "4", "5", "6", "my-key"])
    return received, bool(connection.transport.disconnecting), lines, dict(metrics.requests), stored


def stays_on_the_fast_path(chunks: list[bytes]) -> bool:
    """Whether every request of a conversation is one the fast path answers or lends."""
    data = b"".join(chunks)
    return not any(header in data for header in HAND_OVER_HEADERS)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(rpc_conversations())
@example(  # a Store.Put answered once durable, a redirect pipelined behind it, the file slow
    (
        [
            b"POST /RPC2 HTTP/1.1\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
            + b"GET /0 HTTP/1.1\r\n\r\n"
            for body in [xmlrpclib.dumps(("https://new.example/",), "Store.Put").encode()]
        ],
        [False],
        False,
    )
)
@example(  # a call without the secret: twisted.web refuses it, the next call is answered fast
    (
        [
            b"POST /RPC2 HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            + b"POST /RPC2 HTTP/1.1\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s"
            % (SECRET, len(body), body)
            for body in [xmlrpclib.dumps(("abc",), "Store.Get").encode()]
        ],
        [True],
        True,
    )
)
@example(  # twisted.web refuses a call and closes, more than the byte budget pipelined behind it
    ([refused_then_more_than_the_budget()], [True], False)
)
def test_the_fast_rpc_path_sends_what_twisted_web_sends(
    conversation: tuple[list[bytes], list[bool], bool],
) -> None:
    """Any conversation of RPC calls and other requests, split anywhere, writes completing at any
    point, with or without a secret: the same bytes (Date included), close, access-log lines,
    counts and stored keys as twisted.web alone; and the connection stays on the fast path."""
    chunks, complete_after, secret = conversation
    fast = converse(True, chunks, complete_after, secret)
    assert fast == converse(False, chunks, complete_after, secret)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(rpc_conversations())
def test_rpc_calls_never_hand_the_connection_to_twisted_web(
    conversation: tuple[list[bytes], list[bool], bool],
) -> None:
    """Whatever RPC call comes (declined ones included), the connection is back on the fast path
    after it: only a request the fast path can neither answer nor lend whole hands it over."""
    chunks, complete_after, secret = conversation
    clock = Clock()
    log = ManualLog()
    site, _, _ = rpc_master(True, SECRET if secret else None, clock, log, [])
    connection = Connection(site)
    protocol: Any = connection.protocol
    for chunk, complete in zip(chunks, complete_after):
        if connection.transport.disconnecting:
            break
        connection.send(chunk)
        if complete:
            log.complete_all()
    while log.appended:
        log.complete_all()
    if stays_on_the_fast_path(chunks):  # (a request that cannot be lent hands it over, if it comes)
        assert not protocol._general
