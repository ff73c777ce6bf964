"""Issue 13 (a busy slave's occasional misses): RemoteStore's gather pause. While the process is busy,
a batch of fewer than PROMPT_BATCH_CALLS calls leaves no sooner than GATHER_PAUSE after the batch
before it, so calls that trickle in travel together; nothing else waits: the first call after a quiet
spell, a batch that fills up, a call that goes alone, any call of a process with CPU to spare (a
client that waits for each answer would otherwise get one a pause). Driven by a Clock, a CPU clock
and an HTTP client whose answers the test gives; what is asserted is what the master receives and
what each caller gets."""

from __future__ import annotations

import xmlrpc.client as xmlrpclib
from typing import Any

from twisted.internet.task import Clock

from goto_tw.remote import (
    BUSY_SHARE,
    BUSY_WINDOW,
    GATHER_PAUSE,
    PROMPT_BATCH_CALLS,
    STILL_BUSY_SHARE,
    RemoteStore,
)
from tests.helpers import has_fired, result_of
from tests.test_remote_calls import RPC_URL, Poster


class CPU:
    """This process's CPU time as the store reads it: ``share`` of each second that passes on
    ``clock`` (1.0: a busy process, 0.0: an idle one); the share can change as time goes on."""

    def __init__(self, clock: Clock, share: float) -> None:
        self.clock, self.share = clock, share
        self.used, self.read_at = 0.0, clock.seconds()

    def __call__(self) -> float:
        now = self.clock.seconds()
        self.used += self.share * max(now - self.read_at, 0.0)
        self.read_at = now
        return self.used

    def becomes(self, share: float) -> None:
        self()
        self.share = share


def calls_in(body: bytes) -> list[str]:
    """The methods one request the master received asks for, in order."""
    params: Any
    params, method = xmlrpclib.loads(body)
    if method != "system.multicall":
        return [str(method)]
    return [call["methodName"] for call in params[0]]


def started(share: float = 1.0) -> tuple[Clock, Poster, RemoteStore, CPU]:
    """A store in a process using ``share`` of a CPU for a window already, whose first batch (one
    look-up) has just left and been answered."""
    clock, poster = Clock(), Poster()
    cpu = CPU(clock, share)
    store = RemoteStore(poster, RPC_URL, clock, timeout=5.0, cpu_seconds=cpu)
    clock.advance(BUSY_WINDOW)
    first = store.get("first")
    clock.advance(0)
    poster.answer(0, "https://first.example/")
    assert result_of(first) == "https://first.example/"
    return clock, poster, store, cpu


def test_a_call_after_a_quiet_spell_leaves_at_once() -> None:
    """The first call, and one made a pause or more after the last batch, goes on the next turn."""
    clock, poster, store, _ = started()
    assert len(poster.posts) == 1, "the very first call did not wait"
    clock.advance(GATHER_PAUSE)
    later = store.get("later")
    clock.advance(0)
    assert len(poster.posts) == 2
    poster.answer(1, "https://later.example/")
    assert result_of(later) == "https://later.example/"


def test_calls_soon_after_a_batch_wait_out_the_pause_and_travel_together() -> None:
    """In a busy process, calls made in separate turns within the pause after a batch are held until
    it has passed, then go as one multicall, and each caller gets its own answer."""
    clock, poster, store, _ = started()
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


def test_a_process_with_cpu_to_spare_does_not_pause() -> None:
    """Below BUSY_SHARE of a CPU, a call made right after a batch goes on the next turn: a client
    that asks again only once answered is not held a pause for each call."""
    clock, poster, store, _ = started(share=BUSY_SHARE * 0.9)
    for index in range(5):
        asked = store.get(f"k{index}")
        clock.advance(0)
        assert len(poster.posts) == index + 2, "the call left at once"
        poster.answer(index + 1, f"https://{index}.example/")
        assert result_of(asked) == f"https://{index}.example/"


