"""Gaps a hostile review of stop 42's condition lines found (``goto_tw.throttledlog.ThrottledCondition``
in the click book, the data file's writer and the slave's outages): each test failed before its fix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from goto_tw.errors import MasterUnreachable
from tests.conftest import LogCapture
from tests.helpers import failure_of, result_of
from tests.test_clicks import book
from tests.test_keybound import DiskFile, past_the_first_raise
from tests.test_persistence import log_with_failing_writes
from tests.test_proxystore import make


def _full(fd: int, data: Any) -> int:
    raise OSError(28, "No space left on device")


def _clicks_said(log_events: LogCapture) -> list[str]:
    return [m for m in log_events.messages() if "Clicks are written again" in m or "Could not write" in m]


def _stored_said(log_events: LogCapture) -> list[str]:
    return [
        m
        for m in log_events.messages()
        if "Could not store" in m or "written again" in m or "Could not raise the key bound" in m
    ]


def _run(clock: Any, threads: Any) -> None:
    clock.advance(0)
    while threads.jobs:
        threads.run_next()
        clock.advance(0)


def test_the_final_write_on_stop_failing_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_events: LogCapture
) -> None:
    """The last write, on stop, fails within the interval of the last failure line: the log's last
    line says so (the book's lines were stopped before that write, and its last line said "written
    again")."""
    path, clock = tmp_path / "c.clicks", Clock()
    made = book(path, clock)
    real = os.write
    monkeypatch.setattr(os, "write", _full)
    made.counter.click("a")
    clock.advance(1)  # fails (said)
    monkeypatch.setattr(os, "write", real)
    clock.advance(1)  # works again (said)
    monkeypatch.setattr(os, "write", _full)
    made.counter.click("a")
    made.stopService()  # drain's write fails
    assert "Could not write" in _clicks_said(log_events)[-1], _clicks_said(log_events)


def test_after_a_stall_a_recovery_is_not_said_twice_in_a_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_events: LogCapture
) -> None:
    """A reactor that stalls (a blocking call, a suspend) runs overdue timed calls in time order
    with the clock already late, as Clock.advance does: the failure left out is said before the
    write after it says "written again" (it was skipped: "written again" twice in a row)."""
    path, clock = tmp_path / "c.clicks", Clock()
    made = book(path, clock)
    real = os.write
    monkeypatch.setattr(os, "write", _full)
    made.counter.click("a")
    clock.advance(1)  # fails (said)
    monkeypatch.setattr(os, "write", real)
    clock.advance(1)  # works (said)
    monkeypatch.setattr(os, "write", _full)
    made.counter.click("a")
    clock.advance(1)  # fails (left out; made up at 11)
    monkeypatch.setattr(os, "write", real)
    clock.advance(60)  # a stall: the tick due at 4 runs at 63
    said = _clicks_said(log_events)
    assert not (said[-1].startswith("Clicks are written") and said[-2].startswith("Clicks are written")), said


@pytest.mark.parametrize("restart", [False, True])
def test_a_restarted_book_makes_up_a_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_events: LogCapture, restart: bool
) -> None:
    """A book stopped and started again makes up a line left out as a fresh one does (it made up
    nothing more once stopped)."""
    path, clock = tmp_path / "c.clicks", Clock()
    made = book(path, clock)
    if restart:
        made.stopService()
        made.startService()
    real = os.write

    def write_at(t: float, fails: bool) -> None:
        clock.advance(t - clock.seconds())
        monkeypatch.setattr(os, "write", _full if fails else real)
        made.record({"a": 1}).addErrback(lambda _: None)
        clock.advance(0)

    write_at(0.5, True)  # said
    write_at(1.0, False)  # said
    write_at(10.7, True)  # said
    write_at(10.8, False)  # left out: made up at 11
    clock.advance(30)
    assert "written again" in _clicks_said(log_events)[-1], _clicks_said(log_events)


