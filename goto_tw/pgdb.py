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
from twisted.internet.defer import Deferred, succeed
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
    """One call in a pool thread: the connection it uses, and whether the reactor gave up on it.
    Both change under the database's lock only, so a connection is never shut down once its thread
    has let it go (its descriptor may belong to another socket by then)."""

    __slots__ = ("abandoned", "connection")

    def __init__(self) -> None:
        self.connection: Any = None
        self.abandoned = False


class Database(Service):
    """Runs ``function(connection)`` in its own thread pool of ``size`` threads, one connection each.

    ``observe(seconds, outcome)`` is told how long each call took (for metrics); ``in_use`` is how
    many calls are running now. A call that takes longer than ``call_timeout`` seconds fails with
    :class:`DatabaseDown` (see :data:`CALL_TIMEOUT`), so every caller gets an answer.
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

    def startService(self) -> None:
        super().startService()
        self._pool.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        closed = deferToThreadPool(self._reactor, self._pool, self._close_idle)

        def stop_pool(_: object) -> None:
            self._pool.stop()

        return closed.addBoth(stop_pool)

    def run(self, function: Callable[[Any], T], *, transaction: bool = True) -> Deferred[T]:
        """Run ``function(connection)`` in a pool thread; fire with its result (in the reactor thread).

        With ``transaction`` the function runs inside a transaction that commits when it returns
        and rolls back when it raises; without, each statement commits by itself (a single read is
        then one round trip, not three). Fails with :class:`DatabaseDown` when the database cannot
        be used.
        """
        if not self._pool.started:
            return succeed(None).addCallback(lambda _: _raise(DatabaseDown("the database pool is stopped")))
        self.in_use += 1
        started = time.monotonic()
        running = _Running()
        ran: Deferred[T] = deferToThreadPool(
            self._reactor, self._pool, self._in_thread, function, transaction, running
        )

        def timed_out(result: object, timeout: float) -> object:
            self._abandon(running)
            return Failure(DatabaseDown(f"no answer from the database within {timeout:g} s"))

        # A Deferred cancelled for its timeout ignores the thread's late result (Deferred.cancel).
        ran.addTimeout(self._call_timeout, self._reactor, onTimeoutCancel=timed_out)

        def done(result: object) -> object:
            self.in_use -= 1
            if self._observe is not None:
                if not isinstance(result, Failure):
                    outcome = "ok"
                else:
                    outcome = "down" if result.check(DatabaseDown) else "error"
                self._observe(time.monotonic() - started, outcome)
            return result

        return ran.addBoth(done)

    def _abandon(self, running: _Running) -> None:
        """The reactor gives up on a call: shut its connection down (in whatever thread blocks on
        it, the call then fails at once), and have its thread close it instead of keeping it."""
        with self._lock:
            running.abandoned = True
            if running.connection is not None:
                _shut_down(running.connection)

    def _in_thread(self, function: Callable[[Any], T], transaction: bool, running: _Running) -> T:
        import psycopg
        import psycopg.errors

        with self._lock:
            connection = self._idle.pop() if self._idle else None
            running.connection = connection
        broken = False
        try:
            if connection is None:
                connection = self._connector(self.uri)
                with self._lock:
                    running.connection = connection
            if running.abandoned:
                raise DatabaseDown("given up on before it started")
            if transaction:
                with connection.transaction():
                    result = function(connection)
            else:
                result = function(connection)
        except psycopg.errors.TransactionRollback as exc:
            raise TransactionConflict(_describe(exc)) from None
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            broken = (
                connection.closed or connection.broken or _is_connection_error(exc) if connection else True
            )
            raise DatabaseDown(_describe(exc)) from None
        except BaseException:
            broken = connection is None or connection.closed or connection.broken
            raise
        finally:
            with self._lock:  # from here on the reactor no longer touches this connection
                running.connection = None
                if connection is not None and not broken and not running.abandoned:
                    self._idle.append(connection)
                    connection = None
            if connection is not None:
                _close(connection)
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
    with contextlib.suppress(Exception):
        descriptor = connection.pgconn.socket
        with socket.socket(fileno=os.dup(descriptor)) as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)


def _describe(exc: Exception) -> str:
    """One line naming the failure (libpq's messages span lines)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
