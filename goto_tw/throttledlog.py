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
    at info), with how many of that kind were left out since its last line (``unlogged``) and,
    in either line, ``cost``: what the ``cost`` given to ``holds`` adds up to since the last line
    that said the condition ended (records refused meanwhile, say).

    Two :class:`ThrottledError`\\ s, one a kind, could leave the log's last line telling the
    opposite of how things stand: a master down and back within one interval, then down for an
    hour, left "answers again" as the last line for that hour (a hostile review, stop 42). Here a
    line left out is made up for once its interval ends, if the log's last line then disagrees with
    how things stand, with the fields of the latest change: the last line always tells the truth.
    A reactor that stalled runs such a make-up late: a change noted after its time makes it up
    first, so the lines still alternate as the changes did. :meth:`stop` says how things stand
    at once (one line more than the interval allows, at most).
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
        self._cost = 0
        #: How things stand, and what the log's last line said (before any line: it does not hold).
        self._holding = False
        self._said = False

    def holds(self, cost: int = 0, **fields: Any) -> None:
        """The condition holds (again, or still), at ``cost``: logged unless a line said so within
        the interval."""
        self._cost += cost
        self._note(True, fields)

    def ended(self, **fields: Any) -> None:
        """The condition ended: logged unless a line said so within the interval."""
        self._note(False, fields)

    def stop(self) -> None:
        """The service stops: a line left out that the log's last line contradicts is said now, and
        nothing stays scheduled (a later change schedules its own make-up again)."""
        for kind in (True, False):
            self._cancel_making_up(kind)
        if self._holding != self._said:
            self._make_up(self._holding)

    def _note(self, holding: bool, fields: dict[str, Any]) -> None:
        now = self._clock.seconds()
        self._make_up_overdue(now)
        self._holding = holding
        due = self._logged_at[holding] + self._interval
        if now >= due:
            self._say(holding, fields, now)
            return
        self._unlogged[holding] += 1
        self._fields[holding] = fields
        if self._making_up[holding] is None:
            self._making_up[holding] = self._clock.callLater(due - now, self._make_up, holding)

    def _make_up_overdue(self, now: float) -> None:
        """Make-ups whose time has come but which have not run (a stalled reactor runs its timed
        calls late, in their order, with the clock already late): run now, in their order, before
        the change that is being noted."""
        overdue = [
            (call.getTime(), kind)
            for kind, call in self._making_up.items()
            if call is not None and call.active() and call.getTime() <= now
        ]
        for _, kind in sorted(overdue):
            self._cancel_making_up(kind)
            self._make_up(kind)

    def _cancel_making_up(self, kind: bool) -> None:
        call = self._making_up[kind]
        if call is not None and call.active():
            call.cancel()
        self._making_up[kind] = None

    def _make_up(self, kind: bool) -> None:
        self._making_up[kind] = None
        if self._holding == kind and self._said != kind:
            self._unlogged[kind] = max(0, self._unlogged[kind] - 1)  # the line made up is one of them
            self._say(kind, self._fields[kind], self._clock.seconds())

    def _say(self, kind: bool, fields: dict[str, Any], now: float) -> None:
        self._cancel_making_up(kind)  # this line is the one it would make up
        level, text = self._lines[kind]
        self._log.emit(level, text, unlogged=self._unlogged[kind], cost=self._cost, **fields)
        if not kind:
            self._cost = 0
        self._unlogged[kind] = 0
        self._fields[kind] = {}
        self._logged_at[kind] = now
        self._said = kind