def test_the_pause_follows_the_load_within_a_window() -> None:
    """A process that stops being busy stops pausing once a window has shown it, and starts again
    once a window shows it busy."""
    clock, poster, store, cpu = started()

    def ask(key: str) -> int:
        """Ask for ``key`` and answer every request sent by the next turn; how many were sent."""
        store.get(key)
        clock.advance(0)
        return answer_all()

    def answer_all() -> int:
        for index, (_, answer) in enumerate(poster.posts):
            if not has_fired(answer):
                poster.answer(index, "https://answer.example/")
        return len(poster.posts)

    assert ask("paused") == 1, "busy: the call waits out the pause"
    clock.advance(GATHER_PAUSE)
    assert answer_all() == 2
    cpu.becomes(0.0)
    clock.advance(BUSY_WINDOW * 1.5)
    assert ask("first of the quiet window") == 3
    assert ask("judged idle") == 4, "the window showed an idle process: no pause"
    assert ask("still idle") == 5
    cpu.becomes(1.0)
    clock.advance(BUSY_WINDOW * 1.5)
    assert ask("first of the busy window") == 6
    assert ask("judged busy") == 6, "the window showed a busy process: the pause again"
    clock.advance(GATHER_PAUSE)
    assert answer_all() == 7


def judged_busy(clock: Clock, poster: Poster, store: RemoteStore) -> bool:
    """Let a window of ten BUSY_WINDOWs pass, then make a call (it leaves at once: a quiet spell) and
    another right after it: whether that one was held (the window just ended was judged busy; a
    third call joins it, so the pause gathered). Every request is answered before this returns; the
    next window starts with the second call, and its first GATHER_PAUSE (1% of it) is at the share of
    the window before."""
    clock.advance(BUSY_WINDOW * 10)
    sent = len(poster.posts)
    store.get("after a quiet spell")
    clock.advance(0)
    assert len(poster.posts) == sent + 1, "the first call after a quiet spell went at once"
    poster.answer(sent, "https://quiet.example/")
    store.get("judged")
    clock.advance(0)
    held = len(poster.posts) == sent + 1
    store.get("gathered")  # a second call within the pause: the pause gathers, and goes on (see _flush)
    clock.advance(GATHER_PAUSE)
    if held:
        assert calls_in(poster.posts[sent + 1][0]) == ["Store.Get", "Store.Get"]
        poster.answer(sent + 1, [["https://judged.example/"], ["https://gathered.example/"]])
    else:
        poster.answer(sent + 1, "https://judged.example/")
        poster.answer(sent + 2, "https://gathered.example/")
    return held


def test_a_busy_process_stays_busy_until_its_share_falls_below_the_lower_one() -> None:
    """Judged busy, a process stays busy while a window shows STILL_BUSY_SHARE of a CPU or more:
    without the pause its misses wake the master again, which takes the process's own share under
    BUSY_SHARE (the bench's ``m`` on one core: windows of 0.55-0.75 after a dip), and one dip would
    keep the pause off from then on. Below STILL_BUSY_SHARE it stops; to start again takes BUSY_SHARE."""
    clock, poster, store, cpu = started()
    assert judged_busy(clock, poster, store), "a whole CPU: busy"
    between = (STILL_BUSY_SHARE + BUSY_SHARE) / 2
    cpu.becomes(between)
    assert judged_busy(clock, poster, store), "between the two shares, a busy process stays busy"
    assert judged_busy(clock, poster, store), "window after window"
    cpu.becomes(STILL_BUSY_SHARE * 1.05)
    assert judged_busy(clock, poster, store), "just over the lower share: still busy"
    cpu.becomes(STILL_BUSY_SHARE * 0.95)
    assert not judged_busy(clock, poster, store), "just under it: not busy"
    cpu.becomes(between)
    assert not judged_busy(clock, poster, store), "not busy, it takes BUSY_SHARE to be judged busy again"
    assert not judged_busy(clock, poster, store)
    cpu.becomes(BUSY_SHARE * 1.05)
    assert judged_busy(clock, poster, store)


