"""ProxyStore: the slave's cache over a fake master driven by hand and a Clock."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from zope.interface import implementer
from zope.interface.verify import verifyObject

from goto_tw.errors import InvalidURL, KeyDisabled, KeyNotFound, MasterUnreachable, StoreUnavailable
from goto_tw.interfaces import ILinkAdder, ILocalLookup, IMasterHealth, IURLStore
from goto_tw.keys import HEALTH_PROBE_KEY
from goto_tw.proxystore import BAD_ANSWER_LOG_INTERVAL, ProxyStore
from tests.conftest import LogCapture
from tests.counting import CountingDeferred
from tests.fakes import FakeMaster
from tests.helpers import failure_of, has_fired, result_of


def make(cache_size: int = 100, negative_ttl: float = 1.0) -> tuple[ProxyStore, FakeMaster, Clock]:
    master, clock = FakeMaster(), Clock()
    return ProxyStore(master, clock, cache_size=cache_size, negative_ttl=negative_ttl), master, clock


def mark_master_down(store: ProxyStore, master: Any, error: MasterUnreachable) -> None:
    """A miss that ``master`` fails with ``error``: ``store`` marks the master down."""
    store.get("x").addErrback(lambda _: None)
    master.fail(error)


def test_provides_the_store_interfaces() -> None:
    """The front end cannot tell a slave's store from a master's; ops sees its master's health."""
    store = make()[0]
    assert verifyObject(IURLStore, store)
    assert verifyObject(ILocalLookup, store)
    assert verifyObject(IMasterHealth, store)


def test_miss_asks_the_master_then_hits_the_cache() -> None:
    """The first get goes to the master; the next is answered locally."""
    store, master, _ = make()
    first = store.get("k")
    assert [(m, a) for m, a, _ in master.calls] == [("get", "k")]
    master.answer("http://a/")
    assert result_of(first) == "http://a/"
    assert result_of(store.get("k")) == "http://a/"
    assert master.calls == []
    assert (store.stats.hits, store.stats.misses) == (1, 1)


def test_concurrent_misses_cost_one_master_call() -> None:
    """Many requests for one uncached key wait on a single call to the master."""
    store, master, _ = make()
    waiting = [store.get("k") for _ in range(10)]
    assert len(master.calls) == 1
    master.answer("http://a/")
    assert [result_of(d) for d in waiting] == ["http://a/"] * 10


def test_put_goes_to_the_master_and_caches_the_pair() -> None:
    """put forwards to the master; the confirmed pair is then served from the cache."""
    store, master, _ = make()
    put = store.put("http://a/")
    assert [(m, a) for m, a, _ in master.calls] == [("put", "http://a/")]
    master.answer("7")
    assert result_of(put) == "7"
    assert result_of(store.get("7")) == "http://a/"
    assert master.calls == []


def test_concurrent_puts_of_one_url_cost_one_call() -> None:
    """Double-clicked adds of the same URL make one call to the master."""
    store, master, _ = make()
    puts = [store.put("http://a/"), store.put("http://a/")]
    assert len(master.calls) == 1
    master.answer("7")
    assert [result_of(d) for d in puts] == ["7", "7"]


def test_invalid_url_is_refused_without_asking_the_master() -> None:
    """A slave validates locally: a bad URL costs the master nothing."""
    store, master, _ = make()
    assert failure_of(store.put("nope")).check(InvalidURL)
    assert master.calls == []


def test_cache_is_bounded_lru() -> None:
    """The cache holds cache_size pairs, evicting the least recently used."""
    store, master, _ = make(cache_size=2)
    for key in ("a", "b"):
        store.get(key)
        master.answer(f"http://{key}/")
    result_of(store.get("a"))  # a is now more recent than b
    store.get("c")
    master.answer("http://c/")
    assert store.count() == 2
    assert store.stats.evictions == 1
    assert result_of(store.get("a")) == "http://a/"
    store.get("b")
    assert [(m, a) for m, a, _ in master.calls] == [("get", "b")], "b was evicted, so it is asked again"


def test_unknown_key_is_remembered_briefly() -> None:
    """A flood of lookups for one unknown key costs one master call per negative_ttl."""
    store, master, clock = make(negative_ttl=1.0)
    first = store.get("nope")
    master.fail(KeyNotFound("no"))
    assert failure_of(first).check(KeyNotFound)
    for _ in range(100):
        assert failure_of(store.get("nope")).check(KeyNotFound)
    assert master.calls == []
    clock.advance(1.0)
    later = store.get("nope")
    assert len(master.calls) == 1, "after negative_ttl the master is asked again"
    master.answer("http://added-elsewhere/")
    assert result_of(later) == "http://added-elsewhere/"


