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
        application_name="goto-tw",
        autocommit=True,  # a look-up is one round trip; writes open their transaction themselves
    )


class Database(Service):
    """Runs ``function(connection)`` in its own thread pool of ``size`` threads, one connection each.

    ``observe(seconds, outcome)`` is told how long each call took (for metrics); ``in_use`` is how
    many calls are running now.
    """

    def __init__(
        self,
        uri: str,
        reactor: Any,
        *,
        size: int = 4,
        observe: Callable[[float, str], None] | None = None,
        connector: Callable[[str], Any] = connect,
    ) -> None:
        self.uri = uri
        self.size = size
        self._reactor = reactor
        self._observe = observe
        self._connector = connector
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
        ran: Deferred[T] = deferToThreadPool(
            self._reactor, self._pool, self._in_thread, function, transaction
        )

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

    def _in_thread(self, function: Callable[[Any], T], transaction: bool) -> T:
        import psycopg
        import psycopg.errors

        with self._lock:
            connection = self._idle.pop() if self._idle else None
        try:
            if connection is None:
                connection = self._connector(self.uri)
            if transaction:
                with connection.transaction():
                    result = function(connection)
            else:
                result = function(connection)
        except psycopg.errors.TransactionRollback as exc:
            raise TransactionConflict(_describe(exc)) from None
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if connection is not None and (
                connection.closed or connection.broken or _is_connection_error(exc)
            ):
                _close(connection)
                connection = None
            raise DatabaseDown(_describe(exc)) from None
        except BaseException:
            if connection is not None and (connection.closed or connection.broken):
                _close(connection)
                connection = None
            raise
        finally:
            if connection is not None:
                with self._lock:
                    self._idle.append(connection)
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


def _describe(exc: Exception) -> str:
    """One line naming the failure (libpq's messages span lines)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
