"""A condition that comes and goes, logged at most once an interval a kind, its last line true."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel

from goto_tw.throttledlog import ThrottledCondition
from tests.conftest import LogCapture

INTERVAL = 10.0


def _outages(clock: Clock) -> ThrottledCondition:
    return ThrottledCondition(
        Logger(namespace="test"),
        clock,
        "down ({why}; {unlogged} more)",
        "up ({unlogged} more)",
        INTERVAL,
        holds_level=LogLevel.warn,
    )


def _said(log_events: LogCapture) -> list[str]:
    return [m for m in log_events.messages() if m.startswith(("down", "up"))]


def test_each_kind_of_line_is_said_at_most_once_an_interval(log_events: LogCapture) -> None:
    """Flapping ten times a second for a minute: a line of each kind an interval, with how many of
    that kind were left out (and the log's last line tells how things stand)."""
    clock = Clock()
    outages = _outages(clock)
    for _ in range(600):
        outages.holds(why="refused")
        clock.advance(0.05)
        outages.ended()
        clock.advance(0.05)
    said = _said(log_events)
    assert len([m for m in said if m.startswith("down")]) <= 60 / INTERVAL + 1
    assert len([m for m in said if m.startswith("up")]) <= 60 / INTERVAL + 1
    assert said[0] == "down (refused; 0 more)" and said[1] == "up (0 more)"
    assert "down (refused; 99 more)" in said, said
    clock.advance(INTERVAL)
    assert _said(log_events)[-1].startswith("up"), "the last line says it ended, as it has"
    assert clock.getDelayedCalls() == []


def test_an_outage_left_out_is_said_when_its_interval_ends(log_events: LogCapture) -> None:
    """A hostile review (stop 42): down at 0, up at 0.5 (both said), down again at 1 (left out)
    and for an hour: the last line said "up" for that hour. It is said at 10 s."""
    clock = Clock()
    outages = _outages(clock)
    outages.holds(why="refused")
    clock.advance(0.5)
    outages.ended()
    clock.advance(0.5)
    outages.holds(why="reset")
    assert _said(log_events) == ["down (refused; 0 more)", "up (0 more)"]
    clock.advance(INTERVAL - 1.01)
    assert len(_said(log_events)) == 2, "not before its interval ends"
    clock.advance(3600)
    assert _said(log_events) == ["down (refused; 0 more)", "up (0 more)", "down (reset; 0 more)"]


def test_an_end_left_out_is_said_when_its_interval_ends(log_events: LogCapture) -> None:
    """The reverse: down at 0, up at 0.5, down at 10 (said), up at 10.4 (left out): "up" at 10.5."""
    clock = Clock()
    outages = _outages(clock)
    outages.holds(why="refused")
    clock.advance(0.5)
    outages.ended()
    clock.advance(9.5)
    outages.holds(why="refused")
    clock.advance(0.4)
    outages.ended()
    assert _said(log_events)[-1] == "down (refused; 0 more)"
    clock.advance(0.1)
    assert _said(log_events)[-1] == "up (0 more)"


def test_nothing_is_made_up_when_things_stand_as_the_log_says(log_events: LogCapture) -> None:
    """Down (said), up and down again within the interval (the up left out): the log's last line,
    "down", is true, so nothing more is said; the next outage line counts the one left out."""
    clock = Clock()
    outages = _outages(clock)
    outages.holds(why="refused")
    clock.advance(1)
    outages.ended()
    clock.advance(1)
    outages.holds(why="refused")
    clock.advance(1)
    outages.ended()  # said: the first "up"
    clock.advance(1)
    outages.holds(why="refused")  # left out; the log's last line is "up": made up at 10
    clock.advance(0.5)
    outages.ended()  # left out; now the log is right again
    clock.advance(3600)
    assert _said(log_events) == ["down (refused; 0 more)", "up (0 more)"]
    outages.holds(why="refused")
    assert _said(log_events)[-1] == "down (refused; 2 more)"


def test_stopping_says_how_things_stand_and_leaves_no_call(log_events: LogCapture) -> None:
    """On stop a line the log's last line contradicts is said at once and nothing stays scheduled;
    a change after it (a service started again) is made up for again (a hostile review, stop 42:
    a restarted service made up nothing more)."""
    clock = Clock()
    outages = _outages(clock)
    outages.holds(why="refused")
    clock.advance(1)
    outages.ended()
    clock.advance(1)
    outages.holds(why="reset")
    assert clock.getDelayedCalls()
    outages.stop()
    assert _said(log_events)[-1] == "down (reset; 0 more)"
    assert clock.getDelayedCalls() == []
    outages.ended()  # left out (the "up" of 1 s ago)
    clock.advance(INTERVAL)
    assert _said(log_events)[-1] == "up (0 more)"
    assert clock.getDelayedCalls() == []


def test_a_stalled_reactor_still_says_the_changes_in_their_order(log_events: LogCapture) -> None:
    """A hostile review (stop 42): a reactor that stalled runs its timed calls late, with the clock
    already late; a change noted then was said before the make-up due before it, which then found
    nothing to make up: "up", "up", the "down" between them never said. The overdue make-up runs
    first."""
    clock = Clock()
    outages = _outages(clock)
    outages.holds(why="refused")
    clock.advance(1)
    outages.ended()
    clock.advance(1)
    outages.holds(why="reset")  # left out: made up at 10
    clock.callLater(1, outages.ended)  # due at 3, run at 62 with the stall
    clock.advance(60)
    assert _said(log_events) == [
        "down (refused; 0 more)",
        "up (0 more)",
        "down (reset; 0 more)",
        "up (0 more)",
    ]


def test_the_cost_adds_up_until_a_line_says_it_ended(log_events: LogCapture) -> None:
    """What the condition cost (records refused) adds up over the lines left out, and goes in the
    next line that says it ended (a hostile review, stop 42: an end left out lost its count)."""
    clock = Clock()
    costs = ThrottledCondition(Logger(namespace="test"), clock, "down {cost}", "up {cost}", INTERVAL)
    costs.holds(cost=2)
    costs.ended()
    clock.advance(1)
    costs.holds(cost=3)  # left out
    costs.ended()  # left out; the log is right: nothing made up
    clock.advance(INTERVAL)
    costs.holds(cost=1)
    costs.ended()
    assert [m for m in log_events.messages() if m.startswith(("down", "up"))] == [
        "down 2",
        "up 2",
        "down 4",
        "up 4",
    ], "the 3 of the lines left out with the 1 after them"
