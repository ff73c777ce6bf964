"""Test doubles for the seams in :mod:`goto_tw.interfaces`."""

from __future__ import annotations

import errno
from typing import Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from goto_tw.errors import StoreUnavailable
from goto_tw.interfaces import IRecordLog, IURLStore
from goto_tw.persistence import OSRecordFile


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


class ManualThreads:
    """Stands in for the thread pool: runs each job when the test says so, in order; what a job hands
    back to the reactor (``call_from_thread``) runs once the job is over, in order, as the reactor
    would run it after the thread's call."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[], None], Deferred[None]]] = []
        self.handed: list[tuple[Callable[..., object], tuple[object, ...]]] = []

    def __call__(self, job: Callable[[], None]) -> Deferred[None]:
        done: Deferred[None] = Deferred()
        self.jobs.append((job, done))
        return done

    def call_from_thread(self, function: Callable[..., object], *args: object) -> None:
        self.handed.append((function, args))

    def run_next(self) -> None:
        job, done = self.jobs.pop(0)
        try:
            job()
        except Exception:
            failure = Failure()
            self.hand_over()
            done.errback(failure)
        else:
            self.hand_over()
            done.callback(None)

    def hand_over(self) -> None:
        """Run what the jobs handed to the reactor so far."""
        handed, self.handed = self.handed, []
        for function, args in handed:
            function(*args)


@implementer(IURLStore)
class FakeMaster:
    """A master whose every call waits until the test answers it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Deferred[str]]] = []

    def get(self, key: str) -> Deferred[str]:
        return self._call("get", key)

    def put(self, url: str) -> Deferred[str]:
        return self._call("put", url)

    def count(self) -> int:
        return 0

    def lookup(self, key: str) -> str | None:
        return None

    def _call(self, method: str, argument: str) -> Deferred[str]:
        answer: Deferred[str] = Deferred()
        self.calls.append((method, argument, answer))
        return answer

    def answer(self, value: str) -> None:
        self.calls.pop(0)[2].callback(value)

    def fail(self, error: Exception) -> None:
        self.calls.pop(0)[2].errback(error)


class FaultyFile(OSRecordFile):
    """A real data file whose writes can be made to fail after writing part of the data (a full
    disk), whose truncates can fail, and which notes each sync (with how many bytes of records the
    file held then: ``synced_sizes``, one entry a sync)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.fail_writes = 0
        #: Writes to let through before the next one fails (-1: none fails so).
        self.fail_writes_after = -1
        self.fail_truncates = 0
        self.synced_sizes: list[int] = []

    def write_all(self, data: bytes) -> None:
        if self.fail_writes_after == 0:
            self.fail_writes += 1
        self.fail_writes_after -= 1
        if self.fail_writes:
            self.fail_writes -= 1
            super().write_all(data[: len(data) // 2 or 1])
            raise OSError(errno.ENOSPC, "No space left on device")
        super().write_all(data)

    def truncate(self, size: int) -> None:
        if self.fail_truncates:
            self.fail_truncates -= 1
            raise OSError(errno.EIO, "Input/output error")
        super().truncate(size)

    def sync(self) -> None:
        self.synced_sizes.append(self.size())
        super().sync()
