"""The slave's side of the RPC: calls ``Store.Get``/``Store.Put`` on the master over persistent HTTP.

``twisted.web.xmlrpc.Proxy`` opens a new TCP connection for every call (HTTP/1.0); this client sends
the same XML-RPC bodies over a treq ``HTTPClient`` whose agent keeps HTTP/1.1 connections open in a
pool, and bounds every call with a timeout on an injected clock. ``bench/rpc_client.py`` measures
the two against each other.
"""

from __future__ import annotations

import xmlrpc.client as xmlrpclib
from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from twisted.web.client import RequestTransmissionFailed, ResponseFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers
from zope.interface import implementer

from goto_tw.errors import (
    ERRORS_BY_FAULT_CODE,
    MasterRefused,
    MasterUnreachable,
    NotAuthorized,
    StoreUnavailable,
)
from goto_tw.interfaces import IURLStore
from goto_tw.metrics import Metrics

#: Failures that mean "the master did not answer", as opposed to "the master said no".
_UNREACHABLE = (
    ConnectError,
    ConnectionClosed,
    ResponseFailed,
    ResponseNeverReceived,
    RequestTransmissionFailed,
    TimeoutError,
    CancelledError,
)


#: Most calls sent in one ``system.multicall`` (the master accepts up to 1000).
MAX_BATCH = 500


def master_rpc_url(master: str) -> str:
    """Turn ``--master`` (``HOST:PORT`` or a full ``http://HOST:PORT/RPC2`` URL) into the RPC URL."""
    if "://" in master:
        return master
    return f"http://{master}/RPC2"


class HTTPPoster(Protocol):
    """What RemoteStore needs of an HTTP client: treq's ``HTTPClient`` (or ``StubTreq`` in tests)."""

    def post(self, url: str, /, *, data: bytes, headers: Headers) -> Deferred[Any]:
        """POST ``data`` to ``url``; fire with a treq response."""


@implementer(IURLStore)
class RemoteStore:
    """The master's store seen through XML-RPC: every call goes over the network, nothing is cached.

    Each call fails with the error the master's fault code names (``KeyNotFound``, ``InvalidURL``...)
    or, when no answer came in time, :class:`MasterUnreachable`.
    """

    def __init__(
        self,
        http: HTTPPoster,
        url: str,
        clock: IReactorTime,
        *,
        timeout: float,
        secret: bytes | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._http = http
        self._metrics = metrics
        self._url = url
        self._clock = clock
        self._timeout = timeout
        self._queue: list[tuple[str, tuple[Any, ...], Deferred[Any]]] = []
        self._flush_call: IDelayedCall | None = None
        self._headers: dict[bytes, list[bytes]] = {b"content-type": [b"text/xml"]}
        if secret is not None:
            self._headers[b"authorization"] = [b"Bearer " + secret]

    def get(self, key: str) -> Deferred[str]:
        """``Store.Get(key)`` on the master."""
        return self.call("Store.Get", key)

    def put(self, url: str) -> Deferred[str]:
        """``Store.Put(url)`` on the master."""
        return self.call("Store.Put", url)

    def count(self) -> int:
        """A remote store holds nothing locally."""
        return 0

    def call(self, method: str, *params: Any) -> Deferred[Any]:
        """Call ``method`` on the master; fail with a store error, never with a transport error.

        Calls made in the same reactor turn travel together, as one ``system.multicall`` (at most
        :data:`MAX_BATCH` each): one request, one connection, one group commit on the master.
        """
        answer: Deferred[Any] = Deferred()
        self._queue.append((method, params, answer))
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self._flush)
        return answer

    def _flush(self) -> None:
        self._flush_call = None
        queue, self._queue = self._queue, []
        for start in range(0, len(queue), MAX_BATCH):
            batch = queue[start : start + MAX_BATCH]
            if len(batch) == 1:
                method, params, answer = batch[0]
                self._send(method, params).chainDeferred(answer)
            else:
                calls = [{"methodName": method, "params": list(params)} for method, params, _ in batch]
                answers = [answer for _, _, answer in batch]
                sent = self._send("system.multicall", (calls,))
                sent.addCallbacks(_distribute, _fail_all, callbackArgs=(answers,), errbackArgs=(answers,))

    def _send(self, method: str, params: tuple[Any, ...]) -> Deferred[Any]:
        """One XML-RPC request to the master, with its timeout and its metrics."""
        body = xmlrpclib.dumps(params, method).encode("utf-8")
        answered: Deferred[Any] = self._http.post(self._url, data=body, headers=Headers(self._headers))
        answered.addCallback(self._read)
        answered.addTimeout(self._timeout, self._clock)
        answered.addErrback(self._translate, method)
        if self._metrics is not None:
            answered.addBoth(self._observe, method, self._clock.seconds())
        return answered

    def _observe(self, result: object, method: str, started: float) -> object:
        assert self._metrics is not None
        if not isinstance(result, Failure):
            outcome = "ok"
        elif result.check(MasterUnreachable):
            outcome = "unreachable"
        else:
            outcome = "error"
        self._metrics.rpc_latency.labels(method, outcome).observe(self._clock.seconds() - started)
        return result

    def _read(self, response: Any) -> Deferred[Any]:
        if response.code != 200:
            raise StoreUnavailable(f"the master answered HTTP {response.code}")
        body: Deferred[bytes] = response.content()
        return body.addCallback(_decode_response)

    def _translate(self, failure: Failure, method: str) -> Failure:
        if failure.check(*_UNREACHABLE):
            error: Exception = MasterUnreachable(
                f"the master did not answer {method}: {failure.getErrorMessage()}"
            )
            return Failure(error)
        return failure


def _fault_error(code: object, text: object) -> Exception:
    """The store error a master's fault stands for."""
    if code == NotAuthorized.fault_code:
        # Our own misconfiguration, not the user's fault: they get a 503, the operator a log line.
        return MasterRefused("the master refused this slave's RPC secret (see --rpc-secret-file)")
    error_class = ERRORS_BY_FAULT_CODE.get(code) if isinstance(code, int) else None
    if error_class is None:
        return StoreUnavailable(f"the master failed: {text}")
    return error_class(str(text))


def _distribute(results: Any, answers: list[Deferred[Any]]) -> None:
    """Fire each batched call's Deferred with its own result from a multicall answer."""
    if not isinstance(results, list) or len(results) != len(answers):
        _fail_all(
            Failure(MasterUnreachable("the master's multicall answer does not match the calls")), answers
        )
        return
    for result, answer in zip(results, answers):
        if isinstance(result, list) and len(result) == 1:
            answer.callback(result[0])
        elif isinstance(result, dict):
            answer.errback(_fault_error(result.get("faultCode"), result.get("faultString")))
        else:
            answer.errback(MasterUnreachable("the master's multicall answer is malformed"))


def _fail_all(failure: Failure, answers: list[Deferred[Any]]) -> None:
    """Fail every batched call with the failure of their shared request."""
    for answer in answers:
        answer.errback(failure)


def _decode_response(body: bytes) -> Any:
    """Return the single value of an XML-RPC response, or raise the store error its fault names."""
    try:
        (value,), _ = xmlrpclib.loads(body)
    except xmlrpclib.Fault as fault:
        raise _fault_error(fault.faultCode, fault.faultString) from None
    except Exception as exc:
        raise MasterUnreachable(f"the master's answer is not XML-RPC: {exc}") from None
    return value
