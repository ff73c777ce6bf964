"""The slave's side of the RPC: calls ``Store.Get``/``Store.Put`` on the master over persistent HTTP.

``twisted.web.xmlrpc.Proxy`` opens a new TCP connection for every call (HTTP/1.0); this client sends
the same XML-RPC bodies over persistent HTTP/1.1 connections (:mod:`goto_tw.masterhttp` in a slave;
any ``IAgent`` through :class:`AgentPoster`), and bounds every call with a timeout on an injected
clock. ``bench/rpc_client.py`` measures them.

Everything here is bounded, and every caller gets an answer:

- calls made in one reactor turn travel together as one ``system.multicall``, each request at most
  :data:`MAX_BATCH_CALLS` calls and about :data:`MAX_BATCH_BYTES` bytes (the master refuses bodies
  over 1 MiB); a call made with :meth:`RemoteStore.call_alone` travels as a request of its own
  (a click batch, which the master answers only once it is on disk, must not hold up look-ups);
- like the data file's group commit, calls made while :data:`GATHER_IN_FLIGHT` batches are on their
  way wait for one of them to be answered and then travel together: fewer, larger batches (the
  master's cost is mostly per request, not per call); a full batch does not wait, nor does a call
  alone (it passes the calls that wait);
- while the process is busy (judged at most once a :data:`BUSY_WINDOW`, on its CPU since it was last
  judged: :data:`BUSY_SHARE` of a CPU or more, and then down to :data:`STILL_BUSY_SHARE` while its
  pauses gather), a batch of fewer than :data:`PROMPT_BATCH_CALLS` calls leaves no sooner than
  :data:`GATHER_PAUSE` after the batch before it: a busy slave's occasional misses (a new link, a
  typo) would otherwise reach the master one call a request, and each request wakes the master. The
  first call after a quiet spell leaves at once, a batch that fills up goes at once, a call alone goes
  at once (with the batch held before it), and so does a batch of as many calls as the last batch
  answered, made since (its callers are back: clients that ask again once answered, which waiting
  would only slow down; calls alone do not count); a batch that waited out the pause and leaves with
  its one call gathered nothing, and pausing stops until the process is next judged; a process not
  judged busy does not pause at all (a client waiting for each answer would get one a pause, and the
  pause saves only CPU);
- at most :data:`MAX_IN_FLIGHT` requests are on their way at once; further calls wait in a queue of
  at most :data:`MAX_QUEUED_CALLS` calls and :data:`MAX_QUEUED_BYTES` bytes, and beyond that fail
  at once (503: the slave is overloaded, waiting longer would not help);
- at most :data:`MAX_ANSWER_BYTES` of an answer are read; a longer one is a broken master;
- whatever goes wrong, transport or our own code, each call's Deferred fires: with the value, with
  the store error the master's fault names, or with :class:`MasterUnreachable` /
  :class:`StoreUnavailable` whose message is fit for a user and whose ``detail`` is for the log.
"""

from __future__ import annotations

import ipaddress
import re
import time
import xmlrpc.client as xmlrpclib
from typing import Any, Callable, NamedTuple, Protocol
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, fail, succeed
from twisted.internet.error import ConnectError, ConnectingCancelledError, ConnectionClosed, DNSLookupError
from twisted.internet.interfaces import IConsumer, IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol as BaseProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import RequestTransmissionFailed, ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IBodyProducer
from zope.interface import implementer

from goto_tw.errors import (
    ERRORS_BY_FAULT_CODE,
    GotoError,
    MasterBusy,
    MasterFailed,
    MasterRefused,
    MasterUnreachable,
    NotAuthorized,
    NotKept,
    SlaveStopping,
    StoreUnavailable,
)
from goto_tw.fastpath import UNCHECKED_ADDS, UNCHECKED_ADDS_HEADER
from goto_tw.interfaces import ILinkAdder, IURLStore
from goto_tw.metrics import Metrics
from goto_tw.rpcwire import INT_MEMBER_FIXED, dumps_call, dumps_multicall
from goto_tw.xmlrpcbody import RefusedBody, parse_call

log = Logger()

#: Failures that mean "the master did not answer", as opposed to "the master said no".
_UNREACHABLE = (
    ConnectError,
    ConnectingCancelledError,
    ConnectionClosed,
    DNSLookupError,
    ResponseFailed,
    ResponseNeverReceived,
    RequestTransmissionFailed,
    TimeoutError,
    CancelledError,
)

#: What a user is told whenever the master cannot be used; the cause goes to the log only.
UNREACHABLE_MESSAGE = "the service cannot reach its store right now; try again shortly"
#: What a user is told when this slave already has as many calls waiting as it may hold.
BUSY_MESSAGE = "the service is too busy right now; try again shortly"