def test_an_unknown_key_forgotten_is_asked_for_again_at_once() -> None:
    """Review 35 (mutation audit): ``forget`` drops what is remembered unknown too, not only what is
    cached: a key the change feed names has changed, and a 404 remembered for it may be stale."""
    store, master, _ = make(negative_ttl=60.0)
    first = store.get("nope")
    master.fail(KeyNotFound("no"))
    failure_of(first)
    store.forget(["nope"])
    again = store.get("nope")
    assert len(master.calls) == 1, "asked again, not answered 404 from memory"
    master.answer("http://now-there/")
    assert result_of(again) == "http://now-there/"


def test_a_key_the_master_answers_disabled_is_remembered_for_good_within_a_bound() -> None:
    """Disabling is for ever: the slave asks the master once, then answers 410 itself; it keeps at
    most cache_size such keys (the oldest is asked again)."""
    store, master, clock = make(cache_size=2)
    first = store.get("gone")
    master.fail(KeyDisabled("disabled"))
    assert failure_of(first).check(KeyDisabled)
    clock.advance(3600)
    for _ in range(10):
        assert failure_of(store.get("gone")).check(KeyDisabled)
    assert master.calls == []
    for key in ("gone2", "gone3"):
        store.get(key).addErrback(lambda _: None)
        master.fail(KeyDisabled("disabled"))
    asked_again = store.get("gone")
    assert [(m, a) for m, a, _ in master.calls] == [("get", "gone")], "the oldest left the bound"
    master.fail(KeyDisabled("disabled"))
    assert failure_of(asked_again).check(KeyDisabled)


def test_put_makes_a_remembered_unknown_key_known() -> None:
    """A key this slave learned was unknown becomes visible as soon as it adds it itself."""
    store, master, _ = make()
    store.get("5").addErrback(lambda _: None)
    master.fail(KeyNotFound("no"))
    store.put("http://x/")
    master.answer("5")
    assert result_of(store.get("5")) == "http://x/"


def test_master_errors_are_not_cached() -> None:
    """Nothing the master did not confirm is cached: an error is asked again next time."""
    store, master, _ = make()
    first = store.get("k")
    master.fail(StoreUnavailable("disk"))
    assert failure_of(first).check(StoreUnavailable)
    second = store.get("k")
    assert len(master.calls) == 1
    master.answer("http://a/")
    assert result_of(second) == "http://a/"


def test_master_down_cached_keys_still_answer_others_fail_fast(log_events: LogCapture) -> None:
    """With the master unreachable: cached keys redirect, the rest fail at once, logged once."""
    store, master, _ = make()
    store.get("cached")
    master.answer("http://cached/")
    first = store.get("x")
    master.fail(MasterUnreachable("connection refused"))
    assert failure_of(first).check(MasterUnreachable)
    for _ in range(50):
        assert failure_of(store.get("y")).check(MasterUnreachable)
        assert failure_of(store.put("http://new/")).check(MasterUnreachable)
        assert result_of(store.get("cached")) == "http://cached/"
    assert master.calls == [], "while the master is down, requests do not pile onto it"
    assert not store.master_reachable
    down_lines = [m for m in log_events.messages() if "unreachable" in m]
    assert len(down_lines) == 1


def test_a_request_for_the_probes_own_key_fails_fast_too(log_events: LogCapture) -> None:
    """While a probe of a down master is in flight, a request for the very key (or URL) it asks for
    fails fast like any other, instead of joining the probe and waiting as long as the master takes
    (up to ``--rpc-timeout`` against one that accepts connections and never answers)."""
    store, master, clock = make()
    mark_master_down(store, master, MasterUnreachable("refused"))
    clock.advance(1.0)
    probe = store.get("y")
    assert len(master.calls) == 1
    assert failure_of(store.get("y")).check(MasterUnreachable), "not joined to the probe"
    master.fail(MasterUnreachable("still refused"))
    assert failure_of(probe).check(MasterUnreachable)
    clock.advance(1.0)
    probe = store.put("http://new.example/")
    assert failure_of(store.put("http://new.example/")).check(MasterUnreachable), "not joined either"
    assert len(master.calls) == 1
    master.answer("7")
    assert result_of(probe) == "7"
    assert store.master_reachable


