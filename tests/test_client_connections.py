"""Review 35: one client could hold every file descriptor (idle sockets, 60 s each, reopened once a
minute) and lock everyone else out. ``--max-client-connections`` bounds what one client holds."""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from goto_tw.clients import ClientAddresses
from goto_tw.metrics import Metrics
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from goto_tw.tap import Options, make_root
from tests.conftest import LogCapture
from tests.wire import Connection

ONE = IPv4Address("TCP", "198.51.100.1", 1)
OTHER = IPv4Address("TCP", "198.51.100.2", 1)


def _site(limit: int | None, trusted: frozenset[str] = frozenset()) -> tuple[GotoSite, Metrics]:
    store = URLStore({"abc": "https://a.example/"})
    metrics = Metrics("master")
    site = GotoSite(
        make_root(store, "go.example", metrics),
        metrics,
        reactor=Clock(),
        store=store,
        max_client_connections=limit,
        trusted=ClientAddresses(trusted),
    )
    return site, metrics


def test_a_client_past_its_connections_is_closed_and_another_is_not(log_events: LogCapture) -> None:
    site, metrics = _site(2)
    first, second = Connection(site, ONE), Connection(site, ONE)
    assert site.buildProtocol(ONE) is None, "the third is closed at once"
    assert site.buildProtocol(ONE) is None
    assert metrics.connections_refused == 2
    lines = [m for m in log_events.messages() if "Refused a connection" in m]
    assert len(lines) == 1 and "198.51.100.1" in lines[0], "logged once an interval"
    other = Connection(site, OTHER)
    other.send(b"GET /abc HTTP/1.1\r\n\r\n")
    assert other.received().startswith(b"HTTP/1.1 302 ")
    first.protocol.connectionLost(Failure(ConnectionDone()))
    third = Connection(site, ONE)  # one closed: room for one more
    third.send(b"GET /abc HTTP/1.1\r\n\r\n")
    assert third.received().startswith(b"HTTP/1.1 302 ")
    assert site.buildProtocol(ONE) is None
    for connection in (second, third, other):
        connection.protocol.connectionLost(Failure(ConnectionDone()))
    assert site._open == {}, "nothing left behind for closed clients"


def test_an_ipv6_client_is_its_64_and_a_trusted_proxy_is_exempt() -> None:
    site, _ = _site(1, trusted=frozenset({"198.51.100.1"}))
    Connection(site, IPv6Address("TCP", "2001:db8:1:2::1", 1))
    assert site.buildProtocol(IPv6Address("TCP", "2001:db8:1:2::ffff", 1)) is None
    assert site.buildProtocol(IPv6Address("TCP", "2001:db8:1:3::1", 1)) is not None
    for _ in range(5):
        assert site.buildProtocol(ONE) is not None, "every client behind the proxy comes from it"


def test_the_option_default_and_off() -> None:
    options = Options()
    options.parseOptions([])
    assert options["max-client-connections"] == 256
    options = Options()
    options.parseOptions(["--max-client-connections", "off"])
    assert options["max-client-connections"] is None
    site, _ = _site(None)
    assert all(site.buildProtocol(ONE) is not None for _ in range(300))
