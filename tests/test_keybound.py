"""Issue 9 item 10: no acknowledged key is ever handed to another URL, even without fsync.

A simulated disk separates what was synced from what sat in the page cache; a "power loss" drops
the latter. The key bound (``<data file>.next``) is what start-up resumes past.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable
from unittest import mock

import pytest
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from goto_tw.errors import KeyExists, StoreUnavailable
from goto_tw.keybound import CorruptKeyBound, KeyBound, bound_path, read_key_bound, write_key_bound
from goto_tw.keys import key_for_index
from goto_tw.metrics import Metrics
from goto_tw.persistence import (
    NOT_STORED,
    AppendLog,
    encode_record,
    open_data_file,
    parse_records,
    resume_index,
)
from goto_tw.store import URLStore
from goto_tw.tap import Options, make_master_store
from tests.conftest import LogCapture
from tests.fakes import ManualThreads
from tests.helpers import failure_of, has_fired, result_of


class Disk:
    """A data file and a key bound as a disk holds them: synced bytes survive a power loss, others not."""

    def __init__(self) -> None:
        self.synced = b""
        self.cached = b""
        self.bound = 0
        self.bound_writes: list[int] = []
        self.fail_bound_writes = 0

    def store_bound(self, bound: int) -> None:
        """Like write_key_bound: durable when it returns (it renames a synced file)."""
        if self.fail_bound_writes:
            self.fail_bound_writes -= 1
            raise OSError(5, "Input/output error")
        self.bound_writes.append(bound)
        self.bound = bound

    def power_loss(self) -> None:
        self.cached = self.synced


class DiskFile:
    """A RecordFile on a :class:`Disk`."""

    def __init__(self, disk: Disk) -> None:
        self.disk = disk

    def open(self, spare: int = 0) -> None:
        pass

    def size(self) -> int:
        return len(self.disk.cached)

    def write_all(self, data: bytes) -> None:
        self.disk.cached += data

    def truncate(self, size: int) -> None:
        self.disk.cached = self.disk.cached[:size]

    def sync(self) -> None:
        self.disk.synced = self.disk.cached

    def close(self) -> None:
        pass


def run_now(job: Callable[[], None]) -> Deferred[None]:
    return maybeDeferred(job)


def start_master(
    disk: Disk, clock: Clock, run_in_thread: Callable[[Callable[[], None]], Deferred[None]] = run_now
) -> tuple[URLStore, AppendLog]:
    """What make_master_store does, on the simulated disk, without fsync and with a small block."""
    urls = parse_records("disk", disk.cached)
    bound = KeyBound(disk.bound, disk.store_bound, block=10)
    resume = resume_index(urls, bound.durable)
    log = AppendLog(
        DiskFile(disk),
        clock,
        run_in_thread=run_in_thread,
        call_from_thread=getattr(run_in_thread, "call_from_thread", call_now),
        key_bound=bound,
        resume_index=resume,
    )
    log.startService()
    return URLStore(urls, log, next_index=resume, clock=clock), log


def call_now(function: Callable[..., object], *args: object) -> None:
    """``call_from_thread`` beside :func:`run_now`: the "thread" ran inline, so its hand-back does too."""
    function(*args)


def add(store: URLStore, clock: Clock, url: str) -> str:
    put = store.put(url)
    clock.advance(0)
    return result_of(put)


def test_after_a_power_loss_no_acknowledged_key_goes_to_another_url() -> None:
    """Adds acknowledged without fsync are lost with the page cache; after restart, new URLs get keys
    that were never handed out, because the counter resumes past the durable bound."""
    disk, clock = Disk(), Clock()
    store, _ = start_master(disk, clock)
    handed_out = {add(store, clock, f"http://before/{i}"): f"http://before/{i}" for i in range(25)}
    assert disk.synced == b"" and disk.cached, "acknowledged from the page cache, never synced"
    disk.power_loss()

    clock = Clock()
    restarted, _ = start_master(disk, clock)
    for i in range(25):
        key = add(restarted, clock, f"http://after/{i}")
        assert key not in handed_out, f"key {key} was acknowledged for {handed_out.get(key)} before"


def test_the_bound_is_raised_ahead_so_adds_rarely_wait() -> None:
    """The bound is raised half a block early; only an add past the durable bound waits for it, and
    adds below it are written while a raise is in flight."""
    disk, clock = Disk(), Clock()
    threads = ManualThreads()
    store, _ = start_master(disk, clock, threads)
    first = store.put("http://a/0")
    clock.advance(0)
    assert not has_fired(first) and disk.cached == b"", "key 0 is not below the bound 0 yet: it waits"
    threads.run_next()
    clock.advance(0)
    assert result_of(first) == "0" and disk.bound == 11
    later = [store.put(f"http://a/{i}") for i in range(1, 8)]
    clock.advance(0)
    assert all(has_fired(put) for put in later), "keys below the bound never wait"
    assert len(threads.jobs) == 1, "within half a block of the bound: the next raise has started"
    threads.run_next()
    assert disk.bound == 21, "a block past the highest key in use"


def past_the_first_raise() -> tuple[Disk, Clock, ManualThreads, URLStore, AppendLog]:
    """A master (threads run by hand) whose first add, key 0, raised the bound to 11 and is written."""
    disk, clock = Disk(), Clock()
    threads = ManualThreads()
    store, log = start_master(disk, clock, threads)
    first = store.put("http://a/0")
    threads.run_next()  # bound 11
    clock.advance(0)
    assert result_of(first) == "0" and log.failing is None
    return disk, clock, threads, store, log


def test_only_the_adds_past_the_bound_wait_or_fail() -> None:
    """When raising the bound fails, the adds it held back get a 503 with a short message (the cause
    goes to the log); adds below the bound are written as usual; the next add tries again."""
    disk, clock, threads, store, _ = past_the_first_raise()
    puts = [store.put(f"http://a/{i}") for i in range(1, 12)]  # the raise starts at key 6
    disk.fail_bound_writes = 1
    clock.advance(0)
    assert [result_of(put) for put in puts[:10]] == [key_for_index(i) for i in range(1, 11)]
    assert not has_fired(puts[10]), "key b (11) waits for a higher bound"
    threads.run_next()
    error = failure_of(puts[10]).value
    assert isinstance(error, StoreUnavailable) and str(error) == NOT_STORED
    assert error.detail is not None and "Input/output error" in error.detail
    assert "http://a/11" not in parse_records("disk", disk.cached).values()
    retry = store.put("http://a/11")
    clock.advance(0)
    threads.run_next()
    clock.advance(0)
    assert result_of(retry) == "c" and disk.bound == 23


def test_stop_waits_for_a_bound_raise_in_flight_then_lowers_the_bound() -> None:
    """An add waiting for the bound when the master stops is still written and acknowledged; a clean
    stop then syncs the file and lowers the bound to the keys used, so a restart skips none."""
    disk, clock = Disk(), Clock()
    threads = ManualThreads()
    store, log = start_master(disk, clock, threads)
    put = store.put("http://a/")
    clock.advance(0)
    stopped = log.stopService()
    assert not has_fired(stopped)
    threads.run_next()  # the raise: bound 11
    threads.run_next()  # the stop: sync, then bound 1
    assert result_of(stopped) is None and result_of(put) == "0"
    assert disk.synced == encode_record("0", "http://a/") and disk.bound == 1
    clock = Clock()
    restarted, _ = start_master(disk, clock)
    assert add(restarted, clock, "http://b/") == "1"


def test_a_stop_after_a_power_loss_keeps_the_bound_past_every_lost_key() -> None:
    """Lowering the bound on stop never forgets keys acknowledged before a power loss."""
    disk, clock = Disk(), Clock()
    store, _ = start_master(disk, clock)
    lost = {add(store, clock, f"http://lost/{i}") for i in range(7)}
    disk.power_loss()
    _, log = start_master(disk, Clock())
    result_of(log.stopService())
    clock = Clock()
    store, _ = start_master(disk, clock)
    assert add(store, clock, "http://new/") not in lost


# --- the bound file --------------------------------------------------------------------------------


def test_the_bound_file_round_trips_and_leaves_no_temporary(tmp_path: Path) -> None:
    """write_key_bound replaces the file atomically; read_key_bound reads it back; none is 0."""
    path = str(tmp_path / "store.json.next")
    assert read_key_bound(path) == 0
    write_key_bound(path, 12345)
    write_key_bound(path, 22345)
    assert read_key_bound(path) == 22345
    assert sorted(os.listdir(tmp_path)) == ["store.json.next"]


@pytest.mark.parametrize("text", [b"", b"12", b"-1\n", b"1e6\n", b"0x10\n", b"007\n", b"1" * 30 + b"\n"])
def test_a_corrupt_bound_stops_start_up_naming_it(tmp_path: Path, text: bytes) -> None:
    """A bound that cannot be read exactly is refused: guessing low could hand a key out twice."""
    data = tmp_path / "store.json"
    data.write_bytes(encode_record("0", "http://a/"))
    Path(bound_path(str(data))).write_bytes(text)
    with pytest.raises(CorruptKeyBound, match=r"store\.json\.next"):
        open_data_file(str(data))
    with pytest.raises(SystemExit, match=r"store\.json\.next"):
        make_master_store({"file": str(data)}, Clock(), MultiService(), Metrics("master"))
    with pytest.raises(CorruptKeyBound):  # not "in use": each failed start released its lock
        open_data_file(str(data))


def test_start_up_resumes_past_the_bound(tmp_path: Path) -> None:
    """The counter resumes at max(the file's next key, the bound)."""
    data = tmp_path / "store.json"
    data.write_bytes(encode_record("0", "http://a/") + encode_record("1", "http://b/"))
    Path(bound_path(str(data))).write_bytes(b"500\n")
    loaded = open_data_file(str(data))
    loaded.record_file.close()
    assert loaded.next_index == 500
    assert result_of(URLStore(loaded.urls, next_index=loaded.next_index).put("http://c/")) == key_for_index(
        500
    )
    Path(bound_path(str(data))).write_bytes(b"1\n")
    assert open_data_file(str(data)).next_index == 2


@pytest.mark.parametrize(("argv", "fsync"), [([], True), (["--fsync"], True), (["--no-fsync"], False)])
def test_fsync_is_the_default(tmp_path: Path, argv: list[str], fsync: bool) -> None:
    """Adds are synced before they are acknowledged unless --no-fsync; --fsync stays accepted."""
    options = Options()
    options.parseOptions(["--file", str(tmp_path / "store.json"), *argv])
    parent = MultiService()
    make_master_store(options, Clock(), parent, Metrics("master"))
    [log] = [child for child in parent if isinstance(child, AppendLog)]
    assert log.fsync is fsync


def test_a_data_file_without_its_bound_file_is_warned_about(tmp_path: Path, log_events: LogCapture) -> None:
    """Records but no ``.next`` (an upgrade, or a data file restored without its bound): start-up
    goes on from the file alone and says so, once; a new store or one with its bound says nothing."""
    data = tmp_path / "store.json"
    data.write_bytes(encode_record("0", "http://a/"))
    open_data_file(str(data)).record_file.close()
    warnings = [m for m in log_events.messages() if "no key bound file" in m]
    assert len(warnings) == 1 and str(data) in warnings[0]
    Path(bound_path(str(data))).write_bytes(b"1\n")
    open_data_file(str(data)).record_file.close()
    open_data_file(str(tmp_path / "new.json")).record_file.close()
    assert len([m for m in log_events.messages() if "no key bound file" in m]) == 1


def started_with_key_0(disk: Disk, clock: Clock, threads: ManualThreads) -> tuple[URLStore, AppendLog]:
    """A master without fsync whose first add (key 0, ``http://first.example/``) is answered: the
    first bound raise is done, so later adds wait for no raise."""
    store, log = start_master(disk, clock, threads)
    first = store.put("http://first.example/")
    threads.run_next()  # the first bound raise
    clock.advance(0)
    assert result_of(first) == "0"
    return store, log


@pytest.mark.parametrize("custom", ["launch", key_for_index(15)])
def test_a_custom_key_is_synced_before_it_is_answered_even_without_fsync(custom: str) -> None:
    """The key bound covers counter keys only: a custom key (a name, or a counter-shaped key ahead of
    the counter) is synced before its add is answered, so after a power loss it still points to its
    URL: nobody can claim it, and the counter never reaches it, for another URL."""
    disk, clock, threads = Disk(), Clock(), ManualThreads()
    store, _ = started_with_key_0(disk, clock, threads)
    added = store.add("http://mine.example/", custom)
    clock.advance(0)
    assert not has_fired(added), "not answered from the page cache"
    threads.run_next()
    assert result_of(added) == (custom, True)
    assert b"mine.example" in disk.synced
    disk.power_loss()

    clock = Clock()
    restarted, _ = start_master(disk, clock)
    assert failure_of(restarted.add("http://evil.example/", custom)).check(KeyExists)
    keys = {add(restarted, clock, f"http://other/{number}") for number in range(20)}
    assert custom not in keys
    assert result_of(restarted.get(custom)) == "http://mine.example/"


def test_without_fsync_adds_behind_a_custom_key_wait_their_turn() -> None:
    """While a custom key's record is being synced, later adds go through the same writer, in order:
    none is written beside it, and each is answered once written."""
    disk, clock, threads = Disk(), Clock(), ManualThreads()
    store, _ = started_with_key_0(disk, clock, threads)
    written = disk.cached
    custom = store.add("http://mine.example/", "launch")
    clock.advance(0)
    later = store.put("http://later.example/")
    clock.advance(0)
    assert not has_fired(later) and disk.cached == written, "nothing written beside the writer's group"
    threads.run_next()
    assert result_of(custom) == ("launch", True) and result_of(later) == "1"
    assert [json.loads(line)["key"] for line in disk.cached.splitlines()] == ["0", "launch", "1"]
    after = store.put("http://after.example/")
    clock.advance(0)
    assert result_of(after) == "2", "the writer is done: plain adds are answered from the page cache again"
    assert b"after.example" not in disk.synced


def test_without_fsync_the_writer_does_not_linger_after_a_custom_key() -> None:
    """Second read of review 33: a writer run that lingered for more groups kept every plain group of
    a steady load on the thread after one custom key; without fsync it stops once it has written
    what it holds, and plain adds are answered from the page cache again."""
    disk, clock, threads = Disk(), Clock(), ManualThreads()
    store, log = started_with_key_0(disk, clock, threads)
    waits: list[float | None] = []

    def wait(timeout: float | None = None) -> bool:
        waits.append(timeout)
        return True

    log._writer_linger = 5.0  # as the wiring gives it (WRITER_LINGER), longer: a wait would show
    log._group_handed.wait = wait  # type: ignore[method-assign]
    custom = store.add("http://mine.example/", "launch")
    clock.advance(0)
    threads.run_next()
    assert result_of(custom) == ("launch", True) and waits == []
    later = store.put("http://later.example/")
    clock.advance(0)
    assert result_of(later) == "1" and threads.jobs == []


def test_a_failing_key_bound_is_said_until_it_is_raised_whatever_else_is_written(
    log_events: LogCapture,
) -> None:
    """Review 34's second read: one failure state for the data file and the key bound, so a write
    of a record the bound covers (a custom key, a key below it) said "written again" and health "ok"
    while every new counter key failed; a raise that failed with no add waiting logged "Could not
    store 0 record(s)". The bound's failure now lasts until a raise succeeds."""
    disk, clock, threads, store, log = past_the_first_raise()
    puts = [store.put(f"http://a/{i}") for i in range(1, 12)]  # the raise starts at key 6
    disk.fail_bound_writes = 1
    clock.advance(0)
    threads.run_next()
    assert failure_of(puts[10]).check(StoreUnavailable)
    assert log.failing is not None and "key bound" in log.failing
    custom = store.add("http://custom/", "mine")
    clock.advance(0)
    while threads.jobs:  # a custom key's record is synced by the writer
        threads.run_next()
    clock.advance(0)
    assert result_of(custom) == ("mine", True)
    assert log.failing is not None, "the bound still fails: said until a raise succeeds"
    assert not [m for m in log_events.messages() if "written again" in m]
    assert not [m for m in log_events.messages() if "Could not store 0 record(s)" in m]
    retry = store.put("http://a/11")
    clock.advance(0)
    threads.run_next()
    clock.advance(0)
    assert result_of(retry) == "c" and log.failing is None
    assert len([m for m in log_events.messages() if "The key bound is written again" in m]) == 1


def test_a_raise_ahead_of_need_that_fails_refuses_nothing_and_says_so(log_events: LogCapture) -> None:
    """Review 34's third read: a raise started half a block early that failed, with no add waiting
    for it, logged "Could not store 0 record(s)". It is a warning of its own now; health says the
    bound fails until a raise succeeds."""
    disk, clock, threads, store, log = past_the_first_raise()
    puts = [store.put(f"http://a/{i}") for i in range(1, 7)]  # the raise starts at key 6
    disk.fail_bound_writes = 1
    clock.advance(0)
    threads.run_next()
    clock.advance(0)
    assert [result_of(put) for put in puts] == [key_for_index(i) for i in range(1, 7)]
    assert not [m for m in log_events.messages() if "Could not store" in m]
    assert [m for m in log_events.messages() if "Could not raise the key bound ahead" in m]
    assert log.failing is not None


def test_a_custom_key_taken_behind_a_plain_group_by_a_running_writer_is_synced() -> None:
    """Review 35 (mutation audit): when one writer run takes several groups, the write is synced if
    any of them needs it, not only if the first does: a plain group ahead of a custom key's must not
    leave the custom key in the page cache, answered (a power loss would free it for another URL)."""
    disk, clock, threads = Disk(), Clock(), ManualThreads()
    store, _ = started_with_key_0(disk, clock, threads)
    queued: list[Deferred[Any]] = []
    sync = DiskFile.sync

    def sync_then_queue_more(file: DiskFile) -> None:
        sync(file)
        if not queued:  # while the writer syncs the first custom key: a plain add, then a custom one
            queued.append(store.put("http://plain.example/"))
            clock.advance(0)
            queued.append(store.add("http://second.example/", "second"))
            clock.advance(0)

    first = store.add("http://first-custom.example/", "first")
    clock.advance(0)
    with mock.patch.object(DiskFile, "sync", sync_then_queue_more):
        threads.run_next()  # writes and syncs "first", then takes [plain, second] in its next turn
    clock.advance(0)
    assert result_of(first) == ("first", True) and result_of(queued[1]) == ("second", True)
    assert b"second.example" in disk.synced, "answered, so synced"
    disk.power_loss()
    restarted, _ = start_master(disk, Clock())
    assert result_of(restarted.get("second")) == "http://second.example/"