def test_recovers_by_itself_with_one_probe_per_interval(log_events: LogCapture) -> None:
    """After retry_interval one call probes the master; when it answers, everything flows again."""
    store, master, clock = make()
    mark_master_down(store, master, MasterUnreachable("refused"))
    clock.advance(1.0)
    probe = store.get("y")
    assert len(master.calls) == 1
    assert failure_of(store.get("z")).check(MasterUnreachable), "one probe at a time"
    master.fail(MasterUnreachable("still refused"))
    assert failure_of(probe).check(MasterUnreachable)
    clock.advance(1.0)
    probe = store.get("y")
    master.answer("http://y/")
    assert result_of(probe) == "http://y/"
    assert store.master_reachable
    put = store.put("http://new/")
    assert not has_fired(put) and len(master.calls) == 1
    assert sum("unreachable" in m for m in log_events.messages()) == 1
    assert sum("answers again" in m for m in log_events.messages()) == 1


def test_waiter_that_gives_up_does_not_cancel_the_others() -> None:
    """A client that disconnects stops waiting; the shared call still answers the other clients."""
    store, master, _ = make()
    leaving, staying = store.get("k"), store.get("k")
    leaving.cancel()
    assert failure_of(leaving).check(CancelledError)
    master.answer("http://a/")
    assert result_of(staying) == "http://a/"


@pytest.mark.parametrize(
    "answer",
    [
        "http://a.example/\r\nSet-Cookie: session=stolen",
        "http://a.example/ spaced",
        "javascript:alert(1)",
        "https://bücher.example/",  # valid once converted to ASCII, but the master never sends that
        "",
        7,
        ["http://a.example/"],
    ],
)
def test_a_bad_url_from_the_master_is_a_503_logged_and_never_cached(
    answer: object, log_events: LogCapture
) -> None:
    """The master's answer crosses a trust boundary: a URL the slave would not accept itself, as it
    is, is refused with a 503 (one log line), never cached, never redirected to."""
    store, master, _ = make()
    first, second = store.get("k"), store.get("k")
    master.calls.pop(0)[2].callback(answer)  # type: ignore[arg-type]
    for waiter in (first, second):
        failure = failure_of(waiter)
        assert failure.check(StoreUnavailable) and not failure.check(MasterUnreachable)
        assert "\r" not in str(failure.value) and "Set-Cookie" not in str(failure.value)
    assert store.lookup("k") is None
    assert store.master_reachable
    assert sum("Bad answer from the master" in m for m in log_events.messages()) == 1
    again = store.get("k")
    master.answer("http://a.example/")
    assert result_of(again) == "http://a.example/"


@pytest.mark.parametrize("key", ["a\r\nLocation: http://evil.example/", "_goto", "", 5, "k" * 65])
def test_a_bad_key_from_the_master_is_a_503_and_never_cached(key: object) -> None:
    """A key the master answers for an add ends up in headers (the API's Location): it must be a key."""
    store, master, _ = make()
    put = store.put("http://a.example/")
    master.calls.pop(0)[2].callback(key)  # type: ignore[arg-type]
    assert failure_of(put).check(StoreUnavailable)
    assert store.count() == 0


def test_concurrent_health_checks_share_one_probe() -> None:
    """Many health checks at once cost the master one call."""
    store, master, _ = make()
    checks = [store.check_master() for _ in range(5)]
    assert [(m, a) for m, a, _ in master.calls] == [("get", HEALTH_PROBE_KEY)]
    master.fail(KeyNotFound("no"))
    assert [result_of(check) for check in checks] == [True] * 5


def test_a_cancelled_health_check_does_not_mark_a_down_master_up(log_events: LogCapture) -> None:
    """A load balancer that gives up on /_goto/health changes nothing: the master stays down, the
    probe goes on for the other checks, and only its real answer marks the master up."""
    store, master, _ = make()
    mark_master_down(store, master, MasterUnreachable("down", detail="refused"))
    assert not store.master_reachable
    leaving, staying = store.check_master(), store.check_master()
    leaving.cancel()
    assert failure_of(leaving).check(CancelledError)
    assert not store.master_reachable
    assert failure_of(store.get("y")).check(MasterUnreachable), "still failing fast"
    master.fail(MasterUnreachable("down", detail="still refused"))
    assert result_of(staying) is False
    assert not store.master_reachable
    again = store.check_master()
    master.fail(KeyNotFound("no"))
    assert result_of(again) is True
    assert store.master_reachable
    assert sum("unreachable" in m for m in log_events.messages()) == 1


