"""How the services start and stop: listeners that fail start-up in one line, and a graceful stop.

On SIGTERM ``twistd`` stops the service tree and waits for it. A graceful stop stops taking
connections first, lets the requests already accepted finish (bounded), and only then flushes the
access log and closes files and connection pools: :class:`StopInOrder` stops its children one after
another, newest first, and :class:`DrainService` is the "let them finish" step between the two.
"""

from __future__ import annotations

import signal
import sys
from functools import partial
from types import TracebackType
from typing import Any, Callable, Protocol

from twisted.application import strports
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IProtocolFactory, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


def listening_service(option: str, description: str, factory: IProtocolFactory, reactor: Any) -> IService:
    """A service listening on ``description``; start-up ends with one line naming ``option`` if it cannot.

    ``strports.service`` fails start-up when the port cannot be opened (in use, no permission),
    where a plain ``StreamServerEndpointService`` would only log it and keep running, serving
    nothing; this turns its traceback into a message and exit status 1.
    """
    listener = _ExitIfCannotListen(option, description)
    strports.service(description, factory, reactor=reactor).setServiceParent(listener)
    return listener


class CannotStart(Exception):
    """Start-up stops for the reason its message gives in one line (for the operator), exit status 1.

    An ``Exception``, not ``SystemExit``: a daemonizing ``twistd`` (no ``-n``) reports only an
    ``Exception`` from starting the services to the parent waiting in the foreground, which then
    prints it and exits 1; after a ``SystemExit`` that parent waited for ever. In the foreground
    (``-n``) the hook :func:`prepare_process` installs prints the line without a traceback. That
    parent shows only the first 100 bytes of ``goto.CannotStart: MESSAGE``: the reason comes first in
    the message, the whole line is in the daemon's log.
    """


CannotStart.__module__ = "goto"  # shorter where twistd's launcher shows the class (see above)


def prepare_process() -> None:
    """What a ``twistd goto`` process needs before its services are built (not for tests' reactors):

    - SIGHUP ignored: its default ends the process, and an operator's reload may come while the data
      file loads, before the reloader takes the signal over (and after it lets it go, on stop);
    - an uncaught :class:`CannotStart` printed as its one line, without a traceback.
    """
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _report_cannot_start()


def _report_cannot_start() -> None:
    """Print an uncaught :class:`CannotStart` as its one line (no traceback); anything else as before."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
        if isinstance(value, CannotStart):
            print(value, file=sys.stderr)
        else:
            previous(kind, value, traceback)

    if getattr(previous, "reports_cannot_start", False):
        return
    hook.reports_cannot_start = True  # type: ignore[attr-defined]
    sys.excepthook = hook


#: Sets a signal's handler (``signal.signal``'s signature).
SetHandler = Callable[[int, Any], object]


class StopSignalsOnce(Service):
    """The first SIGTERM or SIGINT stops the process as twisted's handler does; one that comes while
    it stops is a line saying so.

    twisted's handler calls ``reactor.stop()`` for every signal, and a second call while the first
    stop is under way (a slave waiting for its master's answers, a master writing its adds) raises
    ``ReactorNotRunning``, logged as a critical traceback. Operators and tools (``timeout``, a
    second Ctrl-C) send a second signal; it changes nothing either way (SIGKILL stops at once).
    It wraps the reactor's handlers once the reactor runs (the reactor installs them as it starts).
    """

    def __init__(
        self,
        reactor: Any,
        signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT),
        get_handler: Callable[[int], Any] = signal.getsignal,
        set_handler: SetHandler = signal.signal,
    ) -> None:
        self._reactor = reactor
        self._signals = signals
        self._get_handler = get_handler
        self._set_handler = set_handler
        self._stopping = False

    def startService(self) -> None:
        super().startService()
        self._reactor.addSystemEventTrigger("before", "shutdown", self._stop_began)
        # twistd starts the services before the reactor runs, and the reactor installs its handlers
        # as it starts running: wrapped once they are there.
        self._reactor.callWhenRunning(self._wrap_handlers)

    def _wrap_handlers(self) -> None:
        for number in self._signals:
            handler = self._get_handler(number)
            if callable(handler):
                self._set_handler(number, partial(self._received, handler))

    def _stop_began(self) -> None:
        self._stopping = True

    def _received(self, handler: Callable[[int, Any], object], number: int, frame: Any) -> None:
        if not self._stopping:
            self._stopping = True
            handler(number, frame)
            return
        # A Python signal handler runs between two bytecodes of whatever the main thread was doing:
        # the line is logged from the reactor's loop.
        self._reactor.callFromThread(
            log.info,
            "Received {signal} again: already stopping (every request accepted is answered first; "
            "SIGKILL stops at once)",
            signal=signal.Signals(number).name,
        )


class _ExitIfCannotListen(MultiService):
    """The parent of a listener: its ``CannotListenError`` at start-up becomes one line and exit 1,
    as does an ``OSError`` (a ``unix:`` socket's lock file in a directory that does not exist)."""

    def __init__(self, option: str, description: str) -> None:
        super().__init__()
        self._option = option
        self._description = description

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as exc:
            reason = getattr(exc.socketError, "strerror", None) or exc.socketError
        except OSError as exc:
            reason = exc.strerror or exc
        else:
            return
        raise CannotStart(f"goto: {self._option}: {reason} (cannot listen on {self._description})")


class StopInOrder(MultiService):
    """A ``MultiService`` that stops its children one at a time, newest first, each once the one
    added after it has finished stopping.

    ``MultiService`` stops them all at once; here the listeners (added last) stop first, the
    requests they accepted are then let finish, and only then are the access log flushed and the
    store's connections or files closed.
    """

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        stopped: Deferred[None] = succeed(None)
        for child in reversed(list(self)):
            stopped.addCallback(_stop, child)
        return stopped


def _stop(_: object, child: IService) -> Deferred[None]:
    """Stop ``child``; a failure to stop is logged and does not keep the others running."""
    stopping: Deferred[None] = maybeDeferred(child.stopService)
    return stopping.addErrback(_log_stop_failure, child)


def _log_stop_failure(failure: Failure, child: IService) -> None:
    log.failure("Failed to stop {service!r}", failure, service=child)


class Drainable(Protocol):
    """A store that can tell when the work it has accepted is done (a slave's ``ProxyStore``)."""

    def drain(self, timeout: float) -> Deferred[None]:
        """Fire once nothing is in flight, or after ``timeout`` seconds; never fail."""


class DrainService(Service):
    """On stop, waits until the calls that accepted requests are waiting on have finished (at most
    ``timeout`` seconds), then two more reactor turns so their answers reach the clients' sockets
    before the reactor drops every connection at shutdown.
    """

    def __init__(self, store: Drainable, clock: IReactorTime, timeout: float) -> None:
        self._store = store
        self._clock = clock
        self._timeout = timeout

    def stopService(self) -> Deferred[None]:
        super().stopService()
        drained = self._store.drain(self._timeout)
        # The answer of the last call is written in the turn it arrives; the turn after, the reactor
        # sends it. Timed calls run before I/O in a turn, hence two turns.
        drained.addCallback(lambda _: deferLater(self._clock, 0, lambda: None))
        drained.addCallback(lambda _: deferLater(self._clock, 0, lambda: None))
        return drained
