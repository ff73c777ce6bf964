"""Driving a real ``Site`` byte for byte over a ``StringTransport``: no sockets, no reactor."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.server import Site

from goto_tw.interfaces import IURLStore
from goto_tw.metrics import Metrics
from goto_tw.site import GotoSite
from goto_tw.tap import make_root

CLIENT = IPv4Address("TCP", "192.0.2.7", 40000)


class Connection:
    """One client connection to ``site``; ``send`` feeds bytes, ``received`` drains the answer."""

    def __init__(self, site: Site, client: IPv4Address = CLIENT) -> None:
        self.protocol = site.buildProtocol(client)
        assert self.protocol is not None
        self.transport = StringTransport(peerAddress=client)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def received(self) -> bytes:
        data: bytes = self.transport.value()
        self.transport.clear()
        return data


def exchange(site: Site, data: bytes, client: IPv4Address = CLIENT) -> bytes:
    """Send ``data`` on a new connection (from ``client``) and return everything the site answered."""
    connection = Connection(site, client)
    connection.send(data)
    return connection.received()


class ListAccessLog:
    """An access log that keeps its lines' fields."""

    def __init__(self, lines: list[tuple[Any, ...]]) -> None:
        self.lines = lines

    def record(self, *fields: Any) -> None:
        self.lines.append(fields)


def goto_site(
    store: IURLStore,
    *,
    fast: bool = True,
    clock: Any = None,
    host: str = "go.example",
    redirect_status: int = 302,
    **site: Any,
) -> tuple[GotoSite, Metrics]:
    """goto's site over ``store`` (a master's), with the fast path on or off (then every request
    takes twisted.web's general path); ``site`` are further ``GotoSite`` arguments."""
    metrics = Metrics("master")
    built = GotoSite(
        make_root(store, host, metrics, redirect_status=redirect_status),
        metrics,
        reactor=clock if clock is not None else Clock(),
        store=store if fast else None,
        host=host,
        redirect_status=redirect_status,
        **site,
    )
    return built, metrics