def test_only_a_real_answer_marks_the_master_up() -> None:
    """A failure that did not come from the master (a caller's cancel, our own bug, a 503 of ours)
    leaves a down master down."""
    store, master, clock = make()
    mark_master_down(store, master, MasterUnreachable("down"))
    for error in (CancelledError(), RuntimeError("bug"), StoreUnavailable("busy")):
        clock.advance(1.0)
        probe = store.get("y")
        master.fail(error)
        failure_of(probe)
        assert not store.master_reachable, error


def test_fail_fast_answers_carry_the_human_message_of_the_outage() -> None:
    """While the master is down, the fast failures say what the first one said, not internals."""
    store, master, _ = make()
    mark_master_down(
        store, master, MasterUnreachable("the service cannot reach its store right now", detail="errno 111")
    )
    failure = failure_of(store.get("y"))
    assert str(failure.value) == "the service cannot reach its store right now"
    assert "111" not in str(failure.value)


def test_drain_waits_for_calls_in_flight_and_mutes_the_outage_log(log_events: LogCapture) -> None:
    """drain() fires once the master's calls are answered; a master lost during our own shutdown is
    logged at info level, not as an outage (error)."""
    store, master, _ = make()
    add, lookup = store.put("http://a.example/"), store.get("k")
    drained = store.drain(5.0)
    assert not has_fired(drained)
    master.answer("7")
    assert result_of(add) == "7"
    assert not has_fired(drained)
    master.fail(MasterUnreachable("gone", detail="connection lost"))
    failure_of(lookup)
    assert has_fired(drained)
    assert not [e for e in log_events.events if e.get("log_level") in (LogLevel.error, LogLevel.critical)]
    assert result_of(store.drain(5.0)) is None, "nothing in flight: at once"


def test_a_drain_that_gives_up_answers_what_is_left_and_what_comes_later(log_events: LogCapture) -> None:
    """Review 39: once a drain gives up on a master that does not answer, the calls still in flight
    are answered (the master's ``give_up``: a 503 each, and at once for every later call) before
    the stop goes on; the log says so, once. A drain that ends in time does not give up: the
    slave's last click batch still goes to the master after it."""
    store, master, clock = make()
    gave_up: list[bool] = []
    master.give_up = lambda: gave_up.append(True)  # type: ignore[attr-defined]
    lookup = store.get("k")
    drained = store.drain(5.0)
    clock.advance(4.9)
    assert not has_fired(drained) and gave_up == []
    clock.advance(0.1)
    assert has_fired(drained) and gave_up == [True]
    assert not has_fired(lookup), "the fake master itself answers nothing: its give_up is the answer"
    lines = [m for m in log_events.messages() if "still unanswered after 5 s: answering them 503" in m]
    assert len(lines) == 1
    in_time, in_time_master, _ = make()
    in_time_gave_up: list[bool] = []
    in_time_master.give_up = lambda: in_time_gave_up.append(True)  # type: ignore[attr-defined]
    assert result_of(in_time.drain(5.0)) is None and in_time_gave_up == []


def test_health_checks_during_an_outage_share_the_probe_in_flight() -> None:
    """While the master is down, a health check that comes while the one probe is in flight waits
    for that probe instead of asking the master itself, and gets its outcome."""
    store, master, clock = make()
    mark_master_down(store, master, MasterUnreachable("down"))
    clock.advance(1.0)
    probe = store.get("y")
    checks = [store.check_master() for _ in range(3)]
    assert len(master.calls) == 1, "the health checks cost the master no call of their own"
    master.answer("http://y/")
    assert result_of(probe) == "http://y/"
    assert [result_of(check) for check in checks] == [True] * 3
    assert store.master_reachable


def test_a_health_probe_of_a_down_master_is_the_one_probe() -> None:
    """While the master is down, a health check's call is the probe: requests meanwhile fail fast
    rather than sending a second call."""
    store, master, clock = make()
    mark_master_down(store, master, MasterUnreachable("down"))
    clock.advance(1.0)  # time for a probe: without the health check's, a request would send one
    check = store.check_master()
    assert [(m, a) for m, a, _ in master.calls] == [("get", HEALTH_PROBE_KEY)]
    assert failure_of(store.get("y")).check(MasterUnreachable)
    assert len(master.calls) == 1
    master.fail(MasterUnreachable("still down"))
    assert result_of(check) is False


