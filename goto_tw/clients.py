"""Who the client is: the peer's address, or, behind a trusted reverse proxy, the address it names.

``X-Forwarded-For`` is believed only when the connection comes from an address given with
``--trusted-proxy``: the client is then the right-most address in the header that is not a
trusted proxy (each proxy appends the address it saw; anything left of that the client may have
written itself). A header that does not parse leaves the peer's address: a proxy that garbles it
is limited as one client, never trusted for more.
"""

from __future__ import annotations

import ipaddress
import re

from twisted.internet.address import IPv4Address, IPv6Address

#: Most addresses read from one header, from the right.
MAX_FORWARDED = 16

_FORWARDED_FOR = re.compile(rb"(?im)^x-forwarded-for:[ \t]*([^\r\n]*)\r?$")


def parse_proxy(value: str) -> str:
    """Check one ``--trusted-proxy`` value (an IP address); return its normal form."""
    return str(ipaddress.ip_address(value.strip()))


def peer_host(address: object) -> str:
    """The host of a transport address, or ``"-"``."""
    return address.host if isinstance(address, (IPv4Address, IPv6Address)) else "-"


class ClientAddresses:
    """Finds the client address of a request given the trusted proxies (none: never the header)."""

    def __init__(self, trusted: frozenset[str] = frozenset()) -> None:
        self.trusted = trusted

    def client(self, peer: str, forwarded: list[bytes]) -> str:
        """The client of a connection from ``peer`` with these ``X-Forwarded-For`` values."""
        if not self.trusted or peer not in self.trusted or not forwarded:
            return peer
        entries = b",".join(forwarded).split(b",")[-MAX_FORWARDED:]
        for entry in reversed(entries):
            try:
                address = str(ipaddress.ip_address(entry.strip().decode("ascii")))
            except (ValueError, UnicodeDecodeError):
                return peer
            if address not in self.trusted:
                return address
        return peer

    def of_request(self, request: object) -> str:
        """The client of a twisted.web request."""
        peer = peer_host(request.getClientAddress())  # type: ignore[attr-defined]
        if not self.trusted or peer not in self.trusted:
            return peer
        headers = request.requestHeaders.getRawHeaders(b"x-forwarded-for") or []  # type: ignore[attr-defined]
        return self.client(peer, headers)

    def of_head(self, peer: str, head: bytes) -> str:
        """The client of a raw request head (the fast path's)."""
        if not self.trusted or peer not in self.trusted:
            return peer
        return self.client(peer, _FORWARDED_FOR.findall(head))
