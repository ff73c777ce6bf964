"""The master's store over XML-RPC: ``Store.Get(key) -> url`` and ``Store.Put(url) -> key`` at ``/RPC2``.

Errors are XML-RPC faults with stable codes (:mod:`goto_tw.errors`: 404 unknown key, 400 invalid URL,
503 unavailable, 401 not authorized), never tracebacks. With a shared secret configured, a call must
carry ``Authorization: Bearer SECRET``; the check happens before the body is parsed, so a caller
without it cannot even make the master parse XML.
"""

from __future__ import annotations

import hmac
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import xmlrpc
from twisted.web.server import NOT_DONE_YET, Request

from goto_tw.errors import GotoError, InvalidURL, NotAuthorized
from goto_tw.interfaces import IURLStore

log = Logger()

#: Fault code for a call with the wrong number or kind of arguments.
BAD_ARGUMENTS = 400


def _as_fault(failure: Failure) -> Failure:
    """Turn a store error into its fault; leave anything else to XMLRPC's logged generic fault."""
    error = failure.value
    if isinstance(error, GotoError):
        return Failure(xmlrpc.Fault(error.fault_code, str(error)))
    return failure


def _single_string(args: tuple[Any, ...], what: str) -> str:
    if len(args) != 1 or not isinstance(args[0], str):
        raise xmlrpc.Fault(BAD_ARGUMENTS, f"expected one string argument, the {what}")
    return args[0]


class StoreHandler(xmlrpc.XMLRPC):
    """The ``Store`` sub-handler: goto's ``Store.Get`` and ``Store.Put`` over an :class:`IURLStore`."""

    def __init__(self, store: IURLStore) -> None:
        super().__init__(allowNone=False)
        self._store = store

    def xmlrpc_Get(self, *args: Any) -> Deferred[str]:
        """Return the long URL stored under the key; fault 404 when there is none."""
        key = _single_string(args, "key")
        return self._store.get(key).addErrback(_as_fault)

    def xmlrpc_Put(self, *args: Any) -> Deferred[str]:
        """Store the URL (once durable) and return its key; fault 400 for a refused URL."""
        try:
            url = _single_string(args, "URL")
        except xmlrpc.Fault:
            raise xmlrpc.Fault(InvalidURL.fault_code, "expected one string argument, the URL") from None
        return self._store.put(url).addErrback(_as_fault)


class RPCResource(xmlrpc.XMLRPC):
    """``/RPC2``: the XML-RPC endpoint, optionally guarded by a shared secret."""

    def __init__(self, store: IURLStore, secret: bytes | None = None) -> None:
        super().__init__(allowNone=False)
        self._secret = secret
        self.putSubHandler("Store", StoreHandler(store))

    def render_POST(self, request: Request) -> Any:
        if self._secret is not None and not self._authorized(request):
            log.warn(
                "Refused an RPC call without the right secret from {peer}", peer=request.getClientAddress()
            )
            request.setHeader(b"content-type", b"text/xml; charset=utf-8")
            error = NotAuthorized("the RPC call needs the shared secret (Authorization: Bearer ...)")
            self._cbRender(xmlrpc.Fault(error.fault_code, str(error)), request)
            return NOT_DONE_YET
        return super().render_POST(request)

    def _authorized(self, request: Request) -> bool:
        assert self._secret is not None
        header = request.getHeader(b"authorization") or b""
        scheme, _, presented = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(presented.strip(), self._secret)
