"""The fast path behind a wrapping transport that knows the client's real address (Twisted's
``haproxy:`` endpoint: the PROXY header names it): its access-log lines and its add gate (the
rate limit) name the client twisted.web names, not the proxy that connected."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory

from tests.test_rpc_fastpath import Master

PROXY = IPv4Address("TCP", "10.0.0.1", 5000)
PROXY_HEADER = b"PROXY TCP4 203.0.113.9 10.0.0.2 40000 80\r\n"
REQUESTS = b"GET /abc HTTP/1.1\r\n\r\nGET /add?url=https%3A%2F%2Fn.example%2F HTTP/1.1\r\n\r\n"


def proxied(fast: bool, gated: list[str]) -> list[Any]:
    master = Master(fast)

    def gate(client: str, head: bytes) -> None:
        gated.append(client)

    master.site.add_gate = gate
    protocol = HAProxyWrappingFactory(master.site).buildProtocol(PROXY)
    protocol.makeConnection(StringTransport(peerAddress=PROXY))
    protocol.dataReceived(PROXY_HEADER + REQUESTS)
    master.complete()
    return [line[0] for line in master.lines]


def test_behind_the_proxy_protocol_the_fast_path_names_the_real_client() -> None:
    gated: list[str] = []
    assert proxied(False, []) == ["203.0.113.9", "203.0.113.9"]  # twisted.web's
    assert proxied(True, gated) == ["203.0.113.9", "203.0.113.9"]
    assert gated == ["203.0.113.9"]