#: Most calls sent in one ``system.multicall`` (the master accepts up to 1000). Chosen so that even
#: the answers to a batch of look-ups of the longest URLs, escaped at worst (``&`` -> ``&amp;``:
#: 5 bytes a character, about 20.6 KB an answer), fit in :data:`MAX_ANSWER_BYTES` (5.3 MB of 8 MiB).
MAX_BATCH_CALLS = 256
#: Most bytes of calls in one request body (the master refuses bodies over 1 MiB); a single call
#: larger than this still travels, alone.
MAX_BATCH_BYTES = 512 * 1024
#: Most requests to the master on their way at once (each holds a pooled connection).
MAX_IN_FLIGHT = 4
#: Batches that are not full are sent only while fewer than this many are on their way; calls made
#: meanwhile gather into the next one (full batches and calls alone go while MAX_IN_FLIGHT allows).
GATHER_IN_FLIGHT = 2
#: Seconds a batch of fewer than PROMPT_BATCH_CALLS calls waits after the batch before it left, to
#: gather the calls that follow, while the process is busy (bench/run.py ``m``: 1% misses and 1%
#: unknown keys on a slave ran at 0.68x of the all-hits rate with no pause, 0.82x with it on CPython,
#: 0.76x -> 0.92x on PyPy; ``e`` and ``d``, where 50 clients wait on the master, unchanged: their
#: batches fill up).
GATHER_PAUSE = 0.01
#: Calls that make a batch worth sending without the pause.
PROMPT_BATCH_CALLS = 16
#: The share of one CPU this process must have used over the last BUSY_WINDOW seconds (or more) for
#: small batches to wait out the pause (under the ``m`` load a slave uses 0.9 of a CPU).
BUSY_SHARE = 0.8
BUSY_WINDOW = 0.1
#: The share below which a process judged busy is judged not busy again. Lower than BUSY_SHARE
#: because the pause's absence lowers the share itself: a slave sharing a core with its master (the
#: bench's ``m``) had windows of 0.55 to 0.75 right after one judged it not busy (every miss waking
#: the master again takes the slave's CPU), so one dip kept the pause off for the windows after it:
#: about 1 window in 10 was judged not busy, and 40% of the decisions to send were made in them.
#: Only while pauses gather (a pause ran out with two calls or more since the last judgement): a
#: lone client that waits for each answer gathers nothing and is let go (see ``_flush``).
STILL_BUSY_SHARE = 0.5
#: Most calls, and bytes of calls, that may wait for a request slot; beyond them calls fail at once.
MAX_QUEUED_CALLS = 10_000
MAX_QUEUED_BYTES = 16 * 1024 * 1024
#: Most bytes of one answer read from the master (see :data:`MAX_BATCH_CALLS`).
MAX_ANSWER_BYTES = 8 * 1024 * 1024
#: Bytes an XML-RPC call struct of a multicall costs besides its method name and parameters (tags,
#: white space: 227 with Python's marshaller), and bytes of the envelope around all of them (172).
_CALL_OVERHEAD = 256
_BODY_OVERHEAD = 256
#: XML-RPC's fault code for a method the server does not have (``twisted.web.xmlrpc.XMLRPC.NOT_FOUND``).
_NO_SUCH_METHOD = 8001
#: Most (method, outcome) latency histograms remembered (a client calls a handful of methods).
_MAX_HISTOGRAMS = 64
#: Longest text from a master's fault that is shown to a user (longer: a generic message), and the
#: most of it a log line carries.
_MAX_FAULT_TEXT = 300

_HOST_PORT = re.compile(r"(\[[^\]\s]*\]|[^:/\[\]\s@?#]+):([0-9]{1,5})")
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")
#: A path the slave's request line can carry as it is: unreserved characters, ``/`` and escapes.
_URL_PATH = re.compile(r"(?:/(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})*)*")


def master_rpc_url(master: str) -> str:
    """Turn ``--master`` into the master's RPC URL, or raise ``ValueError`` saying what is wrong.

    ``HOST:PORT`` (an IPv6 address in brackets: ``[::1]:8081``) means ``http://HOST:PORT/RPC2``;
    a full ``http(s)://HOST[:PORT]/PATH`` URL is taken as it is (``/RPC2`` when it has no path).
    A host that does not resolve is accepted here (it may resolve later); nonsense is not.
    """
    if "://" not in master:
        if not _HOST_PORT.fullmatch(master):
            raise ValueError("expected HOST:PORT ([::1]:PORT for IPv6) or http://HOST:PORT/RPC2")
        master = f"http://{master}/RPC2"
    try:
        parts = urlsplit(master)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("the master's URL must start with http:// or https://")
    if parts.username is not None or parts.query or parts.fragment or any(c.isspace() for c in master):
        raise ValueError("the master's URL takes no user, query, fragment or white space")
    host = parts.hostname or ""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    elif not _HOST_NAME.fullmatch(host):
        raise ValueError("no host name or address")
    if port == 0:
        raise ValueError("port 0 is not a port a master listens on")
    if port is None and parts.netloc.endswith(":"):
        raise ValueError("a ':' without a port")
    if not _URL_PATH.fullmatch(parts.path):
        raise ValueError("the path must be ASCII a URL carries unescaped (letters, digits, -._~/ and %XX)")
    if not parts.path:
        master += "/RPC2"
    return master


def master_identity(url: str) -> tuple[str, str, int, str]:
    """What tells two :func:`master_rpc_url` URLs of one master apart from two masters: the scheme
    and host in lower case (an IPv6 address compressed), the port (the scheme's default filled in),
    the path without a trailing ``/``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = ipaddress.IPv6Address(host).compressed
    return scheme, host, parts.port or (443 if scheme == "https" else 80), parts.path.rstrip("/")


class HTTPPoster(Protocol):
    """What RemoteStore needs of an HTTP client: a slave's
    :class:`~goto_tw.masterhttp.MasterConnections`, an :class:`AgentPoster`, or ``StubTreq`` in tests.

    The response it fires with needs ``code`` and ``deliverBody`` (an ``IResponse``).
    """

    def post(self, url: str, /, *, data: bytes, headers: Headers) -> Deferred[Any]:
        """POST ``data`` to ``url``; fire with the response."""


@implementer(IBodyProducer)
class _Body:
    """A request body that is already in memory: written at once, no cooperator, no copies."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class AgentPoster:
    """POSTs through a Twisted ``IAgent``; the URL goes to the agent as bytes, untouched.

    (treq's ``HTTPClient`` re-encodes the URL's host with IDNA, which raises for an IPv6 address.)
    """

    def __init__(self, agent: IAgent) -> None:
        self._agent = agent

    def post(self, url: str, /, *, data: bytes, headers: Headers) -> Deferred[Any]:
        """POST ``data`` to ``url``; fire with the ``IResponse``."""
        response: Deferred[Any] = self._agent.request(b"POST", url.encode("ascii"), headers, _Body(data))
        return response


