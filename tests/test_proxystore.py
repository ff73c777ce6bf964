"""ProxyStore: the slave's cache over a fake master driven by hand and a Clock."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from goto_tw.errors import InvalidURL, KeyNotFound, MasterUnreachable, StoreUnavailable
from goto_tw.interfaces import IURLStore
from goto_tw.proxystore import ProxyStore
from tests.conftest import LogCapture
from tests.helpers import failure_of, has_fired, result_of


@implementer(IURLStore)
class FakeMaster:
    """A master whose every call waits until the test answers it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Deferred[str]]] = []

    def get(self, key: str) -> Deferred[str]:
        return self._call("get", key)

    def put(self, url: str) -> Deferred[str]:
        return self._call("put", url)

    def count(self) -> int:
        return 0

    def lookup(self, key: str) -> str | None:
        return None

    def _call(self, method: str, argument: str) -> Deferred[str]:
        answer: Deferred[str] = Deferred()
        self.calls.append((method, argument, answer))
        return answer

    def answer(self, value: str) -> None:
        self.calls.pop(0)[2].callback(value)

    def fail(self, error: Exception) -> None:
        self.calls.pop(0)[2].errback(error)


def make(cache_size: int = 100, negative_ttl: float = 1.0) -> tuple[ProxyStore, FakeMaster, Clock]:
    master, clock = FakeMaster(), Clock()
    return ProxyStore(master, clock, cache_size=cache_size, negative_ttl=negative_ttl), master, clock


def test_provides_the_store_interface() -> None:
    """The front end cannot tell a slave's store from a master's."""
    assert verifyObject(IURLStore, make()[0])


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


def test_recovers_by_itself_with_one_probe_per_interval(log_events: LogCapture) -> None:
    """After retry_interval one call probes the master; when it answers, everything flows again."""
    store, master, clock = make()
    store.get("x").addErrback(lambda _: None)
    master.fail(MasterUnreachable("refused"))
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
    assert failure_of(leaving)
    master.answer("http://a/")
    assert result_of(staying) == "http://a/"
