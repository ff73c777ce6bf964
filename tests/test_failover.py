"""A slave's several masters: calls spread over them and fail over at once when one does not answer."""

from __future__ import annotations

import xmlrpc.client
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from zope.interface import implementer

from goto_tw.errors import (
    InvalidURL,
    KeyNotFound,
    LinkUnusable,
    MasterBusy,
    MasterFailed,
    MasterRefused,
    MasterUnreachable,
    NotKept,
    SlaveStopping,
    StoreUnavailable,
)
from goto_tw.failover import MAX_RETRY_INTERVAL, MAX_WAITING_CALLS, FailoverStore, shares_a_database
from goto_tw.interfaces import IURLStore
from goto_tw.masterhttp import IDLE_SECONDS, MasterConnections
from goto_tw.proxystore import ProxyStore
from goto_tw.remote import UNREACHABLE_MESSAGE, RemoteStore, slave_stopping
from tests.conftest import LogCapture
from tests.helpers import failure_of, has_fired, result_of
from tests.test_masterhttp import Endpoint
from tests.test_remote import RPC_URL, Hanging


@implementer(IURLStore)
class FakeMaster:
    """A master's store that answers, says "unknown", or is unreachable, and records its calls."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.down = False
        self.calls: list[tuple[str, str]] = []

    def _answer(self, method: str, arg: str, value: str) -> Deferred[str]:
        self.calls.append((method, arg))
        if self.down:
            return fail(MasterUnreachable("the master is unreachable", detail=f"{self.name} refused"))
        return succeed(value)

    def get(self, key: str) -> Deferred[str]:
        if key == "unknown" and not self.down:
            self.calls.append(("get", key))
            return fail(KeyNotFound("no link"))
        return self._answer("get", key, f"https://{self.name}/{key}")

    def put(self, url: str) -> Deferred[str]:
        return self._answer("put", url, "k")

    def count(self) -> int:
        return 0


class HeldMaster(FakeMaster):
    """A master whose answers wait for the test: each call's Deferred is kept in ``held`` (shared by
    the masters of a test), under the master's name."""

    def __init__(self, name: str, held: dict[str, Deferred[str]]) -> None:
        super().__init__(name)
        self.held = held

    def _answer(self, method: str, arg: str, value: str) -> Deferred[str]:
        self.calls.append((method, arg))
        self.held[self.name] = Deferred()
        return self.held[self.name]


def _store(clock: Clock, count: int = 2) -> tuple[FailoverStore, list[FakeMaster]]:
    masters = [FakeMaster(f"m{i}") for i in range(count)]
    members: list[tuple[str, IURLStore]] = [(m.name, m) for m in masters]
    return FailoverStore(members, clock), masters


def test_calls_are_spread_over_the_masters() -> None:
    """Round robin: four calls over two masters make two each."""
    store, (a, b) = _store(Clock())
    for i in range(4):
        result_of(store.get(f"k{i}"))
    assert len(a.calls) == 2 and len(b.calls) == 2


def test_a_dead_master_fails_over_at_once_and_is_skipped_then_retried(log_events) -> None:
    """A call to a master that does not answer goes at once to the next; the dead one is skipped for a
    second (logged once), then tried again, and used again once it answers."""
    clock = Clock()
    store, (a, _b) = _store(clock)
    a.down = True
    assert result_of(store.put("https://x/1")) == "k"
    assert result_of(store.get("k1")) == "https://m1/k1"
    assert result_of(store.get("k2")) == "https://m1/k2"
    assert len(a.calls) == 1  # skipped while believed down
    assert store.up() == ["m1"]
    warnings = [m for m in log_events.messages() if "does not answer" in m]
    assert len(warnings) == 1 and "m0 refused" in warnings[0]
    clock.advance(1.0)
    a.down = False
    for i in range(4):
        result_of(store.get(f"j{i}"))
    assert len(a.calls) >= 2 and store.up() == ["m0", "m1"]


def test_a_definite_answer_is_not_retried_elsewhere() -> None:
    """'Unknown key' is the answer of the whole database: the next master is not asked."""
    store, (a, b) = _store(Clock())
    assert failure_of(store.get("unknown")).check(KeyNotFound)
    assert len(a.calls) + len(b.calls) == 1


def test_all_masters_down_fails_with_unreachable() -> None:
    """With every master down the call fails (MasterUnreachable), so the slave fails fast above it."""
    store, masters = _store(Clock(), 3)
    for master in masters:
        master.down = True
    assert failure_of(store.get("k")).check(MasterUnreachable)
    assert all(len(m.calls) == 1 for m in masters)


