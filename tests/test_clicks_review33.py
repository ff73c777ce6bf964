"""Review 33's click-file findings: a snapshot failing after its rename leaves no descriptor on the
replaced file; the click file's counts and marks are bounded where they enter; a counter that starts
far out grows no huge array; every batch is answered."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from goto_tw.clicks import (
    MAX_CLICK_TOTAL,
    MAX_MARK_INDEX,
    MAX_MARK_TIME,
    SLOTS_AHEAD,
    ClickBook,
    ClickTotals,
    CorruptClickFile,
    load_clicks,
    open_click_book,
)
from goto_tw.errors import StoreUnavailable
from goto_tw.keys import key_for_index

from .helpers import failure_of, result_of


def test_a_snapshot_failing_after_its_rename_loses_no_later_clicks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot is renamed into place, then syncing its directory fails: that write is answered
    503, and the next batch, acknowledged, is in the file on disk (not in the replaced one)."""
    path = str(tmp_path / "store.json.clicks")
    clock = Clock()
    book = ClickBook(path, ClickTotals(), clock, fsync=False, run_in_thread=None, compact_bytes=200)
    book.startService()
    first = book.record({"a1": 1})
    clock.advance(0)
    result_of(first)
    real_open = os.open

    def no_directory(name: str, flags: int, *rest: int) -> int:
        if os.path.isdir(name):
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(name, flags, *rest)

    monkeypatch.setattr(os, "open", no_directory)
    compacted = book.record({f"b{number}": 2 for number in range(40)})  # past 200 bytes: a snapshot
    clock.advance(0)
    monkeypatch.setattr(os, "open", real_open)
    assert failure_of(compacted).check(StoreUnavailable)
    later = book.record({"zz": 7})
    clock.advance(0)
    assert result_of(later) is None
    result_of(book.stopService())
    totals, _, _ = load_clicks(path)
    assert totals.get("zz") == 7 and totals.get("a1") == 1


@pytest.mark.parametrize(
    "line",
    [
        b'{"c":{"1":%d}}' % (MAX_CLICK_TOTAL + 1),
        b'{"n":%d,"t":1}' % (MAX_MARK_INDEX + 1),
        b'{"n":1,"t":%d}' % (MAX_MARK_TIME + 1),
    ],
)
def test_a_click_file_out_of_range_stops_start_up_naming_the_line(tmp_path: Path, line: bytes) -> None:
    """A count past a total's bound, or a mark whose number or time no slot or date holds, is refused
    at start-up with the file and line (not an ``OverflowError`` then, or a 500 on the info page later)."""
    path = tmp_path / "store.json.clicks"
    path.write_bytes(b'{"c":{"1":1}}\n' + line + b"\n")
    with pytest.raises(CorruptClickFile, match=r"store\.json\.clicks, line 2"):
        open_click_book(str(path), 0.0, lambda: 10)


def test_totals_stop_at_their_bound_and_batches_are_still_answered(tmp_path: Path) -> None:
    """Lines adding up past :data:`MAX_CLICK_TOTAL` load (the total stops there), and a slave's batch
    for that key is answered and kept."""
    path = tmp_path / "store.json.clicks"
    path.write_bytes(b'{"c":{"1":%d,"z":%d}}\n' % (MAX_CLICK_TOTAL, MAX_CLICK_TOTAL) * 3)
    totals, marks, lines = open_click_book(str(path), 0.0, lambda: 10)
    assert totals.get("1") == MAX_CLICK_TOTAL and totals.get("z") == MAX_CLICK_TOTAL
    clock = Clock()
    book = ClickBook(
        str(path),
        totals,
        clock,
        fsync=False,
        run_in_thread=None,
        marks=marks,
        next_index=lambda: 10,
        lines=lines,
    )
    book.startService()
    answered = book.record({"1": 5, "z": 5})
    clock.advance(0)
    assert result_of(answered) is None
    assert book.clicks("1") == MAX_CLICK_TOTAL
    result_of(book.stopService())
    reloaded, _, _ = load_clicks(str(path), lambda: 10)
    assert reloaded.get("1") == MAX_CLICK_TOTAL


def test_a_counter_far_out_grows_no_huge_array(tmp_path: Path) -> None:
    """With the key counter at 10**12 (a ``.next`` that high), clicks on its keys are answered and
    counted, and the slot array grows only as far as its bound allows."""
    far = 10**12
    clock = Clock()
    book = ClickBook(
        str(tmp_path / "c.clicks"), ClickTotals(lambda: far + 10), clock, fsync=False, run_in_thread=None,
        next_index=lambda: far + 10,
    )  # fmt: skip
    book.startService()
    keys = {key_for_index(far + number): number + 1 for number in range(5)}
    keys[key_for_index(SLOTS_AHEAD - 1)] = 9
    answered = book.record(keys)
    clock.advance(0)
    assert result_of(answered) is None
    assert [book.clicks(key) for key in keys] == list(keys.values())
    assert book._totals.slots() == SLOTS_AHEAD
    result_of(book.stopService())


