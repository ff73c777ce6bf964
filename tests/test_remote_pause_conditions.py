"""RemoteStore's gather pause (issue 13), each condition pinned: what tests/test_remote_pause.py left unpinned.

Each test here was checked against a mutation of one condition of the pause (named in its docstring)
that the first file's tests let pass, or against the code before a fix. Same drivers: a Clock, a CPU
clock that the test sets, and an HTTP client whose answers the test gives."""

from __future__ import annotations

from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock

from goto_tw.errors import MasterUnreachable
from goto_tw.remote import (
    BUSY_SHARE,
    BUSY_WINDOW,
    GATHER_PAUSE,
    PROMPT_BATCH_CALLS,
    RemoteStore,
)
from tests.helpers import failure_of, has_fired, result_of
from tests.test_remote_calls import RPC_URL, Poster
from tests.test_remote_pause import CPU, calls_in, started


def _answer_batch(poster: Poster, index: int) -> None:
    """Answer request ``index`` (a multicall) with one URL per call it carries."""
    count = len(calls_in(poster.posts[index][0]))
    poster.answer(index, [[f"https://{n}.example/"] for n in range(count)])


def _timers(clock: Clock) -> list[str]:
    """The names of the functions the clock will still call."""
    names = (getattr(getattr(call, "func", None), "__name__", "?") for call in clock.getDelayedCalls())
    return sorted(names)


def test_a_call_alone_made_during_a_pause_does_not_wait_it_out() -> None:
    """A call alone (a click batch) made while small batches wait out the pause goes at once, as the
    pause promises calls alone; it does not queue behind the held batch for the rest of the pause.
    (Before the fix it waited the pause out: the held batch's timer was left running.)"""
    clock, poster, store, _ = started()
    held = store.get("held")
    clock.advance(0)
    assert len(poster.posts) == 1, "busy, right after a batch: the look-up waits"
    alone = store.call_alone("Store.Clicks", {})
    clock.advance(0)
    assert [calls_in(body) for body, _ in poster.posts[1:]] == [["Store.Get"], ["Store.Clicks"]]
    poster.answer(1, "https://held.example/")
    poster.answer(2, True)
    assert result_of(held) == "https://held.example/"
    assert result_of(alone) is True


def test_calls_alone_do_not_count_as_callers_back() -> None:
    """Only calls that could be the last batch's callers coming back count: a click batch (a call
    alone) made since an answer does not, so one look-up after it still waits out the pause. (Before
    the fix it counted: one click and one miss after a batch of two looked like its callers back.)"""
    clock, poster, store, _ = started()
    store.get("a")
    store.get("b")
    clock.advance(GATHER_PAUSE)
    assert len(poster.posts) == 2
    _answer_batch(poster, 1)  # two calls answered: two calls made since are its callers back
    store.call_alone("Store.Clicks", {})
    clock.advance(0)
    assert len(poster.posts) == 3
    poster.answer(2, True)
    trickle = store.get("c")
    clock.advance(0)
    assert len(poster.posts) == 3, "one look-up is not two callers back: it waits"
    clock.advance(GATHER_PAUSE)
    assert len(poster.posts) == 4
    poster.answer(3, "https://c.example/")
    assert result_of(trickle) == "https://c.example/"


def test_an_answered_call_alone_leaves_the_callers_count_alone() -> None:
    """A click batch answered between a batch's answer and its callers' return does not reset the
    count (mutant: calls alone set the answered count to 1, and the callers were held a pause)."""
    clock, poster, store, _ = started()
    store.get("a")
    store.get("b")
    clock.advance(GATHER_PAUSE)
    _answer_batch(poster, 1)
    store.call_alone("Store.Clicks", {})
    clock.advance(0)
    poster.answer(2, True)
    back = [store.get("a2"), store.get("b2")]
    clock.advance(0)
    assert len(poster.posts) == 4, "the two callers came back: their batch goes at once"
    _answer_batch(poster, 3)
    assert all(has_fired(call) for call in back)


