"""One result shared by many waiters: how concurrent requests for the same thing cost one call.

Every cache miss and every add of a slave passes through here, so it is lean: one callback on the
call's Deferred per call (not one per layer) and one Deferred per waiter, which is the least that
keeps waiters apart (each Deferred is its own callback chain, and its own thing to cancel).
Measured on the shared test machine: a callback costs about 0.6 us to add and run, a Deferred about
0.7 us to make and fire, on CPython 3.11 (PyPy 3.9: 0.15 and 0.12); bench/slave_calls.py has the
figures per miss and per add.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")


class SharedResult(Generic[T]):
    """Hands each waiter its own Deferred, all fired with the one result of a call.

    A Deferred's callbacks form a single chain, so handing the same Deferred to several callers lets
    one caller's callbacks change what the next one sees; each waiter gets a fresh Deferred instead.
    A waiter that cancels its Deferred only stops waiting; the shared call goes on for the others.

    The result comes from ``source`` when one is given, else from a call of :meth:`fire` (for a
    caller that has its own callback on the call's Deferred and needs no second one).
    """

    __slots__ = ("_fired", "_result", "_waiters")

    def __init__(self, source: Deferred[T] | None = None) -> None:
        self._waiters: list[Deferred[T]] = []
        self._result: T | Failure | None = None
        self._fired = False
        if source is not None:
            source.addBoth(self.fire)

    @property
    def done(self) -> bool:
        """True once the shared call has its result."""
        return self._fired

    def wait(self) -> Deferred[T]:
        """Return a new Deferred that fires with the shared result (at once, if it is known)."""
        if self._fired:
            waiter: Deferred[T] = Deferred()
            if isinstance(self._result, Failure):
                waiter.errback(self._result)
            else:
                waiter.callback(self._result)  # type: ignore[arg-type]
            return waiter
        waiter = Deferred(self._stop_waiting)
        self._waiters.append(waiter)
        return waiter

    def _stop_waiting(self, waiter: Deferred[T]) -> None:
        """A waiter's canceller: it leaves the list (then ``cancel`` fails it with CancelledError)."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def fire(self, result: T | Failure) -> None:
        """Give every waiter ``result`` (a value or a Failure), and every later waiter too.

        Returns ``None``: as a callback, it ends the source's own chain (a failure is delivered to
        the waiters, not lost). A waiter cancelled meanwhile (by another waiter's callbacks, which
        run during this loop) has its answer already and is skipped; the others still get theirs.
        """
        self._result = result
        self._fired = True
        waiters, self._waiters = self._waiters, []
        if isinstance(result, Failure):
            for waiter in waiters:
                if not waiter.called:
                    waiter.errback(result)
        else:
            for waiter in waiters:
                if not waiter.called:
                    waiter.callback(result)


K = TypeVar("K")


class Coalescing(Generic[K, T]):
    """Calls by key, where a call for a key already in flight joins it instead of starting another.

    How a flood of requests for one uncached key costs the master one call, and how two adds of
    one URL at the same moment write one record.
    """

    def __init__(self) -> None:
        self._in_flight: dict[K, SharedResult[T]] = {}

    def call(self, key: K, start: Callable[..., Deferred[T]], *args: object) -> Deferred[T]:
        """Join the call in flight for ``key``, or make it with ``start(*args)``; each caller gets its
        own Deferred of the one result. (``start`` and its arguments, not a closure made per call.)"""
        shared = self._in_flight.get(key)
        if shared is None:
            shared = SharedResult()
            source = start(*args)
            source.addBoth(self._finished, key, shared)  # one callback: forget the call, then fan out
            if not shared.done:  # a call that answered at once leaves nothing in flight
                self._in_flight[key] = shared
        return shared.wait()

    def _finished(self, result: T | Failure, key: K, shared: SharedResult[T]) -> None:
        # Forgotten before the waiters hear of the result: a waiter that asks again makes a new call.
        if self._in_flight.get(key) is shared:
            del self._in_flight[key]
        shared.fire(result)
