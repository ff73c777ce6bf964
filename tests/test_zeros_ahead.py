"""The data file's zeros written ahead: kept by a master syncing every add, trimmed by a clean stop,
and after a crash read and trimmed by start-up, with what a power loss tore cut off and nothing
acknowledged lost (a simulated disk that keeps any subset of the sectors written since the last
sync)."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Callable
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from goto_tw import persistence
from goto_tw.errors import StoreUnavailable
from goto_tw.keys import key_for_index
from goto_tw.persistence import (
    MAX_UNSYNCED_BYTES,
    SECTOR_BYTES,
    SPARE_BYTES,
    AppendLog,
    CorruptDataFile,
    OSRecordFile,
    encode_record,
    load_records,
    open_data_file,
)
from tests.conftest import LogCapture
from tests.fakes import FaultyFile
from tests.helpers import failure_of, has_fired, live_records, result_of


def run_now(job: Callable[[], None]) -> Deferred[None]:
    job()
    return succeed(None)


def durable_log(record_file: OSRecordFile, clock: Clock) -> AppendLog:
    """A started log that syncs every group, its "writer thread" run inline."""
    log = AppendLog(
        record_file, clock, fsync=True, run_in_thread=run_now, call_from_thread=lambda f, *a: f(*a)
    )
    log.startService()
    return log


def records(count: int, start: int = 0) -> bytes:
    return b"".join(encode_record(key_for_index(i), f"https://example.com/{i}") for i in range(start, count))


def expected(count: int, start: int = 0) -> dict[str, str]:
    return {key_for_index(i): f"https://example.com/{i}" for i in range(start, count)}


# --- the writer keeps zeros ahead, and a clean stop trims them ---------------------------------------


def test_a_master_syncing_adds_keeps_zeros_written_past_its_records_and_a_clean_stop_trims_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.json"
    clock = Clock()
    log = durable_log(OSRecordFile(str(path)), clock)
    added = log.append("0", "https://example.com/0")
    clock.advance(0)
    assert result_of(added) is None
    assert path.stat().st_size == len(records(1)) + SPARE_BYTES
    assert live_records(path) == records(1)
    result_of(log.stopService())
    assert path.read_bytes() == records(1), "a clean stop leaves the records alone"


def test_records_fill_the_zeros_then_more_are_written_ahead(tmp_path: Path) -> None:
    path = tmp_path / "store.json"
    file = OSRecordFile(str(path))
    file.open(spare=100)
    file.write_all(b"a" * 60 + b"\n")
    assert path.read_bytes() == b"a" * 60 + b"\n" + bytes(100)
    file.write_all(b"b" * 39 + b"\n")  # into the zeros: the size stays
    assert path.stat().st_size == 161 and file.size() == 101
    file.write_all(b"c" * 99 + b"\n")  # past them: written, and zeros after it again
    assert path.read_bytes() == b"a" * 60 + b"\n" + b"b" * 39 + b"\n" + b"c" * 99 + b"\n" + bytes(100)
    file.write_all(b"d" * 99 + b"\n")  # exactly to their end: the next record finds zeros too
    assert path.stat().st_size == 301 + 100 and file.size() == 301
    file.close()
    assert path.read_bytes() == b"a" * 60 + b"\n" + b"b" * 39 + b"\n" + b"c" * 99 + b"\n" + b"d" * 99 + b"\n"


def test_without_fsync_no_zeros_are_written(tmp_path: Path) -> None:
    """Without fsync nothing is synced per add, so nothing would gain from them."""
    path = tmp_path / "store.json"
    clock = Clock()
    log = AppendLog(
        OSRecordFile(str(path)), clock, run_in_thread=run_now, call_from_thread=lambda f, *a: f(*a)
    )
    log.startService()
    added = log.append("0", "https://example.com/0")
    clock.advance(0)
    assert result_of(added) is None
    assert path.read_bytes() == records(1)
    result_of(log.stopService())


def test_a_cut_back_after_a_failed_write_drops_the_zeros_and_the_next_write_writes_them_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.json"
    file = OSRecordFile(str(path))
    file.open(spare=50)
    file.write_all(b"a\n")
    file.truncate(2)
    assert path.read_bytes() == b"a\n" and file.size() == 2
    file.write_all(b"b\n")
    assert path.read_bytes() == b"a\nb\n" + bytes(50)
    file.close()


def test_a_group_longer_than_the_unsynced_limit_is_synced_in_parts_each_acknowledged_as_it_ends(
    tmp_path: Path,
) -> None:
    """Only the last part can be torn by a power loss (what start-up may cut off stays bounded), and a
    part that fails cuts back that part alone, never records synced before it."""
    path = tmp_path / "store.json"
    clock = Clock()
    synced: list[tuple[int, int]] = []  # bytes of records, and how many adds were acknowledged then
    url = "https://example.com/" + "x" * 3000
    count = 2 * MAX_UNSYNCED_BYTES // len(encode_record("0", url)) + 1
    acknowledged: list[Deferred[None]] = []

    class WatchingFile(OSRecordFile):
        def sync(self) -> None:
            synced.append((self.size(), sum(has_fired(ack) for ack in acknowledged)))
            super().sync()

    log = durable_log(WatchingFile(str(path)), clock)
    acknowledged.extend(log.append(key_for_index(i), url) for i in range(count))
    clock.advance(0)
    assert all(result_of(ack) is None for ack in acknowledged)
    body = live_records(path)
    ends = [end for end, _ in synced]
    assert len(synced) == 3 and ends[-1] == len(body)
    assert all(body[end - 1 : end] == b"\n" for end in ends), "each part ends with a record"
    assert all(later - earlier <= MAX_UNSYNCED_BYTES for earlier, later in zip([0, *ends], ends))
    line = len(encode_record("0", url))
    assert [acked for _, acked in synced] == [0, ends[0] // line, ends[1] // line]
    result_of(log.stopService())


def test_a_failing_part_of_a_long_group_refuses_its_own_records_only(tmp_path: Path) -> None:
    path = tmp_path / "store.json"
    clock = Clock()
    file = FaultyFile(str(path))
    file.fail_writes_after = 1  # the second part's write fails
    log = durable_log(file, clock)
    url = "https://example.com/" + "x" * 3000
    count = 2 * MAX_UNSYNCED_BYTES // len(encode_record("0", url)) + 1
    acks = [log.append(key_for_index(i), url) for i in range(count)]
    clock.advance(0)
    first = MAX_UNSYNCED_BYTES // len(encode_record("0", url))
    assert all(result_of(ack) is None for ack in acks[:first])
    assert all(failure_of(ack).check(StoreUnavailable) for ack in acks[first : 2 * first])
    assert all(result_of(ack) is None for ack in acks[2 * first :])
    result_of(log.stopService())
    assert load_records(str(path)) == {
        key_for_index(i): url for i in [*range(first), *range(2 * first, count)]
    }


# --- start-up reads what a crash left ------------------------------------------------------------


def refused_at_start(path: Path, body: bytes, match: str) -> CorruptDataFile:
    """Start-up refuses a file holding ``body`` (its reason matching ``match``), and leaves it as it was."""
    path.write_bytes(body)
    with pytest.raises(CorruptDataFile, match=match) as raised:
        load_records(str(path))
    assert path.read_bytes() == body
    return raised.value


def test_start_up_trims_the_zeros_a_crash_left(tmp_path: Path, log_events: LogCapture) -> None:
    path = tmp_path / "store.json"
    path.write_bytes(records(3) + bytes(SPARE_BYTES))
    assert load_records(str(path)) == expected(3)
    assert path.read_bytes() == records(3)
    assert any(f"ends with {SPARE_BYTES} zero bytes written ahead" in m for m in log_events.messages())


def up_to_a_sector(body: bytes) -> bytes:
    """``body`` and a record, torn (or missing only its newline) where the next sector begins."""
    record = b'{"key":"x","url":"https://example.com/' + b"p" * SECTOR_BYTES
    return body + record[: SECTOR_BYTES - len(body) % SECTOR_BYTES]


def test_a_whole_last_record_before_the_zeros_is_kept_and_given_its_newline(tmp_path: Path) -> None:
    """A power loss kept the sector its record ends in, and lost the next one, with its newline."""
    path = tmp_path / "store.json"
    body = records(2)
    whole = b'{"key":"2","url":"https://example.com/' + b"p" * (SECTOR_BYTES - len(body) - 40) + b'"}'
    assert (len(body) + len(whole)) % SECTOR_BYTES == 0
    path.write_bytes(body + whole + bytes(100))
    loaded = load_records(str(path))
    assert len(loaded) == 3 and loaded["2"].startswith("https://example.com/pp")
    assert path.read_bytes() == body + whole + b"\n"


def test_a_torn_last_record_before_the_zeros_is_cut_off(tmp_path: Path, log_events: LogCapture) -> None:
    path = tmp_path / "store.json"
    torn = up_to_a_sector(records(2))
    path.write_bytes(torn + bytes(100))
    assert load_records(str(path)) == expected(2)
    assert path.read_bytes() == records(2)
    assert any(f"torn record ({len(torn) - len(records(2))} bytes" in m for m in log_events.messages())


def test_a_piece_of_a_record_before_zeros_that_start_inside_a_sector_is_corruption(tmp_path: Path) -> None:
    """A power loss keeps or loses a whole sector: it cannot end a record's bytes in its middle."""
    path = tmp_path / "store.json"
    body = records(2) + records(3, 2)[:10] + bytes(100)
    refused_at_start(path, body, "line 3: a zero byte inside a record")