def test_bad_answers_for_a_hot_key_log_once_per_interval(log_events: LogCapture) -> None:
    """A master answering garbage for a hot key does not flood the slave's log: one line per
    interval, saying how many were left out."""
    store, master, clock = make()
    for _ in range(20):
        request = store.get("k")
        master.calls.pop(0)[2].callback("javascript:alert(1)")
        failure_of(request)
    lines = [m for m in log_events.messages() if "Bad answer from the master" in m]
    assert len(lines) == 1
    clock.advance(BAD_ANSWER_LOG_INTERVAL)
    request = store.get("k")
    master.calls.pop(0)[2].callback("javascript:alert(1)")
    failure_of(request)
    lines = [m for m in log_events.messages() if "Bad answer from the master" in m]
    assert len(lines) == 2 and "19 more since the last line" in lines[1]


@implementer(IURLStore, ILinkAdder)
class CountingMaster(FakeMaster):
    """A FakeMaster with ``Store.Add``, whose answers count the callbacks the slave hangs on them."""

    def _call(self, method: str, argument: str) -> Deferred[str]:
        answer = CountingDeferred()
        self.calls.append((method, argument, answer))
        return answer

    def add(self, url: str, key: str | None = None) -> Deferred[tuple[str, bool]]:
        return self._call("add", url)  # type: ignore[return-value]


def make_counting() -> tuple[ProxyStore, CountingMaster, Clock]:
    master, clock = CountingMaster(), Clock()
    return ProxyStore(master, clock), master, clock


def test_a_miss_an_add_and_a_put_hang_two_callbacks_on_the_masters_answer() -> None:
    """While the master is up, the slave's bookkeeping of a call (drain tracking, the master's
    health, checking and caching the answer) is one callback on the master's answer, and the fan-out
    to the waiters one more: each callback costs every miss and add CPU (bench/slave_calls.py)."""
    store, master, _ = make_counting()
    calls: list[Deferred[Any]] = [
        store.get("k"),
        store.put("http://a.example/"),
        store.add("http://b.example/"),
    ]
    assert [answer.added for _, _, answer in master.calls] == [2, 2, 2]  # type: ignore[attr-defined]
    master.answer("http://k.example/")
    master.answer("7")
    master.calls.pop(0)[2].callback(("8", True))  # type: ignore[arg-type]
    assert [result_of(call) for call in calls] == ["http://k.example/", "7", ("8", True)]
    assert (store.lookup("k"), store.lookup("7"), store.lookup("8")) == (
        "http://k.example/",
        "http://a.example/",
        "http://b.example/",
    )


def test_an_add_made_before_a_forget_is_not_cached_even_for_a_waiter_that_came_after() -> None:
    """An answer to a call made before a forget may predate the change: it is passed on, never
    cached, also when the add that joined the call came after the forget."""
    store, master, _ = make_counting()
    before = store.add("http://a.example/")
    store.forget(["5"])
    after = store.add("http://a.example/")
    assert len(master.calls) == 1, "the second add joined the call in flight"
    master.calls.pop(0)[2].callback(("5", True))  # type: ignore[arg-type]
    assert result_of(before) == result_of(after) == ("5", True)
    assert store.lookup("5") is None


def test_a_bad_answer_to_an_add_fails_every_waiter_and_is_logged_once(log_events: LogCapture) -> None:
    """The master's answer to an add is checked once for the call: each waiter gets the 503, the
    log one line, nothing is cached."""
    store, master, _ = make_counting()
    adds = [store.add("http://a.example/") for _ in range(3)]
    master.calls.pop(0)[2].callback(("bad key\r\n", True))  # type: ignore[arg-type]
    assert all(failure_of(add).check(StoreUnavailable) for add in adds)
    assert sum("Bad answer from the master" in m for m in log_events.messages()) == 1
    assert store.count() == 0


def test_the_calls_of_an_up_master_are_tracked_for_drain_and_health() -> None:
    """The one callback does all the layers did: a call in flight holds drain back until answered
    (a value, a "no", or no answer at all), and an unanswered one marks the master down."""
    store, master, _ = make_counting()
    get, put, add = store.get("k"), store.put("http://a.example/"), store.add("http://b.example/")
    drained = store.drain(5.0)
    master.fail(KeyNotFound("no"))
    master.answer("7")
    assert not has_fired(drained) and store.master_reachable
    master.fail(MasterUnreachable("gone", detail="connection lost"))
    assert has_fired(drained)
    assert not store.master_reachable
    assert failure_of(get).check(KeyNotFound) and result_of(put) == "7"
    assert failure_of(add).check(MasterUnreachable)