class _Call(NamedTuple):
    method: str
    params: tuple[Any, ...]
    size: int
    answer: Deferred[Any]
    #: Sent as a request of its own, never in a multicall with other calls.
    alone: bool = False


class _Request:
    """One request on its way to the master: its calls, its Deferred and its deadline."""

    __slots__ = ("batch", "deadline", "expired", "method", "posted", "settled", "started")

    def __init__(
        self, batch: list[_Call], method: str, posted: Deferred[Any], started: float, deadline: float
    ) -> None:
        self.batch = batch
        self.method = method
        self.posted = posted
        self.started = started
        self.deadline = deadline
        #: Cancelled by the timeout (its answer is on its way through the Deferred).
        self.expired = False
        #: Its calls have their answers and its slot is free.
        self.settled = False


@implementer(IURLStore, ILinkAdder)
class RemoteStore:
    """The master's store seen through XML-RPC: every call goes over the network, nothing is cached.

    Each call fails with the error the master's fault code names (``KeyNotFound``, ``InvalidURL``...),
    with :class:`MasterUnreachable` when no proper answer came in time, or with
    :class:`StoreUnavailable` when the call could not even be sent (see the module doc).

    Metrics (``goto_rpc_call_seconds``) label each request's outcome ``ok`` when the master answered
    (a value, or a definite "no" such as an unknown key: what a health check asks for),
    ``unreachable`` when it did not, and ``error`` when it answered a failure of its own.
    """

    def __init__(
        self,
        http: HTTPPoster,
        url: str,
        clock: IReactorTime,
        *,
        timeout: float,
        secret: bytes | None = None,
        unchecked_adds: bool = False,
        metrics: Metrics | None = None,
        gather_pause: float = GATHER_PAUSE,
        cpu_seconds: Callable[[], float] = time.process_time,
    ) -> None:
        self._http = http
        self._gather_pause = gather_pause
        #: This process's CPU time (injectable for tests), read at most once a BUSY_WINDOW.
        self._cpu_seconds = cpu_seconds
        self._busy = False
        #: Whether a pause ran out with one call (it gathered nothing): no pausing until the next
        #: judgement; and whether one ran out with two or more (it gathered) since the last judgement,
        #: which only then may keep the process busy on STILL_BUSY_SHARE (see _flush).
        self._gathered_nothing = False
        self._gathered = False
        self._window_started = clock.seconds()
        self._window_cpu = cpu_seconds()
        self._metrics = metrics
        self._url = url
        self._clock = clock
        self._timeout = timeout
        self._queue: list[_Call] = []
        self._queued_bytes = 0
        self._alone_queued = 0  # calls alone in the queue (they may pass the batches before them)
        self._in_flight = 0
        self._gathering = 0  # requests in flight that are batches (not calls alone)
        self._overloaded = False
        #: Set by :meth:`give_up`: every call fails at once from then on.
        self._given_up = False
        self._flush_call: IDelayedCall | None = None
        #: Whether the pending flush waits out the gather pause (a batch filling up cuts it short).
        self._pausing = False
        #: When the last batch (not a call alone) left; none yet: long ago.
        self._last_batch_sent = float("-inf")
        #: Calls in the last batch answered (0 once as many calls as it answered have left again), and
        #: calls (not alone) made since that answer (see _callers_back).
        self._answered_calls = 0
        self._calls_since_answer = 0
        #: The requests on their way (at most MAX_IN_FLIGHT), oldest first, and their one timer.
        self._requests: list[_Request] = []
        self._deadline_call: IDelayedCall | None = None
        self._armed_for = 0.0
        self._histograms: dict[tuple[str, str], Any] = {}
        headers: dict[bytes, list[bytes]] = {b"content-type": [b"text/xml"]}
        if secret is not None:
            headers[b"authorization"] = [b"Bearer " + secret]
        if unchecked_adds:  # this slave checks no API keys: a private master refuses its adds
            headers[UNCHECKED_ADDS_HEADER] = [UNCHECKED_ADDS]
        #: The same for every request, made once (the HTTP clients copy what they add to).
        self._headers = Headers(headers)

    def get(self, key: str) -> Deferred[str]:
        """``Store.Get(key)`` on the master."""
        return self.call("Store.Get", key)

    def put(self, url: str) -> Deferred[str]:
        """``Store.Put(url)`` on the master."""
        return self.call("Store.Put", url)

    def add(self, url: str, key: str | None = None) -> Deferred[tuple[str, bool]]:
        """``Store.Add(url, key)`` on the master (``""`` for no custom key): ``(key, new)``.

        The answer is passed on as the master sent it; :class:`~goto_tw.proxystore.ProxyStore` checks it.
        """
        answered: Deferred[Any] = self.call("Store.Add", url, key or "")
        return answered.addCallback(_add_answer)

    def count(self) -> int:
        """A remote store holds nothing locally."""
        return 0

    def call(self, method: str, *params: Any) -> Deferred[Any]:
        """Call ``method`` on the master; fail with a store error, never with a transport error.

        Calls made in the same reactor turn travel together (see the module doc).
        """
        return self._enqueue(method, params, alone=False)

    def connection_generation(self) -> int | None:
        """The HTTP client's count of connections to this master lost, not made or ended idle
        (``None`` for a client that does not keep one): it moves whenever the next call may reach
        another process."""
        generation = getattr(self._http, "generation", None)
        return None if generation is None else int(generation(self._url))

    def call_alone(self, method: str, *params: Any) -> Deferred[Any]:
        """Like :meth:`call`, but as a request of its own: the master answers a multicall only once
        every call in it is done, so a call it may take long over (``Store.Clicks`` waits for the
        click file's write) must not share one with look-ups and adds. It waits for a request slot
        and counts against the queue bounds like any other call."""
        return self._enqueue(method, params, alone=True)

    def give_up(self) -> None:
        """Answer every call now, and every later one at once, with :class:`SlaveStopping` (a 503):
        a slave that stops and cannot wait any longer for its master answers its clients before
        the reactor drops their connections."""
        self._given_up = True
        stopping = Failure(slave_stopping())
        for request in list(self._requests):
            if not request.expired:
                request.expired = True
                self._settle(stopping, request)  # answered now; the post's own end is then ignored
                try:
                    request.posted.cancel()
                except Exception:
                    log.failure("Could not cancel a call to the master")
        queue, self._queue, self._queued_bytes, self._alone_queued = self._queue, [], 0, 0
        _fail_all(stopping, [call.answer for call in queue])

    def _enqueue(self, method: str, params: tuple[Any, ...], *, alone: bool) -> Deferred[Any]:
        if self._given_up:
            return fail(slave_stopping())
        try:
            size = _call_size(method, params)
        except Exception:
            return fail(self._internal_failure(Failure(), []))
        if len(self._queue) >= MAX_QUEUED_CALLS or self._queued_bytes + size > MAX_QUEUED_BYTES:
            if not self._overloaded:
                self._overloaded = True
                log.warn(
                    "The master answers too slowly for the load: {calls} calls are waiting to be sent; "
                    "refusing more (503) until the queue drains",
                    calls=len(self._queue),
                )
            return fail(MasterBusy(BUSY_MESSAGE, detail=f"{len(self._queue)} calls are queued"))
        answer: Deferred[Any] = Deferred()
        self._queue.append(_Call(method, params, size, answer, alone))
        self._queued_bytes += size
        if alone:
            self._alone_queued += 1
            # A call alone is not held (a click batch): it takes the held batch before it along.
            if self._pausing:
                self._stop_pausing()
        else:
            self._calls_since_answer += 1  # a call alone is no caller of a batch coming back
            if self._pausing and (len(self._queue) >= PROMPT_BATCH_CALLS or self._callers_back()):
                self._stop_pausing()
        self._schedule()
        return answer

    # --- sending ---------------------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._flush_call is None and self._may_send():
            delay = self._pause_left()
            self._pausing = delay > 0
            self._flush_call = self._clock.callLater(delay, self._flush)

    def _pause_left(self) -> float:
        """How long the oldest queued call waits to gather others (see :data:`GATHER_PAUSE`): none for a
        call alone or calls before one (it is not held: a click batch), a batch of PROMPT_BATCH_CALLS
        calls or more, once the pause has passed, or while the process is not busy."""
        if self._alone_queued or len(self._queue) >= PROMPT_BATCH_CALLS or self._callers_back():
            return 0.0
        now = self._clock.seconds()
        left = self._last_batch_sent + self._gather_pause - now
        if left <= 0.0 or not self._is_busy(now):
            return 0.0
        # Clamped: the clock is the wall clock, and one set back must not hold calls longer.
        return min(left, self._gather_pause)

    def _is_busy(self, now: float) -> bool:
        """Whether this process used BUSY_SHARE of a CPU or more in its last window of BUSY_WINDOW
        seconds or more, or STILL_BUSY_SHARE if the window before was judged busy too and a pause in
        this one gathered (a window starts when the one before is judged; a clock set back starts a
        new one, not busy); and, if so, no pause has run out with one call since that judgement (see
        _flush)."""
        elapsed = now - self._window_started
        if elapsed >= BUSY_WINDOW or elapsed < 0.0:
            cpu = self._cpu_seconds()
            share = STILL_BUSY_SHARE if self._busy and self._gathered else BUSY_SHARE
            self._busy = elapsed > 0.0 and cpu - self._window_cpu >= share * elapsed
            self._window_started, self._window_cpu = now, cpu
            self._gathered_nothing = self._gathered = False
        return self._busy and not self._gathered_nothing

    def _callers_back(self) -> bool:
        """Whether as many calls as the last batch answered (two or more) have been made since (until a
        batch leaves with them: calls made next are a trickle again): clients that ask again once
        answered (a crawler's workers) come back together, and holding them gathers nothing more; a
        trickle of independent calls (a busy slave's misses) is not held up by its own answers. (One
        call answered tells the two apart from nothing: it does not count.)"""
        return self._answered_calls >= 2 and self._calls_since_answer >= self._answered_calls

    def _stop_pausing(self) -> None:
        assert self._flush_call is not None
        self._flush_call.cancel()
        self._flush_call = None
        self._pausing = False

    def _may_send(self) -> bool:
        """Whether a request may leave now: a slot is free, and a call alone waits (see
        :meth:`_take_batch`), or fewer than GATHER_IN_FLIGHT batches are on their way, or a full
        batch is waiting."""
        return (
            bool(self._queue)
            and self._in_flight < MAX_IN_FLIGHT
            and (self._alone_queued > 0 or self._batch_may_go(len(self._queue), self._queued_bytes))
        )

    def _batch_may_go(self, calls: int, size: int) -> bool:
        """Whether a batch of ``calls`` calls of ``size`` bytes may leave: fewer than GATHER_IN_FLIGHT
        batches are on their way, or it is full."""
        return (
            self._gathering < GATHER_IN_FLIGHT
            or calls >= MAX_BATCH_CALLS
            or size >= MAX_BATCH_BYTES - _BODY_OVERHEAD
        )

    def _flush(self) -> None:
        """Send queued calls as requests while they may leave (see _may_send); never raises.

        A batch whose pause ran out (was not cut short) and that leaves with one call gathered
        nothing: its caller is most likely a client that asks again only once answered, alone (the
        callers-back rule needs two), whom the pause only slows down, and nothing else is trickling
        in. Pausing stops until the next judgement, and that judgement keeps the process busy on
        STILL_BUSY_SHARE only if some pause gathered meanwhile: such a client beside traffic that keeps
        the slave at BUSY_SHARE or more is held one pause a judgement, not one each call, and one that
        only it and traffic under BUSY_SHARE keep busy is let go; while a trickle of misses that now
        and then leaves one call in a pause (at 740 a second, about once in 200 pauses) loses the pause
        for the rest of that window only. A scratch run of one such client beside 2 to 16 clients of
        cached keys, slave and master on one core: held each call with STILL_BUSY_SHARE alone, 93
        calls a second; with BUSY_SHARE alone (before STILL_BUSY_SHARE) 270 to 1,730 from run to run,
        as the gate flipped; with this rule 710 to 1,710."""
        self._flush_call = None
        if self._pausing:
            if len(self._queue) == 1:
                self._gathered_nothing = True  # until the next judgement (see _is_busy)
            elif self._queue:  # (none left: a silent master failed them meanwhile)
                self._gathered = True
        self._pausing = False
        try:
            while self._may_send():
                batch = self._take_batch()
                try:
                    self._send_batch(batch)
                except Exception:
                    self._internal_failure(Failure(), [call.answer for call in batch])
        except Exception:
            # A bug above this line must not strand the calls still queued: answer each of them.
            queue, self._queue, self._queued_bytes, self._alone_queued = self._queue, [], 0, 0
            self._internal_failure(Failure(), [call.answer for call in queue])
        if not self._queue:
            self._overloaded = False

    def _take_batch(self) -> list[_Call]:
        """The oldest queued calls that fit in one request (at least one call; a call that goes
        alone is a batch by itself, and ends the batch before it); or, while the calls before it
        may not go as a batch (GATHER_IN_FLIGHT batches are on their way, and they are no full
        batch: the calls after the call alone are another batch), the oldest call alone: it passes
        them, as the module doc promises calls alone (a click batch sent after a look-up that waits
        for a batch slot is not held up by it; the order of requests on their way is the master's
        anyway)."""
        queue = self._queue
        if queue[0].alone:
            return [self._take_call(0)]
        taken = 1
        size = queue[0].size
        while (
            taken < len(queue)
            and not queue[taken].alone
            and taken < MAX_BATCH_CALLS
            and size + queue[taken].size <= MAX_BATCH_BYTES - _BODY_OVERHEAD
        ):
            size += queue[taken].size
            taken += 1
        if taken < len(queue) and queue[taken].alone and not self._batch_may_go(taken, size):
            # The calls before the call alone may not leave as a batch (_may_send judged the whole
            # queue, whose length and bytes count the calls after the call alone too): they wait,
            # and the call alone after them passes them.
            return [self._take_call(taken)]
        batch, self._queue = queue[:taken], queue[taken:]
        self._queued_bytes -= size
        return batch

    def _take_call(self, index: int) -> _Call:
        """Take the call alone at ``index`` out of the queue, as a batch of its own."""
        call = self._queue.pop(index)
        self._queued_bytes -= call.size
        self._alone_queued -= 1
        return call

    def _send_batch(self, batch: list[_Call]) -> None:
        """Send one XML-RPC request for ``batch`` (a multicall if it has more than one call); each
        call gets its answer from :meth:`_answered`, and the request times out after ``timeout``
        (:meth:`_watch`)."""
        if len(batch) == 1:
            method = batch[0].method
            body = dumps_call(batch[0].params, method).encode("utf-8")
        else:
            method = "system.multicall"
            body = dumps_multicall([(call.method, call.params) for call in batch]).encode("utf-8")
        now = self._clock.seconds()
        posted: Deferred[Any] = self._http.post(self._url, data=body, headers=self._headers)
        request = _Request(batch, method, posted, now, now + self._timeout)
        self._in_flight += 1
        if not batch[0].alone:
            self._gathering += 1
            self._last_batch_sent = now
            if self._callers_back():
                self._answered_calls = 0  # its callers are all back, and gone: calls made next are not
        self._watch(request)
        posted.addBoth(self._answered, request)

    # --- timeouts ---------------------------------------------------------------------------------

    def _watch(self, request: _Request) -> None:
        """Time ``request`` out at its deadline with one timer for all the requests in flight.

        ``Deferred.addTimeout`` per request armed a ``DelayedCall`` per request and cancelled it when
        the answer came: with a 10 s timeout the reactor's heap held hundreds of cancelled calls, and
        each call paid about 9 heap comparisons, two ``callLater``s and a closure chain (cProfile of a
        slave's sequential ``Store.Get`` loop against a real master). Requests share one timeout, so
        deadlines follow the order requests are sent in: one timer, armed for the earliest deadline,
        is left armed when its request is answered (it then finds nothing due and re-arms for the
        next request in flight, if any): no timer at all per request while requests keep coming.
        With the single callback of :meth:`_answered`: ``bench/rpc_calls.py`` (CPU of slave and master
        per call, CPython 3.11) 120 -> 108 us one call at a time (batches of 16: unchanged, 19 us).
        """
        self._requests.append(request)
        armed = self._deadline_call
        if armed is not None and request.deadline < self._armed_for:  # the clock went back: re-arm
            armed.cancel()
            armed = self._deadline_call = None
        if armed is None:
            self._arm(request.deadline, request.started)

    def _arm(self, deadline: float, now: float) -> None:
        self._armed_for = deadline
        self._deadline_call = self._clock.callLater(max(deadline - now, 0.0), self._expire, deadline)

    def _expire(self, deadline: float) -> None:
        """The timer fired (at ``deadline``): cancel each request whose time is up (it fails with
        "no answer in time"); re-arm for the earliest deadline left."""
        self._deadline_call = None
        now = max(self._clock.seconds(), deadline)
        for request in list(self._requests):
            if not request.expired and request.deadline <= now:
                request.expired = True
                try:
                    request.posted.cancel()  # its answer: a CancelledError, through _answered
                except Exception:
                    # A client whose cancel raises may never fire: the calls are answered now.
                    self._settle(Failure(), request)
        waiting = [request.deadline for request in self._requests if not request.expired]
        if waiting and self._deadline_call is None:
            self._arm(min(waiting), now)

    # --- answers ---------------------------------------------------------------------------------

    def _answered(self, result: object, request: _Request) -> object:
        """The request's answer (or failure) came: read it, then :meth:`_settle` the request.

        One callback per request does what five (read, timeout, translate, metrics, distribute) and
        a sixth for the batch's bookkeeping did; a body still to be read (an answer that did not come
        whole: another HTTP client, a status other than 200) is read first, and can time out too."""
        if not isinstance(result, Failure):
            try:
                result = self._read(result)
            except Exception:
                result = Failure()
            else:
                if isinstance(result, Deferred):
                    return result.addBoth(self._settle, request)
        self._settle(result, request)
        return None

    def _settle(self, result: object, request: _Request) -> None:
        """Give each call of ``request`` its answer, then free its slot (never fails: a bug here
        answers the calls left with a 503, logged, and still frees the slot). Once: a request settled
        when its cancel failed ignores its answer if that comes after all."""
        if request.settled:
            return
        request.settled = True
        if not request.batch[0].alone:
            self._answered_calls, self._calls_since_answer = len(request.batch), 0
        self._requests.remove(request)
        answers = [call.answer for call in request.batch]
        failed: Failure | None = None
        try:
            method = request.method
            if isinstance(result, Failure):
                result = self._translate(result, method)
            if self._metrics is not None:
                self._observe(result, method, request.started)
            if isinstance(result, Failure):
                _fail_all(result, answers)
                failed = result
            elif len(answers) == 1:
                _deliver(result, answers)
            else:
                _distribute(result, answers)
        except Exception:
            self._internal_failure(Failure(), answers)
        self._batch_done(failed, request.batch[0].alone)

    def _batch_done(self, failed: Failure | None, alone: bool) -> None:
        self._in_flight -= 1
        if not alone:
            self._gathering -= 1
        if failed is not None and isinstance(failed.value, MasterUnreachable):
            # The calls still waiting would go to the same silent master: answer them now rather
            # than after one more timeout each (the proxy store fails new ones fast from here on).
            queue, self._queue, self._queued_bytes, self._alone_queued = self._queue, [], 0, 0
            self._overloaded = False
            _fail_all(failed, [call.answer for call in queue])
        self._schedule()

    def _internal_failure(self, failure: Failure, answers: list[Deferred[Any]]) -> StoreUnavailable:
        """Log a failure of our own code and fail ``answers`` with a user-fit 503, returned."""
        log.failure("Could not send calls to the master (a bug)", failure)
        detail = f"sending to the master failed: {failure.value!r}"
        error = StoreUnavailable(UNREACHABLE_MESSAGE, detail=detail)
        _fail_all(Failure(error), answers)
        return error

    def _observe(self, result: object, method: str, started: float) -> None:
        assert self._metrics is not None
        if not isinstance(result, Failure):
            outcome = "ok"
        elif isinstance(result.value, MasterUnreachable):
            outcome = "unreachable"
        elif isinstance(result.value, GotoError) and result.value.http_status < 500:
            outcome = "ok"  # the master answered: an unknown key, a refused URL
        else:
            outcome = "error"
        histogram = self._histograms.get((method, outcome))
        if histogram is None:
            # The labelled child is remembered (a tenth of a call's cost on CPython, measured); the
            # methods are the handful this client calls, the bound a guard.
            histogram = self._metrics.rpc_latency.labels(method, outcome)
            if len(self._histograms) < _MAX_HISTOGRAMS:
                self._histograms[(method, outcome)] = histogram
        histogram.observe(self._clock.seconds() - started)

    def _read(self, response: Any) -> Any:
        if response.code == 200:
            whole = getattr(response, "body", None)
            if isinstance(whole, bytes):  # handed over complete (goto_tw.masterhttp), and bounded there
                return self._decode(whole)
        body = _read_bounded(response, MAX_ANSWER_BYTES, self._clock)
        if response.code != 200:
            # Not an answer: its body is not waited for (it might never end); cancelling the read
            # drops the connection unless the answer is already complete (see _BoundedBody.stop), so
            # a wrong --master costs no connection per probe.
            body.addErrback(lambda _: None)
            body.cancel()
            hint = ": is it a goto master started with --rpc?" if response.code in (404, 405) else ""
            raise self._unreachable(f"the master answered HTTP {response.code} at {self._url}{hint}")
        return body.addCallback(self._decode)

    def _decode(self, body: bytes) -> Any:
        try:
            return _decode_response(body)
        except _NotXMLRPC as exc:
            raise self._unreachable(
                f"the answer from {self._url} is not XML-RPC ({exc}): is it a goto master started with --rpc?"
            ) from None

    def _unreachable(self, detail: str) -> MasterUnreachable:
        return MasterUnreachable(UNREACHABLE_MESSAGE, detail=detail)

    def _translate(self, failure: Failure, method: str) -> Failure:
        # isinstance, not Failure.check (0.5 us a call: it names every class of the error's MRO):
        # every key a master does not hold (a typo, a scanner) fails through here.
        if isinstance(failure.value, GotoError):
            return failure
        if isinstance(failure.value, _UNREACHABLE):
            return Failure(self._unreachable(f"no answer to {method} from {self._url}: {_describe(failure)}"))
        log.failure("Unexpected failure calling {method} on the master", failure, method=method)
        return Failure(StoreUnavailable(UNREACHABLE_MESSAGE, detail=f"{method}: {failure.value!r}"))