def two_callers_come_back() -> tuple[Clock, Poster, RemoteStore]:
    """A busy store whose batch of two (gathered under the pause) was answered, and whose two callers
    have asked again (one turn later)."""
    clock, poster, store, _ = started()
    store.get("a")
    store.get("b")
    clock.advance(GATHER_PAUSE)
    _answer_batch(poster, 1)
    store.get("a2")
    store.get("b2")
    clock.advance(0)
    return clock, poster, store


def test_two_callers_back_are_enough() -> None:
    """A batch of two answered: two calls made since go at once (the threshold is two, mutant: 3)."""
    _, poster, _ = two_callers_come_back()
    assert len(poster.posts) == 3


def test_a_call_alone_starts_no_pause() -> None:
    """The pause counts from the last batch, not from a call alone: a look-up right after a click
    batch, a quiet spell after the last batch, goes at once (mutant: a call alone sets the time)."""
    clock, poster, store, _ = started()
    clock.advance(GATHER_PAUSE)
    store.call_alone("Store.Clicks", {})
    clock.advance(0)
    assert len(poster.posts) == 2
    store.get("k")
    clock.advance(0)
    assert len(poster.posts) == 3


def test_a_store_not_yet_judged_does_not_pause() -> None:
    """Within its first window nothing has shown the process busy: no call waits (mutant: a store
    starts out judging its process busy)."""
    clock, poster = Clock(), Poster()
    store = RemoteStore(poster, RPC_URL, clock, timeout=5.0, cpu_seconds=CPU(clock, 1.0))
    store.get("a")
    clock.advance(0)
    store.get("b")
    clock.advance(0)
    assert len(poster.posts) == 2


def test_an_idle_window_after_a_long_busy_spell_is_judged_idle() -> None:
    """Each window is judged on its own CPU time: after seconds of being busy, one idle window turns
    the pause off (mutant: the CPU time at a window's start not renewed, so the busy past counts)."""
    clock, poster, store, cpu = started()
    for _ in range(20):  # two busy seconds, judged busy window after window
        clock.advance(BUSY_WINDOW)
        store.get("after a quiet spell")
        clock.advance(0)
        store.get("judged")
        clock.advance(0)
        assert not has_fired(poster.posts[-1][1]) and len(calls_in(poster.posts[-1][0])) == 1
        clock.advance(GATHER_PAUSE)
        _answer_batch_or_single(poster)
    cpu.becomes(0.0)
    clock.advance(BUSY_WINDOW)
    sent = len(poster.posts)
    store.get("first of the quiet window")
    clock.advance(0)
    store.get("judged idle")
    clock.advance(0)
    assert len(poster.posts) == sent + 2, "the idle window turned the pause off"


def _answer_batch_or_single(poster: Poster) -> None:
    for index, (body, answer) in enumerate(poster.posts):
        if not has_fired(answer):
            if len(calls_in(body)) == 1:
                poster.answer(index, "https://k.example/")
            else:
                _answer_batch(poster, index)


def test_exactly_the_busy_share_is_busy() -> None:
    """BUSY_SHARE of a CPU over a window is busy (README: 0.8 of a CPU or more; mutant: more only)."""
    clock, poster, store, _ = started(share=BUSY_SHARE)
    store.get("k")
    clock.advance(0)
    assert len(poster.posts) == 1, "judged busy at exactly the share: the call waits"


def test_a_batch_cut_short_leaves_no_timer_behind() -> None:
    """A pause cut short (the batch filled up) cancels its timer: the next small batch waits its own
    full pause, not the rest of the old one, and no flush is left armed once all is answered
    (mutant: the timer not cancelled, it sent the next call early)."""
    clock, poster, store, _ = started()
    store.get("first")  # held until 0.1 + GATHER_PAUSE
    clock.advance(GATHER_PAUSE / 2)
    for index in range(PROMPT_BATCH_CALLS - 1):
        store.get(f"k{index}")
    clock.advance(0)
    assert len(poster.posts) == 2, "the batch filled up and went"
    later = store.get("later")  # its pause runs until half a pause from now + a pause
    clock.advance(GATHER_PAUSE * 0.75)
    assert len(poster.posts) == 2, "the old pause's timer did not send it early"
    clock.advance(GATHER_PAUSE * 0.5)
    assert len(poster.posts) == 3
    _answer_batch(poster, 1)
    poster.answer(2, "https://later.example/")
    assert result_of(later) == "https://later.example/"
    assert "_flush" not in _timers(clock)


