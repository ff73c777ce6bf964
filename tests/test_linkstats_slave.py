"""A slave's link statistics (``/KEY+``, ``GET /api/v1/links/KEY``) ask the master as a miss does:
failing fast while the master is down (review 33: each waited the whole ``--rpc-timeout``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from goto_tw.clicks import ClickBook, ClickCounter, ClickForwarder, ClickTotals
from goto_tw.errors import DISABLED_MESSAGE, KeyDisabled, KeyNotFound, MasterUnreachable
from goto_tw.linkstats import MasterLinkStats, RemoteLinkStats
from goto_tw.proxystore import ProxyStore
from goto_tw.store import URLStore
from tests.fakes import FakeMaster
from tests.helpers import failure_of, has_fired, result_of


def test_stats_fail_fast_while_the_master_is_down_and_probe_when_it_is_time() -> None:
    clock = Clock()
    master = FakeMaster()
    store = ProxyStore(master, clock, retry_interval=1.0)
    asked: list[Deferred[Any]] = []

    def call(method: str, *params: object) -> Deferred[Any]:
        answer: Deferred[Any] = Deferred()
        asked.append(answer)
        return answer

    forwarder = ClickForwarder(ClickCounter(), lambda batch: succeed(True), clock)
    stats = RemoteLinkStats(store, call, forwarder)
    missing = store.get("k")
    master.fail(MasterUnreachable("connection refused"))
    assert failure_of(missing).check(MasterUnreachable) and not store.master_reachable

    assert failure_of(stats.stats("k")).check(MasterUnreachable), "answered at once, not at the timeout"
    assert asked == [], "nothing sent to a master known to be down"
    clock.advance(1)
    probing = stats.stats("k")
    assert len(asked) == 1 and not has_fired(probing), "the one probe, when it is time"
    assert failure_of(stats.stats("k")).check(MasterUnreachable), "others fail fast while it is out"
    asked[0].callback({"clicks": 3.0})
    assert result_of(probing) == {"clicks": 3, "created": None}
    assert store.master_reachable


def test_stats_go_to_a_master_that_is_up() -> None:
    """With the master up, the call goes straight through and its answer is checked as before."""
    store = ProxyStore(FakeMaster(), Clock())

    def call(method: str, *params: object) -> Deferred[Any]:
        assert (method, params) == ("Store.Stats", ("k",))
        return succeed({"clicks": 1.0, "created": 5.0})

    forwarder = ClickForwarder(ClickCounter(), lambda batch: succeed(True), Clock())
    stats = RemoteLinkStats(store, call, forwarder)
    assert result_of(stats.stats("k")) == {"clicks": 1, "created": 5.0}


def test_stats_fail_fast_while_the_master_is_down_even_with_a_click_batch_on_its_way() -> None:
    """Review 34's second read: a question waits for a batch of clicks on its way (so the count never
    goes back), but not while the master is known down: then it fails at once, as before."""
    clock = Clock()
    master = FakeMaster()
    store = ProxyStore(master, clock, retry_interval=1.0)
    batches: list[Deferred[Any]] = []

    def send(batch: dict[str, int]) -> Deferred[Any]:
        answer: Deferred[Any] = Deferred()  # a master that does not answer: until --rpc-timeout
        batches.append(answer)
        return answer

    counter = ClickCounter()
    forwarder = ClickForwarder(counter, send, clock)
    forwarder.startService()
    stats = RemoteLinkStats(store, lambda *params: Deferred(), forwarder)
    clock.advance(0.5)
    missing = store.get("k")
    master.fail(MasterUnreachable("connection refused"))
    assert failure_of(missing).check(MasterUnreachable) and not store.master_reachable
    counter.click("k")  # a cached redirect meanwhile
    clock.advance(0.5)  # the batch leaves; the next probe is not due for another half second
    assert len(batches) == 1, "the batch is on its way"
    assert failure_of(stats.stats("k")).check(MasterUnreachable), "at once, not after the batch"
    batches[0].errback(MasterUnreachable("timed out"))
    forwarder.stopService()


def test_a_link_whose_stats_say_disabled_stops_redirecting_on_the_slave_at_once() -> None:
    """Review 35: within the change feed's window a slave's info page and API called a just-disabled
    link non-existent (404, the master's Stats answered "unknown key") while its redirect went on
    (302). The master answers 410 now, and the slave drops the pair from its cache on hearing it."""
    master = FakeMaster()
    store = ProxyStore(master, Clock())
    cached = store.get("k")
    master.answer("https://a.example/")
    assert result_of(cached) == "https://a.example/" and store.lookup("k") == "https://a.example/"

    def call(method: str, *params: object) -> Deferred[Any]:
        return fail(KeyDisabled(DISABLED_MESSAGE))

    forwarder = ClickForwarder(ClickCounter(), lambda batch: succeed(True), Clock())
    stats = RemoteLinkStats(store, call, forwarder)
    assert failure_of(stats.stats("k")).check(KeyDisabled)
    assert store.lookup("k") is None
    assert failure_of(store.get("k")).check(KeyDisabled), "410 here, without asking the master"


def test_a_masters_stats_of_a_disabled_link_are_410_not_404(tmp_path: Path) -> None:
    """Review 35: the master's ``Store.Stats`` of a disabled key said "no link is stored" (404)."""
    store = URLStore({"k": "https://a.example/"}, disabled={"k": 1_790_000_000})
    book = ClickBook(str(tmp_path / "clicks"), ClickTotals(), Clock(), fsync=False, run_in_thread=None)
    stats = MasterLinkStats(store, store, book)
    assert failure_of(stats.stats("k")).check(KeyDisabled)
    assert failure_of(stats.stats("nope")).check(KeyNotFound)


def test_a_look_up_on_its_way_when_the_stats_say_disabled_is_not_cached() -> None:
    """Review 35, final read: the answer to a look-up sent before the slave heard "disabled" (from
    ``Store.Stats``) may predate it: passed on, never cached."""
    master = FakeMaster()
    store = ProxyStore(master, Clock())
    on_its_way = store.get("k")
    store.note_disabled("k")
    master.answer("https://a.example/")
    assert result_of(on_its_way) == "https://a.example/"
    assert store.lookup("k") is None
    assert failure_of(store.get("k")).check(KeyDisabled)