def test_a_lone_caller_is_held_once_a_window_not_once_each_call() -> None:
    """A batch that waited out the pause and left with its one call gathered nothing (a client that
    asks again once answered, alone): the calls after it leave at once until a window has passed
    and been judged busy again (mutant: the pause kept, and such a client beside traffic that keeps
    its slave busy is held every call)."""
    clock, poster, store, _ = started()
    lone = store.get("held")
    clock.advance(0)
    assert len(poster.posts) == 1, "busy: the lone call waits out the pause"
    clock.advance(GATHER_PAUSE)
    assert calls_in(poster.posts[1][0]) == ["Store.Get"]
    poster.answer(1, "https://held.example/")
    assert result_of(lone) == "https://held.example/"
    for index in range(2, 7):  # the same client asking again, once answered: not held
        asked = store.get(f"k{index}")
        clock.advance(0)
        assert len(poster.posts) == index + 1, "the pause gathered nothing: no pause this window"
        poster.answer(index, f"https://{index}.example/")
        assert result_of(asked) == f"https://{index}.example/"
    clock.advance(BUSY_WINDOW)
    store.get("first of the next window")  # leaves at once (the pause has long passed)
    clock.advance(0)
    poster.answer(7, "https://next.example/")
    store.get("judged busy again")
    clock.advance(0)
    assert len(poster.posts) == 8, "a window judged busy again: held once more"
    clock.advance(GATHER_PAUSE)
    assert len(poster.posts) == 9


def test_a_pause_that_gathered_nothing_keeps_the_lower_share() -> None:
    """A pause that ran out with one call (now and then, in a trickle of misses) stops the pausing
    for the rest of that window only: the next judgement is made as ever (a pause gathered earlier in
    the window: on the lower share), and a busy process between the two shares stays busy (mutant:
    judged not busy, so BUSY_SHARE is needed again, which the misses unpaused keep it under: the dip
    STILL_BUSY_SHARE is for)."""
    clock, poster, store, cpu = started()
    between = (STILL_BUSY_SHARE + BUSY_SHARE) / 2
    assert judged_busy(clock, poster, store), "a whole CPU: busy"
    cpu.becomes(between)
    assert judged_busy(clock, poster, store), "between the shares: still busy"
    sent = len(poster.posts)
    lone = store.get("lone")  # right after the judged batch: held, and nothing joins it
    clock.advance(0)
    assert len(poster.posts) == sent
    clock.advance(GATHER_PAUSE)
    assert len(poster.posts) == sent + 1 and calls_in(poster.posts[sent][0]) == ["Store.Get"]
    poster.answer(sent, "https://lone.example/")
    assert result_of(lone) == "https://lone.example/"
    store.get("next")
    clock.advance(0)
    assert len(poster.posts) == sent + 2, "the pause gathered nothing: none for the rest of the window"
    poster.answer(sent + 1, "https://next.example/")
    assert judged_busy(clock, poster, store), "the next judgement keeps the lower share: still busy"


def test_a_pause_that_gathered_goes_on() -> None:
    """A held batch that left with two calls or more gathered: the pause goes on for the next ones."""
    clock, poster, store, _ = started()
    store.get("held")
    clock.advance(0)
    store.get("gathered")
    clock.advance(GATHER_PAUSE)
    assert calls_in(poster.posts[1][0]) == ["Store.Get", "Store.Get"]
    poster.answer(1, [["https://held.example/"], ["https://gathered.example/"]])
    store.get("next")
    clock.advance(0)
    assert len(poster.posts) == 2, "still pausing"
    clock.advance(GATHER_PAUSE)
    assert len(poster.posts) == 3


def test_a_batch_that_fills_up_cuts_the_pause_short() -> None:
    """PROMPT_BATCH_CALLS calls are worth a request of their own: the batch goes at once."""
    clock, poster, store, _ = started()
    asked = [store.get(f"k{index}") for index in range(PROMPT_BATCH_CALLS - 1)]
    clock.advance(0)
    assert len(poster.posts) == 1, "one call short of a prompt batch: it waits"
    asked.append(store.get("last"))
    clock.advance(0)
    assert len(poster.posts) == 2, "the batch went before the pause was over"
    assert len(calls_in(poster.posts[1][0])) == PROMPT_BATCH_CALLS
    poster.answer(1, [[f"https://{index}.example/"] for index in range(PROMPT_BATCH_CALLS)])
    assert [result_of(call) for call in asked] == [
        f"https://{index}.example/" for index in range(PROMPT_BATCH_CALLS)
    ]


