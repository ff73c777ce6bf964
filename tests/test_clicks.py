"""Unit tests of click counting, the slave's forwarder and the master's click book (clock-driven, no sockets)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from goto_tw.clicks import (
    COMPACT_LINES,
    MAX_BATCH_KEYS,
    PREVIEW_BOT_IN_HEAD,
    SEND_BATCH_KEYS,
    STOP_FLUSH_SECONDS,
    ClickBook,
    ClickCounter,
    ClickForwarder,
    ClickTotals,
    CorruptClickFile,
    Marks,
    PreviewBotFilter,
    check_batch,
    is_preview_bot,
    load_clicks,
    open_click_book,
)
from goto_tw.errors import MasterUnreachable, NotKept, StoreUnavailable
from goto_tw.metrics import Metrics

from .conftest import LogCapture
from .helpers import failure_of, has_fired, result_of


def test_counter_counts_and_is_bounded() -> None:
    """Clicks for known keys always count; a new key past the bound is dropped and counted as dropped."""
    counter = ClickCounter(max_keys=2)
    for key in ("a", "a", "b", "c", "a"):
        counter.click(key)
    assert counter.pending == {"a": 3, "b": 1}
    assert counter.dropped == 1
    assert counter.total() == 5, "every click counted, the dropped one too"
    assert counter.take() == {"a": 3, "b": 1} and counter.pending == {}
    assert counter.total() == 5


def _scraped(metrics: Metrics) -> tuple[float, float]:
    """``goto_clicks_total`` and ``goto_clicks_dropped_total`` as a scrape shows them."""
    text = metrics.render().decode()
    values = [
        float(re.search(rf"^{name} (\S+)$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
        for name in ("goto_clicks_total", "goto_clicks_dropped_total")
    ]
    return values[0], values[1]


def test_goto_clicks_total_never_goes_back_when_clicks_are_dropped() -> None:
    """A slave whose master keeps no clicks (NotKept) drops the batch it sent, and one whose give-back
    finds the bound full drops the rest: ``goto_clicks_total`` (a Prometheus counter) stays where it
    was, and ``goto_clicks_dropped_total`` says how many were dropped. It went down by the dropped
    clicks before (a reset, to ``rate()``)."""
    clock, counter = Clock(), ClickCounter(max_keys=2)
    metrics = Metrics("slave")
    metrics.watch_clicks(counter.total, lambda: counter.dropped)
    answers: list[Deferred[Any]] = []

    def send(batch: dict[str, int]) -> Deferred[Any]:
        answers.append(Deferred())
        return answers[-1]

    forwarder = ClickForwarder(counter, send, clock)
    forwarder.startService()
    for key in ("a", "a", "b"):
        counter.click(key)
    assert _scraped(metrics) == (3, 0)
    clock.advance(1)  # the batch is on its way
    counter.click("c")
    counter.click("d")
    answers[0].errback(MasterUnreachable("the master is unreachable"))  # given back: a and b fill the bound
    assert _scraped(metrics) == (5, 3), "c and d kept their place; a (2) and b (1) came back to a full bound"
    clock.advance(1)
    answers[1].errback(NotKept("this master counts no clicks"))
    assert _scraped(metrics) == (5, 5)
    counter.click("e")  # the master keeps none: dropped at once, still counted
    clock.advance(1)
    assert _scraped(metrics) == (6, 6)
    result_of(forwarder.stopService())


def test_preview_bots_and_people() -> None:
    """Preview bots are recognised in a User-Agent value and in a raw head's User-Agent line only."""
    assert is_preview_bot(b"Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)")
    assert is_preview_bot(b"facebookexternalhit/1.1")
    assert is_preview_bot(b"WhatsApp/2.23")
    assert not is_preview_bot(b"Mozilla/5.0 (X11; Linux x86_64) Chrome/156")
    assert not is_preview_bot(None)
    head = b"GET /a HTTP/1.1\r\nHost: x\r\nUser-Agent: TelegramBot (like TwitterBot)\r\n\r\n"
    assert PREVIEW_BOT_IN_HEAD.search(head)
    referer_only = b"GET /a HTTP/1.1\r\nReferer: http://x/Slackbot\r\nUser-Agent: curl/8\r\n\r\n"
    assert PREVIEW_BOT_IN_HEAD.search(referer_only) is None