def test_pieces_of_a_torn_write_among_the_zeros_are_cut_off(tmp_path: Path, log_events: LogCapture) -> None:
    """A power loss kept a later sector of the last write and lost an earlier one."""
    path = tmp_path / "store.json"
    body = records(2)
    body += bytes(SECTOR_BYTES - len(body))  # the lost sector: zeros written ahead
    body += b'ple.com/7"}\n{"key":"8","url":"https://example.com/8"}\n' + bytes(300)
    path.write_bytes(body)
    assert load_records(str(path)) == expected(2)
    assert path.read_bytes() == records(2)
    assert any("a write a crash tore" in m for m in log_events.messages())


def test_more_zeros_than_a_crash_leaves_are_corruption(tmp_path: Path) -> None:
    """Zeroed records (a disk or a tool's damage) are refused, not trimmed as zeros written ahead."""
    path = tmp_path / "store.json"
    body = records(2) + bytes(MAX_UNSYNCED_BYTES + SPARE_BYTES + 1)
    refused = refused_at_start(path, body, "line 3: zero bytes followed by more than")
    assert f"its records end at byte {len(records(2))}: cut the file there" in str(refused)
    path.write_bytes(records(2) + bytes(MAX_UNSYNCED_BYTES + SPARE_BYTES))
    assert load_records(str(path)) == expected(2)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda body: body[:100] + b"\0" + body[101:], id="one zero byte"),
        pytest.param(
            lambda body: body[: body.index(b"\n", 200) + 1] + b"\0" + body[body.index(b"\n", 200) + 2 :],
            id="a line's first byte",
        ),
        pytest.param(lambda body: body[:512] + b"\0" * 20 + body[532:], id="zeros from a sector on"),
        pytest.param(lambda body: body[:300] + bytes(1024) + body[1324:], id="zeros up to a sector"),
    ],
)
def test_zeros_that_no_torn_write_leaves_are_corruption(
    tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    """Records resume after zeros only where a sector begins (a power loss keeps or loses whole ones)."""
    path = tmp_path / "store.json"
    body = damage(records(60))
    refused_at_start(path, body, r"a zero byte inside a record|resume inside a sector")


def test_zeros_followed_by_bytes_beyond_one_write_are_corruption(tmp_path: Path) -> None:
    """Nothing a crash leaves: start-up stops, naming the line, and leaves the file as it was."""
    path = tmp_path / "store.json"
    body = records(2)
    body += bytes(-(len(body) + MAX_UNSYNCED_BYTES) % SECTOR_BYTES + MAX_UNSYNCED_BYTES)
    body += records(3, 2)  # where a sector begins, but past the unsynced write's reach
    refused_at_start(path, body, "line 3: bytes that are not zeros")


@pytest.mark.parametrize("reach, corrupt", [(MAX_UNSYNCED_BYTES - 1, False), (MAX_UNSYNCED_BYTES, True)])
def test_a_torn_write_reaches_at_most_the_unsynced_limit_past_the_last_line(
    tmp_path: Path, reach: int, corrupt: bool
) -> None:
    """Counted from the end of the last complete line, where the torn write began (a piece of a line
    before the zeros is part of it)."""
    path = tmp_path / "store.json"
    body = records(2)
    body += b'{"key":"2","url":"' + b"p" * (SECTOR_BYTES - len(body) - 18)  # a piece, up to a sector
    last = len(records(2)) + reach  # the last byte that is not a zero, in a piece from a sector on
    body = body.ljust(last - last % SECTOR_BYTES, b"\0") + b"x" * (last % SECTOR_BYTES + 1)
    if corrupt:
        refused_at_start(path, body, "line 3: bytes that are not zeros")
    else:
        path.write_bytes(body)
        assert load_records(str(path)) == expected(2)
        assert path.read_bytes() == records(2)


def test_a_zero_byte_inside_a_record_is_corruption(tmp_path: Path) -> None:
    """A zero a torn write leaves starts a sector or follows a line: one anywhere else is damage."""
    path = tmp_path / "store.json"
    body = records(2) + b'{"key":"2","url":"https://exa\0ple.com/2"}\n' + records(5, 3)
    refused_at_start(path, body, "line 3: a zero byte inside a record")


def test_a_file_without_zeros_loads_as_before(tmp_path: Path, log_events: LogCapture) -> None:
    path = tmp_path / "store.json"
    path.write_bytes(records(4))
    assert load_records(str(path)) == expected(4)
    assert path.read_bytes() == records(4)
    assert not [m for m in log_events.messages() if "ends with" in m]


def test_the_zeros_a_crash_leaves_fit_in_what_an_older_release_cuts_off_as_a_torn_line() -> None:
    """Going back after a crash: an older release reads zeros past the last newline as a torn line of
    at most MAX_RECORD_BYTES, and cuts it off; a longer one would stop its start-up."""
    longest_record = len(encode_record("a" * 64, "https://e.com/" + "%FF" * 1362))
    assert SPARE_BYTES + longest_record < persistence.MAX_RECORD_BYTES


# --- a power loss at any sync -----------------------------------------------------------------------


class TearableFile(OSRecordFile):
    """A real data file that knows what its last sync made durable; at the chosen sync it takes the
    image a power loss could leave then: any subset of the sectors (512 or 4,096 bytes) written since
    the last sync (a cut-back's zeroed block too), and the file's new size or its old one."""

    def __init__(
        self, path: str, crash_at: int, chance: random.Random, new_size: bool, sector: int, fail_at: int
    ) -> None:
        super().__init__(path)
        #: Which write writes half and fails (a full disk), counted from 0 (-1: none).
        self.fail_at = fail_at
        self.writes = 0
        self.sector = sector
        self.durable = b""
        self.syncs = 0
        self.crash_at = crash_at
        self.chance = chance
        self.new_size = new_size
        self.image: bytes | None = None
        self.acknowledged_then: dict[str, str] = {}
        self.acknowledged: dict[str, str] = {}

    def write_all(self, data: bytes) -> None:
        self.writes += 1
        if self.writes - 1 == self.fail_at:
            super().write_all(data[: len(data) // 2])
            raise OSError(28, "No space left on device")
        super().write_all(data)

    def note_acknowledged(self, _: None, key: str, url: str) -> None:
        self.acknowledged[key] = url

    def sync(self) -> None:
        if self.syncs == self.crash_at:
            self.image = self._power_loss()
            self.acknowledged_then = dict(self.acknowledged)
        self.syncs += 1
        super().sync()
        self.durable = Path(self.path).read_bytes()

    def _power_loss(self) -> bytes:
        current = Path(self.path).read_bytes()
        size = len(current) if self.new_size else len(self.durable)
        image = bytearray(self.durable[:size].ljust(size, b"\0"))
        # A file cut shorter has the rest of its last block zeroed, and that block may reach the disk
        # while the old size stays.
        current += bytes(-len(current) % 4096)
        for start in range(0, size, self.sector):
            written = current[start : start + self.sector][: size - start]
            if written != self.durable[start : start + self.sector] and self.chance.random() < 0.5:
                image[start : start + len(written)] = written
        return bytes(image)


@settings(max_examples=300, deadline=None)
@given(
    groups=st.lists(st.lists(st.integers(0, 700), min_size=1, max_size=6), min_size=1, max_size=10),
    crash_at=st.integers(0, 40),
    seed=st.integers(0, 2**32),
    new_size=st.booleans(),
    sector=st.sampled_from([SECTOR_BYTES, 4096]),
    fail_at=st.integers(-1, 20),
)
# A long group's fourth part fails after three were synced, and the power goes while its cut-back
# syncs: the zeroed first block reached the disk, the old size stayed (a reviewer's case).
@example(groups=[[10], [1000] * 5], crash_at=4, seed=1, new_size=False, sector=SECTOR_BYTES, fail_at=4)
@mock.patch.object(persistence, "SPARE_BYTES", 700)
@mock.patch.object(persistence, "MAX_UNSYNCED_BYTES", 1500)
def test_a_power_loss_at_any_sync_loses_no_acknowledged_record_and_start_up_reads_what_it_left(
    groups: list[list[int]], crash_at: int, seed: int, new_size: bool, sector: int, fail_at: int
) -> None:
    """Zeros ahead and the unsynced limit are made small here, so that writes cross both often; one
    write may fail half-way (a full disk), its group refused and cut back."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "store.json")
        file = TearableFile(path, crash_at, random.Random(seed), new_size, sector, fail_at)
        clock = Clock()
        log = durable_log(file, clock)
        written: dict[str, str] = {}
        for group in groups:
            for length in group:
                key = key_for_index(len(written))
                url = f"https://example.com/{key}/" + "p" * length
                written[key] = url
                log.append(key, url).addCallbacks(
                    file.note_acknowledged, lambda _: None, callbackArgs=(key, url)
                )
            clock.advance(0)
        if not 0 <= fail_at < file.writes:  # no write failed: every add was acknowledged
            assert file.acknowledged == written
        if file.image is None:  # no crash: everything was synced
            file.image, file.acknowledged_then = Path(path).read_bytes(), dict(file.acknowledged)
        result_of(log.stopService())

        crashed = os.path.join(directory, "crashed.json")
        Path(crashed).write_bytes(file.image)
        loaded = load_records(crashed)
        lost = {key: url for key, url in file.acknowledged_then.items() if loaded.get(key) != url}
        assert not lost, "an acknowledged record was lost"
        assert all(written.get(key) == url for key, url in loaded.items()), "a record nobody wrote"
        assert b"\0" not in Path(crashed).read_bytes(), "start-up trimmed the zeros"
        reopened = open_data_file(crashed)  # and what start-up left loads again, unchanged
        assert dict(reopened.urls) == dict(loaded)
        reopened.record_file.close()


# --- repairs are synced, and a stop leaves no refused record behind ---------------------------------


@pytest.mark.parametrize(
    "left", [records(2) + bytes(100), records(2)], ids=["zeros to trim", "unsynced records"]
)
def test_start_up_syncs_the_file_before_going_on(tmp_path: Path, left: bytes) -> None:
    """A power loss soon after start-up finds its repair made, not the pieces it cut off, and what a
    killed master or one without fsync left unsynced is synced too: the next master's writes are
    then the only ones a power loss can tear."""
    path = tmp_path / "store.json"
    path.write_bytes(left)
    synced_sizes: list[int] = []
    with mock.patch.object(persistence, "_sync_data", lambda fd: synced_sizes.append(os.fstat(fd).st_size)):
        load_records(str(path))
    assert synced_sizes == [len(records(2))], "synced once, after the repair"


def durable_log_with_one_record(path: Path, clock: Clock) -> tuple[FaultyFile, AppendLog]:
    file = FaultyFile(str(path))
    log = durable_log(file, clock)
    first = log.append("0", "https://example.com/0")
    clock.advance(0)
    assert result_of(first) is None
    return file, log


@pytest.mark.parametrize("cut_back_fails_first", [False, True])
def test_the_cut_back_after_a_failed_write_is_synced_before_the_next_write(
    tmp_path: Path, cut_back_fails_first: bool
) -> None:
    path = tmp_path / "store.json"
    clock = Clock()
    file, log = durable_log_with_one_record(path, clock)
    file.fail_writes = 1
    file.fail_truncates = int(cut_back_fails_first)
    file.synced_sizes.clear()
    refused = log.append("1", "https://example.com/1")
    clock.advance(0)
    assert failure_of(refused).check(StoreUnavailable)
    added = log.append("2", "https://example.com/2")
    clock.advance(0)
    assert result_of(added) is None
    two = len(records(1) + encode_record("2", "https://example.com/2"))
    assert file.synced_sizes == [len(records(1)), two], "the cut-back was synced before the next write"
    result_of(log.stopService())
    assert path.read_bytes() == records(1) + encode_record("2", "https://example.com/2")


def test_a_stop_with_a_cut_back_still_owed_leaves_only_the_records_written(tmp_path: Path) -> None:
    """A write failed and so did its cut-back: the refused group's half-written records must not be
    there (answered 503) when the next master loads the file."""
    path = tmp_path / "store.json"
    clock = Clock()
    file, log = durable_log_with_one_record(path, clock)
    file.fail_writes = 1
    file.fail_truncates = 1  # the cut-back right after the failed write
    refused = [log.append(key_for_index(i), f"https://example.com/{i}") for i in range(1, 40)]
    clock.advance(0)
    assert all(failure_of(one).check(StoreUnavailable) for one in refused)
    syncs_before = len(file.synced_sizes)
    result_of(log.stopService())
    assert path.read_bytes() == records(1)
    assert file.synced_sizes[syncs_before:] == [len(records(1))], "the cut-back is synced"
