"""How a slave connects to its master: straight to an IP address, with Nagle's algorithm off.

Twisted's ``Agent`` writes a request's head and its body in separate writes. On a client socket
with Nagle's algorithm on (Twisted's default for outgoing connections) the body then waits for the
master to acknowledge the head, and the master delays that acknowledgement: every RPC call paid
tens of milliseconds of idle time. ``HostnameEndpoint`` also waits its 0.3 s attempt delay before
reporting a refused connection, even to ``127.0.0.1``, which a probe of a stopped master then paid.

The connection pool's factories are made quiet: by default each new connection logs a "Starting
factory" and "Stopping factory" pair, which during an outage is a pair of lines per probe.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint, ITCPTransport
from twisted.internet.protocol import Factory
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from goto_tw.transports import beneath


@implementer(IStreamClientEndpoint)
class _NoDelay:
    """An endpoint whose TCP connections have Nagle's algorithm turned off, made by quiet factories."""

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        if isinstance(protocolFactory, Factory):
            protocolFactory.noisy = False
        connected: Deferred[IProtocol] = self._endpoint.connect(protocolFactory)
        return connected.addCallback(_no_delay)


def _no_delay(protocol: IProtocol) -> IProtocol:
    transport = beneath(getattr(protocol, "transport", None), ITCPTransport.providedBy)  # under TLS: below
    if transport is not None:
        transport.setTcpNoDelay(True)
    return protocol


@implementer(IAgentEndpointFactory)
class MasterEndpointFactory:
    """The endpoints an ``Agent`` uses to reach the master (see the module doc)."""

    def __init__(self, reactor: Any, connect_timeout: float) -> None:
        self._reactor = reactor
        self._timeout = connect_timeout
        self._tls = BrowserLikePolicyForHTTPS()

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            endpoint: IStreamClientEndpoint = HostnameEndpoint(
                self._reactor, uri.host, uri.port, timeout=self._timeout
            )
        else:
            kind = TCP4ClientEndpoint if address.version == 4 else TCP6ClientEndpoint
            endpoint = kind(self._reactor, host, uri.port, timeout=self._timeout)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self._tls.creatorForNetloc(uri.host, uri.port), endpoint)
        return _NoDelay(endpoint)
