"""Review 34: a link's click count never goes back, on a master or a slave.

A master took the counts of a write out of the figures shown until the write (and its fsync) was
done, so ``/KEY+`` and the API dropped by about a second's clicks once a second; a slave's
``Store.Stats`` could be answered while a batch of its clicks was on its way, in neither figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from goto_tw.clicks import MAX_ASKING_WAITERS, ClickBook, ClickCounter, ClickForwarder, ClickTotals
from goto_tw.errors import MasterUnreachable, StoreUnavailable
from goto_tw.linkstats import RemoteLinkStats

from .helpers import failure_of, has_fired, result_of


class HeldThread:
    """A thread runner whose work runs when the test says (the write "in the thread" meanwhile)."""

    def __init__(self) -> None:
        self.held: list[tuple[Callable[[], None], Deferred[None]]] = []

    def __call__(self, work: Callable[[], None]) -> Deferred[None]:
        done: Deferred[None] = Deferred()
        self.held.append((work, done))
        return done

    def finish(self) -> None:
        work, done = self.held.pop(0)
        work()
        done.callback(None)


def test_a_masters_counts_show_while_their_write_is_on_its_way(tmp_path: Path) -> None:
    thread, clock = HeldThread(), Clock()
    book = ClickBook(str(tmp_path / "c.clicks"), ClickTotals(), clock, fsync=True, run_in_thread=thread)
    book.startService()
    for _ in range(3):
        book.counter.click("a")
    acknowledged = book.record({"a": 2, "b": 1})
    # goto_clicks_total, a counter: the master's own at once, a slave's batch once it is written.
    assert (book.clicks("a"), book.clicks("b"), book.total()) == (5, 1, 3)
    clock.advance(0)  # the slave's batch is written (with the master's own clicks), in the "thread"
    assert len(thread.held) == 1 and not has_fired(acknowledged)
    assert (book.clicks("a"), book.clicks("b"), book.total()) == (5, 1, 3), "shown while being written"
    book.counter.click("a")
    assert (book.clicks("a"), book.total()) == (6, 4)
    thread.finish()
    assert result_of(acknowledged) is None
    assert (book.clicks("a"), book.clicks("b"), book.total()) == (6, 1, 7), "and once written, once"
    stopping = book.stopService()
    while thread.held:
        thread.finish()
    result_of(stopping)


def test_a_failed_write_shows_what_is_kept_and_not_what_the_slave_sends_again(tmp_path: Path) -> None:
    """The master keeps its own counts (pending again); a slave's failed batch is the slave's to send
    again, and is shown by the master once it comes back; ``total`` (a Prometheus counter) never
    went up for it, so it does not go back down either."""
    thread, clock = HeldThread(), Clock()
    book = ClickBook(str(tmp_path / "c.clicks"), ClickTotals(), clock, fsync=True, run_in_thread=thread)
    book.startService()
    book.counter.click("a")
    refused = book.record({"a": 2})
    assert book.total() == 1
    clock.advance(0)
    _, done = thread.held.pop(0)
    done.errback(OSError(28, "No space left on device"))
    assert failure_of(refused).check(StoreUnavailable)
    assert (book.clicks("a"), book.total()) == (1, 1)
    stopping = book.stopService()
    while thread.held:
        thread.finish()
    result_of(stopping)
    assert book.clicks("a") == 1


class Master:
    """The slave's way to its master: each call's answer is a Deferred the test fires."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], Deferred[Any]]] = []
        self.disabled: list[str] = []

    def call(self, method: str, *params: Any) -> Deferred[Any]:
        answer: Deferred[Any] = Deferred()
        self.calls.append((method, params, answer))
        return answer

    # The slave's store, as link statistics use it: a master that is up.
    def ask(self, call: Callable[..., Deferred[Any]], *params: Any) -> Deferred[Any]:
        return call(*params)

    def failing_fast(self) -> None:
        return None

    def note_disabled(self, key: str) -> None:
        self.disabled.append(key)

    def of(self, method: str) -> list[tuple[tuple[Any, ...], Deferred[Any]]]:
        return [(params, answer) for name, params, answer in self.calls if name == method]


def slave() -> tuple[Clock, Master, ClickCounter, ClickForwarder, RemoteLinkStats]:
    clock, master, counter = Clock(), Master(), ClickCounter()
    forwarder = ClickForwarder(counter, lambda batch: master.call("Store.Clicks", batch), clock)
    forwarder.startService()
    return clock, master, counter, forwarder, RemoteLinkStats(master, master.call, forwarder)