def test_callers_that_come_back_together_are_not_held() -> None:
    """Clients that ask again once answered (a crawler's workers) come back together: once as many
    calls as the last batch answered have been made since, the batch goes at once, round after round,
    though the process is busy and the pause has not passed."""
    clock, poster, store, _ = started()
    workers = ("a", "b", "c")
    asked = [store.get(f"{worker}0") for worker in workers]
    clock.advance(GATHER_PAUSE)  # the first round gathers under the pause (nothing answered yet)
    gathered_at = clock.seconds()
    for round_ in range(1, 4):
        assert len(poster.posts) == round_ + 1
        assert len(calls_in(poster.posts[-1][0])) == len(workers)
        poster.answer(round_, [[f"https://{worker}.example/"] for worker in workers])
        assert [result_of(call) for call in asked] == [f"https://{worker}.example/" for worker in workers]
        asked = []
        for worker in workers:
            asked.append(store.get(f"{worker}{round_}"))
            clock.advance(0)
    assert len(poster.posts) == 5, "the last round went too"
    assert clock.seconds() == gathered_at, "no time passed: no pause was waited out"


def test_fewer_calls_than_the_last_batch_answered_still_wait() -> None:
    """Calls made since an answer, fewer than it answered, are a trickle, not its callers back: they
    wait out the pause (and go together)."""
    clock, poster, store, _ = started()
    for key in ("a", "b", "c"):
        store.get(key)
    clock.advance(GATHER_PAUSE)
    poster.answer(1, [["https://a.example/"], ["https://b.example/"], ["https://c.example/"]])
    store.get("d")
    store.get("e")
    clock.advance(GATHER_PAUSE / 2)
    assert len(poster.posts) == 2, "two of three: they wait"
    clock.advance(GATHER_PAUSE / 2)
    assert len(poster.posts) == 3
    assert len(calls_in(poster.posts[2][0])) == 2


def test_a_call_alone_does_not_wait_out_the_pause() -> None:
    """A call that travels alone (a click batch) is not a batch to gather: it goes at once."""
    clock, poster, store, _ = started()
    alone = store.call_alone("Store.Clicks", {})
    clock.advance(0)
    assert len(poster.posts) == 2
    assert calls_in(poster.posts[1][0]) == ["Store.Clicks"]
    poster.answer(1, True)
    assert result_of(alone) is True


def test_a_clock_set_back_a_little_holds_calls_no_longer_than_the_pause() -> None:
    """The clock is the wall clock: set back a little after a batch, the next call still waits no
    longer than the pause (not the pause plus the step back)."""
    clock, poster, store, _ = started()
    store.get("paused")  # judges the window busy, waits out the pause
    clock.advance(0)
    store.get("gathered")  # so the pause gathers, and goes on (see _flush)
    clock.advance(GATHER_PAUSE)
    assert len(poster.posts) == 2
    clock.rightNow -= GATHER_PAUSE / 2
    held = store.get("held")
    clock.advance(0)
    assert len(poster.posts) == 2, "still busy: it waits"
    clock.advance(GATHER_PAUSE)
    assert len(poster.posts) == 3, "no longer than the pause"
    poster.answer(2, "https://held.example/")
    assert result_of(held) == "https://held.example/"


def test_a_clock_set_back_far_does_not_hold_calls() -> None:
    """Set back further than the window, the clock starts a new window, not busy: the next call goes
    at once (it would otherwise wait until the clock caught up, here 90 s)."""
    clock, poster, store, _ = started()
    store.get("paused")  # judges the window busy, waits out the pause
    clock.advance(GATHER_PAUSE)
    assert len(poster.posts) == 2
    clock.rightNow -= 90.0
    asked = store.get("asked")
    clock.advance(0)
    assert len(poster.posts) == 3
    poster.answer(2, "https://asked.example/")
    assert result_of(asked) == "https://asked.example/"
