"""How slaves connect to the master: the endpoint chosen per address, Nagle's algorithm off."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.web.client import URI
from zope.interface import implementer

from goto_tw.masterlink import MasterEndpointFactory, _no_delay
from tests.helpers import result_of


def endpoint_for(url: bytes) -> Any:
    wrapped: Any = MasterEndpointFactory(MemoryReactor(), 5.0).endpointForURI(URI.fromBytes(url))
    return wrapped._endpoint


def test_ip_addresses_are_connected_to_directly() -> None:
    """An IP literal gets a plain TCP endpoint: no name resolution, no happy-eyeballs delay."""
    assert isinstance(endpoint_for(b"http://127.0.0.1:8081/RPC2"), TCP4ClientEndpoint)
    assert isinstance(endpoint_for(b"http://[::1]:8081/RPC2"), TCP6ClientEndpoint)
    assert isinstance(endpoint_for(b"http://master.example:8081/RPC2"), HostnameEndpoint)


# pyOpenSSL under Twisted 25.5 (what PyPy 3.9 gets) warns while Twisted builds a TLS context.
@pytest.mark.filterwarnings("ignore:Attempting to mutate a Context after a Connection:DeprecationWarning")
def test_https_masters_are_reached_over_tls() -> None:
    """An https:// master is wrapped in TLS (not sent plain text to port 443)."""
    assert not isinstance(endpoint_for(b"https://127.0.0.1/RPC2"), TCP4ClientEndpoint)


@implementer(ITCPTransport)
class TCPTransport(StringTransport):
    """A TCP transport that remembers its socket options."""

    no_delay = False
    keep_alive = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled

    def getTcpNoDelay(self) -> bool:
        return self.no_delay

    def setTcpKeepAlive(self, enabled: bool) -> None:
        self.keep_alive = enabled

    def getTcpKeepAlive(self) -> bool:
        return self.keep_alive

    def loseWriteConnection(self) -> None:
        self.loseConnection()


def test_connections_have_nagle_off() -> None:
    """Connected protocols get TCP_NODELAY: a request's head and body never wait on each other."""
    protocol = Protocol()
    transport = TCPTransport()
    protocol.makeConnection(transport)
    assert result_of(_succeed(protocol)) is protocol
    assert transport.no_delay


def _succeed(protocol: Protocol) -> Any:
    from twisted.internet.defer import succeed

    return succeed(protocol).addCallback(_no_delay)


def test_the_endpoint_connects_through_the_reactor() -> None:
    """The wrapped endpoint still opens a TCP connection to the master's address and port."""
    reactor = MemoryReactor()
    endpoint = MasterEndpointFactory(reactor, 5.0).endpointForURI(
        URI.fromBytes(b"http://127.0.0.1:8081/RPC2")
    )
    endpoint.connect(Factory.forProtocol(Protocol))
    [(host, port, *_)] = reactor.tcpClients
    assert (host, port) == ("127.0.0.1", 8081)
