"""SharedResult and Coalescing: one call, many waiters."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed

from goto_tw.fanout import Coalescing
from tests.helpers import failure_of, result_of


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
