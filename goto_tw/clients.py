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
from functools import lru_cache

from twisted.internet.address import IPv4Address, IPv6Address

#: Most addresses read from one header, from the right.
MAX_FORWARDED = 16

_FORWARDED_FOR = re.compile(rb"(?im)^x-forwarded-for:[ \t]*([^\r\n]*)\r?$")

#: An IPv6 zone ID kept in an address's normal form: what an interface name or index can be (Linux
#: names have at most 15 characters). ``ipaddress`` takes any text after ``%`` as a zone ID.
_ZONE_ID = re.compile(r"[A-Za-z0-9_.-]{1,15}")


#: Peer addresses whose normal form is remembered (only with ``--trusted-proxy``): a proxy's few.
_NORMAL_FORMS_KEPT = 1024


def normal_address(value: str) -> str:
    """The one spelling of an IP address that every comparison uses, or ``ValueError``.

    IPv6 in its compressed form, and an IPv4-mapped IPv6 address (what a ``tcp6:`` listener reports
    for an IPv4 peer, ``::ffff:127.0.0.1``) as the IPv4 address it maps: Python itself spells one
    ``::ffff:7f00:1`` or ``::ffff:127.0.0.1`` depending on its version.

    An IPv6 zone ID (``fe80::1%eth0``) is kept only if it could name an interface: ``ipaddress``
    takes any text after ``%`` (a PROXY header's newline or quote would reach the access log), so
    anything else is dropped, leaving the address.
    """
    address = ipaddress.ip_address(value)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        zone = address.scope_id
        if zone is not None and not _ZONE_ID.fullmatch(zone):
            return str(ipaddress.IPv6Address(int(address)))
    return str(address)


@lru_cache(maxsize=_NORMAL_FORMS_KEPT)
def _normal_peer(peer: str) -> str:
    """A connection's peer in :func:`normal_address` form (as it is, if it is no address)."""
    try:
        return normal_address(peer)
    except ValueError:
        return peer


def parse_proxy(value: str) -> str:
    """Check one ``--trusted-proxy`` value (an IP address); return its normal form."""
    return normal_address(value.strip())


@lru_cache(maxsize=_NORMAL_FORMS_KEPT)
def _checked_host(host: str) -> str:
    """``host`` in :func:`normal_address` form, or ``"-"`` if it is no IP address."""
    try:
        return normal_address(host)
    except ValueError:
        return "-"


def peer_host(address: object) -> str:
    """The IP address of a transport address in :func:`normal_address` form, or ``"-"``.

    Checked, not taken as it is: behind a ``haproxy:`` endpoint the address is what the PROXY
    header said, and Twisted's parser takes any text there (a newline forged access-log lines, a
    non-ASCII one broke the log's write, and every string was a rate-limit bucket of its own)."""
    if not isinstance(address, (IPv4Address, IPv6Address)):
        return "-"
    return _checked_host(address.host)


class ClientAddresses:
    """Finds the client address of a request given the trusted proxies (none: never the header)."""

    def __init__(self, trusted: frozenset[str] = frozenset()) -> None:
        self.trusted = trusted

    def is_trusted(self, peer: str) -> bool:
        """Whether ``peer`` (as the transport spells it) is a trusted proxy."""
        return bool(self.trusted) and _normal_peer(peer) in self.trusted

    def client(self, peer: str, forwarded: list[bytes]) -> str:
        """The client of a connection from ``peer`` with these ``X-Forwarded-For`` values."""
        if not forwarded or not self.is_trusted(peer):
            return peer
        entries = b",".join(forwarded).split(b",")[-MAX_FORWARDED:]
        for entry in reversed(entries):
            try:
                address = normal_address(entry.strip().decode("ascii"))
            except (ValueError, UnicodeDecodeError):
                return peer
            if address not in self.trusted:
                return address
        return peer

    def of_request(self, request: object) -> str:
        """The client of a twisted.web request."""
        peer = peer_host(request.getClientAddress())  # type: ignore[attr-defined]
        if not self.is_trusted(peer):
            return peer
        headers = request.requestHeaders.getRawHeaders(b"x-forwarded-for") or []  # type: ignore[attr-defined]
        return self.client(peer, headers)

    def of_head(self, peer: str, head: bytes) -> str:
        """The client of a raw request head (the fast path's)."""
        if not self.is_trusted(peer):
            return peer
        return self.client(peer, _FORWARDED_FOR.findall(head))
