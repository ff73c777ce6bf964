"""Tests of the second review's click findings: custom keys cannot grow the totals array (item 1),
the click file is compacted by size and loaded in bounded chunks (item 7), one User-Agent rule on
both paths (item 14), and a slave stops sending clicks to a master that counts none (item 9)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from goto_tw import clicks
from goto_tw.clicks import (
    ClickBook,
    ClickCounter,
    ClickForwarder,
    ClickTotals,
    CorruptClickFile,
    PreviewBotFilter,
    load_clicks,
    open_click_book,
)
from goto_tw.errors import NotKept
from goto_tw.keys import key_for_index
from tests.conftest import LogCapture

from .helpers import result_of

# --- item 1 ---------------------------------------------------------------------------------------


def test_custom_keys_that_read_as_far_numbers_never_grow_the_array() -> None:
    """Keys numbered k * 2**20 (the review's repro) go to the side dict: the array only covers
    counter values below the store's next index."""
    totals = ClickTotals(lambda: 100)
    for k in range(1, 41):
        totals.add(key_for_index(k << 20), 1)
    totals.add(key_for_index(99), 2)
    totals.add(key_for_index(100), 3)  # not made by the counter (yet): a custom key
    assert totals.slots() <= 100
    assert totals.get(key_for_index(5 << 20)) == 1
    assert (totals.get(key_for_index(99)), totals.get(key_for_index(100))) == (2, 3)
    assert len(totals.items()) == 42


def test_totals_without_a_counter_keep_everything_apart() -> None:
    totals = ClickTotals()
    totals.add("a", 1)
    assert totals.slots() == 0 and totals.get("a") == 1


def test_a_book_fed_far_custom_keys_keeps_its_array_small(tmp_path: Path) -> None:
    """Through a running master's book and a restart: 40 clicked far keys leave the array at the
    counter's size, and reloading the file does not grow it either."""
    path, clock = tmp_path / "c.clicks", Clock()
    totals, marks, _lines = open_click_book(str(path), 0.0, next_index=lambda: 10)
    made = ClickBook(
        str(path), totals, clock, fsync=False, run_in_thread=None, marks=marks, next_index=lambda: 10
    )
    made.startService()
    recorded = made.record({key_for_index(k << 20): 1 for k in range(1, 41)})
    clock.advance(0)
    assert result_of(recorded) is None
    result_of(made.stopService())
    assert totals.slots() <= 10
    reloaded, _, _ = load_clicks(str(path), next_index=lambda: 10)
    assert reloaded.slots() <= 10 and reloaded.get(key_for_index(7 << 20)) == 1


# --- item 7 ---------------------------------------------------------------------------------------


def test_a_running_book_compacts_past_its_byte_bound(tmp_path: Path) -> None:
    """Few lines but big ones (thousands of distinct keys a second): compacted by size, well
    before the line bound; the totals survive it."""
    path, clock = tmp_path / "c.clicks", Clock()
    made = ClickBook(
        str(path), ClickTotals(lambda: 0), clock, fsync=False, run_in_thread=None,
        compact_lines=1_000_000, compact_bytes=200_000,
    )  # fmt: skip
    made.startService()
    for _second in range(60):
        recorded = made.record({f"s{n}": 1 for n in range(1000)})
        clock.advance(1)
        assert result_of(recorded) is None
    size = path.stat().st_size
    assert size < 200_000 * 2 + 20_000, size
    result_of(made.stopService())
    totals, _, _ = load_clicks(str(path))
    assert totals.get("s7") == 60


def test_compaction_by_size_does_not_repeat_on_every_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot bigger than the byte bound does not make every later write a rewrite: the bound
    is at least twice the size of the last snapshot."""
    path, clock = tmp_path / "c.clicks", Clock()
    made = ClickBook(
        str(path), ClickTotals(lambda: 0), clock, fsync=False, run_in_thread=None,
        compact_lines=1_000_000, compact_bytes=10_000,
    )  # fmt: skip
    made.startService()
    recorded = made.record({f"big{n}": 1 for n in range(3000)})
    clock.advance(0)
    assert result_of(recorded) is None
    snapshots: list[int] = []
    real = clicks.write_snapshot

    def counting(*args: Any, **kwargs: Any) -> int:
        snapshots.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(clicks, "write_snapshot", counting)
    for _ in range(20):
        made.record({"x": 1})
        clock.advance(1)
    assert snapshots == []
    result_of(made.stopService())


def test_load_reads_the_file_in_bounded_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is never read whole: every read asks for at most the chunk size."""
    path = tmp_path / "c.clicks"
    path.write_bytes(b'{"c":{"a":1,"b":2}}\n' * 5000)
    monkeypatch.setattr(clicks, "LOAD_CHUNK_BYTES", 4096)
    asked: list[int] = []
    real_read = os.read

    def spying(fd: int, size: int) -> bytes:
        asked.append(size)
        return real_read(fd, size)

    monkeypatch.setattr(os, "read", spying)
    totals, _, lines = load_clicks(str(path))
    assert (totals.get("a"), totals.get("b"), lines) == (5000, 10000, 5000)
    assert asked and max(asked) <= 4096


def test_load_refuses_a_line_over_the_bound_and_cuts_a_torn_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clicks, "LOAD_CHUNK_BYTES", 16)
    path = tmp_path / "c.clicks"
    path.write_bytes(b'{"c":{"a":1}}\n' * 3 + b'{"c":{"a":')
    totals, _, lines = load_clicks(str(path))
    assert (totals.get("a"), lines) == (3, 3)
    assert path.read_bytes() == b'{"c":{"a":1}}\n' * 3
    monkeypatch.setattr(clicks, "MAX_LINE_BYTES", 64)
    path.write_bytes(b'{"c":{"a":1}}\n' + b'{"c":{' + b'"a":1,' * 40 + b'"b":1}}\n')
    with pytest.raises(CorruptClickFile, match="line 2"):
        load_clicks(str(path))


