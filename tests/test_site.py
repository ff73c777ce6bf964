"""The site: the access log (Common Log Format, structured fields) and request metrics."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from goto_tw.metrics import Metrics
from goto_tw.site import GotoSite, route_of
from goto_tw.store import URLStore
from goto_tw.tap import make_root
from tests.conftest import LogCapture
from tests.wire import exchange


def make_site(store: URLStore | None = None) -> tuple[GotoSite, Metrics, Clock]:
    clock = Clock()
    clock.advance(1_790_000_000)
    metrics = Metrics("master")
    store = store if store is not None else URLStore({"abc": "https://a.example/"})
    return GotoSite(make_root(store, "go.example", metrics), metrics, reactor=clock), metrics, clock


@pytest.mark.parametrize(
    ("path", "route"),
    [
        (b"/", "form"),
        (b"/add?url=x", "add"),
        (b"/abc", "redirect"),
        (b"/abc?x=1", "redirect"),
        (b"/api/v1/links", "api"),
        (b"/RPC2", "rpc"),
        (b"/_goto/metrics", "ops"),
        (b"/favicon.ico", "other"),
        (b"/\xff", "other"),
        (b"*", "other"),
    ],
)
def test_routes_are_a_small_fixed_set(path: bytes, route: str) -> None:
    """Metric labels come from a fixed set of routes, never from raw client paths."""
    assert route_of(path) == route


def test_access_log_line_is_common_log_format_with_fields(log_events: LogCapture) -> None:
    """Each request logs one CLF line, and the event carries the facts as fields."""
    site, _, _ = make_site()
    exchange(site, b"GET /abc HTTP/1.1\r\nHost: go.example\r\n\r\n")
    [event] = [e for e in log_events.events if e.get("log_namespace") == "goto.access"]
    assert log_events.messages()[-1] == '192.0.2.7 - - [21/Sep/2026:14:13:20 +0000] "GET /abc HTTP/1.1" 302 -'
    assert {k: event[k] for k in ("client", "method", "path", "status", "route")} == {
        "client": "192.0.2.7",
        "method": "GET",
        "path": "/abc",
        "status": 302,
        "route": "redirect",
    }


def test_access_log_escapes_hostile_paths(log_events: LogCapture) -> None:
    """Quotes and backslashes in a request line cannot forge or break a log line.

    (Control bytes never get this far: Twisted refuses such a request line with a 400.)
    """
    site, _, _ = make_site()
    exchange(site, b'GET /a"b\\c HTTP/1.1\r\nHost: x\r\n\r\n')
    line = [m for m in log_events.messages() if '" 404' in m][-1]
    assert '"GET /a\\x22b\\x5cc HTTP/1.1" 404' in line


def test_requests_are_counted_by_route_method_and_status() -> None:
    """Metrics count requests, redirects and adds as users make them."""
    site, metrics, _ = make_site()
    exchange(site, b"GET /abc HTTP/1.1\r\nHost: x\r\n\r\n")
    exchange(site, b"HEAD /abc HTTP/1.1\r\nHost: x\r\n\r\n")
    exchange(site, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    exchange(site, b"GET /add?url=https%3A%2F%2Fb.example%2F HTTP/1.1\r\nHost: x\r\n\r\n")
    assert metrics.requests[("redirect", "GET", 302)] == 1
    assert metrics.requests[("redirect", "HEAD", 302)] == 1
    assert metrics.requests[("redirect", "GET", 404)] == 1
    assert metrics.requests[("add", "GET", 200)] == 1
    assert (metrics.redirects, metrics.adds) == (2, 1)


@pytest.mark.parametrize("fast", [True, False])
def test_idle_connections_time_out(fast: bool) -> None:
    """A connection that sends nothing after its last answer is closed after the idle timeout (60 s),
    not before: the request deadline (30 s) is not running, since no request is under way."""
    from tests.wire import Connection

    clock = Clock()
    metrics = Metrics("master")
    store = URLStore({"abc": "https://a.example/"})
    site = GotoSite(
        make_root(store, "go.example", metrics), metrics, reactor=clock, store=store if fast else None
    )
    connection = Connection(site)
    connection.send(b"GET /abc HTTP/1.1\r\nHost: x\r\n\r\n")
    assert connection.received().startswith(b"HTTP/1.1 302 Found")
    clock.advance(59)
    assert not connection.transport.disconnecting, "closed before the idle timeout"
    clock.advance(2)
    assert connection.transport.disconnecting
