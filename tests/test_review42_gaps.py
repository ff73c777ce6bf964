"""Gaps two hostile reviews of stop 42's own change found: the condition lines
(``goto_tw.throttledlog.ThrottledCondition`` in the click book, the data file's writer and the
slave's outages) and the access log's stop. Each test failed before its fix."""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any, Callable

import pytest
from twisted.internet.task import Clock

from goto_tw.accesslog import HELD_RETRY_SECONDS, STOP_WAIT_SECONDS, LineAccessLog, make_access_log
from goto_tw.errors import MasterUnreachable
from tests.conftest import LogCapture
from tests.helpers import failure_of, has_fired, result_of
from tests.test_accesslog import _advance_in_time, _line, _pipe_log, _read_all
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


# --- the access log's stop (a second hostile review of this stop's change) ---------------------


def _stall(access: LineAccessLog, clock: Clock) -> None:
    """2,000 lines for a pipe nobody reads: more than it holds, the rest held."""
    for number in range(2000):
        _line(access, b"/%05d" % number)
    _advance_in_time(clock, 0)


def test_a_line_recorded_while_a_stop_waits_is_counted_when_it_gives_up() -> None:
    """A line recorded while the stop waited for the reader (a request answered meanwhile) was
    neither written nor counted when the stop gave up: every line is read or counted lost."""
    clock = Clock()
    access, read_end, out = _pipe_log(clock)
    access.startService()
    _stall(access, clock)
    stopped = access.stopService()
    assert stopped is not None
    _advance_in_time(clock, STOP_WAIT_SECONDS - 0.05)
    _line(access, b"/late")
    _advance_in_time(clock, 0.05)
    assert has_fired(stopped)
    received = _read_all(read_end).count(b"\n")
    out.close()
    os.close(read_end)
    assert received + access.lost_lines == 2001


def test_the_newline_that_mends_a_cut_line_is_no_line_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    """A write cut a line short, the reader then went (EPIPE): the next line, lost too, is one line
    lost, not two (the newline that would have ended the cut line was counted as a line)."""
    clock = Clock()
    access, read_end, out = _pipe_log(clock)
    real_write = os.write
    calls = [0]

    def write(fd: int, data: Any) -> int:
        calls[0] += 1
        if calls[0] == 1:
            return real_write(fd, bytes(data)[:10])  # a socket's partial write: mid-line
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("goto_tw.accesslog.os", types.SimpleNamespace(write=write))
    _line(access, b"/torn")
    _advance_in_time(clock, 0)
    _advance_in_time(clock, HELD_RETRY_SECONDS)
    assert access.lost_lines == 1
    _line(access, b"/next")
    _advance_in_time(clock, 0)
    out.close()
    os.close(read_end)
    assert access.lost_lines == 2


def test_a_stop_asked_again_while_one_waits_ends_with_it() -> None:
    """Stopped, started and stopped again while the first stop waited for the reader: both stops
    end (the first one's Deferred never fired), and the reader gets every line."""
    clock = Clock()
    access, read_end, out = _pipe_log(clock)
    access.startService()
    _stall(access, clock)
    first = access.stopService()
    access.startService()
    second = access.stopService()
    third = access.stopService()
    assert first is not None and second is not None and third is not None
    received = b""
    for _ in range(40):
        _advance_in_time(clock, HELD_RETRY_SECONDS)
        received += _read_all(read_end)
    out.close()
    os.close(read_end)
    assert has_fired(first) and has_fired(second) and has_fired(third)
    assert received.count(b"\n") == 2000 and access.lost_lines == 0
    assert clock.getDelayedCalls() == []


def _cuts_a_line_then_waits() -> Callable[[int, Any], int]:
    """An ``os.write`` for a socket whose reader takes 10 bytes (a partial write: mid-line), then
    nothing more (``EAGAIN``)."""
    real_write = os.write
    calls = [0]

    def write(fd: int, data: Any) -> int:
        calls[0] += 1
        if calls[0] == 1:
            return real_write(fd, bytes(data)[:10])
        raise BlockingIOError(11, "Resource temporarily unavailable")

    return write


