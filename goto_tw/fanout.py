"""One result shared by many waiters: how concurrent requests for the same thing cost one call."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")


class SharedResult(Generic[T]):
    """Hands each waiter its own Deferred, all fired with the one result of ``source``.

    A Deferred's callbacks form a single chain, so handing the same Deferred to several callers lets
    one caller's callbacks change what the next one sees; each waiter gets a fresh Deferred instead.
    A waiter that cancels its Deferred only stops waiting; the shared call goes on for the others.
    """

    def __init__(self, source: Deferred[T]) -> None:
        self._waiters: list[Deferred[T]] = []
        self._result: T | Failure | None = None
        self._fired = False
        source.addBoth(self._fire)

    @property
    def done(self) -> bool:
        """True once the shared call has its result."""
        return self._fired

    def wait(self) -> Deferred[T]:
        """Return a new Deferred that fires with the shared result (at once, if it is known)."""
        waiter: Deferred[T] = Deferred(lambda d: self._waiters.remove(d) if d in self._waiters else None)
        if self._fired:
            self._deliver(waiter)
        else:
            self._waiters.append(waiter)
        return waiter

    def _deliver(self, waiter: Deferred[T]) -> None:
        if isinstance(self._result, Failure):
            waiter.errback(self._result)
        else:
            waiter.callback(self._result)  # type: ignore[arg-type]

    def _fire(self, result: T | Failure) -> None:
        self._result = result
        self._fired = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._deliver(waiter)
        return None  # the source's own chain ends here; its failure is delivered, not lost


K = TypeVar("K")


class Coalescing(Generic[K, T]):
    """Calls by key, where a call for a key already in flight joins it instead of starting another.

    How a flood of requests for one uncached key costs the master one call, and how two adds of
    one URL at the same moment write one record.
    """

    def __init__(self) -> None:
        self._in_flight: dict[K, SharedResult[T]] = {}

    def call(self, key: K, start: Callable[[], Deferred[T]]) -> Deferred[T]:
        """Join the call in flight for ``key``, or make it with ``start()``; each caller gets its own
        Deferred of the one result."""
        shared = self._in_flight.get(key)
        if shared is None:
            source = start()
            source.addBoth(self._finished, key)  # runs before the waiters hear of the result
            shared = SharedResult(source)
            if not shared.done:  # a call that answered at once leaves nothing in flight
                self._in_flight[key] = shared
        return shared.wait()

    def _finished(self, result: object, key: K) -> object:
        self._in_flight.pop(key, None)
        return result
