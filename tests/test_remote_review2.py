"""Tests of the second review's slave-side findings: a click batch travels alone, never in the
multicall of look-ups and adds (item 6); a slave stops asking a master for what it does not keep:
its change feed, its click counts (item 9); one Accept rule on both paths (item 14)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.web.http_headers import Headers

from goto_tw import remote
from goto_tw.coherence import NO_FEED_RETRY_SECONDS, CacheCoherence
from goto_tw.errors import InvalidURL, NotKept, StoreUnavailable
from goto_tw.metrics import Metrics
from goto_tw.negotiation import head_prefers_html
from goto_tw.remote import GATHER_IN_FLIGHT, MAX_IN_FLIGHT
from goto_tw.rpc import RPCResource
from goto_tw.store import URLStore
from goto_tw.tap import Options, make_slave
from tests.conftest import LogCapture
from tests.helpers import failure_of, has_fired, result_of
from tests.test_remote import Held, Link, _at_rpc2, _calls_in, gathering_full, method_of

# --- item 6 ---------------------------------------------------------------------------------------


def test_a_call_alone_is_its_own_request_and_a_slow_one_holds_up_nothing() -> None:
    """Look-ups made in the same turn as a click batch travel without it; while the master sits
    on the batch (a slow click write), the look-ups are answered."""
    store = URLStore({"0": "http://zero.example/"})
    held = Held(store)
    link = Link(_at_rpc2(held))
    gets = [link.remote.get("0") for _ in range(3)]
    clicks = link.remote.call_alone("Store.Clicks", {"0": 2})
    more = link.remote.get("0")
    link.settle()
    bodies = [request.content.getvalue() for request in held.held]  # type: ignore[union-attr]
    methods = sorted(method_of(body) for body in bodies)
    assert methods == ["Store.Clicks", "Store.Get", "system.multicall"], methods
    clicks_request = next(r for r in held.held if method_of(r.content.getvalue()) == "Store.Clicks")  # type: ignore[union-attr]
    for request in [r for r in held.held if r is not clicks_request]:
        held.held.remove(request)
        held.held.insert(0, request)
        held.release()
        link.settle()
    assert [result_of(call) for call in (*gets, more)] == ["http://zero.example/"] * 4
    assert not has_fired(clicks)
    held.release()
    link.settle()
    assert failure_of(clicks).check(NotKept)  # this master keeps no click book


def test_calls_alone_keep_the_queue_bounds() -> None:
    """A call that goes alone waits for a request slot like any other, and is answered."""
    store = URLStore({"0": "http://zero.example/"})
    held = Held(store)
    link = Link(_at_rpc2(held))
    from goto_tw.remote import MAX_IN_FLIGHT

    for _ in range(MAX_IN_FLIGHT):
        link.remote.call_alone("Store.Get", "0")
        link.settle()
    alone = link.remote.call_alone("Store.Get", "0")
    link.settle()
    assert len(held.held) == MAX_IN_FLIGHT and not has_fired(alone)
    while held.held:
        held.release()
        link.settle()
    assert result_of(alone) == "http://zero.example/"


def test_a_call_alone_passes_look_ups_that_wait_for_a_batch_slot() -> None:
    """With GATHER_IN_FLIGHT batches on their way, a look-up waits for one of them; a click batch
    made after it goes at once, while a request slot is free (it waited behind the look-up before),
    and the look-up still waits, then goes and is answered."""
    held, link, _ = gathering_full()
    waiting = link.remote.get("0")
    link.settle()
    assert len(held.held) == GATHER_IN_FLIGHT, "the look-up waits for a batch to be answered"
    clicks = [link.remote.call_alone("Store.Clicks", {"0": 1})]
    link.settle()
    assert len(held.held) == GATHER_IN_FLIGHT + 1
    assert method_of(held.held[-1].content.getvalue()) == "Store.Clicks"  # type: ignore[union-attr]
    clicks += [link.remote.call_alone("Store.Clicks", {"0": 1}) for _ in range(2)]
    link.settle()
    assert len(held.held) == MAX_IN_FLIGHT, "calls alone still keep to MAX_IN_FLIGHT"
    assert not has_fired(waiting)
    while held.held:
        held.release()
        link.settle()
    assert result_of(waiting) == "http://zero.example/"
    assert all(failure_of(click).check(NotKept) for click in clicks)


def test_a_call_alone_among_many_waiting_calls_lets_no_small_batch_past_the_gathering_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With GATHER_IN_FLIGHT batches on their way, a look-up, a click batch and a full batch's worth of
    look-ups after it wait: the click batch goes, then the full batch (full batches do not wait); the
    one look-up before the click batch is no full batch and waits for a batch to be answered. (The
    queue's length counted the calls on both sides of the click batch as one batch: the lone look-up
    left as a third batch, and took the last slot the full batch needed.)"""
    monkeypatch.setattr(remote, "MAX_BATCH_CALLS", 4)
    held, link, calls = gathering_full()
    calls.append(link.remote.get("0"))
    clicks = link.remote.call_alone("Store.Clicks", {"0": 1})
    calls += [link.remote.get("0") for _ in range(4)]
    link.settle()
    assert len(held.held) == MAX_IN_FLIGHT
    sent = [(method_of(r.content.getvalue()), _calls_in(r)) for r in held.held[GATHER_IN_FLIGHT:]]  # type: ignore[union-attr]
    assert sent == [("Store.Clicks", 1), ("system.multicall", 4)], sent
    while held.held:
        held.release()
        link.settle()
    assert [result_of(call) for call in calls] == ["http://zero.example/"] * len(calls)
    assert failure_of(clicks).check(NotKept)