class SilentMaster(FakeMaster):
    """A master that accepts calls and never answers (hung)."""

    def _answer(self, method: str, arg: str, value: str) -> Deferred[str]:
        self.calls.append((method, arg))
        return Deferred()


def test_a_silent_master_is_passed_over_within_a_second() -> None:
    """A hung master costs one second, not --rpc-timeout: the call also goes to the next master, the
    hung one is skipped afterwards; a late answer from it changes nothing."""
    clock = Clock()
    hung, good = SilentMaster("m0"), FakeMaster("m1")
    members: list[tuple[str, IURLStore]] = [("m0", hung), ("m1", good)]
    store = FailoverStore(members, clock)
    asked = store.put("https://x/1")
    assert not has_fired(asked)
    clock.advance(0.99)
    assert not has_fired(asked) and good.calls == []
    clock.advance(0.01)
    assert result_of(asked) == "k"
    assert store.up() == ["m1"]
    assert result_of(store.get("a")) == "https://m1/a" and len(hung.calls) == 1
    assert not clock.getDelayedCalls()


def test_every_master_failing_fails_once_even_after_a_slow_one() -> None:
    """A slow master that then fails, after the others failed too, fails the call exactly once."""
    clock = Clock()
    slow_answer: Deferred[str] = Deferred()

    class Slow(FakeMaster):
        def _answer(self, method: str, arg: str, value: str) -> Deferred[str]:
            return slow_answer

    down = FakeMaster("m1")
    down.down = True
    members: list[tuple[str, IURLStore]] = [("m0", Slow("m0")), ("m1", down)]
    asked = FailoverStore(members, clock).get("k")
    clock.advance(1.0)
    assert not has_fired(asked)
    slow_answer.errback(MasterUnreachable("the master is unreachable"))
    assert failure_of(asked).check(MasterUnreachable)


# --- review 33: several masters must share one store ------------------------------------------------


class FeedMaster(FakeMaster):
    """A master that answers ``Store.Changes`` (a file master), refuses it (PostgreSQL), or lets the
    test answer it (``held``)."""

    def __init__(self, name: str, feed: bool, held: bool = False) -> None:
        super().__init__(name)
        self.feed = feed
        self.held: list[Deferred[object]] = []
        self.hold = held

    def call(self, method: str, *params: object) -> Deferred[object]:
        assert (method, params) == ("Store.Changes", ("", 0))
        self.calls.append(("call", method))
        if self.hold:
            asked: Deferred[object] = Deferred()
            self.held.append(asked)
            return asked
        if self.down:
            return fail(MasterUnreachable("the master is unreachable", detail=f"{self.name} refused"))
        if self.feed:
            return succeed({"epoch": "e", "seq": 0, "keys": [], "complete": False})
        return fail(InvalidURL("this store has no change feed"))


def _checked_store(*masters: FeedMaster, clock: Clock | None = None) -> FailoverStore:
    members: list[tuple[str, IURLStore]] = [(m.name, m) for m in masters]
    return FailoverStore(members, clock or Clock(), check=shares_a_database)


def test_a_master_with_a_file_of_its_own_is_refused_for_good(log_events: LogCapture) -> None:
    """Two file masters would each hand out key 0: one that answers the change feed takes no call,
    logged once as an error; the PostgreSQL master takes them all."""
    files, database = FeedMaster("file", feed=True), FeedMaster("pg", feed=False)
    store = _checked_store(files, database)
    assert [result_of(store.get(f"k{n}")) for n in range(4)] == [f"https://pg/k{n}" for n in range(4)]
    assert [call for call in files.calls if call[0] != "call"] == []
    assert store.up() == ["pg"]
    errors = [m for m in log_events.messages() if "takes no calls" in m]
    assert len(errors) == 1 and "file" in errors[0] and "data file of its own" in errors[0]


def test_with_every_master_refused_calls_fail_as_unreachable_saying_why() -> None:
    store = _checked_store(FeedMaster("a", feed=True), FeedMaster("b", feed=True))
    error = failure_of(store.put("https://x.example/")).value
    assert isinstance(error, MasterUnreachable) and error.detail is not None
    assert "a: it keeps a data file" in error.detail and "b: it keeps a data file" in error.detail