def slave_stopping() -> SlaveStopping:
    """What every call is answered once this slave gave up on its master (:meth:`RemoteStore.give_up`)."""
    return SlaveStopping(UNREACHABLE_MESSAGE, detail="this slave is stopping")


def _call_size(method: str, params: tuple[Any, ...]) -> int:
    """About how many bytes ``method(*params)`` adds to a request body (never less than it adds).

    A string is measured without encoding it when it is ASCII, and searched for what XML escapes
    only once it is known to hold some (0.50 -> 0.21 us for a URL, timeit, CPython 3.11)."""
    size = _CALL_OVERHEAD + len(method)
    for param in params:
        if isinstance(param, str):
            size += len(param) if param.isascii() else len(param.encode("utf-8"))
            if "&" in param or "<" in param or ">" in param:
                # XML escaping turns & into &amp; and < > into &lt; &gt;
                size += 4 * param.count("&") + 3 * (param.count("<") + param.count(">"))
        elif type(param) is dict and (bound := _counts_size(param)) is not None:
            size += bound
        else:
            dumped = xmlrpclib.dumps((param,))  # bytes, not characters: the body is sent as UTF-8
            size += len(dumped) if dumped.isascii() else len(dumped.encode("utf-8", "surrogatepass"))
    return size


#: Bytes of a ``{str: int}`` struct's member besides its key (its tags and value), and of the struct
#: around its members; an int of XML-RPC's 32 bits is written in at most 11 characters.
_COUNT_MEMBER = INT_MEMBER_FIXED + 11
_STRUCT = len("<value><struct>\n</struct></value>\n")
_INT_RANGE = range(-(2**31), 2**31)