class Recorder:
    """An HTTP client for the slave's wiring that records each request body and never answers."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def post(self, url: str, /, *, data: bytes, headers: Headers) -> Deferred[Any]:
        self.bodies.append(data)
        return Deferred()


def test_the_slave_sends_its_clicks_alone() -> None:
    """The slave's wiring: the click forwarder's batch is a request of its own, not a part of the
    multicall carrying the look-ups made in the same turn."""
    clock, http = Clock(), Recorder()
    options = Options()
    options.parseOptions(["--master", "127.0.0.1:8081"])
    parent = MultiService()
    store, counter, _ = make_slave(options, clock, parent, Metrics("slave"), http)
    parent.startService()
    counter.click("abc")
    clock.callLater(1, store.get, "zz")  # a look-up in the turn of the forwarder's tick
    clock.advance(1)
    methods = [method_of(body) for body in http.bodies]
    assert "Store.Clicks" in methods, methods
    for body in http.bodies:
        if method_of(body) == "system.multicall":
            assert b"Store.Clicks" not in body


# --- item 9 ---------------------------------------------------------------------------------------


def test_a_master_without_a_click_book_answers_not_kept() -> None:
    """Fault 8001 (no such method, or nothing kept for it) is NotKept on the slave, not a 503."""
    link = Link(_at_rpc2(RPCResource(URLStore(), None)))
    call = link.remote.call("Store.Clicks", {"a": 1})
    link.settle()
    failure = failure_of(call)
    assert failure.check(NotKept) and not failure.check(StoreUnavailable)


class Feedless:
    """A cache for the poller, and a master whose every Changes call is refused as a PostgreSQL
    master refuses it."""

    def __init__(self) -> None:
        self.calls = 0
        self.master_reachable = True

    def forget(self, keys: list[str]) -> None:
        pass

    def forget_all(self) -> None:
        pass

    def call(self, method: str, *params: Any) -> Deferred[Any]:
        self.calls += 1
        answer: Deferred[Any] = Deferred()
        answer.errback(InvalidURL("this store has no change feed"))
        return answer


def test_the_poller_stops_asking_a_master_without_a_change_feed(log_events: LogCapture) -> None:
    """Refused (not unreachable): logged once, asked again only after a long pause."""
    clock, master = Clock(), Feedless()
    poller = CacheCoherence(master.call, master, clock)
    poller.startService()
    for _ in range(int(NO_FEED_RETRY_SECONDS) - 1):
        clock.advance(1)
    assert master.calls == 1
    clock.advance(1)
    assert master.calls == 2
    for _ in range(10 * int(NO_FEED_RETRY_SECONDS)):
        clock.advance(1)
    assert master.calls == 12, "once every NO_FEED_RETRY_SECONDS"
    assert sum("no change feed" in m for m in log_events.messages()) == 1, "logged once"
    poller.stopService()


def test_a_master_back_from_an_outage_is_asked_for_its_feed_at_once() -> None:
    """Review 35: after one refusal a slave left the feed alone for 300 s, even when a file master
    (with a feed) had replaced the PostgreSQL one at the same address: a link disabled there kept
    redirecting here. A master that comes back from an outage is asked again at once."""
    clock, master = Clock(), Feedless()
    poller = CacheCoherence(master.call, master, clock)
    checks: list[Deferred[bool]] = []

    def check_master() -> Deferred[bool]:
        checks.append(Deferred())
        return checks[-1]

    master.check_master = check_master  # type: ignore[attr-defined]
    poller.startService()
    assert master.calls == 1
    master.master_reachable = False  # the master goes away (restarted)
    clock.advance(1)
    assert len(checks) == 1
    master.master_reachable = True
    checks[0].callback(True)
    assert master.calls == 2, "asked for the feed at once, not after the quiet period"
    poller.stopService()


def test_a_master_without_a_feed_is_not_announced_again_after_each_outage(log_events: LogCapture) -> None:
    """Review 35's second read: asking again at once after an outage logged the refusal again each
    time (one line per flap of a master without a feed). Once, until a feed answers."""
    clock, master = Clock(), Feedless()
    poller = CacheCoherence(master.call, master, clock)

    def back() -> Deferred[bool]:
        master.master_reachable = True
        return succeed(True)

    master.check_master = back  # type: ignore[attr-defined]
    poller.startService()
    for _ in range(3):
        master.master_reachable = False
        clock.advance(1)  # checked, back, asked at once: refused again
    assert master.calls == 4
    assert sum("no change feed" in m for m in log_events.messages()) == 1
    poller.stopService()


def test_the_poller_keeps_polling_through_an_outage() -> None:
    """An unreachable master is no refusal: polling goes on every second."""
    clock = Clock()
    calls: list[int] = []

    def call(method: str, *params: Any) -> Deferred[Any]:
        calls.append(1)
        answer: Deferred[Any] = Deferred()
        answer.errback(StoreUnavailable("down"))
        return answer

    poller = CacheCoherence(call, Feedless(), clock)
    poller.startService()
    for _ in range(5):
        clock.advance(1)
    assert len(calls) == 6
    poller.stopService()


# --- item 14 (Accept) -----------------------------------------------------------------------------


def test_the_fast_path_reads_the_last_accept_as_twisted_web_does() -> None:
    assert head_prefers_html(b"GET /add HTTP/1.1\r\nAccept: */*\r\nAccept: text/html\r\n\r\n")
    assert not head_prefers_html(b"GET /add HTTP/1.1\r\nAccept: text/html\r\naccept: */*\r\n\r\n")


def _accept_as_twisted_web_reads_it(head: bytes) -> bytes | None:
    """The ``Accept`` value twisted.web's own parser gives a resource for ``head``."""
    from twisted.internet.testing import StringTransport
    from twisted.web.http import HTTPChannel, Request

    seen: list[bytes | None] = []

    class Recording(Request):
        def process(self) -> None:
            seen.append(self.getHeader(b"accept"))
            self.finish()

    channel = HTTPChannel()
    channel.requestFactory = Recording
    channel.makeConnection(StringTransport())
    channel.dataReceived(head)
    return seen[0]


@pytest.mark.parametrize(
    "value",
    [
        b"text/html",
        b"text/html" + b" " * 1020,
        b"text/html \t\x0b\x0c",
        b"*/*" + b" " * 2000,
        b"text/html" + b" " * 1016,
    ],
)
def test_the_fast_path_strips_the_accept_value_as_twisted_web_does(value: bytes) -> None:
    """Review 33: trailing white space counted against the 1,024-byte bound on the fast path only."""
    head = b"GET /add HTTP/1.1\r\nHost: h\r\nAccept: " + value + b"\r\n\r\n"
    from goto_tw.negotiation import prefers_html

    assert head_prefers_html(head) == prefers_html(_accept_as_twisted_web_reads_it(head))
