"""The HTTP site: ``twisted.web``'s ``Site`` plus the redirect fast path, access log and metrics.

Every answered request passes through :meth:`GotoSite._record` once, whichever path answered it:
it is counted for ``/_goto/metrics`` and written to the access log (:mod:`goto_tw.accesslog`).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import Request, datetimeToString, parse_qs
from twisted.web.resource import IResource
from twisted.web.server import Site

from goto_tw.accesslog import AccessLog, EventAccessLog
from goto_tw.errors import GotoError, InvalidURL
from goto_tw.fastpath import FastRedirectChannel, parse_simple_get, redirect_response, text_response
from goto_tw.interfaces import ILocalLookup, IURLStore
from goto_tw.keys import is_valid_key
from goto_tw.limits import BoundedRequest
from goto_tw.metrics import Metrics
from goto_tw.web import NOT_UTF8

log = Logger()

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


def _client_of(address: object) -> str:
    return address.host if isinstance(address, (IPv4Address, IPv6Address)) else "-"


class GotoSite(Site):
    """A ``Site`` with the redirect fast path, our access log, and a count of every request."""

    # A plain HTTP/1.1 channel: no HTTP/2 negotiation wrapper, which only matters over TLS (ALPN).
    protocol = FastRedirectChannel  # type: ignore[assignment]
    requestFactory = BoundedRequest

    def __init__(
        self,
        resource: IResource,
        metrics: Metrics,
        *,
        reactor: Any,
        store: IURLStore | None = None,
        host: str = "localhost",
        access_log: AccessLog | None = None,
        timeout: float = 60,
    ) -> None:
        """With a ``store`` (and the ``host`` of short URLs), redirects and adds take the fast
        path; without one every request takes twisted.web's general path. ``timeout`` closes
        idle connections, so slow or silent clients cannot hold sockets for ever."""
        super().__init__(resource, reactor=reactor, timeout=timeout)
        self.metrics = metrics
        self.access_log: AccessLog = access_log if access_log is not None else EventAccessLog(reactor)
        self._store = store
        local = ILocalLookup(store, None)
        self._lookup: Callable[[str], str | None] = local.lookup if local is not None else (lambda key: None)
        self._host = host
        self._clock = reactor
        self._date_second = -1
        self._date = b""

    def log(self, request: Request) -> None:
        """twisted.web's hook, called once per finished request of the general path."""
        self._record(
            _client_of(request.getClientAddress()),
            request.method.decode("ascii", "replace"),
            request.uri,
            request.clientproto,
            request.code,
            request.sentLength or "-",
        )

    def fast_redirect(self, head: bytes, channel: FastRedirectChannel) -> bytes | None:
        """Answer a request head on the fast path, or ``None`` to leave it to twisted.web.

        Called by :class:`~goto_tw.fastpath.FastRedirectChannel`; logs and counts what it answers
        exactly as :meth:`log` does for the general path.
        """
        parsed = parse_simple_get(head)
        if parsed is None:
            return None
        method, key = parsed
        url = self._lookup(key)
        if url is None:
            return None
        metrics = self.metrics
        metrics.count_request("redirect", method, 302)
        metrics.redirects += 1
        self.access_log.record(
            self._client(channel), method, b"/" + key.encode("ascii"), b"HTTP/1.1", 302, "-", "redirect"
        )
        return redirect_response(url.encode("ascii"), self._now())

    def fast_add(
        self, method: str, target: bytes, body: bytes, channel: FastRedirectChannel
    ) -> bytes | Deferred[bytes] | None:
        """Answer ``GET /add?url=`` or a form ``POST /add`` on the fast path, as ``AddResource`` does.

        ``None`` (twisted.web answers) when there is no ``url`` (the form page). Otherwise the
        answer, or a Deferred of it once the pair is durable, with the very bytes, log line and
        counts of the general path; the arguments are parsed with twisted.web's own ``parse_qs``.
        """
        if self._store is None:
            return None
        args = parse_qs(target.split(b"?", 1)[1] if method == "GET" else body, 1)
        raw = (args.get(b"url") or [b""])[0]
        if not raw:
            return None
        date = self._now()  # twisted.web dates a response when the request is processed
        client = self._client(channel)

        def answer(status: int, text: str, retry_after: int | None = None) -> bytes:
            data = text.encode("utf-8") + b"\n"
            self._record(client, method, target, b"HTTP/1.1", status, len(data))
            return text_response(status, date, data, retry_after)

        try:
            url = raw.decode("utf-8")
        except UnicodeDecodeError:
            return answer(InvalidURL.http_status, NOT_UTF8)

        def stored(key: str) -> bytes:
            return answer(200, f"http://{self._host}/{key}")

        def failed(failure: Failure) -> bytes:
            error = failure.value
            if isinstance(error, GotoError):
                return answer(error.http_status, str(error), error.retry_after)
            log.failure("Failed to answer {method} {uri}", failure, method=method, uri=target)
            return answer(500, "Internal error: the server log has the details.")

        return self._store.put(url).addCallbacks(stored, failed)

    def _now(self) -> bytes:
        """The Date header of now, formatted once per second at most."""
        now = self._clock.seconds()
        if int(now) != self._date_second:
            self._date_second = int(now)
            self._date = datetimeToString(now)
        return self._date

    def _client(self, channel: FastRedirectChannel) -> str:
        client = channel.client
        if client is None:
            client = channel.client = _client_of(channel.transport.getPeer())  # type: ignore[union-attr]
        return client

    def _record(
        self, client: str, method: str, path: bytes, protocol: bytes, status: int, size: int | str
    ) -> None:
        """Count one answered request and write its access-log line."""
        route = route_of(path)
        metrics = self.metrics
        metrics.count_request(route, method, status)
        if status == 302 and route == "redirect":
            metrics.redirects += 1
        elif (status == 200 and route == "add" and method != "HEAD") or (status == 201 and route == "api"):
            metrics.adds += 1
        self.access_log.record(client, method, path, protocol, status, size, route)