def test_a_snapshot_never_writes_a_total_past_the_bound(tmp_path: Path) -> None:
    """A compaction adding a write to a total at the bound writes the bound, which the next start-up
    loads (second read of review 33: it wrote the sum, and start-up refused its own file)."""
    path = tmp_path / "store.json.clicks"
    path.write_bytes(b'{"c":{"1":%d}}\n' % MAX_CLICK_TOTAL)
    totals, marks, lines = open_click_book(str(path), 0.0, lambda: 10)
    clock = Clock()
    book = ClickBook(
        str(path), totals, clock, fsync=False, run_in_thread=None, marks=marks, next_index=lambda: 10,
        lines=lines, compact_bytes=100,
    )  # fmt: skip
    book.startService()
    answered = book.record({"1": 5, **{f"b{number}": 1 for number in range(40)}})
    clock.advance(0)
    assert result_of(answered) is None
    result_of(book.stopService())
    reloaded, _, reloaded_lines = open_click_book(str(path), 0.0, lambda: 10)
    assert reloaded.get("1") == MAX_CLICK_TOTAL and reloaded.get("b0") == 1
    assert reloaded_lines <= 3, "it was compacted"


def test_keys_made_after_the_last_mark_of_a_crashed_run_are_dated_by_the_data_files_last_write(
    tmp_path: Path,
) -> None:
    """Review 33: a link added within the second before a crash (its mark never written) was dated
    at the restart, and before the first tick at "now" on every request; it is dated by when the data
    file was last written (its mtime), which is when it existed at the latest."""
    path = tmp_path / "store.json.clicks"
    path.write_bytes(b'{"n":5,"t":1000000}\n')  # the last mark of the run that crashed
    totals, marks, lines = open_click_book(str(path), 0.0, lambda: 8)
    clock = Clock()
    clock.advance(1_000_500)  # the restart, 500 s later
    book = ClickBook(
        str(path), totals, clock, fsync=False, run_in_thread=None, marks=marks, next_index=lambda: 8,
        lines=lines, keys_written_by=1_000_000.7,
    )  # fmt: skip
    book.startService()
    assert book.created(6) == 1_000_000.0, "by the last write, in whole seconds as every mark"
    assert book.created(4) == 1_000_000.0
    clock.advance(1)
    result_of(book.stopService())
    _, reloaded, _ = load_clicks(str(path))
    assert reloaded.created(6) == 1_000_000.0, "the mark is in the file"


def test_the_start_up_mark_is_never_after_now_so_marks_stay_in_order(tmp_path: Path) -> None:
    """Fourth read of review 33: a data file written within the current second gave a mark after
    "now", and the next tick's mark (whole seconds, rounded down) came out earlier than it."""
    path = tmp_path / "store.json.clicks"
    path.write_bytes(b'{"n":5,"t":1000000}\n')
    totals, marks, lines = open_click_book(str(path), 0.0, lambda: 8)
    clock = Clock()
    clock.advance(1_000_000.3)
    counter = [8]
    book = ClickBook(
        str(path), totals, clock, fsync=False, run_in_thread=None, marks=marks,
        next_index=lambda: counter[0], lines=lines, keys_written_by=1_000_000.1,
    )  # fmt: skip
    book.startService()
    counter[0] = 10
    clock.advance(1)
    result_of(book.stopService())
    _, reloaded, _ = load_clicks(str(path))
    assert list(reloaded.t) == sorted(reloaded.t) and max(reloaded.t) <= 1_000_001


def test_a_data_file_dated_before_1970_writes_no_mark_the_next_start_up_refuses(tmp_path: Path) -> None:
    """Third read of review 33: an mtime before the epoch made a negative mark, which the next
    start-up refused; such keys are dated 0 ("unknown") instead."""
    path = tmp_path / "store.json.clicks"
    path.write_bytes(b'{"n":5,"t":1000000}\n')
    totals, marks, lines = open_click_book(str(path), 0.0, lambda: 8)
    clock = Clock()
    book = ClickBook(
        str(path), totals, clock, fsync=False, run_in_thread=None, marks=marks, next_index=lambda: 8,
        lines=lines, keys_written_by=-3600.0,
    )  # fmt: skip
    book.startService()
    clock.advance(1)
    result_of(book.stopService())
    _, reloaded, _ = open_click_book(str(path), 0.0, lambda: 8)
    assert reloaded.created(6) is None