def test_preview_bot_filter_remembers_verdicts_within_a_bound() -> None:
    """The cached filter says what the full search says, for any spelling, and forgets past its bound."""
    bot_filter = PreviewBotFilter(max_agents=2)
    heads = [
        b"GET /a HTTP/1.1\r\nUser-Agent: Twitterbot/1.0\r\n\r\n",
        b"GET /a HTTP/1.1\r\nUser-Agent: Mozilla/5.0\r\n\r\n",
        b"GET /a HTTP/1.1\r\nuser-agent: WhatsApp/2.23\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a HTTP/1.1\r\nUser-Agent: curl/8\r\n\r\n",
        b"GET /a HTTP/1.1\r\nUser-Agent: Twitterbot/1.0\r\n\r\n",
    ]
    assert [bot_filter(head) for head in heads] == [True, False, True, False, False, True]
    assert len(bot_filter._verdicts) <= 2


@pytest.mark.parametrize(
    "batch",
    [[], {"a.b": 1}, {"": 1}, {"ok": 0}, {"ok": -1}, {"ok": True}, {"ok": 1.5}, {"ok": 2**31}, {"_x": 1}],
)
def test_check_batch_refuses_what_a_slave_must_not_send(batch: Any) -> None:
    """A batch is a struct of valid keys to positive 32-bit counts."""
    with pytest.raises(ValueError):
        check_batch(batch)


def test_check_batch_is_bounded() -> None:
    """At most MAX_BATCH_KEYS keys in one batch."""
    assert check_batch({f"k{n}": 1 for n in range(MAX_BATCH_KEYS)})
    with pytest.raises(ValueError):
        check_batch({f"k{n}": 1 for n in range(MAX_BATCH_KEYS + 1)})


class FakeMaster:
    """Records the batches a forwarder sends; answers each with the Deferred the test gives."""

    def __init__(self) -> None:
        self.batches: list[dict[str, int]] = []
        self.answers: list[Deferred[Any]] = []

    def send(self, batch: dict[str, int]) -> Deferred[Any]:
        self.batches.append(dict(batch))
        answer: Deferred[Any] = Deferred()
        self.answers.append(answer)
        return answer


def test_forwarder_sends_one_batch_a_second_and_nothing_per_click() -> None:
    """Many clicks in a second are one call; an idle second sends nothing; one call in flight at a time."""
    clock, master, counter = Clock(), FakeMaster(), ClickCounter()
    forwarder = ClickForwarder(counter, master.send, clock)
    forwarder.startService()
    for _ in range(1000):
        counter.click("a")
    counter.click("b")
    assert master.batches == []
    clock.advance(1)
    assert master.batches == [{"a": 1000, "b": 1}]
    counter.click("a")
    clock.advance(1)
    assert len(master.batches) == 1  # the first is still in flight
    master.answers[0].callback(True)
    clock.advance(1)
    assert master.batches[1] == {"a": 1}
    master.answers[1].callback(True)
    clock.advance(1)
    assert len(master.batches) == 2
    result_of(forwarder.stopService())


def test_a_last_flush_that_fails_on_stop_says_the_clicks_are_given_up(log_events: LogCapture) -> None:
    """Review 39: the last batch, sent on stop, that fails (a slave giving up on a hung master) was
    logged "kept, sent again later", which a stopping slave never does: it says they are given up."""
    clock, master, counter = Clock(), FakeMaster(), ClickCounter()
    forwarder = ClickForwarder(counter, master.send, clock)
    forwarder.startService()
    counter.click("a")
    stopped = forwarder.stopService()
    assert master.batches == [{"a": 1}]
    master.answers[0].errback(
        MasterUnreachable("the service cannot reach its store right now", detail="stopping")
    )
    assert has_fired(stopped)
    messages = log_events.messages()
    assert [m for m in messages if "Gave up sending the last clicks to the master on stop" in m]
    assert not [m for m in messages if "sent again later" in m]


