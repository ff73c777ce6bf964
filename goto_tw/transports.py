"""The transport beneath a protocol's: its socket's, found through the wrapping transports above it.

A protocol's ``transport`` may be a wrapper (Twisted's TLS, the PROXY header's ``haproxy:``), each
a ``ProtocolWrapper`` holding the transport beneath as its own ``transport``. Settings that belong
to the socket (Nagle's algorithm, the read size) are made on the one at the bottom.
"""

from __future__ import annotations

from typing import Any, Callable

#: Wrapping transports looked through: more than any endpoint string stacks.
MAX_WRAPPERS = 4


def beneath(transport: object, accepts: Callable[[object], bool]) -> Any:
    """The first of ``transport`` and the transports beneath it, at most :data:`MAX_WRAPPERS`
    wrappers down, that ``accepts`` takes; ``None`` if there is none (a test's ``StringTransport``)
    or a chain of wrappers goes deeper (or names itself)."""
    for _ in range(MAX_WRAPPERS + 1):
        if transport is None or accepts(transport):
            return transport
        transport = getattr(transport, "transport", None)
    return None
