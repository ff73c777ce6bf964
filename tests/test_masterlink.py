"""How slaves connect to the master: the endpoint chosen per address, Nagle's algorithm off."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport
from twisted.web.client import URI
from zope.interface import implementer

from goto_tw.masterlink import MasterEndpointFactory, _no_delay
from tests.conftest import LogCapture
from tests.helpers import result_of


def endpoint_for(url: bytes) -> Any:
    wrapped: Any = MasterEndpointFactory(MemoryReactor(), 5.0).endpointForURI(URI.fromBytes(url))
    return wrapped._endpoint


def test_ip_addresses_are_connected_to_directly() -> None:
    """An IP literal gets a plain TCP endpoint: no name resolution, no happy-eyeballs delay."""
    assert isinstance(endpoint_for(b"http://127.0.0.1:8081/RPC2"), TCP4ClientEndpoint)
    assert isinstance(endpoint_for(b"http://[::1]:8081/RPC2"), TCP6ClientEndpoint)
    assert isinstance(endpoint_for(b"http://master.example:8081/RPC2"), HostnameEndpoint)


def first_bytes_sent(url: bytes, factory: Factory | None = None) -> bytes:
    """Connect to ``url``'s master through the endpoint, and return what the client sends first."""
    reactor = MemoryReactorClock()
    endpoint = MasterEndpointFactory(reactor, 5.0).endpointForURI(URI.fromBytes(url))
    endpoint.connect(factory or Factory.forProtocol(Protocol))
    reactor.advance(0)
    [(host, port, wrapping, *_)] = reactor.tcpClients
    protocol = wrapping.buildProtocol(IPv4Address("TCP", host, port))
    assert protocol is not None
    transport = TCPTransport()
    protocol.makeConnection(transport)
    return transport.value()  # type: ignore[no-any-return]


# pyOpenSSL under Twisted 25.5 (what PyPy 3.9 gets) warns while Twisted builds a TLS context.
@pytest.mark.filterwarnings("ignore:Attempting to mutate a Context after a Connection:DeprecationWarning")
def test_https_masters_are_reached_over_tls_for_their_host_name() -> None:
    """An https:// master gets a TLS handshake, for its own name (SNI, which the certificate is then
    checked against), before any HTTP; an http:// master gets none."""
    hello = first_bytes_sent(b"https://master.example:8443/RPC2")
    assert hello[:2] == b"\x16\x03", "a TLS handshake record"
    assert b"master.example" in hello
    assert first_bytes_sent(b"http://master.example:8080/RPC2") == b""


def test_the_pool_factories_are_quiet(log_events: LogCapture) -> None:
    """A connection to the master logs no "Starting factory"/"Stopping factory" pair (during an
    outage that was two lines per probe, one probe a second)."""
    reactor = MemoryReactorClock()
    endpoint = MasterEndpointFactory(reactor, 5.0).endpointForURI(
        URI.fromBytes(b"http://127.0.0.1:8080/RPC2")
    )
    endpoint.connect(Factory.forProtocol(Protocol))
    [(_, _, wrapping, *_)] = reactor.tcpClients
    wrapping.doStart()  # what a real connector does when it connects
    wrapping.doStop()
    assert not [m for m in log_events.messages() if "factory" in m.lower()]


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


def test_under_tls_the_tcp_transport_beneath_gets_nagle_off() -> None:
    """An ``https`` master: the protocol's transport is TLS's wrapper; the TCP one is beneath it."""

    class Wrapper(StringTransport):
        def __init__(self, beneath: Any) -> None:
            super().__init__()
            self.transport = beneath

    protocol = Protocol()
    tcp = TCPTransport()
    protocol.makeConnection(Wrapper(tcp))
    assert result_of(_succeed(protocol)) is protocol
    assert tcp.no_delay


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


@pytest.mark.parametrize("url", [b"http://127.0.0.1:8081/RPC2", b"http://[::1]:8081/RPC2"])
def test_a_master_given_as_an_address_gets_the_connect_timeout(url: bytes) -> None:
    """An IP literal's connection attempt is abandoned after the connect timeout, as a host name's
    is (HostnameEndpoint's), not after the reactor's 30 s default."""
    reactor = MemoryReactor()
    MasterEndpointFactory(reactor, 2.5).endpointForURI(URI.fromBytes(url)).connect(
        Factory.forProtocol(Protocol)
    )
    [(_, _, _, timeout, _)] = reactor.tcpClients
    assert timeout == 2.5
