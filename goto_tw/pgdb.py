"""Blocking psycopg work, run off the reactor: a small thread pool, one connection per thread at most.

As Twisted's ``adbapi`` does, each call runs a function with a connection in a thread of a pool of
its own (never the reactor's), so a slow or vanished database never stalls the reactor. A connection
that failed is closed and replaced on the next call: reconnecting needs nothing more. Every failure
that means "the database cannot be used now" (refused, reset, timed out, restarting) becomes
:class:`DatabaseDown`; anything else is a bug and keeps its own type.

Why threads and not psycopg's async API: measured on this project's 2-core machine (20,000 single-key
look-ups, 50 in flight, 4 connections), the thread pool under Twisted answered 6,500/s on CPython
and 3,000/s on PyPy; the async API on a bare asyncio loop (no Twisted at all) 8,000/s and 4,000/s.
Using it here would mean Twisted's asyncio reactor in every process, for a path only cache misses
take; the thread pool keeps the default reactor, works the same on PyPy's pure-Python psycopg, and
group commit makes a thread hop per batch of adds, not per add.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Any, Callable, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from goto_tw import pypyctypes

T = TypeVar("T")

#: Seconds to wait for a connection to the database to open (libpq ``connect_timeout``).
CONNECT_TIMEOUT = 3
#: Longest one statement may run on the server (milliseconds): no request waits on a stuck query.
STATEMENT_TIMEOUT_MS = 5000
#: Longest one call may take, connecting included, measured here (seconds). The statement timeout
#: is the server's to enforce, and a server that is frozen (stopped, a paused VM) or cut off without
#: a reset enforces nothing: past this a call fails with :class:`DatabaseDown` and its connection is
#: shut down, which wakes the thread blocked on it.
CALL_TIMEOUT = CONNECT_TIMEOUT + STATEMENT_TIMEOUT_MS / 1000 + 1
#: TCP keepalives (seconds idle, seconds between probes, probes) on a connection over TCP, so an
#: idle pooled connection to a vanished server is found dead before a call needs it; and the
#: longest sent data may stay unacknowledged (milliseconds) before the kernel gives up on it.
KEEPALIVES = (5, 2, 3)
TCP_USER_TIMEOUT_MS = int(CALL_TIMEOUT * 1000)


class DatabaseDown(Exception):
    """The database could not be used for this call (the text says why, for the operator's log)."""


class DatabaseBusy(Exception):
    """No thread of the pool was free for this call in time: the database may well be fine, this
    master has more calls than its pool answers (the text says so, for the operator's log)."""


class TransactionConflict(Exception):
    """The server rolled this transaction back (deadlock, serialization): retrying may work; the
    database itself is fine."""


def connect(uri: str, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> Any:
    """Open a psycopg connection to ``uri`` with the store's timeouts (blocking: call in a thread).

    ``statement_timeout_ms=0`` lifts the statement timeout (bulk work in ``goto-admin``).
    """
    import psycopg

    pypyctypes.apply()
    return psycopg.connect(
        uri,
        connect_timeout=CONNECT_TIMEOUT,
        options=f"-c statement_timeout={statement_timeout_ms}",
        keepalives=1,
        keepalives_idle=KEEPALIVES[0],
        keepalives_interval=KEEPALIVES[1],
        keepalives_count=KEEPALIVES[2],
        tcp_user_timeout=TCP_USER_TIMEOUT_MS,
        application_name="goto-tw",
        autocommit=True,  # a look-up is one round trip; writes open their transaction themselves
    )


class _Running:
    """One call: when a thread took it (``None`` while it waits for one), the connection it uses,
    and whether the reactor gave up on it. They change under the database's lock only, so a
    connection is never shut down once its thread has let it go (its descriptor may belong to
    another socket by then)."""

    __slots__ = ("abandoned", "connection", "started")

    def __init__(self) -> None:
        self.started: float | None = None
        self.connection: Any = None
        self.abandoned = False


class Database(Service):
    """Runs ``function(connection)`` in its own thread pool of ``size`` threads, one connection each.

    ``observe(seconds, outcome)`` is told how long each call took (for metrics); ``in_use`` is how
    many threads are in a call now. Every caller gets an answer within ``call_timeout`` seconds of
    its call starting in a thread (:data:`CALL_TIMEOUT`; past it :class:`DatabaseDown`), and within
    ``call_timeout`` of asking if no thread was free for it (:class:`DatabaseBusy`).
    """

    def __init__(
        self,
        uri: str,
        reactor: Any,
        *,
        size: int = 4,
        observe: Callable[[float, str], None] | None = None,
        connector: Callable[[str], Any] = connect,
        call_timeout: float = CALL_TIMEOUT,
    ) -> None:
        self.uri = uri
        self.size = size
        self._reactor = reactor
        self._observe = observe
        self._connector = connector
        self._call_timeout = call_timeout
        self._pool = ThreadPool(0, size, name="goto-postgres")
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self.in_use = 0
        #: Calls asked for and not yet out of their thread (under the lock); stopping waits for them.
        self._calls: set[_Running] = set()
        self._stopping = False
        self._drained: list[Deferred[None]] = []

    def startService(self) -> None:
        super().startService()
        self._pool.start()

    def stopService(self) -> Deferred[None]:
        """Refuse new calls, wait for those under way (their deadlines bound the wait: a thread
        blocked on a frozen server is woken by its call's deadline, which only the reactor can run,
        so the pool is joined only once no thread is in a call), close the idle connections, stop."""
        super().stopService()
        self._stopping = True
        drained: Deferred[None] = Deferred()
        self._drained.append(drained)
        self._reactor.callLater(0, self._check_drained)

        def close_idle(_: object) -> Deferred[None]:
            return deferToThreadPool(self._reactor, self._pool, self._close_idle)

        def stop_pool(_: object) -> None:
            self._pool.stop()

        return drained.addCallback(close_idle).addBoth(stop_pool)

    def _check_drained(self) -> None:
        with self._lock:
            busy = bool(self._calls)
        if not busy:
            waiting, self._drained = self._drained, []
            for drained in waiting:
                drained.callback(None)

    def run(self, function: Callable[[Any], T], *, transaction: bool = True) -> Deferred[T]:
        """Run ``function(connection)`` in a pool thread; fire with its result (in the reactor thread).

        With ``transaction`` the function runs inside a transaction that commits when it returns
        and rolls back when it raises; without, each statement commits by itself (a single read is
        then one round trip, not three). Fails with :class:`DatabaseDown` when the database cannot
        be used, :class:`DatabaseBusy` when no thread was free for it in time.
        """
        if not self._pool.started or self._stopping:
            return succeed(None).addCallback(lambda _: _raise(DatabaseDown("the database pool is stopped")))
        asked = time.monotonic()
        running = _Running()
        with self._lock:
            self._calls.add(running)
        ran: Deferred[T] = deferToThreadPool(
            self._reactor, self._pool, self._in_thread, function, transaction, running
        )
        timeout = self._call_timeout
        why: list[Exception] = []

        def expire() -> None:
            with self._lock:
                if running.started is None:  # still waiting for a thread: its thread will skip it
                    running.abandoned = True
                    why.append(DatabaseBusy(f"no database connection was free within {timeout:g} s"))
                else:
                    left = running.started + timeout - time.monotonic()
                    if left > 0:
                        timer[0] = self._reactor.callLater(left, expire)
                        return
                    running.abandoned = True
                    if running.connection is not None:
                        _shut_down(running.connection)  # wakes the thread blocked on it
                    why.append(DatabaseDown(f"no answer from the database within {timeout:g} s"))
            ran.cancel()  # fires the caller's Deferred now; the thread's late result is ignored

        timer = [self._reactor.callLater(timeout, expire)]

        def settled(result: object) -> object:
            if timer[0].active():
                timer[0].cancel()
            if why and isinstance(result, Failure) and result.check(CancelledError):
                result = Failure(why[0])
            if self._observe is not None:
                if not isinstance(result, Failure):
                    outcome = "ok"
                elif result.check(DatabaseDown):
                    outcome = "down"
                else:
                    outcome = "busy" if result.check(DatabaseBusy) else "error"
                self._observe(time.monotonic() - asked, outcome)
            return result

        return ran.addBoth(settled)

    def _in_thread(self, function: Callable[[Any], T], transaction: bool, running: _Running) -> T:
        import psycopg
        import psycopg.errors

        connection = None
        broken = False
        try:
            with self._lock:
                if running.abandoned:  # given up on while it waited: no connection is touched
                    raise DatabaseBusy("given up on while waiting for a thread")
                running.started = time.monotonic()
                self.in_use += 1
                connection = self._idle.pop() if self._idle else None
                running.connection = connection
            if connection is None:
                connection = self._connector(self.uri)
                with self._lock:
                    running.connection = connection
                    if running.abandoned:
                        raise DatabaseDown("given up on while connecting")
            if transaction:
                with connection.transaction():
                    result = function(connection)
            else:
                result = function(connection)
        except psycopg.errors.TransactionRollback as exc:
            raise TransactionConflict(_describe(exc)) from None
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            broken = connection is None or connection.closed or connection.broken or _is_connection_error(exc)
            raise DatabaseDown(_describe(exc)) from None
        except BaseException:
            broken = connection is None or connection.closed or connection.broken
            raise
        finally:
            with self._lock:  # from here on the reactor no longer touches this connection
                if running.started is not None:
                    self.in_use -= 1
                running.connection = None
                if connection is not None and not broken and not running.abandoned:
                    self._idle.append(connection)
                    connection = None
                self._calls.discard(running)
                last = not self._calls
            if connection is not None:
                _close(connection)
            if last and self._stopping:
                self._reactor.callFromThread(self._check_drained)
        return result

    def _close_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            _close(connection)


def _raise(error: Exception) -> Any:
    raise error


def _is_connection_error(exc: Exception) -> bool:
    """A statement timeout leaves the connection usable; everything else here is treated as fatal."""
    import psycopg.errors

    return not isinstance(exc, psycopg.errors.QueryCanceled)


def _close(connection: Any) -> None:
    with contextlib.suppress(Exception):
        connection.close()


def _shut_down(connection: Any) -> None:
    """Shut the connection's socket down for both directions (from any thread): a thread blocked on
    it wakes with an error at once. Only while the connection is in use (see :class:`_Running`)."""
    try:
        descriptor = connection.pgconn.socket
    except Exception:  # libpq has let its socket go already (psycopg: "the connection is lost")
        return
    try:
        copy = os.dup(descriptor)
    except OSError:  # pragma: no cover - out of descriptors: the call still fails at its deadline
        return
    try:
        duplicate = socket.socket(fileno=copy)
    except OSError:  # pragma: no cover - not a socket after all
        os.close(copy)
        return
    with duplicate, contextlib.suppress(OSError):
        duplicate.shutdown(socket.SHUT_RDWR)


def _describe(exc: Exception) -> str:
    """One line naming the failure (libpq's messages span lines)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