def test_forwarder_keeps_what_the_master_did_not_take() -> None:
    """A failed call puts its counts back; the next second sends them again, merged with new ones."""
    clock, master, counter = Clock(), FakeMaster(), ClickCounter()
    forwarder = ClickForwarder(counter, master.send, clock)
    forwarder.startService()
    counter.click("a")
    clock.advance(1)
    counter.click("a")
    master.answers[0].errback(MasterUnreachable("the master is unreachable"))
    assert counter.pending == {"a": 2}
    clock.advance(1)
    assert master.batches[-1] == {"a": 2}
    master.answers[-1].callback(True)
    assert counter.total() == 2
    result_of(forwarder.stopService())


def test_forwarder_splits_large_batches_and_flushes_on_stop() -> None:
    """More keys than one call may carry go in several calls; stopping sends what is pending."""
    clock, counter = Clock(), ClickCounter()
    sent: list[dict[str, int]] = []

    def send(batch: dict[str, int]) -> Deferred[Any]:
        sent.append(batch)
        return succeed(True)

    forwarder = ClickForwarder(counter, send, clock)
    forwarder.startService()
    for n in range(2 * SEND_BATCH_KEYS + 10):
        counter.click(f"k{n}")
    stopped = forwarder.stopService()
    assert has_fired(stopped)
    assert [len(batch) for batch in sent] == [SEND_BATCH_KEYS, SEND_BATCH_KEYS, 10]
    assert SEND_BATCH_KEYS <= MAX_BATCH_KEYS  # what a slave sends, a master takes
    assert clock.getDelayedCalls() == []


def test_totals_hold_counter_and_custom_keys() -> None:
    """Totals by counter slot and by custom key; far counter values do not grow the array."""
    totals = ClickTotals()
    totals.add("a", 2)
    totals.add("a", 3)
    totals.add("my-key", 1)
    totals.add("zzzzzzzz", 4)
    assert (totals.get("a"), totals.get("my-key"), totals.get("zzzzzzzz"), totals.get("b")) == (5, 1, 4, 0)
    assert sorted(totals.items()) == [("a", 5), ("my-key", 1), ("zzzzzzzz", 4)]


def book(path: Path, clock: Clock, next_index: list[int] | None = None) -> ClickBook:
    totals, marks, _ = open_click_book(str(path), clock.seconds())
    counter_at = next_index if next_index is not None else [0]
    made = ClickBook(
        str(path),
        totals,
        clock,
        fsync=False,
        run_in_thread=None,
        marks=marks,
        next_index=lambda: counter_at[0],
    )
    made.startService()
    return made


def test_book_acknowledges_a_batch_once_written_and_reloads_it(tmp_path: Path) -> None:
    """A slave's batch fires once its line is in the file; the master's own clicks go in the same line;
    a new book on the same file has the same totals."""
    path, clock = tmp_path / "data.json.clicks", Clock()
    first = book(path, clock)
    first.counter.click("a")
    acknowledged = first.record({"a": 2, "b": 1})
    assert not has_fired(acknowledged)
    assert first.clicks("a") == 3  # pending counts show at once
    clock.advance(0)
    assert result_of(acknowledged) is None
    assert (first.clicks("a"), first.clicks("b"), first.total()) == (3, 1, 4)
    result_of(first.stopService())
    second = book(path, Clock())
    assert (second.clicks("a"), second.clicks("b")) == (3, 1)
    result_of(second.stopService())


def test_book_stop_writes_the_masters_own_clicks(tmp_path: Path) -> None:
    """Clicks counted on the master itself are written on a clean stop."""
    path, clock = tmp_path / "c.clicks", Clock()
    first = book(path, clock)
    first.counter.click("k")
    result_of(first.stopService())
    assert load_clicks(str(path))[0].get("k") == 1


def test_book_refuses_batches_past_its_bound_or_when_stopped(tmp_path: Path) -> None:
    """Waiting batches are bounded; a stopped book answers 503 at once (every waiter gets an answer)."""
    path, clock = tmp_path / "c.clicks", Clock()
    made = book(path, clock)
    big = {f"k{n}": 1 for n in range(5000)}
    waiting = [made.record(dict(big)) for _ in range(20)]
    refused = made.record({"x": 1})
    assert failure_of(refused).check(StoreUnavailable)
    clock.advance(0)
    assert all(has_fired(answer) for answer in waiting)
    result_of(made.stopService())
    assert failure_of(made.record({"x": 1})).check(StoreUnavailable)


