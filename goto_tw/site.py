"""The HTTP site: ``twisted.web``'s ``Site`` plus our access log and request metrics.

Every finished request passes through :meth:`GotoSite.log` once: it is counted for ``/_goto/metrics``
and written to the access log as one Common Log Format line, carried by a ``twisted.logger`` event
whose fields (client, method, path, status, bytes, route) a JSON log shipper can index.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import Logger
from twisted.web.http import Request, datetimeToLogString
from twisted.web.resource import IResource
from twisted.web.server import Site

from goto_tw.keys import is_valid_key
from goto_tw.metrics import Metrics

access_log = Logger(namespace="goto.access")

#: First path segments with a route name of their own; any other valid key is a redirect.
_ROUTES = {b"": "form", b"add": "add", b"api": "api", b"RPC2": "rpc", b"_goto": "ops"}


def route_of(path: bytes) -> str:
    """Name the route a request path belongs to, for metric labels (a small, fixed set)."""
    first = path.split(b"?", 1)[0].split(b"/", 2)[1] if path.startswith(b"/") else b"?"
    route = _ROUTES.get(first)
    if route is not None:
        return route
    try:
        return "redirect" if is_valid_key(first.decode("ascii")) else "other"
    except UnicodeDecodeError:
        return "other"


def _printable(value: bytes) -> str:
    """Bytes from the client, made safe for one log line (no quotes, controls or newlines)."""
    text = value.decode("ascii", "backslashreplace")
    return "".join(ch if " " <= ch < "\x7f" and ch not in '"\\' else f"\\x{ord(ch):02x}" for ch in text)


class GotoSite(Site):
    """A ``Site`` whose access log is a structured event, and which counts every request."""

    def __init__(self, resource: IResource, metrics: Metrics, *, reactor: Any, timeout: float = 60) -> None:
        super().__init__(resource, reactor=reactor, timeout=timeout)
        self.metrics = metrics
        self._clock = reactor
        self._log_second = -1
        self._log_time = ""

    def log(self, request: Request) -> None:
        method = request.method.decode("ascii", "replace")
        route = route_of(request.uri)
        status = request.code
        metrics = self.metrics
        metrics.count_request(route, method, status)
        if status == 302 and route == "redirect":
            metrics.redirects += 1
        elif (status == 200 and route == "add" and method != "HEAD") or (status == 201 and route == "api"):
            metrics.adds += 1
        address = request.getClientAddress()
        client = address.host if isinstance(address, (IPv4Address, IPv6Address)) else "-"
        access_log.info(
            '{client} - - [{when}] "{method} {path} {protocol}" {status} {size}',
            client=client,
            when=self._timestamp(),
            method=_printable(request.method),
            path=_printable(request.uri),
            protocol=_printable(request.clientproto),
            status=status,
            size=request.sentLength or "-",
            route=route,
        )

    def _timestamp(self) -> str:
        """The Common Log Format time, formatted once per second at most."""
        now = self._clock.seconds()
        second = int(now)
        if second != self._log_second:
            self._log_second = second
            self._log_time = datetimeToLogString(now)[1:-1]
        return self._log_time
