"""An error a client can cause on every request (a bad answer, a bad row), logged at most once an
interval with how many were not, and a condition that comes and goes (an outage), logged the same
way with its ends: the log tells the operator without flooding."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
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


class ThrottledCondition:
    """A condition that comes and goes (a master out of reach, a file that cannot be written):
    ``holds(**fields)`` each time it is found to hold, ``ended(**fields)`` when it ends, each kind
    of line logged at most once an interval (``holds_format`` at ``holds_level``, ``ended_format``
    at info), with how many of that kind were left out since its last line (``unlogged``).

    Two :class:`ThrottledError`\\ s, one a kind, could leave the log's last line telling the
    opposite of how things stand: a master down and back within one interval, then down for an
    hour, left "answers again" as the last line for that hour (a hostile review, stop 42). Here a
    line left out is made up for once its interval ends, if the log's last line then disagrees with
    how things stand, with the fields of the latest change: the last line always tells the truth.
    """

    def __init__(
        self,
        log: Logger,
        clock: IReactorTime,
        holds_format: str,
        ended_format: str,
        interval: float,
        holds_level: LogLevel = LogLevel.error,
    ) -> None:
        self._log = log
        self._clock = clock
        self._interval = interval
        self._lines = {True: (holds_level, holds_format), False: (LogLevel.info, ended_format)}
        self._logged_at = {True: -interval, False: -interval}
        self._unlogged = {True: 0, False: 0}
        self._fields: dict[bool, dict[str, Any]] = {True: {}, False: {}}
        self._making_up: dict[bool, IDelayedCall | None] = {True: None, False: None}
        #: How things stand, and what the log's last line said (before any line: it does not hold).
        self._holding = False
        self._said = False
        self._stopped = False

    def holds(self, **fields: Any) -> None:
        """The condition holds (again, or still): logged unless a line said so within the interval."""
        self._note(True, fields)

    def ended(self, **fields: Any) -> None:
        """The condition ended: logged unless a line said so within the interval."""
        self._note(False, fields)

    def stop(self) -> None:
        """The service stops: a line left out that the log's last line contradicts is said now, and
        nothing more is scheduled (what comes later is logged only as the intervals allow)."""
        self._stopped = True
        for call in self._making_up.values():
            if call is not None and call.active():
                call.cancel()
        self._making_up = {True: None, False: None}
        if self._holding != self._said:
            self._make_up(self._holding)

    def _note(self, holding: bool, fields: dict[str, Any]) -> None:
        self._holding = holding
        now = self._clock.seconds()
        due = self._logged_at[holding] + self._interval
        if now >= due:
            self._say(holding, fields, now)
            return
        self._unlogged[holding] += 1
        self._fields[holding] = fields
        if self._making_up[holding] is None and not self._stopped:
            self._making_up[holding] = self._clock.callLater(due - now, self._make_up, holding)

    def _make_up(self, kind: bool) -> None:
        self._making_up[kind] = None
        if self._holding == kind and self._said != kind:
            self._unlogged[kind] = max(0, self._unlogged[kind] - 1)  # the line made up is one of them
            self._say(kind, self._fields[kind], self._clock.seconds())

    def _say(self, kind: bool, fields: dict[str, Any], now: float) -> None:
        making_up = self._making_up[kind]
        if making_up is not None and making_up.active():  # this line is the one it would make up
            making_up.cancel()
        self._making_up[kind] = None
        level, text = self._lines[kind]
        self._log.emit(level, text, unlogged=self._unlogged[kind], **fields)
        self._unlogged[kind] = 0
        self._fields[kind] = {}
        self._logged_at[kind] = now
        self._said = kind
