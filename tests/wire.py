"""Driving a real ``Site`` byte for byte over a ``StringTransport``: no sockets, no reactor."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.web.server import Site

CLIENT = IPv4Address("TCP", "192.0.2.7", 40000)


class Connection:
    """One client connection to ``site``; ``send`` feeds bytes, ``received`` drains the answer."""

    def __init__(self, site: Site) -> None:
        self.protocol = site.buildProtocol(CLIENT)
        assert self.protocol is not None
        self.transport = StringTransport(peerAddress=CLIENT)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def received(self) -> bytes:
        data: bytes = self.transport.value()
        self.transport.clear()
        return data


def exchange(site: Site, data: bytes) -> bytes:
    """Send ``data`` on a new connection and return everything the site answered."""
    connection = Connection(site)
    connection.send(data)
    return connection.received()
