"""Issue 13 (durable adds): the data file's writer run lingers for the next group (``writer_linger``).

These run the writer in real threads, as the reactor's pool does (the other writer tests drive it by
hand, in the test's thread, where a lingering run would only block): a test waits for what the
threads hand back by polling with a deadline, never by sleeping a fixed time.
"""

from __future__ import annotations

import queue
import threading
import time
from functools import partial
from pathlib import Path
from typing import Callable

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from goto_tw.errors import StoreUnavailable
from goto_tw.metrics import Metrics
from goto_tw.persistence import WRITER_LINGER, AppendLog, OSRecordFile, encode_record
from goto_tw.tap import make_master_store
from tests.fakes import FaultyFile
from tests.helpers import failure_of, has_fired, result_of
from tests.test_persistence import records_in, started_log

#: Longest a test waits for the writer thread to do what it must (it takes milliseconds).
DEADLINE = 10.0


class PoolThreads:
    """The reactor's thread pool and ``callFromThread``, for a test without a reactor: each run is a
    thread of its own; what a thread hands back, and each run's end, is taken in the test's thread
    by :meth:`until`, as the reactor would take them in its own."""

    def __init__(self) -> None:
        self.runs = 0
        self._handed: queue.Queue[tuple[Callable[..., object], tuple[object, ...]]] = queue.Queue()

    def __call__(self, job: Callable[[], None]) -> Deferred[None]:
        self.runs += 1
        done: Deferred[None] = Deferred()

        def run() -> None:
            try:
                job()
            except Exception:
                failure = Failure()
                self._handed.put((done.errback, (failure,)))
            else:
                self._handed.put((done.callback, (None,)))

        threading.Thread(target=run, daemon=True).start()
        return done

    def call_from_thread(self, function: Callable[..., object], *args: object) -> None:
        self._handed.put((function, args))

    def until(self, condition: Callable[[], bool]) -> None:
        """Take what the threads hand back until ``condition`` holds (fail past the deadline)."""
        deadline = time.monotonic() + DEADLINE
        while not condition():
            left = deadline - time.monotonic()
            assert left > 0, "the writer thread did not get there in time"
            try:
                function, args = self._handed.get(timeout=min(left, 0.05))
            except queue.Empty:
                continue
            function(*args)


def lingering_log(path: Path, clock: Clock, threads: PoolThreads, linger: float) -> AppendLog:
    return started_log(
        OSRecordFile(str(path)), clock, fsync=True, run_in_thread=threads, writer_linger=linger
    )


def test_a_lingering_run_writes_the_next_group_without_a_new_thread(tmp_path: Path) -> None:
    """A group handed while the run waits for one is written and synced by that run: under a steady
    load one run takes group after group (no new run through the pool for each); a stop ends the run
    at once, though the linger is far longer than the test waits."""
    path, clock, threads = tmp_path / "store.json", Clock(), PoolThreads()
    log = lingering_log(path, clock, threads, linger=60.0)
    acknowledged = []
    for index in range(5):
        acknowledged.append(log.append(str(index), f"http://{index}.example/"))
        clock.advance(0)
        threads.until(lambda: has_fired(acknowledged[-1]))
    assert all(result_of(ack) is None for ack in acknowledged)
    assert threads.runs == 1, "one run of the writer wrote all five groups"
    stopped = log.stopService()
    threads.until(lambda: has_fired(stopped))  # well within DEADLINE: the stop woke the run
    assert records_in(path) == {str(index): f"http://{index}.example/" for index in range(5)}


def test_a_run_with_nothing_to_write_gives_its_thread_back_after_the_linger(tmp_path: Path) -> None:
    """Once no group came within the linger the run ends (its pool thread is free), and the next
    group starts a run of its own."""
    path, clock, threads = tmp_path / "store.json", Clock(), PoolThreads()
    log = lingering_log(path, clock, threads, linger=0.01)
    first = log.append("0", "http://a.example/")
    clock.advance(0)
    threads.until(lambda: has_fired(first) and log._in_flight is None)
    second = log.append("1", "http://b.example/")
    clock.advance(0)
    threads.until(lambda: has_fired(second))
    assert (result_of(first), result_of(second)) == (None, None)
    assert threads.runs == 2
    stopped = log.stopService()
    threads.until(lambda: has_fired(stopped))
    assert records_in(path) == {"0": "http://a.example/", "1": "http://b.example/"}


