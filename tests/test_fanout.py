"""SharedResult and Coalescing: one call, many waiters."""

from __future__ import annotations

import pytest
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.python.failure import Failure

from goto_tw.fanout import Coalescing, SharedResult
from tests.counting import CountingDeferred
from tests.helpers import failure_of, has_fired, result_of


def test_calls_in_flight_are_joined_and_forgotten_when_done() -> None:
    """A second call for a key in flight joins it; once it is answered, the next call starts anew."""
    calls: list[Deferred[str]] = []

    def start() -> Deferred[str]:
        calls.append(Deferred())
        return calls[-1]

    coalescing: Coalescing[str, str] = Coalescing()
    first, second = coalescing.call("k", start), coalescing.call("k", start)
    assert len(calls) == 1
    calls[0].callback("v")
    assert (result_of(first), result_of(second)) == ("v", "v")
    coalescing.call("k", start)
    assert len(calls) == 2


def test_an_immediate_answer_leaves_nothing_in_flight() -> None:
    """A call that answers at once is not remembered: the next call makes its own."""
    starts: list[int] = []

    def start() -> Deferred[str]:
        starts.append(1)
        return succeed("v")

    coalescing: Coalescing[str, str] = Coalescing()
    for _ in range(2):
        assert result_of(coalescing.call("k", start)) == "v"
    assert len(starts) == 2


def test_a_failure_reaches_every_waiter() -> None:
    """Every waiter hears of the failure; nobody's callbacks see another's."""
    source: Deferred[str] = Deferred()
    coalescing: Coalescing[str, str] = Coalescing()
    waiters = [coalescing.call("k", lambda: source) for _ in range(3)]
    source.errback(ValueError("boom"))
    assert all(failure_of(waiter).check(ValueError) for waiter in waiters)


def test_a_call_costs_its_source_one_callback_however_many_wait() -> None:
    """Coalescing hangs one callback on the call's Deferred (forget the call, then fan out), not one
    per layer: a slave's every miss and add pays for each (bench/slave_calls.py)."""
    source = CountingDeferred()
    coalescing: Coalescing[str, str] = Coalescing()
    waiters = [coalescing.call("k", lambda: source) for _ in range(3)]
    assert source.added == 1
    source.callback("v")
    assert [result_of(waiter) for waiter in waiters] == ["v"] * 3


def test_a_waiter_cancelled_during_delivery_leaves_the_others_answered() -> None:
    """A waiter's callbacks may cancel another waiter of the same call (a connection that gives up
    on all it awaits): that one gets CancelledError, and every waiter after it still gets the result,
    with no error left on the call's own chain."""
    source: Deferred[str] = Deferred()
    coalescing: Coalescing[str, str] = Coalescing()
    first, second, third = (coalescing.call("k", lambda: source) for _ in range(3))
    first.addCallback(lambda result: second.cancel())
    source.callback("v")
    assert failure_of(second).check(CancelledError)
    assert result_of(third) == "v"
    assert result_of(source) is None, "the call's own chain ends quietly"


def test_a_waiter_that_cancels_only_stops_waiting() -> None:
    """Cancelling one waiter neither cancels the shared call nor answers the others early."""
    source: Deferred[str] = Deferred(lambda d: pytest.fail("the shared call was cancelled"))
    coalescing: Coalescing[str, str] = Coalescing()
    leaving, staying = coalescing.call("k", lambda: source), coalescing.call("k", lambda: source)
    leaving.cancel()
    assert failure_of(leaving).check(CancelledError)
    assert not has_fired(staying)
    source.callback("v")
    assert result_of(staying) == "v"


def test_one_waiters_callbacks_do_not_change_what_another_sees() -> None:
    """Each waiter has its own chain: what the first one's callbacks return or raise stays there."""
    source: Deferred[str] = Deferred()
    coalescing: Coalescing[str, str] = Coalescing()
    first, second = coalescing.call("k", lambda: source), coalescing.call("k", lambda: source)
    first.addCallback(lambda result: "changed")
    source.callback("v")
    assert (result_of(first), result_of(second)) == ("changed", "v")
    failing: Deferred[str] = Deferred()
    third, fourth = coalescing.call("j", lambda: failing), coalescing.call("j", lambda: failing)
    third.addErrback(lambda failure: "recovered")
    failing.errback(ValueError("boom"))
    assert result_of(third) == "recovered"
    assert failure_of(fourth).check(ValueError)


def test_a_waiter_asking_again_on_the_result_makes_a_new_call() -> None:
    """The call is forgotten before its waiters hear of the result: one that asks again from its
    callback (a retry) starts a new call rather than joining the finished one."""
    calls: list[Deferred[str]] = []

    def start() -> Deferred[str]:
        calls.append(Deferred())
        return calls[-1]

    coalescing: Coalescing[str, str] = Coalescing()
    again: list[Deferred[str]] = []
    coalescing.call("k", start).addCallback(lambda result: again.append(coalescing.call("k", start)))
    calls[0].callback("v")
    assert len(calls) == 2 and not has_fired(again[0])


def test_a_shared_result_fired_by_hand_answers_waiters_before_and_after() -> None:
    """``fire`` (for a caller with its own callback on the call) answers the waiters so far and any
    later one at once; a failure reaches each of them."""
    shared: SharedResult[str] = SharedResult()
    early = shared.wait()
    assert not shared.done and not has_fired(early)
    shared.fire("v")
    assert shared.done
    assert (result_of(early), result_of(shared.wait())) == ("v", "v")
    failed: SharedResult[str] = SharedResult()
    failed.fire(Failure(ValueError("boom")))
    assert failure_of(failed.wait()).check(ValueError)