def test_calls_wait_for_the_first_check_and_a_bounded_number_of_them() -> None:
    """A slave just started: calls wait until a master passed its check; past the bound they fail
    at once; a master that could not be asked is asked again a retry interval later."""
    clock = Clock()
    slow, down = FeedMaster("slow", feed=False, held=True), FeedMaster("down", feed=False)
    down.down = True
    store = _checked_store(slow, down, clock=clock)
    first = store.get("k")
    assert not has_fired(first) and len(slow.held) == 1
    assert down.calls == [("call", "Store.Changes")]
    others = [store.get(f"k{n}") for n in range(MAX_WAITING_CALLS - 1)]
    over = failure_of(store.get("over")).value
    assert isinstance(over, StoreUnavailable) and not isinstance(over, MasterUnreachable), "busy, not down"
    slow.held.pop().errback(InvalidURL("this store has no change feed"))
    assert result_of(first) == "https://slow/k" and all(has_fired(call) for call in others)
    down.down = False
    clock.advance(1)
    store.get("again")
    assert down.calls.count(("call", "Store.Changes")) == 2
    assert sorted(store.up()) == ["down", "slow"]


def test_a_caller_giving_up_while_it_waits_for_the_check_changes_nothing() -> None:
    slow = FeedMaster("slow", feed=False, held=True)
    store = _checked_store(slow)
    gave_up, waits = store.get("a"), store.get("b")
    gave_up.cancel()
    failure_of(gave_up)
    slow.held.pop().errback(InvalidURL("this store has no change feed"))
    assert result_of(waits) == "https://slow/b"


def test_a_master_that_answers_the_feed_neither_way_is_refused_and_a_busy_one_asked_again() -> None:
    """Only the "no change feed" refusal (fault 400) passes: an older master without the method
    (8001) is refused, one answering 503 (busy, its database away) is asked again later."""

    class Answering(FeedMaster):
        def __init__(self, name: str, error: Exception) -> None:
            super().__init__(name, feed=False)
            self.error = error

        def call(self, method: str, *params: object) -> Deferred[object]:
            self.calls.append(("call", method))
            return fail(self.error)

    clock = Clock()
    old, busy = Answering("old", NotKept("no such method")), Answering("busy", StoreUnavailable("busy"))
    store = _checked_store(old, busy, clock=clock)
    error = failure_of(store.get("k")).value
    assert isinstance(error, MasterUnreachable) and "old: it does not say" in (error.detail or "")
    clock.advance(1)
    busy.error = InvalidURL("this store has no change feed")
    assert result_of(store.get("k")) == "https://busy/k"
    assert old.calls == [("call", "Store.Changes")] and busy.calls.count(("call", "Store.Changes")) == 2


def test_a_master_that_stays_hung_is_retried_less_and_less_often() -> None:
    """Review 33: a hung master was put back every second and retried with live calls, each waiting
    a second before it moved on. Its pause doubles with each retry that fails (1, 2, 4... up to 30 s);
    one answer brings it back at once."""

    class Hung(FakeMaster):
        hung = True

        def _answer(self, method: str, arg: str, value: str) -> Deferred[str]:
            if self.hung:
                self.calls.append((method, arg))
                return Deferred()
            return super()._answer(method, arg, value)

    clock = Clock()
    hung, good = Hung("m0"), FakeMaster("m1")
    members: list[tuple[str, IURLStore]] = [("m0", hung), ("m1", good)]
    store = FailoverStore(members, clock)
    waited = 0
    for tick in range(20 * 120):  # two minutes, 20 calls a second
        if tick == 30:
            first_second = len(hung.calls)  # before anything is known: half the calls, as ever
        if not has_fired(store.get("k")):
            waited += 1
        clock.advance(0.05)
    retries = len(hung.calls) - first_second
    # Then one call per retry, after 1, 2, 4, 8, 16 s and every 30 s: 7 or 8, not 10 a second.
    assert 5 <= retries <= 8 and waited == len(hung.calls), (first_second, retries, waited)
    hung.hung = False
    clock.advance(MAX_RETRY_INTERVAL)
    answers = [result_of(store.get(f"k{n}")) for n in range(4)]
    assert "https://m0/k0" in answers or "https://m0/k1" in answers
    assert sorted(store.up()) == ["m0", "m1"]


def test_a_master_whose_queue_is_full_is_passed_over() -> None:
    """Third read of review 33: this slave's queue to one master full (MasterBusy, a 503 the slave
    makes itself) counted as that master's answer; the call now goes to the next master."""

    @implementer(IURLStore)
    class Busy(FakeMaster):
        def get(self, key: str) -> Deferred[str]:
            self.calls.append(("get", key))
            return fail(MasterBusy("busy", detail="10000 calls are queued"))

    busy, fine = Busy("m0"), FakeMaster("m1")
    store = FailoverStore([("m0", busy), ("m1", fine)], Clock())
    assert [result_of(store.get(f"k{n}")) for n in range(4)] == [f"https://m1/k{n}" for n in range(4)]
    assert store.up() == ["m1"] and len(busy.calls) == 1


