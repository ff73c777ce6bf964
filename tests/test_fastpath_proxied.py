"""The fast path behind a wrapping transport that knows the client's real address (Twisted's
``haproxy:`` endpoint: the PROXY header names it): its access-log lines and its add gate (the
rate limit) name the client twisted.web names, not the proxy that connected."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import StringTransport
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory

from goto_tw.clients import peer_host
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


def test_a_proxy_header_naming_no_address_is_logged_and_limited_as_no_address() -> None:
    """Review 35: the PROXY header's source was taken as it came (Twisted's parser checks nothing): a
    newline in it forged access-log lines, a non-ASCII one broke the log's write (every line of the
    batch lost), and each string was a rate-limit bucket of its own. What is no IP address is "-"."""
    for source in (b'"\tforged\n9.9.9.9\t-\t"GET\t/admin"\t200', "\u00e9vil".encode(), b"not-an-ip-1"):
        for fast in (False, True):
            gated: list[str] = []
            master = Master(fast)

            def gate(client: str, head: bytes, gated: list[str] = gated) -> None:
                gated.append(client)

            master.site.add_gate = gate
            protocol = HAProxyWrappingFactory(master.site).buildProtocol(PROXY)
            protocol.makeConnection(StringTransport(peerAddress=PROXY))
            protocol.dataReceived(b"PROXY TCP4 " + source + b" 10.0.0.2 40000 80\r\n" + REQUESTS)
            master.complete()
            assert [line[0] for line in master.lines] == ["-", "-"], (source, fast)
            assert gated == (["-"] if fast else []), "the fast path's add gate: the same client"


def test_an_ipv6_zone_id_in_a_proxy_header_cannot_forge_log_lines() -> None:
    """Review 39: ``ipaddress`` takes any text after ``%`` in an IPv6 address as its zone ID, so a
    PROXY header's TCP6 source carried a newline and quotes into the access log on both paths. A
    zone ID that could not name an interface is dropped; the address stays."""
    source = b'fe80::1%\n6.6.6.6\t-\t-\t"GET\tforged"\t200'
    for fast in (False, True):
        master = Master(fast)
        protocol = HAProxyWrappingFactory(master.site).buildProtocol(PROXY)
        protocol.makeConnection(StringTransport(peerAddress=PROXY))
        protocol.dataReceived(b"PROXY TCP6 " + source + b" ::1 40000 80\r\n" + REQUESTS)
        master.complete()
        assert [line[0] for line in master.lines] == ["fe80::1", "fe80::1"], fast


def test_peer_hosts_are_ip_addresses_in_one_spelling_or_a_dash() -> None:
    assert peer_host(IPv4Address("TCP", "203.0.113.9", 1)) == "203.0.113.9"
    assert peer_host(IPv6Address("TCP", "::ffff:203.0.113.9", 1)) == "203.0.113.9"
    assert peer_host(IPv6Address("TCP", "2001:DB8:0:0::1", 1)) == "2001:db8::1"
    assert peer_host(IPv4Address("TCP", "1.2.3.4\nforged", 1)) == "-"
    assert peer_host(IPv6Address("TCP", "fe80::1%eth0", 1)) == "fe80::1%eth0", "a real zone is kept"
    assert peer_host(IPv6Address("TCP", "FE80::1%7", 1)) == "fe80::1%7"
    for zone in ("eth0\nforged", 'a"b', "\x1b[31m", "x" * 16, "\u00e9"):
        assert peer_host(IPv6Address("TCP", f"fe80::1%{zone}", 1)) == "fe80::1", zone
    assert peer_host(object()) == "-"


def _behind_a_trusted_proxy(fast: bool, peer: IPv4Address) -> list[str]:
    """The access-log clients of a redirect, a miss, an add and the form page, each with an
    X-Forwarded-For, from ``peer``, to a site that trusts 10.0.0.1 only."""
    from goto_tw.clients import ClientAddresses
    from goto_tw.site import GotoSite
    from tests.wire import Connection, ListAccessLog

    master = Master(fast)
    lines: list[Any] = []
    site = GotoSite(
        master.site.resource,
        master.metrics,
        reactor=master.clock,
        store=master.store if fast else None,
        host="go.example",
        access_log=ListAccessLog(lines),
        trusted=ClientAddresses(frozenset({"10.0.0.1"})),
    )
    connection = Connection(site, peer)
    forwarded = b"X-Forwarded-For: 198.51.100.%d\r\n"
    for number, target in enumerate((b"/abc", b"/zzzz", b"/add?url=https%3A%2F%2Fp.example%2F", b"/")):
        connection.send(b"GET " + target + b" HTTP/1.1\r\n" + forwarded % number + b"\r\n")
    master.log.complete_all()
    return [line[0] for line in lines]


def test_behind_a_trusted_proxy_the_access_log_names_the_forwarded_client() -> None:
    """Review 35: behind --trusted-proxy every access-log line named the proxy (the rate limit and
    the API-key log named the forwarded client). Both paths name the client now; a peer that is no
    trusted proxy is named itself, whatever header it sends."""
    expected = ["198.51.100.0", "198.51.100.1", "198.51.100.2", "198.51.100.3"]
    for fast in (True, False):
        assert _behind_a_trusted_proxy(fast, IPv4Address("TCP", "10.0.0.1", 5000)) == expected, fast
        stranger = _behind_a_trusted_proxy(fast, IPv4Address("TCP", "192.0.2.50", 5000))
        assert stranger == ["192.0.2.50"] * 4, fast