def test_book_failed_write_fails_its_waiters(tmp_path: Path) -> None:
    """A batch whose write fails gets 503 (the slave keeps and resends it)."""
    path, clock = tmp_path / "missing-dir" / "c.clicks", Clock()
    made = ClickBook(str(path), ClickTotals(), clock, fsync=False, run_in_thread=None)
    made.startService()
    answer = made.record({"a": 1})
    clock.advance(0)
    assert failure_of(answer).check(StoreUnavailable)
    made.running = False
    made._fd = None


def test_load_cuts_a_torn_tail_and_names_a_corrupt_line(tmp_path: Path) -> None:
    """A torn last line (never acknowledged) is cut off; a bad complete line stops loading with its number."""
    path = tmp_path / "c.clicks"
    path.write_bytes(b'{"c":{"a":1}}\n{"c":{"a":')
    totals, _, lines = load_clicks(str(path))
    assert (totals.get("a"), lines) == (1, 1)
    assert path.read_bytes() == b'{"c":{"a":1}}\n'
    path.write_bytes(b'{"c":{"a":1}}\n{"c":{"a.b":1}}\n')
    with pytest.raises(CorruptClickFile, match="line 2"):
        load_clicks(str(path))


def test_many_lines_are_compacted_at_start(tmp_path: Path) -> None:
    """Past COMPACT_LINES lines, start-up rewrites the file as a snapshot with the same totals."""
    path = tmp_path / "c.clicks"
    path.write_bytes(b'{"c":{"a":1,"b":2}}\n' * (COMPACT_LINES + 1))
    totals, _, lines = open_click_book(str(path), 0.0)
    assert lines == 1
    assert (totals.get("a"), totals.get("b")) == (COMPACT_LINES + 1, 2 * (COMPACT_LINES + 1))
    assert path.read_bytes().count(b"\n") == 1
    assert json.loads(path.read_bytes()) == {"c": {"a": COMPACT_LINES + 1, "b": 2 * (COMPACT_LINES + 1)}}


def test_marks_date_counter_keys(tmp_path: Path) -> None:
    """Keys older than the marks are undated; keys made later are dated by the first mark past them,
    after a restart too."""
    path, clock = tmp_path / "c.clicks", Clock()
    clock.advance(1_000_000)
    counter = [5]  # five keys existed before marks
    first = book(path, clock, counter)
    counter[0] = 8
    clock.advance(1)
    assert first.created(2) is None
    assert first.created(6) == 1_000_001.0
    assert first.created(9) is None  # not made yet
    result_of(first.stopService())
    second = book(path, Clock(), counter)
    assert (second.created(2), second.created(6)) == (None, 1_000_001.0)
    result_of(second.stopService())


def test_forwarder_stop_never_waits_longer_than_its_bound() -> None:
    """A silent master cannot hang a slave's shutdown: the last flush is given up after a bound."""
    clock, master, counter = Clock(), FakeMaster(), ClickCounter()
    forwarder = ClickForwarder(counter, master.send, clock)
    forwarder.startService()
    counter.click("a")
    stopped = forwarder.stopService()
    assert master.batches == [{"a": 1}] and not has_fired(stopped)
    clock.advance(STOP_FLUSH_SECONDS)
    assert has_fired(stopped)


def test_a_running_book_compacts_its_file_past_the_bound(tmp_path: Path) -> None:
    """Past its line bound a running master rewrites the file as a snapshot (this write included):
    the file stays bounded and a restart finds the same totals and marks."""
    path, clock = tmp_path / "c.clicks", Clock()
    counter_at = [0]
    made = ClickBook(
        str(path), ClickTotals(), clock, fsync=False, run_in_thread=None, next_index=lambda: counter_at[0],
        compact_lines=10,
    )  # fmt: skip
    made.startService()
    for second in range(25):
        counter_at[0] += 1
        made.counter.click(f"k{second % 3}")
        clock.advance(1)
    assert path.read_bytes().count(b'{"c"') <= 10  # compacted (the marks of the last hour stay)
    result_of(made.stopService())
    totals, marks, _ = load_clicks(str(path))
    assert [totals.get(f"k{n}") for n in range(3)] == [9, 8, 8]
    assert made.clicks("k0") == 9 and marks.created(3) == made.marks.created(3)