def test_a_trial_that_never_ends_holds_its_master_back_for_a_second_only() -> None:
    """A retry whose call never ends (an unhedged call to a master that never answers) passes the
    master over for ``failover_after`` only, not until the call ends (third read of review 33)."""

    class Hung(FakeMaster):
        def call(self, method: str, *params: object) -> Deferred[object]:
            self.calls.append(("call", method))
            return Deferred()

    clock = Clock()
    hung, good = Hung("m0"), FakeMaster("m1")
    hung.down = True
    store = FailoverStore([("m0", hung), ("m1", good)], clock)
    assert result_of(store.get("a")) == "https://m1/a"  # m0 refused: down for a second
    hung.down = False
    clock.advance(1)
    assert result_of(store.get("x")) == "https://m1/x"  # m1's turn; m0's is next
    store.call("Store.Stats", "a")  # m0's retry, unhedged, that never ends
    assert hung.calls[-1] == ("call", "Store.Stats")
    assert [result_of(store.get(f"b{n}")) for n in range(3)] == [f"https://m1/b{n}" for n in range(3)]
    clock.advance(1)
    answers = {result_of(store.get(f"c{n}")) for n in range(2)}
    assert answers & {"https://m0/c0", "https://m0/c1"}, "in rotation again"


def test_a_busy_master_is_not_logged_as_down_and_a_busy_answer_wins_over_a_dead_one(
    log_events: LogCapture,
) -> None:
    """Fourth read of review 33: a master whose queue here filled and drained in turn was logged
    "does not answer" and "answers again" hundreds of times a second; and with the other master
    dead, the call failed as unreachable, so the store above marked its master down. A busy master
    is passed over quietly, and a call every master failed, one of them busy, fails busy (a 503)."""

    @implementer(IURLStore)
    class Flapping(FakeMaster):
        busy = True

        def get(self, key: str) -> Deferred[str]:
            self.calls.append(("get", key))
            if self.busy:
                return fail(MasterBusy("busy", detail="10000 calls are queued"))
            return succeed(f"https://{self.name}/{key}")

    clock = Clock()
    flapping, dead = Flapping("m0"), FakeMaster("m1")
    dead.down = True
    store = FailoverStore([("m0", flapping), ("m1", dead)], clock)
    for round_ in range(20):
        flapping.busy = round_ % 2 == 0
        asked = store.get(f"k{round_}")
        clock.advance(1)
        if flapping.busy:
            error = failure_of(asked).value
            assert isinstance(error, MasterBusy), error
        else:
            assert result_of(asked) == f"https://m0/k{round_}"
    lines = log_events.messages()
    assert not [line for line in lines if "m0 does not answer" in line or "m0 answers again" in line]
    assert len([line for line in lines if "m1 does not answer" in line]) == 1


# --- review 35: a master that answers but cannot serve, and masters that cannot be checked ----------


class DatabaseLess(FakeMaster):
    """A master whose way to the shared database is cut: it answers every call with its 503 fault."""

    def _answer(self, method: str, arg: str, value: str) -> Deferred[str]:
        self.calls.append((method, arg))
        return fail(StoreUnavailable("the service cannot reach its store right now"))


def test_a_master_answering_503_is_passed_over_like_a_dead_one(log_events: LogCapture) -> None:
    """Review 35: a master that had lost its database answered every other call with a 503, which
    went to the user (adds and misses alternated 503/200) while its neighbour could serve. The call
    goes to the next master now, and the master is passed over for a while, logged once as one that
    cannot serve; with every master answering 503 the call fails with that 503 (not "unreachable")."""
    clock = Clock()
    cut, good = DatabaseLess("m0"), FakeMaster("m1")
    store = FailoverStore([("m0", cut), ("m1", good)], clock)
    assert [result_of(store.get(f"k{n}")) for n in range(6)] == [f"https://m1/k{n}" for n in range(6)]
    assert result_of(store.put("https://x.example/")) == "k"
    assert len(cut.calls) == 1, "passed over after its 503"
    warnings = [m for m in log_events.messages() if "Master m0" in m]
    assert len(warnings) == 1 and "cannot serve" in warnings[0] and "cannot reach its store" in warnings[0]
    both = FailoverStore([("a", DatabaseLess("a")), ("b", DatabaseLess("b"))], clock)
    error = failure_of(both.get("k")).value
    assert type(error) is StoreUnavailable and error.http_status == 503


def test_statistics_are_hedged_as_look_ups_are() -> None:
    """Review 35: ``Store.Stats`` went through the unhedged ``call``: with one master hung, an info
    page waited for --rpc-timeout. ``read`` moves on after ``failover_after``, as a look-up does."""

    class Hung(FakeMaster):
        def call(self, method: str, *params: object) -> Deferred[object]:
            self.calls.append((method, str(params)))
            return Deferred()

    class Answers(FakeMaster):
        def call(self, method: str, *params: object) -> Deferred[object]:
            self.calls.append((method, str(params)))
            return succeed({"clicks": 3.0})

    clock = Clock()
    store = FailoverStore([("hung", Hung("hung")), ("good", Answers("good"))], clock)
    asked = store.read("Store.Stats", "k")
    assert not has_fired(asked)
    clock.advance(1.0)
    assert result_of(asked) == {"clicks": 3.0}


def test_a_master_that_cannot_be_checked_is_logged_once_saying_why(log_events: LogCapture) -> None:
    """Review 35: a --master that does not resolve, has nothing listening or refuses the secret took
    no calls, silently, while the others served (the operator believed in a redundancy that was not
    there); with none checked, the 503's cause said only "no master could be checked yet". Each
    master's failure is logged once until it passes, and a call that finds none names the causes."""
    clock = Clock()
    gone, refusing = FeedMaster("gone", feed=False), FeedMaster("refusing", feed=False, held=True)
    gone.down = True
    store = _checked_store(gone, refusing, clock=clock)
    first = store.get("k")
    refusing.held.pop().errback(
        MasterRefused(UNREACHABLE_MESSAGE, detail="the master refused this slave's RPC secret")
    )
    error = failure_of(first).value
    assert isinstance(error, MasterUnreachable)
    detail = error.detail or ""
    assert (
        "gone: the master is unreachable (gone refused)" in detail
        and "RPC secret" in detail.split("refusing:")[1]
    )
    for _ in range(3):  # asked again each retry interval, logged once
        clock.advance(1)
        store.get("k").addErrback(lambda _: None)
        if refusing.held:
            refusing.held.pop().errback(
                MasterRefused(UNREACHABLE_MESSAGE, detail="the master refused this slave's RPC secret")
            )
    warnings = [m for m in log_events.messages() if "could not be checked" in m]
    assert len(warnings) == 2, warnings
    assert any("Master gone" in m and "gone refused" in m for m in warnings)
    assert any("Master refusing" in m and "RPC secret" in m for m in warnings)
    gone.down = False
    clock.advance(1)
    assert result_of(store.get("k")) == "https://gone/k"
    assert [m for m in log_events.messages() if "could not be checked" in m] == warnings, "not again"


class Restartable(FeedMaster):
    """A master whose connection can be lost (its generation moves), and come back as another."""

    def __init__(self, name: str, feed: bool) -> None:
        super().__init__(name, feed)
        self.generation = 0

    def connection_generation(self) -> int:
        return self.generation


def test_a_master_whose_connection_was_lost_is_checked_again_before_its_next_call(
    log_events: LogCapture,
) -> None:
    """Review 35: a master was checked at first contact only; restarted at its address with a data
    file of its own, it took calls unchecked. One whose connection was lost since it passed is
    checked again (quietly when it passes again) and refused if it now keeps its own file."""
    a, b = Restartable("a", feed=False), Restartable("b", feed=False)
    store = _checked_store(a, b)
    for n in range(4):
        result_of(store.get(f"k{n}"))
    assert [c for c in b.calls if c[0] == "call"] == [("call", "Store.Changes")]
    b.generation += 1  # its connection dropped (the idle timeout, say): checked again, passes
    result_of(store.get("x"))
    assert [c for c in b.calls if c[0] == "call"] == [("call", "Store.Changes")] * 2
    assert sum("shares the others' store" in m for m in log_events.messages()) == 2, "once per master"
    b.generation += 1
    b.feed = True  # restarted on a data file of its own
    assert [result_of(store.get(f"j{n}")) for n in range(6)] == [f"https://a/j{n}" for n in range(6)]
    assert store.up() == ["a"]
    errors = [m for m in log_events.messages() if "Master b takes no calls" in m]
    assert len(errors) == 1 and "data file of its own" in errors[0]


def test_a_bad_row_or_a_fault_without_a_meaning_here_is_the_answer_not_a_master_down(
    log_events: LogCapture,
) -> None:
    """Review 35's second read: one key whose stored row is not a URL (503 for that key), or a fault
    code this slave does not know (a bug on the master), marked every master "cannot serve" in turn,
    two log lines a request. They are the answer: no other master is asked, none is passed over."""
    for error in (
        LinkUnusable("this link cannot be followed now"),
        MasterFailed(UNREACHABLE_MESSAGE, detail="the master answered fault 8002: 'error'"),
    ):

        class Answering(FakeMaster):
            def _answer(self, method: str, arg: str, value: str, error: Exception = error) -> Deferred[str]:
                self.calls.append((method, arg))
                return fail(error)

        a, b = Answering("a"), Answering("b")
        store = FailoverStore([("a", a), ("b", b)], Clock())
        for n in range(4):
            assert failure_of(store.get(f"k{n}")).value is error
        assert len(a.calls) == len(b.calls) == 2, "round robin, one master a call"
        assert store.up() == ["a", "b"]
    assert not [m for m in log_events.messages() if "cannot serve" in m or "does not answer" in m]


def test_a_master_reached_anew_after_its_connections_idled_out_is_checked_first() -> None:
    """Review 39: a slave of several masters ends a connection idle for IDLE_SECONDS itself, and the
    connection it made next took an add unchecked (the process at the address may have changed
    without a close reaching the slave). The real client and remote store, over a fake network: the
    first call on the new connection is the check."""

    def answer(index: int, body: bytes) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n" % len(body)
        endpoint.protocols[index].dataReceived(head + body)

    def method_sent(index: int) -> str:
        sent = endpoint.transports[index].value()
        endpoint.transports[index].clear()
        return str(xmlrpc.client.loads(sent.split(b"\r\n\r\n", 1)[1])[1])

    endpoint, clock = Endpoint(), Clock()
    http = MasterConnections(clock, 5.0, max_answer_bytes=100_000, endpoints=endpoint)  # type: ignore[arg-type]
    url = "http://127.0.0.1:8081/RPC2"
    store = FailoverStore([("b", RemoteStore(http, url, clock, timeout=5.0))], clock, check=shares_a_database)
    no_feed = xmlrpc.client.dumps(xmlrpc.client.Fault(400, "this store has no change feed")).encode()
    got = store.get("k")
    clock.advance(0.01)
    assert method_sent(0) == "Store.Changes"
    answer(0, no_feed)  # a PostgreSQL master: it passes
    clock.advance(0.01)
    assert method_sent(0) == "Store.Get"
    answer(0, xmlrpc.client.dumps(("https://example.com/",), methodresponse=True).encode())
    assert result_of(got) == "https://example.com/"
    clock.advance(IDLE_SECONDS + 1)
    put = store.put("https://example.org/")
    clock.advance(0.01)
    assert len(endpoint.protocols) == 2 and method_sent(1) == "Store.Changes", "checked before the put"
    answer(
        1,
        xmlrpc.client.dumps(
            ({"epoch": "e", "seq": 0, "keys": [], "complete": True},), methodresponse=True
        ).encode(),
    )
    clock.advance(0.01)
    assert endpoint.transports[1].value() == b"", "a master with a file of its own takes no put"
    assert failure_of(put).check(StoreUnavailable)


