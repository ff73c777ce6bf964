"""PGStore's bounds and answers, with a fake database whose calls the test completes (no server)."""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from goto_tw.errors import LinkUnusable, StoreUnavailable
from goto_tw.pgdb import DatabaseBusy, DatabaseDown
from goto_tw.pgstore import PGStore
from tests.helpers import failure_of, has_fired, result_of


class FakeDatabase:
    """Records each call; the test fires it with a result or a failure."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[[Any], Any], Deferred[Any]]] = []

    def run(self, function: Callable[[Any], Any], *, transaction: bool = True) -> Deferred[Any]:
        done: Deferred[Any] = Deferred()
        self.calls.append((function, done))
        return done


def _store(**kwargs: Any) -> tuple[PGStore, FakeDatabase, Clock]:
    clock = Clock()
    database = FakeDatabase()
    return PGStore(database, clock, **kwargs), database, clock  # type: ignore[arg-type]


def test_adds_past_the_pending_bound_are_refused_at_once() -> None:
    """With max_pending_puts adds waiting, the next add is 503 "too busy" at once, not queued."""
    store, database, clock = _store(max_pending_puts=3, max_batch=2)
    waiting = [store.put(f"https://example.com/{i}") for i in range(3)]
    refused = store.put("https://example.com/over")
    failure = failure_of(refused)
    assert failure.check(StoreUnavailable) and "too busy" in str(failure.value)
    clock.advance(0)
    assert len(database.calls) == 1  # one batch of at most max_batch
    assert not any(has_fired(d) for d in waiting)


def test_lookups_past_the_pending_bound_are_refused_at_once() -> None:
    """With max_pending_gets distinct misses waiting, the next miss is 503 at once."""
    store, database, _ = _store(max_pending_gets=2)
    store.get("a1")
    store.get("a2")
    assert failure_of(store.get("a3")).check(StoreUnavailable)
    assert len(database.calls) == 2


def test_a_failed_batch_answers_every_waiting_add() -> None:
    """When the database goes away mid-write, the batch and every add queued behind it get a 503:
    no waiter is left hanging, and later adds fail fast until a probe succeeds."""
    store, database, clock = _store(max_batch=2)
    adds = [store.put(f"https://example.com/{i}") for i in range(5)]
    clock.advance(0)
    assert len(database.calls) == 1
    database.calls[0][1].errback(Failure(DatabaseDown("connection refused")))
    clock.advance(0)
    assert all(failure_of(d).check(StoreUnavailable) for d in adds)
    assert len(database.calls) == 1
    assert failure_of(store.put("https://example.com/later")).check(StoreUnavailable)
    assert failure_of(store.get("abc")).check(StoreUnavailable)
    clock.advance(1.0)  # one probe may go now
    probe = store.get("abc")
    assert len(database.calls) == 2 and not has_fired(probe)
    database.calls[1][1].callback("https://example.com/abc")
    assert result_of(probe) == "https://example.com/abc"
    assert store.database_reachable


def test_adds_arriving_while_a_batch_is_written_go_in_the_next_one() -> None:
    """Group commit: one batch in flight at a time; what arrives meanwhile waits and goes together."""
    store, database, clock = _store()
    first = store.put("https://example.com/first")
    clock.advance(0)
    later = [store.put(f"https://example.com/{i}") for i in range(10)]
    clock.advance(0)
    assert len(database.calls) == 1
    database.calls[0][1].callback({"https://example.com/first": ("0", True)})
    assert result_of(first) == "0"
    clock.advance(0)
    assert len(database.calls) == 2
    database.calls[1][1].callback({f"https://example.com/{i}": (str(i + 1), True) for i in range(10)})
    assert [result_of(d) for d in later] == [str(i + 1) for i in range(10)]


def test_health_checks_while_the_database_is_down_make_one_probe_a_second(log_events: Any) -> None:
    """Review 34: each health check (and the count every 10 s) went to the database while it was
    down, and left a failed Deferred behind ("Unhandled error in Deferred", critical, each time).
    Now a check is answered False at once, but for the one probe a ``retry_interval``."""
    import gc

    store, database, clock = _store(retry_interval=1.0)
    missed = store.get("abc")
    database.calls[0][1].errback(Failure(DatabaseDown("connection refused")))
    assert failure_of(missed).check(StoreUnavailable) and not store.database_reachable
    checks = [store.check_database() for _ in range(5)]
    assert [result_of(check) for check in checks] == [False] * 5
    assert len(database.calls) == 1, "no call while down, until the probe is due"
    clock.advance(1.0)
    probe = store.check_database()
    also = store.check_database()
    assert len(database.calls) == 2 and not has_fired(probe) and not has_fired(also)
    database.calls[1][1].callback(7)
    assert result_of(probe) is True and result_of(also) is True and store.count() == 7
    assert store.database_reachable
    gc.collect()
    assert not [m for m in log_events.messages() if "Unhandled error" in m]


def test_a_row_that_is_not_a_stored_url_is_never_redirected_to(log_events: Any) -> None:
    """Review 34: a row written by hand (or by another program) holding ``javascript:...`` was
    answered as a redirect. It is a 503 now, not cached, and logged once an interval."""
    store, database, clock = _store()
    bad = [store.get("evil") for _ in range(1)] + [store.get("evil2")]
    database.calls[0][1].callback("javascript:alert(1)")
    database.calls[1][1].callback("https://user:pw@bank.example.evil/\r\nX: y")
    for answer in bad:
        failure = failure_of(answer)
        error = failure.value
        assert isinstance(error, LinkUnusable) and "cannot be followed" in str(error)
        assert error.http_status == 503, "a 503 for this key, not a master that is down"
    assert store.lookup("evil") is None, "not cached"
    store.get("evil")
    database.calls[2][1].callback("javascript:alert(1)")
    lines = [m for m in log_events.messages() if "not a URL this service would store" in m]
    assert len(lines) == 1 and "javascript:alert(1)" in lines[0] and "'evil'" in lines[0]
    clock.advance(10.0)
    store.get("evil")
    database.calls[3][1].callback("javascript:alert(1)")
    lines = [m for m in log_events.messages() if "not a URL this service would store" in m]
    assert len(lines) == 2 and "(2 more since the last line)" in lines[1]
    good = store.get("fine")
    database.calls[4][1].callback("https://fine.example/")
    assert result_of(good) == "https://fine.example/" and store.lookup("fine") == "https://fine.example/"


def test_a_pool_too_busy_is_a_503_that_leaves_the_database_up() -> None:
    """A call that found no free thread in time (DatabaseBusy) is 503 "too busy" for its caller;
    the database is not said to be down (health, the log, the other waiters are left alone)."""
    store, database, _ = _store()
    waiting = store.get("abc")
    database.calls[0][1].errback(Failure(DatabaseBusy("no database connection was free within 9 s")))
    failure = failure_of(waiting)
    assert failure.check(StoreUnavailable) and "too busy" in str(failure.value)
    assert store.database_reachable
    store.get("abd")
    assert len(database.calls) == 2, "the next call goes to the database as usual"