def test_an_early_bound_failure_after_a_recovery_is_said_last(log_events: LogCapture) -> None:
    """A raise ahead of need fails (said), the next works (said), the next fails within the interval
    (left out): the failure is said when the interval ends, not "written again" left last while
    health says the bound fails (those failures had a throttle of their own)."""
    disk, clock, threads, store, log = past_the_first_raise()  # bound 11
    for i in range(1, 7):
        store.put(f"http://a/{i}")
    disk.fail_bound_writes = 1
    _run(clock, threads)  # early failure 1: warned
    store.put("http://a/7")
    _run(clock, threads)  # a raise that works: "The key bound is written again"
    assert log.failing is None
    clock.advance(1)
    disk.fail_bound_writes = 1
    n = 8
    while disk.fail_bound_writes:
        store.put(f"http://a/{n}")
        n += 1
        _run(clock, threads)
    assert log.failing is not None and "key bound" in log.failing
    clock.advance(3600)
    assert "written again" not in _stored_said(log_events)[-1], _stored_said(log_events)


def test_a_key_bound_refusal_is_not_counted_in_the_data_files_recovery(log_events: LogCapture) -> None:
    """Records refused because the key bound failed are the key bound's: the data file's recovery
    line counts only its own (one count served both lines)."""
    disk, clock, threads, store, _ = past_the_first_raise()
    puts = [store.put(f"http://a/{i}") for i in range(1, 12)]
    disk.fail_bound_writes = 1
    _run(clock, threads)
    assert failure_of(puts[10])  # key 11 refused: the key bound
    said = _stored_said(log_events)
    assert any("Could not store 1 record(s)" in m for m in said), said
    # now the data file fails once and works again
    real = DiskFile.write_all
    fails = [1]

    def write_all(self: Any, data: bytes) -> None:
        if fails[0]:
            fails[0] -= 1
            raise OSError(28, "No space left on device")
        real(self, data)

    DiskFile.write_all = write_all  # type: ignore[method-assign]
    try:
        custom = store.add("http://custom/", "mine")  # covered by no bound: a data file write
        _run(clock, threads)
        failure_of(custom)
        clock.advance(20)
        again = store.add("http://custom2/", "mine2")
        _run(clock, threads)
        result_of(again)
    finally:
        DiskFile.write_all = real  # type: ignore[method-assign]
    said = _stored_said(log_events)
    data_line = [m for m in said if m.startswith("The data file is written again")]
    assert data_line and data_line[-1].startswith("The data file is written again (1 record(s)"), said


def test_records_refused_before_a_recovery_left_out_are_counted_in_the_next(
    tmp_path: Any, log_events: LogCapture
) -> None:
    """A refusal whose recovery line the throttle left out is counted in the next recovery line said
    (its count was zeroed with the line left out)."""
    clock = Clock()
    log, add = log_with_failing_writes(tmp_path, clock)

    add(0, True)  # said
    add(1, False)  # said: 1 refused
    clock.advance(1)
    add(2, True)  # left out
    add(3, False)  # left out (the last line, "written again", is true: nothing made up)
    clock.advance(30)
    add(4, True)  # said
    add(5, False)  # said: 2 refused since the last such line (records 2 and 4)
    said = [m for m in log_events.messages() if "written again" in m]
    assert said[-1].startswith("The data file is written again (2 record(s)"), said
    result_of(log.stopService())


def test_a_master_back_during_the_drain_is_said_last(log_events: LogCapture) -> None:
    """The master answers again during the drain, within the interval of the last "answers again":
    that is said when the drain ends (the lines were stopped as it began: the last said
    "unreachable")."""
    store, master, clock = make()
    store.get("x0").addErrback(lambda _: None)
    master.fail(MasterUnreachable("refused"))  # down (said)
    clock.advance(1.0)
    probe = store.get("y0")
    master.answer("http://y/")  # back (said)
    assert result_of(probe) == "http://y/"
    clock.advance(1.0)
    store.get("x1").addErrback(lambda _: None)
    master.fail(MasterUnreachable("refused"))  # down (left out: made up at 10)
    clock.advance(1.0)
    probe = store.get("y1")  # the probe, in flight
    drained = store.drain(30)  # stop(): "unreachable" made up now
    master.answer("http://y/")  # back, during the drain (left out; nothing made up)
    assert result_of(probe) == "http://y/" and store.master_reachable
    result_of(drained)
    clock.advance(60)
    said = [m for m in log_events.messages() if "unreachable" in m or "answers again" in m]
    assert "answers again" in said[-1], said