def _counts_size(struct: dict[Any, Any]) -> int | None:
    """At least the bytes ``struct`` is written in if it maps ASCII strings that XML does not escape to
    32-bit ints (a slave's click batch, ``Store.Clicks``), else ``None``.

    Marshalling a batch only to measure it cost a slave 0.8 ms for a batch of 1,000 keys, about a dozen
    times a second under load; this is a few C-level passes over the keys and counts, 0.07 ms (timeit,
    CPython 3.11)."""
    try:
        keys = "".join(struct)
    except TypeError:
        return None  # a key that is not a string
    if not keys.isascii() or "&" in keys or "<" in keys or ">" in keys:
        return None
    counts = struct.values()
    if struct and (
        set(map(type, counts)) != {int} or min(counts) not in _INT_RANGE or max(counts) not in _INT_RANGE
    ):
        return None
    return _STRUCT + len(keys) + _COUNT_MEMBER * len(struct)


class _TooLarge(Exception):
    pass


_DONE = Failure(ResponseDone())


class _BoundedBody(BaseProtocol):
    """Collects a response body of at most ``limit`` bytes; past it, drops the connection."""

    def __init__(
        self, finished: Deferred[bytes], limit: int, declared: int | None, clock: IReactorTime
    ) -> None:
        self._finished = finished
        self._clock = clock
        self._limit = limit
        self._declared = declared
        self._parts: list[bytes] = []
        self._size = 0
        self._refused = False

    def connectionMade(self) -> None:
        if self._declared is not None and self._declared > self._limit:
            self.stop()

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        self._size += len(data)
        if self._size > self._limit:
            self.stop()
            return
        self._parts.append(data)

    def stop(self) -> None:
        """Refuse the body; the connection is closed on the next reactor turn unless the answer is
        complete by then.

        Not at once: this may run inside the client's parsing of the answer, and the rest of the answer
        may be in the very data being parsed. Closing now would let the client see a complete answer
        and hand the closing connection back to the pool, where the next POST would take it and fail
        with "connection closed". By the next turn a complete answer has left the connection clean and
        reusable, and the response's transport no longer reaches it, so stopping is a no-op.
        """
        if not self._refused:
            self._refused = True
            self._parts = []
            self._clock.callLater(0, self._drop_connection)

    def _drop_connection(self) -> None:
        producer: Any = self.transport  # an IPushProducer: the response's connection, while it lasts
        if producer is not None:
            producer.stopProducing()

    def connectionLost(self, reason: Failure = _DONE) -> None:
        if self._finished.called:
            return
        if self._refused:
            self._finished.errback(_TooLarge(f"the answer is longer than {self._limit} bytes"))
        elif reason.check(ResponseDone, PotentialDataLoss):
            self._finished.callback(b"".join(self._parts))
        else:
            self._finished.errback(reason)


def _read_bounded(response: Any, limit: int, clock: IReactorTime) -> Deferred[bytes]:
    """The body of ``response`` (an ``IResponse``), or a failure if it is longer than ``limit``."""
    length = getattr(response, "length", UNKNOWN_LENGTH)
    declared = length if isinstance(length, int) else None
    protocol: _BoundedBody

    def cancel(_: Deferred[bytes]) -> None:
        protocol.stop()

    finished: Deferred[bytes] = Deferred(cancel)
    protocol = _BoundedBody(finished, limit, declared, clock)
    response.deliverBody(protocol)

    def too_large(failure: Failure) -> Failure:
        failure.trap(_TooLarge)
        return Failure(MasterUnreachable(UNREACHABLE_MESSAGE, detail=str(failure.value)))

    return finished.addErrback(too_large)


def _describe(failure: Failure) -> str:
    """A one-line cause for the log: the reasons inside Twisted's wrappers, not their reprs."""
    value = failure.value
    reasons = getattr(value, "reasons", None)
    if isinstance(reasons, list) and reasons:
        return "; ".join(
            _describe(reason) if isinstance(reason, Failure) else str(reason) for reason in reasons
        )
    if isinstance(value, (TimeoutError, CancelledError)):
        return "no answer in time (--rpc-timeout)"
    text = str(value).strip()
    return f"{type(value).__name__}: {text}" if text else type(value).__name__