def test_a_slave_asks_for_stats_only_once_its_batch_on_the_way_is_answered() -> None:
    clock, master, counter, forwarder, stats = slave()
    for _ in range(4):
        counter.click("k")
    clock.advance(1)  # the batch leaves: 4 clicks on their way
    [(batch, delivered)] = master.of("Store.Clicks")
    assert batch == ({"k": 4},)
    counter.click("k")
    shown = stats.stats("k")
    assert master.of("Store.Stats") == [], "not asked while the batch is on its way"
    delivered.callback(True)
    [(asked_for, answer)] = master.of("Store.Stats")
    assert asked_for == ("k",)
    answer.callback({"clicks": 10.0})  # the master's 6 and the batch's 4
    assert result_of(shown)["clicks"] == 11, "the batch counted once, the pending click too"
    result_of_stop(clock, master, forwarder)


def test_a_slaves_flush_waits_for_the_stats_on_their_way() -> None:
    clock, master, counter, forwarder, stats = slave()
    counter.click("k")
    shown = stats.stats("k")
    [(_, answer)] = master.of("Store.Stats")
    counter.click("k")
    clock.advance(1)
    assert master.of("Store.Clicks") == [], "the batch waits for the answer"
    later = stats.stats("k")
    assert len(master.of("Store.Stats")) == 1, "a question asked while a flush is due waits for it"
    answer.callback({"clicks": 5.0})
    assert result_of(shown)["clicks"] == 7
    [(batch, delivered)] = master.of("Store.Clicks")
    assert batch == ({"k": 2},), "the flush went once the answer came"
    delivered.callback(True)
    [_, (_, second)] = master.of("Store.Stats")
    second.callback({"clicks": 7.0})
    assert result_of(later)["clicks"] == 7
    result_of_stop(clock, master, forwarder)


def test_a_failed_batch_lets_the_waiting_stats_go_and_counts_stay_pending() -> None:
    clock, master, counter, forwarder, stats = slave()
    counter.click("k")
    clock.advance(1)
    [(_, delivered)] = master.of("Store.Clicks")
    shown = stats.stats("k")
    delivered.errback(MasterUnreachable("connection refused"))
    [(_, answer)] = master.of("Store.Stats")
    answer.callback({"clicks": 2.0})
    assert result_of(shown)["clicks"] == 3, "the click given back to the pending ones"
    result_of_stop(clock, master, forwarder)


def test_questions_waiting_for_a_batch_are_bounded() -> None:
    clock, master, counter, forwarder, stats = slave()
    counter.click("k")
    clock.advance(1)
    waiting = [stats.stats("k") for _ in range(MAX_ASKING_WAITERS)]
    assert not any(has_fired(d) for d in waiting)
    assert failure_of(stats.stats("k")).check(StoreUnavailable), "past the bound: a fast 503"
    [(_, delivered)] = master.of("Store.Clicks")
    delivered.callback(True)
    assert len(master.of("Store.Stats")) == MAX_ASKING_WAITERS
    for _, answer in master.of("Store.Stats"):
        answer.callback({"clicks": 1.0})
    assert all(result_of(d)["clicks"] == 1 for d in waiting)
    result_of_stop(clock, master, forwarder)


def test_a_question_that_raises_does_not_hold_the_flushes_back() -> None:
    clock, master, counter, forwarder, _ = slave()

    def broken() -> Deferred[Any]:
        raise RuntimeError("a bug")

    assert failure_of(forwarder.asked(broken)).check(RuntimeError)
    counter.click("k")
    clock.advance(1)
    [(batch, delivered)] = master.of("Store.Clicks")
    assert batch == ({"k": 1},)
    delivered.callback(True)
    result_of_stop(clock, master, forwarder)


def result_of_stop(clock: Clock, master: Master, forwarder: ClickForwarder) -> None:
    """Stop the forwarder, answering its last batch if it sends one."""
    before = len(master.of("Store.Clicks"))
    stopping = forwarder.stopService()
    for _, answer in master.of("Store.Clicks")[before:]:
        answer.callback(True)
    result_of(stopping)


def test_a_start_up_compaction_that_fails_keeps_the_file_as_it_is(
    tmp_path: Path, monkeypatch: Any, log_events: Any
) -> None:
    """Review 34 (operators): with the disk full, a click file long enough to be compacted at
    start-up stopped the master ("cannot load the click file") and left a .tmp behind; the file had
    loaded fine. It is used as it is now, with a warning, and no .tmp is left."""
    import os
    import types

    from goto_tw.clicks import COMPACT_LINES, open_click_book

    path = tmp_path / "c.clicks"
    path.write_bytes(b'{"c":{"a":1}}\n' * (COMPACT_LINES + 1))

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    # The click module's os, not the process's: an fsync that finds the disk full.
    monkeypatch.setattr("goto_tw.clicks.os", types.SimpleNamespace(**{**vars(os), "fsync": full}))
    totals, _, lines = open_click_book(str(path), 0.0)
    monkeypatch.setattr("goto_tw.clicks.os", os)
    assert totals.get("a") == COMPACT_LINES + 1 and lines == COMPACT_LINES + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.clicks"]
    assert [m for m in log_events.messages() if "Could not compact the click file" in m]
