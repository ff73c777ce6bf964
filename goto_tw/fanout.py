"""One result shared by many waiters: how concurrent requests for the same thing cost one call."""

from __future__ import annotations

from typing import Generic, TypeVar

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
