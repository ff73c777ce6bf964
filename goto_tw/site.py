"""The HTTP site: ``twisted.web``'s ``Site`` wired to the fast path, plus the access log and metrics.

Wiring and accounting only. The fast path's channel (:mod:`goto_tw.fastpath`) gets its answers
from the web layer's :class:`~goto_tw.web.FastAnswers`; every answered request, whichever path
answered it, is counted for ``/_goto/metrics`` and written to the access log
(:mod:`goto_tw.accesslog`) here, once: twisted.web's through :meth:`GotoSite.log`, the fast path's
through :meth:`GotoSite.record_fast` once the answer is written.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

from twisted.web.http import Request
from twisted.web.resource import IResource
from twisted.web.server import Site

from goto_tw.accesslog import AccessLog, EventAccessLog
from goto_tw.clients import ClientAddresses, peer_host
from goto_tw.fastpath import FastAnswer, FastRedirectChannel, IFastResponder
from goto_tw.interfaces import IClickCounter, ILocalLookup, IURLStore
from goto_tw.keys import is_valid_key
from goto_tw.limits import ANSWER_DEADLINE, BoundedRequest, ConnectionLogLines
from goto_tw.metrics import Metrics
from goto_tw.outbox import Outbox
from goto_tw.web import (
    DEFAULT_REDIRECT_STATUS,
    REDIRECT_STATUSES,
    FastAnswers,
    IRPCCalls,
    was_answered_with_a_key,
)

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


class GotoSite(Site):
    """A ``Site`` with the redirect fast path, our access log, and a count of every request."""

    # A plain HTTP/1.1 channel: no HTTP/2 negotiation wrapper, which only matters over TLS (ALPN).
    protocol = FastRedirectChannel  # type: ignore[assignment]
    requestFactory = BoundedRequest
    #: The fast path's check before an add (a rate limit), or ``None``.
    add_gate: Callable[[str, bytes], Optional[FastAnswer]] | None = None
    #: ``--cors-origin``: the refusals written before any resource sees a request carry CORS too.
    cors_origins: frozenset[str] = frozenset()

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
        clicks: IClickCounter | None = None,
        redirect_status: int = DEFAULT_REDIRECT_STATUS,
        answer_deadline: float = ANSWER_DEADLINE,
        hold_answers: bool = False,
        trusted: ClientAddresses | None = None,
    ) -> None:
        """With a ``store`` that can look keys up locally (and the ``host`` of short URLs),
        redirects and adds take the fast path; without one every request takes twisted.web's
        general path. ``timeout`` closes idle connections, so slow or silent clients cannot hold
        sockets for ever. ``answer_deadline`` bounds how long either path waits for the store's
        answer to one request (a slave's should exceed what its RPC may take) before it closes
        the connection. With ``hold_answers`` the fast path's answers of one reactor turn are
        sent together at its end (:mod:`goto_tw.outbox`); without, each at once. Behind the
        ``trusted`` proxies (``--trusted-proxy``), a request's access-log line names the client
        their ``X-Forwarded-For`` names, on either path."""
        super().__init__(resource, reactor=reactor, timeout=timeout)
        self._trusted = trusted
        self.outbox = Outbox(reactor) if hold_answers else None
        self.answer_deadline = answer_deadline
        #: The lines about connections ended by their client's doing, shared by every connection.
        self.connection_log_lines = ConnectionLogLines(reactor)
        self.metrics = metrics
        self.access_log: AccessLog = access_log if access_log is not None else EventAccessLog(reactor)
        local = ILocalLookup(store, None)
        self.responder: IFastResponder | None = None
        if store is not None and local is not None:
            answers = FastAnswers(store, local, host, reactor, clicks, redirect_status)
            # ``POST /RPC2`` goes to the resource twisted.web would route it to (a root's static child).
            answers.rpc_calls = IRPCCalls(getattr(resource, "children", {}).get(b"RPC2"), None)
            self.responder = answers

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        if channel is None:
            return None
        channel.answer_deadline = self.answer_deadline  # on either path
        channel.log_lines = self.connection_log_lines
        if self.responder is not None:
            channel.responder = self.responder
            channel.record = self.record_fast
            channel.client_of = peer_host  # the peer a wrapping transport reports, at the first bytes
            if self._trusted is not None and self._trusted.trusted:
                channel.forwarded_client = self._trusted.of_head  # the client behind a trusted proxy
            channel.add_gate = self.add_gate
            channel.clock = self.reactor
            channel.outbox = self.outbox
        return channel

    def log(self, request: Request) -> None:
        """twisted.web's hook, called once per finished request of the general path."""
        self._record(
            self._trusted.of_request(request)
            if self._trusted is not None
            else peer_host(request.getClientAddress()),
            request.method.decode("ascii", "replace"),
            request.uri,
            request.clientproto,
            request.code,
            request.sentLength or "-",
            was_answered_with_a_key(request),
        )

    def record_fast(
        self, client: str, method: str, path: bytes, route: str, status: int, size: Union[int, str]
    ) -> None:
        """Count one answer the fast path has written and write its access-log line, exactly as
        :meth:`log` does for the general path (the route is known: no need to work it out)."""
        metrics = self.metrics
        metrics.count_request(route, method, status)
        if status in REDIRECT_STATUSES:
            metrics.redirects += 1
        elif status == 200 and route == "add":
            metrics.adds += 1
        self.access_log.record(client, method, path, b"HTTP/1.1", status, size, route)

    def _record(
        self,
        client: str,
        method: str,
        path: bytes,
        protocol: bytes,
        status: int,
        size: int | str,
        added: bool,
    ) -> None:
        """Count one request answered by the general path and write its access-log line; ``added``:
        it was an add answered with its key (the form page, a 200 on ``/add`` too, is not)."""
        route = route_of(path)
        metrics = self.metrics
        metrics.count_request(route, method, status)
        metrics.general_requests[route] += 1
        if status in REDIRECT_STATUSES and route == "redirect":
            metrics.redirects += 1
        elif added:
            metrics.adds += 1
        self.access_log.record(client, method, path, protocol, status, size, route)