class _Silent(Restartable):
    """A master that may stop answering puts (hung, or cut off without a reset)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, feed=False)
        self.silent = False
        #: The puts it has not answered, in order.
        self.unanswered: list[Deferred[str]] = []

    def put(self, url: str) -> Deferred[str]:
        if self.silent:
            self.calls.append(("put", url))
            self.unanswered.append(Deferred())
            return self.unanswered[-1]
        return super().put(url)


def test_a_call_handed_on_goes_only_to_a_master_still_checked() -> None:
    """Review 39: a call's masters were fixed when it began; handed on after ``failover_after`` (the
    first silent), it went to the next even if that one's connection was lost meanwhile and another
    process answered there, unchecked. It goes only to a master still checked; the other is checked
    again (and refused, here: it keeps a data file of its own now)."""
    clock = Clock()
    a, b = _Silent("a"), Restartable("b", feed=False)
    store = _checked_store(a, b, clock=clock)
    result_of(store.get("k0"))  # both checked: they pass (PostgreSQL)
    a.silent = True
    put = store.put("https://example.org/")
    if has_fired(put):  # round robin gave it to b: the next one goes to a first
        put = store.put("https://example.org/")
    assert not has_fired(put), "waiting on the silent master a"
    before = len(b.calls)
    b.generation += 1  # b's connection lost: restarted...
    b.feed = True  # ...on a data file of its own
    clock.advance(1.0)  # failover_after: the put is handed on
    assert [c for c in b.calls[before:] if c[0] == "put"] == [], "not to b unchecked"
    assert ("call", "Store.Changes") in b.calls[before:], "b is checked again"
    assert store.up() == [], "a believed down, b refused"
    assert not has_fired(put), "a may still answer it"
    a.unanswered[-1].callback("k9")
    assert result_of(put) == "k9"


def test_a_quiet_slave_waits_for_the_check_of_a_master_reached_anew() -> None:
    """Review 39 (of its own fix): two PostgreSQL masters, a answering 503 (its own way to the
    database is down), b fine. After a quiet half minute b's idle connection has ended, so b is
    checked again; the call, with a failing it, waits for that check and goes to b, rather than
    failing with a's 503."""

    class CannotServe(FeedMaster):
        def get(self, key: str) -> Deferred[str]:
            self.calls.append(("get", key))
            return fail(StoreUnavailable("the service is unavailable", detail="a: database down"))

    endpoint, clock = Endpoint(), Clock()
    http = MasterConnections(clock, 5.0, max_answer_bytes=100_000, endpoints=endpoint)  # type: ignore[arg-type]
    b = RemoteStore(http, "http://127.0.0.1:8082/RPC2", clock, timeout=5.0)
    a = CannotServe("a", feed=False)
    store = FailoverStore([("a", a), ("b", b)], clock, check=shares_a_database)

    def serve_b() -> None:
        """Answer whatever b was sent on its newest connection."""
        clock.advance(0.01)
        for index, transport in enumerate(endpoint.transports):
            sent = transport.value()
            if not sent:
                continue
            transport.clear()
            method = xmlrpc.client.loads(sent.split(b"\r\n\r\n", 1)[1])[1]
            if method == "Store.Changes":
                body = xmlrpc.client.dumps(xmlrpc.client.Fault(400, "this store has no change feed"))
            else:
                body = xmlrpc.client.dumps(("https://b.example/",), methodresponse=True)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n" % len(body)
            endpoint.protocols[index].dataReceived(head + body.encode())

    warm = store.get("k0")
    serve_b()
    serve_b()
    assert result_of(warm) == "https://b.example/"
    for n in range(1, 4):
        got = store.get(f"k{n}")
        serve_b()
        assert result_of(got) == "https://b.example/", n
    clock.advance(IDLE_SECONDS + 1)  # a quiet half minute
    got = store.get("k9")
    serve_b()
    serve_b()
    assert has_fired(got)
    failure = failure_of(got) if not isinstance(getattr(got, "result", None), str) else None
    assert failure is None, f"503 although b answers: {failure and failure.value!r}"


def test_giving_up_gives_up_on_every_master() -> None:
    """A slave of several masters that stops and can wait no longer answers every master's calls
    (each store's ``give_up``); a master's store without one is left as it is."""
    gave_up: list[str] = []
    a, b, c = FakeMaster("a"), FakeMaster("b"), FakeMaster("c")
    a.give_up = lambda: gave_up.append("a")  # type: ignore[attr-defined]
    c.give_up = lambda: gave_up.append("c")  # type: ignore[attr-defined]
    FailoverStore([("a", a), ("b", b), ("c", c)], Clock()).give_up()
    assert gave_up == ["a", "c"]


def test_a_hedged_call_whose_first_master_fails_last_waits_for_the_check_under_way() -> None:
    """Handed on after ``failover_after`` while the next master is being checked again, a call whose
    first master then fails does not fail with it: it waits for the check and goes to the master that
    passed it."""
    clock = Clock()
    silent: list[Deferred[str]] = []

    class Hung(Restartable):
        def put(self, url: str) -> Deferred[str]:
            self.calls.append(("put", url))
            silent.append(Deferred())
            return silent[-1]

    a, b = Hung("a", feed=False), Restartable("b", feed=False)
    store = _checked_store(a, b, clock=clock)
    result_of(store.get("k0"))  # both checked: they pass (PostgreSQL)
    put = store.put("https://example.org/")
    if has_fired(put):  # round robin gave it to b: the next one goes to a first
        put = store.put("https://example.org/")
    assert not has_fired(put) and len(silent) == 1
    b.generation += 1  # b's connection idled out: checked again, and its check is slow
    b.hold = True
    clock.advance(1.0)  # failover_after: handed on, b skipped, its check under way
    assert b.held and not has_fired(put)
    silent[0].errback(MasterUnreachable("the master is unreachable", detail="a reset"))
    assert not has_fired(put), "waits for b's check rather than failing with a"
    b.held[-1].errback(InvalidURL("this store has no change feed"))  # b passes
    assert result_of(put) == "k"