def test_after_giving_up_on_a_cut_line_the_next_line_starts_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stop gave up on a line a socket's partial write had cut short: the stream stays marked
    cut, so a line written after it (an answer on a connection still open) starts on a line of its
    own instead of being glued to the cut one, and standard output still takes it."""
    clock = Clock()
    access, read_end, out = _pipe_log(clock, "socket")
    write = _cuts_a_line_then_waits()
    access.startService()
    monkeypatch.setattr("goto_tw.accesslog.os", types.SimpleNamespace(write=write))
    _line(access, b"/first")
    stopped = access.stopService()
    assert stopped is not None
    _advance_in_time(clock, STOP_WAIT_SECONDS + 0.1)
    assert has_fired(stopped) and access.lost_lines == 1
    monkeypatch.undo()
    _line(access, b"/after")
    _advance_in_time(clock, 0)
    received = _read_all(read_end)
    out.close()
    os.close(read_end)
    lines = received.split(b"\n")
    assert lines[0] == b"192.0.2.1 " and lines[1].endswith(b'"GET /after HTTP/1.1" 302 -'), received
    assert access.lost_lines == 1


def test_a_mending_newline_held_then_given_up_is_no_line_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    """A third reader (stop 42): after a give-up on a cut line, the next line, held with the newline
    that mends the cut one and given up on too, counted two lines lost: the newline is none."""
    clock = Clock()
    access, read_end, out = _pipe_log(clock, "socket")
    write = _cuts_a_line_then_waits()
    access.startService()
    monkeypatch.setattr(os, "write", write)  # all of os but write is needed: a restart checks the descriptor
    _line(access, b"/first")
    access.stopService()
    _advance_in_time(clock, STOP_WAIT_SECONDS + 0.1)
    assert access.lost_lines == 1
    access.startService()
    _line(access, b"/second")  # held: the mending newline, then its line
    _advance_in_time(clock, 0)
    access.stopService()
    _advance_in_time(clock, STOP_WAIT_SECONDS + 0.1)
    out.close()
    os.close(read_end)
    assert access.lost_lines == 2


def test_standard_output_takes_lines_after_a_stop_gave_up_once_its_reader_reads() -> None:
    """A third reader (stop 42): once a stop had given up on a reader behind, every later line (a
    connection still open) was dropped, even with the reader reading again: it is written."""
    clock = Clock()
    access, read_end, out = _pipe_log(clock)
    access.startService()
    _stall(access, clock)
    stopped = access.stopService()
    _advance_in_time(clock, STOP_WAIT_SECONDS + 0.1)
    assert stopped is not None and has_fired(stopped)
    _read_all(read_end)
    _line(access, b"/after")
    _advance_in_time(clock, 0)
    received = _read_all(read_end)
    out.close()
    os.close(read_end)
    assert b'"GET /after HTTP/1.1"' in received


def test_a_file_log_started_again_logs_once_reopened(tmp_path: Path) -> None:
    """A third reader (stop 42): a file log stopped (its file closed), started again and reopened
    (SIGHUP) dropped every line; the reopened file takes them."""
    clock = Clock()
    access = make_access_log(str(tmp_path / "a.log"), clock)
    assert isinstance(access, LineAccessLog)
    access.startService()
    access.stopService()
    access.startService()
    access.reopen()
    _line(access, b"/again")
    clock.advance(0)
    assert b'"GET /again HTTP/1.1"' in (tmp_path / "a.log").read_bytes()
    access.stopService()


def test_a_drain_that_times_out_stops_the_outage_lines(log_events: LogCapture) -> None:
    """A third reader (stop 42): a drain that timed out (its calls answered "slave stopping") never
    stopped the outage lines: a make-up stayed scheduled past the stop, and the log's last line
    said "answers again" with the master down. The stop says how things stand."""
    from goto_tw.remote import slave_stopping

    store, master, clock = make()

    def give_up() -> None:
        for _, _, waiting in master.calls:
            if not waiting.called:
                waiting.errback(slave_stopping())

    master.give_up = give_up  # type: ignore[attr-defined]
    store.get("a").addErrback(lambda _: None)
    master.fail(MasterUnreachable("refused"))
    clock.advance(1.0)
    store.get("b")
    master.answer("http://b/")
    clock.advance(1.0)
    store.get("c").addErrback(lambda _: None)
    master.fail(MasterUnreachable("refused"))  # left out: a make-up scheduled
    clock.advance(1.0)
    store.get("d").addErrback(lambda _: None)  # the probe, in flight at the stop
    drained = store.drain(5.0)
    clock.advance(5.0)
    assert has_fired(drained) and clock.getDelayedCalls() == []
    said = [m for m in log_events.messages() if "unreachable" in m or "answers again" in m]
    assert "The master is unreachable" in said[-1], said


def test_a_drain_says_what_its_last_call_met(log_events: LogCapture) -> None:
    """The master came back on the very call a drain waited for, within the interval of the last
    "answers again": that is said (the lines stopped as the drain's Deferred fired, before the call
    was noted), and nothing stays scheduled."""
    store, master, clock = make()
    store.get("a").addErrback(lambda _: None)
    master.fail(MasterUnreachable("refused"))
    clock.advance(1.0)
    probe = store.get("b")
    master.answer("http://b/")
    assert result_of(probe) == "http://b/"
    clock.advance(1.0)
    store.get("c").addErrback(lambda _: None)
    master.fail(MasterUnreachable("refused"))  # left out: within the interval
    clock.advance(1.0)
    probe = store.get("d")  # the probe, in flight at the stop
    drained = store.drain(5.0)
    master.answer("http://d/")
    assert result_of(probe) == "http://d/" and has_fired(drained)
    said = [m for m in log_events.messages() if "unreachable" in m or "answers again" in m]
    assert "answers again" in said[-1], said
    assert clock.getDelayedCalls() == []


def test_after_a_stop_standard_output_takes_lines_and_a_closed_file_counts_them(tmp_path: Path) -> None:
    """An answer on a connection still open as the process stops is recorded after the access log
    stopped: standard output, still open, takes its line as before; a file the log closed counts it
    lost (it met the closed stream: an unhandled ValueError in a timed call)."""
    clock = Clock()
    with open(tmp_path / "stdout", "w", encoding="ascii") as stdout:
        kept = LineAccessLog(stdout, clock)
        kept.startService()
        kept.stopService()
        _line(kept, b"/after")
        clock.advance(0)
    assert b'"GET /after HTTP/1.1"' in (tmp_path / "stdout").read_bytes() and kept.lost_lines == 0
    closed = make_access_log(str(tmp_path / "access.log"), clock)
    assert isinstance(closed, LineAccessLog)
    closed.startService()
    closed.stopService()
    _line(closed, b"/after")
    clock.advance(0)
    assert closed.lost_lines == 1 and clock.getDelayedCalls() == []
