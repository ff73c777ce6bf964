"""A flush of several ``Store.Clicks`` calls (more than SEND_BATCH_KEYS keys pending): what a failed
call in the middle leaves (review 26). The calls before it are acknowledged and never sent again; the
failed one and those not yet sent are given back whole (or dropped, for a master that keeps none)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from goto_tw.clicks import (
    FLUSH_CALLS,
    MAX_BATCH_KEYS,
    MAX_PENDING_KEYS,
    SEND_BATCH_KEYS,
    STOP_FLUSH_SECONDS,
    ClickCounter,
    ClickForwarder,
)
from goto_tw.errors import MasterUnreachable, NotKept

from .helpers import has_fired, result_of
from .test_clicks import FakeMaster

KEYS = 2 * SEND_BATCH_KEYS + 10  # three calls


def _started(counter: ClickCounter) -> tuple[Clock, FakeMaster, ClickForwarder]:
    clock, master = Clock(), FakeMaster()
    forwarder = ClickForwarder(counter, master.send, clock)
    forwarder.startService()
    for n in range(KEYS):
        counter.click(f"k{n}")
    clock.advance(1)
    return clock, master, forwarder


def test_the_second_call_failing_gives_back_it_and_the_rest_only() -> None:
    """The first call acknowledged is not sent again; the failed one and the unsent one are given
    back whole and sent with the next flush, beside a click made meanwhile: no click lost or doubled."""
    counter = ClickCounter()
    clock, master, forwarder = _started(counter)
    assert [len(b) for b in master.batches] == [SEND_BATCH_KEYS]  # one call in flight at a time
    master.answers[0].callback(True)
    assert [len(b) for b in master.batches] == [SEND_BATCH_KEYS, SEND_BATCH_KEYS]
    counter.click("k0")  # a click meanwhile for a key already acknowledged
    master.answers[1].errback(MasterUnreachable("the master is unreachable"))
    assert len(master.batches) == 2, "nothing more is sent in this flush"
    given_back = {**master.batches[1], **{f"k{n}": 1 for n in range(2 * SEND_BATCH_KEYS, KEYS)}}
    assert counter.pending == {**given_back, "k0": 1}
    assert counter.total() == KEYS + 1 and counter.dropped == 0
    clock.advance(1)  # the next flush sends exactly what was given back (and the new click)
    resent: dict[str, int] = {}
    while len(master.answers) > 2 and not master.answers[-1].called:
        resent.update(master.batches[-1])
        master.answers[-1].callback(True)
    assert resent == {**given_back, "k0": 1}
    assert sum(sum(b.values()) for b in master.batches[:1] + master.batches[2:]) == KEYS + 1
    result_of(forwarder.stopService())


def test_a_master_keeping_no_clicks_mid_flush_drops_the_rest() -> None:
    """NotKept in the middle of a flush: the rest is dropped and counted as dropped, not kept."""
    counter = ClickCounter()
    _clock, master, forwarder = _started(counter)
    master.answers[0].callback(True)
    master.answers[1].errback(NotKept("this master counts no clicks"))
    assert len(master.batches) == 2 and counter.pending == {}
    assert counter.dropped == KEYS - SEND_BATCH_KEYS
    assert counter.total() == KEYS, "goto_clicks_total still counts the dropped ones: it never goes back"
    result_of(forwarder.stopService())


def test_stopping_mid_flush_sends_the_rest_then_what_is_pending() -> None:
    """Stopping while a flush is under way: its remaining calls go, then the clicks made meanwhile."""
    counter = ClickCounter()
    clock, master, forwarder = _started(counter)
    counter.click("late")
    stopped = forwarder.stopService()
    for _ in range(4):
        master.answers[-1].callback(True)
    assert has_fired(stopped)
    assert [len(b) for b in master.batches] == [SEND_BATCH_KEYS, SEND_BATCH_KEYS, 10, 1]
    assert clock.getDelayedCalls() == []


def _delivered_on_stop(latency: float) -> tuple[int, int]:
    """A slave with MAX_PENDING_KEYS keys pending stops; its master answers each call after ``latency``
    seconds (round trip, parse, write). Returns (clicks acknowledged before stop gave up, clicks)."""
    clock, counter = Clock(), ClickCounter()
    acknowledged = [0]

    def send(batch: dict[str, int]) -> Any:
        answer: Deferred[Any] = Deferred()

        def ack() -> None:
            acknowledged[0] += sum(batch.values())
            answer.callback(True)

        clock.callLater(latency, ack)
        return answer

    forwarder = ClickForwarder(counter, send, clock)
    forwarder.startService()
    for n in range(MAX_PENDING_KEYS):
        counter.click(f"k{n}")
    stopped = forwarder.stopService()
    for _ in range(int(STOP_FLUSH_SECONDS / 0.01) + 10):
        if has_fired(stopped):
            break
        clock.advance(0.01)
    return acknowledged[0], MAX_PENDING_KEYS


def test_many_keys_make_larger_calls_not_more() -> None:
    """Up to FLUSH_CALLS calls of SEND_BATCH_KEYS keys; beyond, FLUSH_CALLS larger calls; beyond
    FLUSH_CALLS calls of MAX_BATCH_KEYS, calls of MAX_BATCH_KEYS."""
    for keys, sizes in [
        (FLUSH_CALLS * SEND_BATCH_KEYS, [SEND_BATCH_KEYS] * FLUSH_CALLS),
        (3 * FLUSH_CALLS * SEND_BATCH_KEYS, [3 * SEND_BATCH_KEYS] * FLUSH_CALLS),
        (MAX_PENDING_KEYS, [MAX_BATCH_KEYS] * (MAX_PENDING_KEYS // MAX_BATCH_KEYS)),
    ]:
        clock, counter = Clock(), ClickCounter()
        sent: list[int] = []

        def send(batch: dict[str, int], sent: list[int] = sent) -> Deferred[Any]:
            sent.append(len(batch))
            return succeed(True)

        forwarder = ClickForwarder(counter, send, clock)
        forwarder.startService()
        for n in range(keys):
            counter.click(f"k{n}")
        clock.advance(1)
        assert sent == sizes
        result_of(forwarder.stopService())


def test_a_stopping_slave_50ms_from_its_master_delivers_a_full_pending_set() -> None:
    """A slave 50 ms from its master, stopping with MAX_PENDING_KEYS keys pending, delivers them all
    within STOP_FLUSH_SECONDS: in 1,000-key calls (about 4 ms of a master's CPU each, 55 ms a call)
    they would take 100 calls, 5.5 s; the flush sends FLUSH_CALLS-sized shares of up to 5,000 keys
    (20 calls of about 75 ms)."""
    acknowledged, pending = _delivered_on_stop(0.055)
    assert acknowledged == pending