class _Stoppable(Restartable):
    """A master's store with RemoteStore's ``give_up``: its calls held (a put, a check) fail with
    SlaveStopping then, and every later call at once."""

    def __init__(self, name: str) -> None:
        super().__init__(name, feed=False)
        self.silent: list[Deferred[Any]] = []
        self.hang_puts = False
        self.given_up = False

    def put(self, url: str) -> Deferred[str]:
        if self.given_up:
            return fail(slave_stopping())
        if self.hang_puts:
            self.calls.append(("put", url))
            self.silent.append(Deferred())
            return self.silent[-1]
        return super().put(url)

    def call(self, method: str, *params: object) -> Deferred[object]:
        if self.given_up:
            return fail(slave_stopping())
        return super().call(method, *params)

    def give_up(self) -> None:
        self.given_up = True
        held, self.held, self.silent = self.held + self.silent, [], []
        for call in held:
            if not call.called:
                call.errback(slave_stopping())


def test_a_call_waiting_for_a_check_when_the_slave_gives_up_is_answered_as_stopping(
    log_events: LogCapture,
) -> None:
    """Review 39: a put whose first master failed waits for the next one's check under way; the
    stop gives up. The call is ended by the stop, not by its masters: SlaveStopping, and nothing
    of the masters is logged after the stop's own line."""
    clock = Clock()
    a, b = _Stoppable("a"), _Stoppable("b")
    slave = ProxyStore(FailoverStore([("a", a), ("b", b)], clock, check=shares_a_database), clock)
    result_of(slave.get("k0"))  # both checked, both pass
    a.hang_puts = True
    put = slave.put("https://example.org/")
    if has_fired(put):  # round robin gave it to b: the next one goes to a first
        put = slave.put("https://example.org/x")
    assert not has_fired(put) and len(a.silent) == 1
    b.generation += 1
    b.hold = True
    clock.advance(1.0)  # handed on: b being checked again
    a.silent.pop().errback(MasterUnreachable("the master is unreachable", detail="a reset"))
    assert not has_fired(put), "waits for b's check"
    slave.drain(10.0)
    clock.advance(10.0)
    assert failure_of(put).check(SlaveStopping)
    lines = log_events.messages()
    assert len(lines[next(i for i, m in enumerate(lines) if "Stopping with" in m) :]) == 1, lines


def test_a_call_given_up_before_it_would_be_handed_on_says_nothing_of_its_master(
    log_events: LogCapture,
) -> None:
    """A miss made half a second before the stop gives up (before ``failover_after`` hands it on):
    answered SlaveStopping, no "does not answer" logged, no master passed over for the stop."""
    clock = Clock()
    a = RemoteStore(Hanging(), RPC_URL, clock, timeout=30.0)
    b = RemoteStore(Hanging(), RPC_URL.replace("8081", "8082"), clock, timeout=30.0)
    failover = FailoverStore([("a", a), ("b", b)], clock)
    store = ProxyStore(failover, clock)
    miss = store.get("k0")
    clock.advance(0)
    store.drain(0.5)
    clock.advance(0.5)
    assert failure_of(miss).check(SlaveStopping)
    assert not [m for m in log_events.messages() if "does not answer" in m]
    assert failover.up() == ["a", "b"]


def test_a_failure_after_the_call_is_over_hands_it_to_no_other_master() -> None:
    """Review 39 (older than it): a master failing after the call was answered elsewhere, or after
    its caller gave up, handed the call on to the next master all the same (a put made twice)."""
    held: dict[str, Deferred[str]] = {}
    clock = Clock()
    a, b, c = HeldMaster("a", held), HeldMaster("b", held), FakeMaster("c")
    failover = FailoverStore([("a", a), ("b", b), ("c", c)], clock)
    put = failover.put("https://x/")
    clock.advance(1.0)  # handed on to b
    assert set(held) == {"a", "b"}
    put.cancel()
    failure_of(put)
    held["a"].errback(slave_stopping())
    held["b"].errback(MasterUnreachable("the master is unreachable", detail="a reset"))
    assert c.calls == [], "not handed on"