def _client_text(text: object, default: str) -> str:
    """A master's fault text, if it is fit to show a user (short, printable); else ``default``."""
    if isinstance(text, str) and 0 < len(text) <= _MAX_FAULT_TEXT and text.isprintable():
        return text
    return default


def _fault_error(code: object, text: object) -> Exception:
    """The store error a master's fault stands for.

    XML-RPC's "not found" fault (8001: no such method, or a master that keeps nothing for it, such
    as clicks on PostgreSQL) is :class:`NotKept`: asking again will not help, so callers stop.
    """
    if code == _NO_SUCH_METHOD:
        return NotKept(
            _client_text(text, "the master does not keep this"),
            detail=f"the master's fault {code}: {text!r:.{_MAX_FAULT_TEXT}}",
        )
    if code == NotAuthorized.fault_code:
        # Our own misconfiguration, not the user's fault: they get a 503, the operator a log line.
        return MasterRefused(
            UNREACHABLE_MESSAGE, detail="the master refused this slave's RPC secret (see --rpc-secret-file)"
        )
    error_class = ERRORS_BY_FAULT_CODE.get(code) if isinstance(code, int) else None
    if error_class is None or error_class is NotAuthorized:
        return MasterFailed(
            UNREACHABLE_MESSAGE, detail=f"the master answered fault {code!r:.40}: {text!r:.{_MAX_FAULT_TEXT}}"
        )
    return error_class(
        _client_text(text, UNREACHABLE_MESSAGE),
        detail=f"the master's fault {code}: {text!r:.{_MAX_FAULT_TEXT}}",
    )