def test_calls_queued_behind_two_batches_after_a_pause_go_when_one_is_answered() -> None:
    """After a paused flush, calls that wait for a batch slot (two batches on their way) are not
    taken for a pause still running: a full batch of them is queued without error and goes, and
    each gets its answer (mutant: a flush that leaves the pause flag set; the next full batch then
    cancelled a timer that was not there and the call raised)."""
    clock, poster, store, _ = started()
    store.get("a")  # waits out the pause, then is the first batch in flight
    clock.advance(GATHER_PAUSE)
    store.get("b")  # waits out the pause after it, then is the second
    clock.advance(GATHER_PAUSE)
    assert len(poster.posts) == 3
    queued = [store.get(f"q{index}") for index in range(PROMPT_BATCH_CALLS)]
    clock.advance(0)
    assert len(poster.posts) == 3, "two batches in flight: the calls wait for one to be answered"
    _answer_batch_or_single(poster)
    clock.advance(0)
    assert len(poster.posts) == 4
    assert len(calls_in(poster.posts[3][0])) == PROMPT_BATCH_CALLS
    _answer_batch(poster, 3)
    assert all(has_fired(call) for call in queued)


def test_a_silent_master_fails_the_calls_held_by_the_pause_and_later_calls_still_go() -> None:
    """The batch in flight fails as unreachable while a look-up waits out the pause: the held call
    fails at once with it (not a pause later), and a call made next still leaves within the pause
    and is answered; no timer but the request deadline's is left."""
    clock, poster, store, _ = started()
    sent = [store.get("a"), store.get("b")]  # two: the pause gathers, and goes on (see _flush)
    clock.advance(GATHER_PAUSE)
    assert len(poster.posts) == 2
    held = store.get("held")
    clock.advance(GATHER_PAUSE / 2)
    poster.posts[1][1].errback(ConnectionRefusedError())
    assert all(failure_of(call).check(MasterUnreachable) for call in sent)
    assert failure_of(held).check(MasterUnreachable)
    later = store.get("later")
    clock.advance(GATHER_PAUSE)
    assert len(poster.posts) == 3
    poster.answer(2, "https://later.example/")
    assert result_of(later) == "https://later.example/"
    assert "_flush" not in _timers(clock)


def test_callers_back_let_their_own_batch_go_not_the_calls_after_it() -> None:
    """Once the callers of the last batch are back and their batch has gone, a call made next (before
    any answer) is a trickle again: it waits out the pause. (Before the fix the count of calls made
    since the answer stayed reached, and every call went at once until the next answer.)"""
    clock, poster, store = two_callers_come_back()
    assert len(poster.posts) == 3, "the two callers came back: their batch went at once"
    trickle = store.get("c")
    clock.advance(0)
    assert len(poster.posts) == 3, "a third call is no caller of an answered batch: it waits"
    clock.advance(GATHER_PAUSE)
    assert len(poster.posts) == 4
    _answer_batch(poster, 2)
    poster.answer(3, "https://c.example/")
    assert result_of(trickle) == "https://c.example/"


def test_callers_back_past_a_prompt_batch_are_not_held() -> None:
    """More callers than a prompt batch come back: the first PROMPT_BATCH_CALLS go as soon as they
    fill a batch, and the rest go as soon as all are back, not a pause later (each closed-loop round
    of a busy slave's many clients would otherwise hold a few of them)."""
    clock, poster, store, _ = started()
    callers = PROMPT_BATCH_CALLS + 4
    for index in range(callers):
        store.get(f"k{index}")
    clock.advance(0)
    assert len(poster.posts) == 2 and len(calls_in(poster.posts[1][0])) == callers
    _answer_batch(poster, 1)
    for index in range(callers):  # each back in a turn of its own
        store.get(f"k{index}-again")
        clock.advance(0)
    assert [len(calls_in(body)) for body, _ in poster.posts[2:]] == [PROMPT_BATCH_CALLS, 4]
    assert clock.seconds() == BUSY_WINDOW, "no pause was waited out"
