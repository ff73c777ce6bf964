"""Property-based fuzzing of the whole front end through a real site: no input makes a 500."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from goto_tw.metrics import Metrics
from goto_tw.rpc import RPCResource
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from goto_tw.tap import make_root
from tests.wire import Connection

METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"TRACE", b"PATCH", b"get", b"X" * 20]
PATHS = [
    b"/",
    b"/add",
    b"/abc",
    b"/api/v1/links",
    b"/api/v1/links/abc",
    b"/RPC2",
    b"/_goto/health",
    b"/_goto/metrics",
]
CONTENT_TYPES = [
    b"application/json",
    b"application/x-www-form-urlencoded",
    b"text/xml",
    b"multipart/form-data; boundary=x",
]

request_strategy = st.builds(
    lambda method, path, suffix, query, content_type, body, version: (
        method
        + b" "
        + path
        + suffix
        + (b"?" + query if query else b"")
        + b" "
        + version
        + b"\r\nHost: go.example\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    ),
    st.sampled_from(METHODS),
    st.sampled_from(PATHS),
    st.binary(max_size=12).map(lambda b: b.replace(b" ", b"%20").replace(b"\r", b"").replace(b"\n", b"")),
    st.binary(max_size=40).map(lambda b: b.replace(b" ", b"+").replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from(CONTENT_TYPES),
    st.one_of(
        st.binary(max_size=200),
        st.sampled_from(
            [
                b'{"url": "http://a/"}',
                b'{"url": 1}',
                b"[]",
                b"url=%FF%FE",
                b"url=http%3A%2F%2Fa%2F",
                b"<methodCall>",
            ]
        ),
    ),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
)


def make_site() -> tuple[GotoSite, URLStore]:
    store = URLStore({"abc": "http://a/"})
    metrics = Metrics("master")
    root = make_root(store, "go.example", metrics, RPCResource(store))
    return GotoSite(root, metrics, reactor=Clock(), store=store), store


@settings(max_examples=300, deadline=None)
@given(st.lists(request_strategy, min_size=1, max_size=3))
def test_no_request_gets_a_500(requests: list[bytes]) -> None:
    """Whatever mix of methods, paths, bytes and bodies arrives (pipelined), no answer is a 500."""
    site, store = make_site()
    connection = Connection(site)
    connection.send(b"".join(requests))
    statuses = re.findall(rb"HTTP/1\.[01] (\d{3}) ", connection.received())
    assert b"500" not in statuses
    assert store.lookup("abc") == "http://a/"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_bytes_never_crash_the_site(data: bytes) -> None:
    """Random bytes on a connection give a 400 or nothing, never a 500 or an exception."""
    site, _ = make_site()
    connection = Connection(site)
    connection.send(data)
    assert b" 500 " not in connection.received()