def test_groups_handed_at_any_moment_of_a_run_are_all_written(tmp_path: Path) -> None:
    """Groups handed while the run writes (the one before not yet acknowledged), while it lingers
    (the one before acknowledged) and after its linger ran out and it ended (the next starts a run
    of its own): each is acknowledged, and the file holds every record once, in order."""
    path, clock, threads = tmp_path / "store.json", Clock(), PoolThreads()
    log = lingering_log(path, clock, threads, linger=0.002)
    acknowledged = []
    ended = 0
    for index in range(200):
        acknowledged.append(log.append(str(index), f"http://{index}.example/"))
        clock.advance(0)
        if index % 3 == 0:  # the next comes while the run lingers (or writes, or has just ended)
            threads.until(partial(has_fired, acknowledged[-1]))
        elif index % 7 == 0:  # the next comes once the run has ended: a new run takes it
            threads.until(partial(_run_over, log, acknowledged[-1]))
            ended += 1
    threads.until(lambda: all(has_fired(ack) for ack in acknowledged))
    assert all(result_of(ack) is None for ack in acknowledged)
    assert ended + 1 <= threads.runs < 200, f"{threads.runs} runs, {ended} ended before an add"
    stopped = log.stopService()
    threads.until(lambda: has_fired(stopped))
    keys = [line.split('"key":"')[1].split('"')[0] for line in path.read_text().splitlines()]
    assert keys == [str(index) for index in range(200)]


def _run_over(log: AppendLog, acknowledged: Deferred[None]) -> bool:
    """Whether ``acknowledged`` has fired and the writer run that wrote it has ended."""
    return has_fired(acknowledged) and log._in_flight is None


class HeldWrites(OSRecordFile):
    """A real file whose first write waits until the test lets it go (a slow disk)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.writing = threading.Event()
        self.go_on = threading.Event()

    def write_all(self, data: bytes) -> None:
        if not self.writing.is_set():
            self.writing.set()
            assert self.go_on.wait(DEADLINE), "the test never let the write go on"
        super().write_all(data)


def test_a_stop_while_the_run_writes_ends_it_without_a_linger(tmp_path: Path) -> None:
    """A stop made while the run is writing (not waiting: its notify wakes nobody) still ends the run
    as soon as the write is done, and the run that then writes the group still pending does not
    linger either: the stop is over well before the linger (60 s) would have run out."""
    path, clock, threads = tmp_path / "store.json", Clock(), PoolThreads()
    record_file = HeldWrites(str(path))
    log = started_log(record_file, clock, fsync=True, run_in_thread=threads, writer_linger=60.0)
    first = log.append("0", "http://a.example/")
    clock.advance(0)
    assert record_file.writing.wait(DEADLINE), "the writer run never started writing"
    pending = log.append("1", "http://b.example/")  # not yet handed: the stop's drain hands it
    stopped = log.stopService()
    record_file.go_on.set()
    threads.until(lambda: has_fired(stopped))
    assert (result_of(first), result_of(pending)) == (None, None)
    assert threads.runs == 2, "the pending group was written by a run of its own, after the first ended"
    assert records_in(path) == {"0": "http://a.example/", "1": "http://b.example/"}


def test_a_master_writer_lingers(tmp_path: Path) -> None:
    """The master's data file writer (fsync, the default) is made with WRITER_LINGER: the tests above
    prove what a linger does, this that a master has one."""
    parent = MultiService()
    make_master_store({"file": str(tmp_path / "store.json")}, Clock(), parent, Metrics("master"))
    [record_log] = [service for service in parent if isinstance(service, AppendLog)]
    assert record_log.fsync
    assert record_log._writer_linger == WRITER_LINGER > 0
    parent.startService()
    assert has_fired(parent.stopService())


def test_a_failed_write_in_a_lingering_run_fails_its_group_and_the_run_goes_on(tmp_path: Path) -> None:
    """A write that fails (a full disk) fails its group (503) and leaves no half record; the same
    run, lingering, writes the next group once the disk has room, after cutting the file back."""
    path, clock, threads = tmp_path / "store.json", Clock(), PoolThreads()
    record_file = FaultyFile(str(path))
    log = started_log(record_file, clock, fsync=True, run_in_thread=threads, writer_linger=60.0)
    record_file.fail_writes = 1
    failed = log.append("0", "http://a.example/")
    clock.advance(0)
    threads.until(lambda: has_fired(failed))
    assert failure_of(failed).check(StoreUnavailable)
    written = log.append("1", "http://b.example/")
    clock.advance(0)
    threads.until(lambda: has_fired(written))
    assert result_of(written) is None
    assert threads.runs == 1, "the run that failed the first group lingered and wrote the second"
    stopped = log.stopService()
    threads.until(lambda: has_fired(stopped))
    assert path.read_bytes() == encode_record("1", "http://b.example/")