def test_adds_while_the_master_is_down_fail_fast_and_the_probe_add_is_cached() -> None:
    """The layered path of a down master serves adds as look-ups: fail fast, then one add probes,
    and its checked answer is cached and marks the master up."""
    store, master, clock = make_counting()
    mark_master_down(store, master, MasterUnreachable("down"))
    assert failure_of(store.add("http://a.example/")).check(MasterUnreachable)
    assert master.calls == []
    clock.advance(1.0)
    probe = store.add("http://a.example/")
    assert [(m, a) for m, a, _ in master.calls] == [("add", "http://a.example/")]
    master.calls.pop(0)[2].callback(("5", True))  # type: ignore[arg-type]
    assert result_of(probe) == ("5", True)
    assert store.lookup("5") == "http://a.example/"
    assert store.master_reachable


@implementer(IURLStore, ILinkAdder)
class KeyedMaster(CountingMaster):
    """A CountingMaster whose calls record an add's custom key beside its URL."""

    def add(self, url: str, key: str | None = None) -> Deferred[tuple[str, bool]]:
        return self._call("add", f"{url} {key}")  # type: ignore[return-value]


def test_a_custom_key_reaches_the_master_also_when_its_add_is_the_probe() -> None:
    """Review of 1e44079: an add is made from ``master.add`` and its arguments, on the up path and
    as the probe of a down master; both pass the custom key (the probe path had no test with two
    arguments: one that passed the URL alone went unseen)."""
    master, clock = KeyedMaster(), Clock()
    store = ProxyStore(master, clock)
    up = store.add("http://a.example/", "mine")
    assert [(m, a) for m, a, _ in master.calls] == [("add", "http://a.example/ mine")]
    master.calls.pop(0)[2].callback(("mine", True))  # type: ignore[arg-type]
    assert result_of(up) == ("mine", True)
    mark_master_down(store, master, MasterUnreachable("down"))
    clock.advance(1.0)
    probe = store.add("http://b.example/", "other")
    assert [(m, a) for m, a, _ in master.calls] == [("add", "http://b.example/ other")]
    master.calls.pop(0)[2].callback(("other", True))  # type: ignore[arg-type]
    assert result_of(probe) == ("other", True)
    assert store.lookup("other") == "http://b.example/"
    assert store.master_reachable


def test_a_flapping_master_is_said_once_an_interval(log_events: LogCapture) -> None:
    """An operations audit (stop 41): a master out of descriptors closes new connections at once
    while a pooled one still answers, and its slave logged an outage and a recovery many times a
    second. Outages, and recoveries, are one line each an interval, with how many were left out;
    the slave's state follows every one of them all the same."""
    from goto_tw.proxystore import OUTAGE_LOG_INTERVAL

    store, master, clock = make()

    def outage(number: int) -> None:
        store.get(f"x{number}").addErrback(lambda _: None)
        master.fail(MasterUnreachable("refused"))

    for number in range(5):
        outage(number)
        assert not store.master_reachable
        clock.advance(1.0)
        probe = store.get(f"y{number}")
        master.answer("http://y/")
        assert result_of(probe) == "http://y/" and store.master_reachable
    clock.advance(OUTAGE_LOG_INTERVAL)
    outage(5)
    messages = log_events.messages()
    outages = [m for m in messages if "unreachable" in m]
    assert len(outages) == 2 and outages[1].endswith("(4 more outages since the last line)"), outages
    assert len([m for m in messages if "answers again" in m]) == 1


def test_a_master_that_flapped_then_stayed_down_is_said_down_last(log_events: LogCapture) -> None:
    """A hostile review (stop 42): down and back three times a second apart, then down for an
    hour: the outage left out by the throttle was never said, and the log's last line about the
    master said "answers again" for that hour. It is said once the interval ends."""
    store, master, clock = make()
    for number in range(3):
        store.get(f"x{number}").addErrback(lambda _: None)
        master.fail(MasterUnreachable("refused"))
        clock.advance(1.0)
        probe = store.get(f"y{number}")
        master.answer("http://y/")
        assert result_of(probe) == "http://y/"
        clock.advance(1.0)
    store.get("z").addErrback(lambda _: None)
    master.fail(MasterUnreachable("refused"))
    clock.advance(3600)
    said = [m for m in log_events.messages() if "unreachable" in m or "answers again" in m]
    assert "The master is unreachable" in said[-1], said
    assert len(said) == 3, said