def test_a_failed_write_is_cut_back_before_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails half-way leaves no torn line before the next good one (start-up would refuse it)."""
    import os

    path, clock = tmp_path / "c.clicks", Clock()
    made = book(path, clock)
    made.counter.click("a")
    clock.advance(1)
    real_write = os.write

    def half_then_fail(fd: int, data: Any) -> int:
        real_write(fd, bytes(data)[:3])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_fail)
    answer = made.record({"a": 5})
    clock.advance(0)
    assert failure_of(answer).check(StoreUnavailable)
    monkeypatch.setattr(os, "write", real_write)
    later = made.record({"a": 2})
    clock.advance(0)
    assert result_of(later) is None
    result_of(made.stopService())
    totals, _, _ = load_clicks(str(path))
    assert totals.get("a") == 3


def test_marks_are_thinned_with_age() -> None:
    """A second apart for the last hour, a minute for the last day, an hour before; the undated base stays."""
    marks = Marks()
    marks.add(5, 0)
    now = 10 * 86_400
    for t in range(0, now, 10):  # a mark every 10 s for ten days
        marks.add(6 + t, t)
    kept = marks.thinned(now)
    assert kept[0] == (5, 0)
    assert len(kept) < 1 + 9 * 24 + 24 * 60 // 1 + 360 + 10
    assert all(a[0] < b[0] for a, b in zip(kept, kept[1:]))


def test_an_empty_batch_is_acknowledged_too(tmp_path: Path) -> None:
    """A batch with nothing left to count (its keys unknown or disabled on the master) is answered,
    not left waiting: a slave's whole RPC batch waits on it."""
    path, clock = tmp_path / "data.json.clicks", Clock()
    made = book(path, clock)
    clock.advance(1)  # the time mark of the counter's position is written once
    acknowledged = made.record({})
    clock.advance(0)
    assert result_of(acknowledged) is None


def test_a_batch_failing_after_stop_began_is_not_given_up_when_it_is_sent_again(
    log_events: LogCapture,
) -> None:
    """Review 39: a batch already on its way when the stop begins fails; its counts come back and
    the stop's last flush sends them again (they reach the master): nothing is said given up."""
    clock, master, counter = Clock(), FakeMaster(), ClickCounter()
    forwarder = ClickForwarder(counter, master.send, clock)
    forwarder.startService()
    counter.click("a")
    clock.advance(1)
    assert master.batches == [{"a": 1}]
    stopped = forwarder.stopService()
    master.answers[0].errback(MasterUnreachable("x", detail="a reset"))
    assert master.batches == [{"a": 1}, {"a": 1}], "sent again by the last flush"
    master.answers[1].callback(None)
    assert has_fired(stopped)
    assert not [m for m in log_events.messages() if "Gave up sending the last clicks" in m]


@pytest.mark.parametrize("how", ["times out, then fails", "fails after a batch in flight failed"])
def test_the_last_clicks_are_given_up_once(how: str, log_events: LogCapture) -> None:
    """However the last flush ends badly, "Gave up sending the last clicks" is said once, with its
    cause (not the user's words)."""
    clock, master, counter = Clock(), FakeMaster(), ClickCounter()
    forwarder = ClickForwarder(counter, master.send, clock)
    forwarder.startService()
    counter.click("a")
    if how.startswith("times out"):
        stopped = forwarder.stopService()
        clock.advance(STOP_FLUSH_SECONDS)
        assert has_fired(stopped)
        master.answers[0].errback(MasterUnreachable("x", detail="late"))
        cause = f"no answer within {STOP_FLUSH_SECONDS:g} s"
    else:
        clock.advance(1)
        stopped = forwarder.stopService()
        master.answers[0].errback(MasterUnreachable("x", detail="a reset"))
        master.answers[1].errback(MasterUnreachable("x", detail="again"))
        assert has_fired(stopped)
        cause = "x (again)"
    given_up = [m for m in log_events.messages() if "Gave up sending the last clicks" in m]
    assert given_up == [f"Gave up sending the last clicks to the master on stop: {cause}"]