# --- item 14 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head, bot",
    [
        (b"GET /a HTTP/1.1\r\nUser-Agent: Slackbot\r\nUser-Agent: Firefox\r\n\r\n", False),
        (b"GET /a HTTP/1.1\r\nUser-Agent: Firefox\r\nUser-Agent: Slackbot\r\n\r\n", True),
        (b"GET /a HTTP/1.1\r\nUser-Agent: Slackbot\r\nuser-agent: Firefox\r\n\r\n", False),
        (b"GET /a HTTP/1.1\r\nuser-agent: Firefox\r\nUser-Agent: Slackbot\r\n\r\n", True),
        (b"GET /a HTTP/1.1\r\nuser-agent: Slackbot\r\nUSER-AGENT: Firefox\r\n\r\n", False),
        (b"GET /a HTTP/1.1\r\nUser-Agent: Slackbot\r\n\r\n", True),
        (b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", False),
    ],
)
def test_the_fast_path_reads_the_last_user_agent_as_twisted_web_does(head: bytes, bot: bool) -> None:
    """twisted.web's ``getHeader`` gives the last of repeated headers; the fast path's filter too."""
    is_bot = PreviewBotFilter()
    assert is_bot(head) is bot
    assert is_bot(head) is bot  # and from its memory


# --- item 9 (clicks half) -------------------------------------------------------------------------


def test_the_forwarder_stops_sending_to_a_master_that_counts_no_clicks(log_events: LogCapture) -> None:
    """A master that counts no clicks (PostgreSQL) is asked again only after a long pause, the clicks
    meanwhile counted as dropped (bounded memory), and it is logged once."""
    clock, counter = Clock(), ClickCounter()
    sent: list[Deferred[Any]] = []

    def send(batch: dict[str, int]) -> Deferred[Any]:
        answer: Deferred[Any] = Deferred()
        sent.append(answer)
        return answer

    forwarder = ClickForwarder(counter, send, clock)
    forwarder.startService()
    counter.click("a")
    clock.advance(1)
    sent[0].errback(NotKept("this master counts no clicks"))
    for _ in range(60):
        counter.click("a")
        clock.advance(1)
    assert len(sent) == 1
    assert counter.pending == {} and counter.dropped == 61
    assert sum("counts no clicks" in m for m in log_events.messages()) == 1
    clock.advance(clicks.UNSUPPORTED_RETRY_SECONDS)
    counter.click("b")
    clock.advance(1)
    assert len(sent) == 2, "asked again after the pause"
    sent[1].callback(True)
    result_of(forwarder.stopService())


def test_the_longest_line_the_writer_makes_is_within_the_load_bound() -> None:
    """A line of SNAPSHOT_KEYS keys of the longest kind, with the largest counts, still loads."""
    from goto_tw.keys import MAX_KEY_LENGTH

    counts = {f"{n:0{MAX_KEY_LENGTH}d}": 2**63 - 1 for n in range(clicks.SNAPSHOT_KEYS)}
    assert len(clicks.encode_clicks(counts)) <= clicks.MAX_LINE_BYTES


def test_a_stopping_slave_offers_nothing_to_a_master_that_counts_no_clicks() -> None:
    clock, counter = Clock(), ClickCounter()
    sent: list[dict[str, int]] = []

    def send(batch: dict[str, int]) -> Deferred[Any]:
        sent.append(batch)
        answer: Deferred[Any] = Deferred()
        answer.errback(NotKept("this master counts no clicks"))
        return answer

    forwarder = ClickForwarder(counter, send, clock)
    forwarder.startService()
    counter.click("a")
    clock.advance(1)
    counter.click("a")
    result_of(forwarder.stopService())
    assert len(sent) == 1 and counter.dropped == 2 and counter.total() == 2
