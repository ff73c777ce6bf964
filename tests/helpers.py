"""Synchronous helpers for Deferreds that tests drive with fakes and a ``Clock``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")


def result_of(deferred: Deferred[T]) -> T:
    """Return the result ``deferred`` already has; fail the test if it has none or failed."""
    results: list[Any] = []
    deferred.addBoth(results.append)
    assert results, f"{deferred!r} has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]  # type: ignore[no-any-return]


def failure_of(deferred: Deferred[Any]) -> Failure:
    """Return the Failure ``deferred`` already failed with; fail the test otherwise."""
    results: list[Any] = []
    deferred.addBoth(results.append)
    assert results, f"{deferred!r} has not fired"
    assert isinstance(results[0], Failure), f"{deferred!r} succeeded with {results[0]!r}"
    return results[0]


def has_fired(deferred: Deferred[Any]) -> bool:
    """Tell whether ``deferred`` has a result yet (not merely waiting on another), without consuming it."""
    seen: list[object] = []

    def note(result: object) -> object:
        seen.append(result)
        return result

    deferred.addBoth(note)
    return bool(seen)


def live_records(path: Path) -> bytes:
    """The records of a data file a master may still be writing: it keeps zeros written ahead after
    them (``fsync``), which must be all there is past the first zero byte."""
    body = path.read_bytes()
    records, _, ahead = body.partition(b"\0")
    assert not ahead.strip(b"\0"), "only zeros follow the records"
    return records


def record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What ``os.fsync`` is called on from now on (each descriptor's path), in order; it still syncs."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced
