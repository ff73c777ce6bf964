"""Time as text, formatted at most once per second: every answer carries a ``Date`` and every
access-log line a timestamp, and formatting one per request would cost more than the answer."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from twisted.internet.interfaces import IReactorTime

T = TypeVar("T")


class PerSecond(Generic[T]):
    """``format(now)`` of the clock's current second, computed once per second."""

    def __init__(self, clock: IReactorTime, format: Callable[[float], T]) -> None:
        self._clock = clock
        self._format = format
        self._second = -1
        self._text: T | None = None

    def now(self) -> T:
        """The text of the current second."""
        now = self._clock.seconds()
        if int(now) != self._second or self._text is None:
            self._second = int(now)
            self._text = self._format(now)
        return self._text
