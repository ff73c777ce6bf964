"""Issue 13 (a slave's occasional misses): RemoteStore's gather pause. A batch of fewer than
PROMPT_BATCH_CALLS calls leaves no sooner than GATHER_PAUSE after the batch before it, so calls
that trickle in travel together; nothing else waits: the first call after a quiet spell, a batch
that fills up, a call that goes alone. Driven by a Clock and an HTTP client whose answers the test
gives; what is asserted is what the master receives and what each caller gets."""

from __future__ import annotations

import xmlrpc.client as xmlrpclib
from typing import Any

from twisted.internet.task import Clock

from goto_tw.remote import GATHER_PAUSE, PROMPT_BATCH_CALLS, RemoteStore
from tests.helpers import has_fired, result_of
from tests.test_remote_calls import RPC_URL, Poster


def calls_in(body: bytes) -> list[str]:
    """The methods one request the master received asks for, in order."""
    params: Any
    params, method = xmlrpclib.loads(body)
    if method != "system.multicall":
        return [str(method)]
    return [call["methodName"] for call in params[0]]


def started() -> tuple[Clock, Poster, RemoteStore]:
    """A store whose first batch (one look-up) left at 0 and has been answered."""
    clock, poster = Clock(), Poster()
    store = RemoteStore(poster, RPC_URL, clock, timeout=5.0)
    first = store.get("first")
    clock.advance(0)
    poster.answer(0, "https://first.example/")
    assert result_of(first) == "https://first.example/"
    return clock, poster, store


def test_a_call_after_a_quiet_spell_leaves_at_once() -> None:
    """The first call, and one made a pause or more after the last batch, goes on the next turn."""
    clock, poster, store = started()
    assert len(poster.posts) == 1, "the very first call did not wait"
    clock.advance(GATHER_PAUSE)
    later = store.get("later")
    clock.advance(0)
    assert len(poster.posts) == 2
    poster.answer(1, "https://later.example/")
    assert result_of(later) == "https://later.example/"


def test_calls_soon_after_a_batch_wait_out_the_pause_and_travel_together() -> None:
    """Calls made in separate turns within the pause after a batch are held until it has passed,
    then go as one multicall, and each caller gets its own answer."""
    clock, poster, store = started()
    asked = []
    for key in ("a", "b", "c"):
        asked.append(store.get(key))
        clock.advance(GATHER_PAUSE / 4)
    assert len(poster.posts) == 1, "nothing left during the pause"
    assert not any(has_fired(call) for call in asked)
    clock.advance(GATHER_PAUSE / 4)
    assert len(poster.posts) == 2
    assert calls_in(poster.posts[1][0]) == ["Store.Get"] * 3
    poster.answer(1, [["https://a.example/"], ["https://b.example/"], ["https://c.example/"]])
    assert [result_of(call) for call in asked] == [f"https://{key}.example/" for key in "abc"]


def test_a_batch_that_fills_up_cuts_the_pause_short() -> None:
    """PROMPT_BATCH_CALLS calls are worth a request of their own: the batch goes at once."""
    clock, poster, store = started()
    asked = [store.get(f"k{index}") for index in range(PROMPT_BATCH_CALLS - 1)]
    clock.advance(0)
    assert len(poster.posts) == 1, "one call short of a prompt batch: it waits"
    asked.append(store.get("last"))
    clock.advance(0)
    assert len(poster.posts) == 2, "the batch went before the pause was over"
    assert clock.seconds() < GATHER_PAUSE
    assert len(calls_in(poster.posts[1][0])) == PROMPT_BATCH_CALLS
    poster.answer(1, [[f"https://{index}.example/"] for index in range(PROMPT_BATCH_CALLS)])
    assert [result_of(call) for call in asked] == [
        f"https://{index}.example/" for index in range(PROMPT_BATCH_CALLS)
    ]


def test_a_call_alone_does_not_wait_out_the_pause() -> None:
    """A call that travels alone (a click batch) is not a batch to gather: it goes at once."""
    clock, poster, store = started()
    alone = store.call_alone("Store.Clicks", {})
    clock.advance(0)
    assert len(poster.posts) == 2
    assert calls_in(poster.posts[1][0]) == ["Store.Clicks"]
    poster.answer(1, True)
    assert result_of(alone) is True


def test_a_clock_set_back_holds_calls_no_longer_than_the_pause() -> None:
    """The clock is the wall clock: set back after a batch, it must not hold the next calls until it
    has caught up again (here 90 s), only for the pause."""
    clock, poster = Clock(), Poster()
    clock.advance(100.0)
    store = RemoteStore(poster, RPC_URL, clock, timeout=5.0)
    store.get("first")
    clock.advance(0)
    clock.rightNow = 10.0
    held = store.get("held")
    clock.advance(0)
    assert len(poster.posts) == 1
    clock.advance(GATHER_PAUSE)
    assert len(poster.posts) == 2
    poster.answer(1, "https://held.example/")
    assert result_of(held) == "https://held.example/"