def test_a_forwarder_started_again_after_a_stop_warns_as_a_running_one(log_events: LogCapture) -> None:
    """Review 39: what marks the stop's last flush is the stop's alone: started again, a batch that
    fails is kept and said so ("sent again later"), and a second stop's last clicks given up are
    said given up again."""
    clock, master, counter = Clock(), FakeMaster(), ClickCounter()
    forwarder = ClickForwarder(counter, master.send, clock)
    for start in range(2):
        forwarder.startService()
        counter.click("a")
        clock.advance(1)
        master.answers[-1].errback(MasterUnreachable("x", detail=f"running {start}"))
        stopped = forwarder.stopService()
        master.answers[-1].errback(MasterUnreachable("x", detail=f"stopping {start}"))
        assert has_fired(stopped)
    messages = log_events.messages()
    assert [m for m in messages if "sent again later" in m] == [
        "Could not send clicks to the master (kept, sent again later): x (running 0)"
    ], "once until the clicks reach the master again"
    assert [m for m in messages if "Gave up" in m] == [
        f"Gave up sending the last clicks to the master on stop: x (stopping {n})" for n in range(2)
    ]


def test_a_full_disk_is_said_once_an_interval_and_its_end_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_events: LogCapture
) -> None:
    """An operations audit (stop 41): with the clicks file's disk full, "Could not write clicks" was
    logged every second for as long as it lasted, and nothing said when writes worked again. One
    line an interval (with how many were left out), and one when a write succeeds again."""
    import os

    from goto_tw.clicks import WRITE_FAILURE_LOG_INTERVAL

    path, clock = tmp_path / "c.clicks", Clock()
    made = book(path, clock)
    real_write = os.write

    def full(fd: int, data: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    for _ in range(int(WRITE_FAILURE_LOG_INTERVAL) + 5):  # a write a second, each failing
        made.counter.click("a")
        clock.advance(1)
    failed = [m for m in log_events.messages() if "Could not write clicks" in m]
    assert len(failed) == 2 and failed[1].endswith("(9 more failures since the last line)"), failed
    monkeypatch.setattr(os, "write", real_write)
    clock.advance(1)
    clock.advance(1)
    assert [m for m in log_events.messages() if "Clicks are written again" in m] == [
        "Clicks are written again (0 more times since the last line)"
    ]
    result_of(made.stopService())
    assert load_clicks(str(path))[0].get("a") == int(WRITE_FAILURE_LOG_INTERVAL) + 5


def test_a_disk_at_the_edge_is_said_a_line_a_kind_an_interval_and_truly_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_events: LogCapture
) -> None:
    """A hostile review (stop 42): with every other write failing for a minute, "Clicks are written
    again" was logged 30 times (failures, throttled, 6): both kinds are said at most once an
    interval. Then writes fail for good: the log's last line says so, not "written again"."""
    import os

    from goto_tw.clicks import WRITE_FAILURE_LOG_INTERVAL

    path, clock = tmp_path / "c.clicks", Clock()
    made = book(path, clock)
    real_write = os.write

    def full(fd: int, data: Any) -> int:
        raise OSError(28, "No space left on device")

    for second in range(60):
        monkeypatch.setattr(os, "write", full if second % 2 == 0 else real_write)
        made.counter.click("a")
        clock.advance(1)
    messages = log_events.messages()
    bound = 60 / WRITE_FAILURE_LOG_INTERVAL + 1
    assert len([m for m in messages if "Clicks are written again" in m]) <= bound
    assert len([m for m in messages if "Could not write clicks" in m]) <= bound
    monkeypatch.setattr(os, "write", full)
    for _ in range(60):
        made.counter.click("a")
        clock.advance(1)
    said = [m for m in log_events.messages() if "Clicks are written again" in m or "Could not write" in m]
    assert "Could not write clicks" in said[-1], said
    monkeypatch.setattr(os, "write", real_write)
    result_of(made.stopService())
