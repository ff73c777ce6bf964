"""Test doubles for the seams in :mod:`goto_tw.interfaces`."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import implementer

from goto_tw.errors import StoreUnavailable
from goto_tw.interfaces import IRecordLog


@implementer(IRecordLog)
class ManualLog:
    """A record log whose appends complete only when the test says so."""

    def __init__(self) -> None:
        self.appended: list[tuple[str, str, Deferred[None]]] = []

    def append(self, key: str, url: str, custom: bool = False) -> Deferred[None]:
        done: Deferred[None] = Deferred()
        self.appended.append((key, url, done))
        return done

    def complete_all(self) -> None:
        """Acknowledge every append still waiting."""
        waiting, self.appended = self.appended, []
        for _, _, done in waiting:
            done.callback(None)

    def fail_all(self) -> None:
        """Fail every append still waiting, as a full disk would."""
        waiting, self.appended = self.appended, []
        for _, _, done in waiting:
            done.errback(StoreUnavailable("writing the data file failed: disk full"))
