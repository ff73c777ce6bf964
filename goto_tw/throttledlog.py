"""An error a client can cause on every request (a bad answer, a bad row), logged at most once an
interval with how many were not: the log tells the operator without flooding."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel


class ThrottledError:
    """``error(**fields)`` logs ``format`` (its fields, and ``unlogged``: how many were left out since
    the last line) through ``log`` at ``level`` (an error unless told), at most once every
    ``interval`` seconds of ``clock``."""

    def __init__(
        self, log: Logger, clock: IReactorTime, format: str, interval: float, level: LogLevel = LogLevel.error
    ) -> None:
        self._log = log
        self._level = level
        self._clock = clock
        self._format = format
        self._interval = interval
        self._logged_at = -interval
        self._unlogged = 0

    def error(self, **fields: Any) -> None:
        now = self._clock.seconds()
        if now >= self._logged_at + self._interval:
            self._log.emit(self._level, self._format, unlogged=self._unlogged, **fields)
            self._logged_at = now
            self._unlogged = 0
        else:
            self._unlogged += 1