def _deliver(results: Any, answers: list[Deferred[Any]]) -> None:
    """Fire the one call of a request that was not a multicall."""
    if not answers[0].called:
        answers[0].callback(results)


def _distribute(results: Any, answers: list[Deferred[Any]]) -> None:
    """Fire each batched call's Deferred with its own result from a multicall answer."""
    if not isinstance(results, list) or len(results) != len(answers):
        detail = "the master's multicall answer does not match the calls"
        _fail_all(Failure(MasterUnreachable(UNREACHABLE_MESSAGE, detail=detail)), answers)
        return
    for result, answer in zip(results, answers):
        if answer.called:
            continue
        if isinstance(result, list) and len(result) == 1:
            answer.callback(result[0])
        elif isinstance(result, dict):
            answer.errback(_fault_error(result.get("faultCode"), result.get("faultString")))
        else:
            answer.errback(MasterUnreachable(UNREACHABLE_MESSAGE, detail="a malformed multicall answer"))


def _fail_all(failure: Failure, answers: list[Deferred[Any]]) -> None:
    """Fail every batched call with the failure of their shared request."""
    for answer in answers:
        if not answer.called:
            answer.errback(failure)


class _NotXMLRPC(Exception):
    pass


def _decode_response(body: bytes) -> Any:
    """Return the single value of an XML-RPC response, or a Failure of the store error its fault
    names: returned, not raised, since every key a master does not hold is one, and raising it made
    the caller build its Failure from the traceback (bench/rpc_calls.py ``unknown``, CPython 3.11:
    140 -> 126 us a call, slave and master together).

    The master sends UTF-8 without a DTD; anything else is refused by the same hardened parser the
    master reads its calls with (:mod:`goto_tw.xmlrpcbody`): one policy for untrusted XML-RPC.
    """
    try:
        (value,), _ = parse_call(body)
    except xmlrpclib.Fault as fault:
        return Failure(_fault_error(fault.faultCode, fault.faultString))
    except RefusedBody as exc:
        raise _NotXMLRPC(str(exc)) from None
    except Exception as exc:
        raise _NotXMLRPC(f"{type(exc).__name__}: {exc}"[:200]) from None
    return value


def _add_answer(answer: Any) -> Any:
    """``Store.Add`` answers ``{"key": K, "new": B}``; the pair ``(K, B)``, or the answer as it came."""
    if isinstance(answer, dict) and set(answer) == {"key", "new"}:
        return answer["key"], answer["new"]
    return answer
