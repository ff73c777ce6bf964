"""Misses on the fast path (issue 13): a key the store does not hold locally is answered on the fast
path itself, once the store answers, in request order; the requests after it stay on the fast path.

Every outcome (a redirect the master confirms, 404, 410, 503 with Retry-After, a bad answer, a bug)
is compared byte for byte, log line for log line and count for count with twisted.web's general path.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from goto_tw.errors import KeyDisabled, KeyNotFound, MasterUnreachable, StoreUnavailable
from goto_tw.fastpath import BUDGET, IFastResponder
from goto_tw.interfaces import IClickCounter, ILocalLookup, IURLStore
from goto_tw.metrics import Metrics
from goto_tw.proxystore import BAD_ANSWER_MESSAGE, ProxyStore
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from goto_tw.tap import make_root
from tests.conftest import LogCapture
from tests.fakes import FakeMaster, ManualLog
from tests.wire import Connection, goto_site

HIT = b"GET /abc HTTP/1.1\r\nHost: go.example\r\n\r\n"
MISS = b"GET /miss HTTP/1.1\r\nHost: go.example\r\n\r\n"
HEAD_MISS = b"HEAD /miss HTTP/1.1\r\nHost: go.example\r\n\r\n"
BOT_MISS = b"GET /miss HTTP/1.1\r\nUser-Agent: Slackbot 1.0\r\n\r\n"
ANSWER_DEADLINE = 30.0


def normalized(answer: bytes) -> bytes:
    """Dates differ with the clock, not with the path taken: blank them out."""
    return re.sub(rb"\r\nDate: [^\r]*\r\n", b"\r\nDate: -\r\n", answer)


@implementer(IClickCounter)
class Clicks:
    """Counts clicks per key."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def click(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1


class Slave:
    """A slave's site over a ProxyStore whose master answers when the test says so."""

    def __init__(self, fast: bool, clock: Clock | None = None) -> None:
        self.clock = clock if clock is not None else Clock()
        self.master = FakeMaster()
        self.store = ProxyStore(self.master, self.clock)
        self.store.get("abc")  # the master's answer fills the cache: "abc" is a hit from now on
        self.master.answer("https://a.example/x")
        self.clicks = Clicks()
        self.metrics = Metrics("slave")
        self.site = GotoSite(
            make_root(self.store, "go.example", self.metrics, clicks=self.clicks),
            self.metrics,
            reactor=self.clock,
            store=self.store if fast else None,
            host="go.example",
            clicks=self.clicks,
        )
        self.connection = Connection(self.site)

    def send(self, data: bytes) -> None:
        self.connection.send(data)

    def received(self) -> bytes:
        return normalized(self.connection.received())


def accounting(log_events: LogCapture, metrics: Metrics) -> tuple[Any, ...]:
    """What was logged and counted, in a form both paths can be compared by."""
    fields = [
        tuple(e[k] for k in ("client", "method", "path", "protocol", "status", "size", "route"))
        for e in log_events.events
        if e.get("log_namespace") == "goto.access"
    ]
    log_events.events.clear()
    return fields, dict(metrics.requests), metrics.redirects


OUTCOMES: dict[str, Any] = {
    "found": "https://m.example/found",
    "unknown": KeyNotFound("no link is stored under 'miss'"),
    "disabled": KeyDisabled("This link has been disabled."),
    "unreachable": MasterUnreachable("the link could not be looked up now", detail="refused"),
    "bad answer": StoreUnavailable(BAD_ANSWER_MESSAGE, detail="not XML-RPC"),
}


@pytest.mark.parametrize("outcome", OUTCOMES.values(), ids=OUTCOMES.keys())
@pytest.mark.parametrize("request_bytes", [MISS, HEAD_MISS, BOT_MISS], ids=["GET", "HEAD", "bot"])
def test_a_miss_answers_what_twisted_web_answers(
    outcome: Any, request_bytes: bytes, log_events: LogCapture
) -> None:
    """A miss, whatever the master answers, gets the general path's bytes, log line, counts and
    clicks; and a hit pipelined behind it waits for it (in order)."""
    results = []
    for fast in (True, False):
        slave = Slave(fast)
        slave.send(request_bytes + HIT)
        assert slave.received() == b"", "nothing may be answered before the miss"
        if isinstance(outcome, str):
            slave.master.answer(outcome)
        else:
            slave.master.fail(outcome)
        answer = slave.received()
        results.append((answer, accounting(log_events, slave.metrics), slave.clicks.counts))
    assert results[0] == results[1]
    assert results[0][0].count(b"HTTP/1.1 ") == 2
    assert results[0][0].endswith(b"Location: https://a.example/x\r\nContent-Length: 0\r\n\r\n")


def test_after_a_miss_the_connection_stays_on_the_fast_path() -> None:
    """The request after a miss, pipelined or sent later, is answered by the fast path: twisted.web
    never sees a request on this connection."""
    slave = Slave(fast=True)
    protocol: Any = slave.connection.protocol
    slave.send(MISS + HIT)
    slave.master.fail(KeyNotFound("no link is stored under 'miss'"))
    slave.send(HIT)
    answer = slave.received()
    assert answer.count(b"HTTP/1.1 302 Found\r\n") == 2 and answer.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert protocol.requests == [] and not protocol._general


def test_an_unknown_key_on_the_master_stays_on_the_fast_path() -> None:
    """On the master an unknown key (404) and a disabled one (410) are answered by the fast path,
    byte for byte as twisted.web, and the next request is too."""
    answers = []
    for fast in (True, False):
        store = URLStore({"abc": "https://a.example/x", "gone": "https://g.example/"}, disabled={"gone": 1})
        site, _ = goto_site(store, fast=fast)
        connection = Connection(site)
        connection.send(MISS + HEAD_MISS + b"GET /gone HTTP/1.1\r\n\r\n" + HIT)
        protocol: Any = connection.protocol
        if fast:
            assert protocol.requests == [] and not protocol._general
        answers.append(normalized(connection.received()))
    assert answers[0] == answers[1]
    assert re.findall(rb"HTTP/1\.1 \d+ [^\r]+", answers[0]) == [
        b"HTTP/1.1 404 Not Found",
        b"HTTP/1.1 404 Not Found",
        b"HTTP/1.1 410 Gone",
        b"HTTP/1.1 302 Found",
    ]


def test_a_miss_behind_an_owed_answer_is_asked_once_that_is_answered() -> None:
    """Misses are asked of the store one at a time, each once the answers before it are written
    (as twisted.web asks them), and answered in request order."""
    slave = Slave(fast=True)
    slave.send(MISS + b"GET /other HTTP/1.1\r\n\r\n" + HIT)
    assert [call[1] for call in slave.master.calls] == ["miss"]
    slave.master.answer("https://m.example/")
    assert [call[1] for call in slave.master.calls] == ["other"]
    slave.master.answer("https://o.example/")
    locations = re.findall(rb"Location: (\S+)", slave.received())
    assert locations == [b"https://m.example/", b"https://o.example/", b"https://a.example/x"]


def test_a_key_added_just_before_is_found_as_twisted_web_finds_it() -> None:
    """An add pipelined before a redirect to the key it makes: the store is asked for the key once
    the add is answered, so the redirect finds it (302, not 404), as on the general path."""
    answers = []
    for fast in (True, False):
        log = ManualLog()
        site, _ = goto_site(URLStore({"abc": "https://a.example/x"}, log), fast=fast)
        connection = Connection(site)
        form = b"url=https%3A%2F%2Fnew.example%2F"
        connection.send(
            b"POST /add HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(form), form) + b"GET /abd HTTP/1.1\r\n\r\n"
        )
        log.complete_all()
        answers.append(normalized(connection.received()))
    assert answers[0] == answers[1]
    assert b"http://go.example/abd\n" in answers[0]
    assert b"Location: https://new.example/\r\n" in answers[0]


def test_a_miss_that_never_answers_is_cut_by_the_deadline(log_events: LogCapture) -> None:
    """A store Deferred that never fires does not hold the connection for ever: after the answer
    deadline the connection is closed; nothing is written, logged or counted for it, and a later
    answer (were it to come) is dropped."""
    slave = Slave(fast=True)
    slave.send(MISS + HIT)
    slave.clock.advance(ANSWER_DEADLINE - 1)
    assert not slave.connection.transport.disconnecting
    slave.clock.advance(1)
    assert slave.connection.transport.disconnecting
    assert slave.received() == b""
    assert [e for e in log_events.events if e.get("log_namespace") == "goto.access"] == []
    assert slave.metrics.requests == {}


def test_the_deadline_runs_from_each_miss_not_from_the_first() -> None:
    """The deadline bounds each owed answer from its own request: a second miss sent while the
    first is owed gets its full deadline after the first is answered."""
    slave = Slave(fast=True)
    slave.send(MISS)
    slave.clock.advance(20)
    slave.send(b"GET /other HTTP/1.1\r\n\r\n")
    slave.master.answer("https://m.example/")
    assert b"302 Found" in slave.received()
    slave.clock.advance(ANSWER_DEADLINE - 1)  # the second miss was sent 20 s in: due at 20 + 30
    assert not slave.connection.transport.disconnecting
    slave.clock.advance(1)
    assert slave.connection.transport.disconnecting


def test_an_answered_miss_leaves_no_deadline_behind() -> None:
    """Once every miss is answered, the deadline cuts nothing: the connection lives on (until the
    ordinary idle timeout, which is re-armed)."""
    slave = Slave(fast=True)
    slave.send(MISS)
    slave.master.answer("https://m.example/")
    slave.clock.advance(ANSWER_DEADLINE + 1)
    assert not slave.connection.transport.disconnecting
    slave.send(HIT)
    assert b"302 Found" in slave.received()


def test_a_client_gone_before_its_miss_is_answered_is_neither_logged_nor_counted(
    log_events: LogCapture,
) -> None:
    """A client that leaves before the master answers: no access-log line, no metrics, no click,
    and the master's call goes on for others (it is not cancelled under them)."""
    slave = Slave(fast=True)
    other = Connection(slave.site)
    slave.send(MISS)
    other.send(MISS)
    slave.connection.protocol.connectionLost(Failure(ConnectionLost()))
    slave.master.answer("https://m.example/")
    assert slave.connection.received() == b""
    assert b"302 Found" in other.received()
    access = [e for e in log_events.events if e.get("log_namespace") == "goto.access"]
    assert len(access) == 1 and slave.metrics.redirects == 1
    assert slave.clicks.counts == {"miss": 1}
    assert not [e for e in log_events.events if e.get("log_failure") is not None]


def test_hits_behind_a_miss_wait_unparsed() -> None:
    """A miss is an owed answer like any: the hits pipelined behind it wait, unparsed (within the
    byte budget), and all are answered once it is."""
    slave = Slave(fast=True)
    slave.send(MISS + HIT * 128)
    owed = slave.connection.protocol._owed
    assert owed is not None and len(owed) == 1
    assert slave.store.stats.hits == 0, "not looked up yet"
    slave.master.fail(KeyNotFound("no link"))
    answer = slave.received()
    assert answer.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert answer.count(b"HTTP/1.1 302 Found\r\n") == 128


def test_an_unexpected_failure_of_a_miss_is_a_500_like_the_general_path(log_events: LogCapture) -> None:
    """A bug (not a store error) behind a miss is the general path's 500, logged once, in order."""
    results = []
    for fast in (True, False):
        slave = Slave(fast)
        slave.send(MISS + HIT)
        slave.master.fail(RuntimeError("a bug"))
        failures = [e for e in log_events.events if e.get("log_failure") is not None]
        results.append((slave.received(), len(failures)))
        log_events.events.clear()
    assert results[0] == results[1]
    assert results[0][0].startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert results[0][1] == 1


def test_a_miss_pending_when_the_client_half_closes_is_still_answered() -> None:
    """A client that sends a miss and shuts down its sending side gets the answer, then the close."""
    slave = Slave(fast=True)
    protocol: Any = slave.connection.protocol
    slave.send(MISS)
    protocol.readConnectionLost()
    slave.clock.advance(0)
    assert not slave.connection.transport.disconnecting
    slave.master.answer("https://m.example/")
    slave.clock.advance(0)
    assert b"302 Found" in slave.received()
    assert slave.connection.transport.disconnecting


def test_a_page_for_twisted_web_costs_nothing_to_the_requests_after_it() -> None:
    """A plain GET the fast path does not answer (an info page, a QR code, health) is lent to
    twisted.web whole; the requests after it, pipelined or later, are back on the fast path."""
    answers = []
    for fast in (True, False):
        site, _ = goto_site(URLStore({"abc": "https://a.example/x"}), fast=fast)
        connection = Connection(site)
        protocol: Any = connection.protocol
        connection.send(b"GET /abc+ HTTP/1.1\r\n\r\n" + HIT + b"HEAD /abc.qr HTTP/1.1\r\n\r\n")
        connection.send(b"GET /_goto/health HTTP/1.1\r\n\r\n" + HIT)
        if fast:
            assert not protocol._general and not protocol._lent
        answers.append(normalized(connection.received()))
    assert answers[0] == answers[1]
    statuses = [int(status) for status in re.findall(rb"HTTP/1\.1 (\d+) ", answers[0])]
    assert statuses == [200, 302, 200, 200, 302]


def test_requests_behind_a_lent_request_wait_for_its_answer() -> None:
    """On a slave an info page waits for the master; the hit pipelined behind it waits for that
    page (answers in request order), then the connection is back on the fast path."""
    slave = Slave(fast=True)
    protocol: Any = slave.connection.protocol
    slave.send(b"GET /miss+ HTTP/1.1\r\n\r\n" + HIT)
    assert protocol._lent
    assert slave.received() == b""
    slave.master.answer("https://m.example/")
    answer = slave.received()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.count(b"HTTP/1.1 302 Found\r\n") == 1
    assert not protocol._lent and not protocol._general
    slave.send(b"GET /fresh HTTP/1.1\r\n\r\n")
    assert [call[1] for call in slave.master.calls] == ["fresh"]  # asked by the fast path


def test_a_half_closed_client_gets_the_lent_answer_then_the_close() -> None:
    """A client that half-closes while twisted.web answers a lent request gets that answer and
    the ones after it, then the connection closes."""
    slave = Slave(fast=True)
    protocol: Any = slave.connection.protocol
    slave.send(b"GET /miss+ HTTP/1.1\r\n\r\n" + HIT)
    protocol.readConnectionLost()
    slave.clock.advance(0)
    assert not slave.connection.transport.disconnecting
    slave.master.answer("https://m.example/")
    slave.clock.advance(0)
    answer = slave.received()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"302 Found" in answer
    assert slave.connection.transport.disconnecting


def test_a_request_with_a_body_still_hands_the_connection_to_twisted_web() -> None:
    """What cannot be lent whole (a body, Connection: close) still hands the rest over, as before."""
    site, _ = goto_site(URLStore({"abc": "https://a.example/x"}))
    connection = Connection(site)
    protocol: Any = connection.protocol
    connection.send(b"GET /abc+ HTTP/1.1\r\nContent-Length: 1\r\n\r\nx" + HIT)
    assert protocol._general
    assert normalized(connection.received()).count(b"HTTP/1.1 ") == 2


def test_the_byte_budget_holds_across_a_lent_request() -> None:
    """twisted.web resumes reading when it finishes a request; while the connection still holds
    more than its budget (behind a second lent request still being answered), reading stays paused."""
    slave = Slave(fast=True)
    transport = slave.connection.transport
    slave.send(b"GET /miss+ HTTP/1.1\r\n\r\nGET /other+ HTTP/1.1\r\n\r\n" + HIT * (BUDGET // len(HIT) + 10))
    assert transport.producerState == "paused"
    slave.master.answer("https://m.example/")  # the first page is answered; the second one waits
    assert [call[1] for call in slave.master.calls] == ["other"]
    assert transport.producerState == "paused"
    slave.master.answer("https://o.example/")
    assert transport.producerState == "producing"
    assert slave.received().count(b"HTTP/1.1 302 Found\r\n") == BUDGET // len(HIT) + 10


def test_a_hit_behind_a_miss_is_looked_up_once_the_miss_is_answered(log_events: LogCapture) -> None:
    """Review: a key held locally, pipelined behind a miss, is looked up when twisted.web would
    look it up (once the miss is answered), not when it arrives: a link the master disabled
    meanwhile (the slave forgets it) answers 410, not the redirect the cache held seconds before."""
    results = []
    for fast in (True, False):
        slave = Slave(fast)
        slave.send(MISS + HIT)
        slave.store.forget(["abc"])  # the master's change feed: "abc" changed (it was disabled)
        slave.master.answer("https://m.example/found")
        assert [call[1] for call in slave.master.calls] == ["abc"], "asked again, as twisted.web asks"
        slave.master.fail(KeyDisabled("This link has been disabled."))
        results.append((slave.received(), accounting(log_events, slave.metrics), slave.clicks.counts))
    assert results[0] == results[1]
    assert re.findall(rb"HTTP/1\.1 \d+", results[0][0]) == [b"HTTP/1.1 302", b"HTTP/1.1 410"]
    assert results[0][2] == {"miss": 1}


def test_a_hit_behind_a_miss_is_not_clicked_for_a_client_that_left(log_events: LogCapture) -> None:
    """Review: a client that pipelines a hit behind a miss and leaves before the miss is answered
    gets nothing done for either request (no click, no log line), as on the general path."""
    results = []
    for fast in (True, False):
        slave = Slave(fast)
        slave.send(MISS + HIT)
        slave.connection.protocol.connectionLost(Failure(ConnectionLost()))
        results.append((accounting(log_events, slave.metrics), dict(slave.clicks.counts)))
    assert results[0] == results[1] == (([], {}, 0), {})


@implementer(IURLStore, ILocalLookup)
class RaisingStore:
    """A store with a bug: its get and put raise instead of returning a failed Deferred."""

    def get(self, key: str) -> Deferred[str]:
        if key == "abc":
            return succeed("https://a.example/x")
        raise RuntimeError("a bug in get")

    def lookup(self, key: str) -> str | None:
        return "https://a.example/x" if key == "abc" else None

    def put(self, url: str) -> Deferred[str]:
        raise RuntimeError("a bug in put")

    def count(self) -> int:
        return 1


@pytest.mark.parametrize(
    "request_bytes",
    [MISS, HEAD_MISS, b"GET /add?url=https%3A%2F%2Fnew.example%2F HTTP/1.1\r\n\r\n"],
    ids=["GET", "HEAD", "add"],
)
def test_a_store_that_raises_is_a_500_in_order_not_a_dropped_connection(
    request_bytes: bytes, log_events: LogCapture
) -> None:
    """Review: a store whose call raises (a bug) instead of failing its Deferred costs the client
    a 500 (logged once), as twisted.web answers a resource that raises; the connection and the
    request pipelined behind it live on (the exception used to escape dataReceived, and the
    reactor dropped the connection with every request on it unanswered)."""
    site, metrics = goto_site(RaisingStore())
    connection = Connection(site)
    connection.send(request_bytes + HIT)
    answer = connection.received()
    assert re.findall(rb"HTTP/1\.1 (\d+) ", answer) == [b"500", b"302"]
    assert not connection.transport.disconnecting
    assert len([e for e in log_events.events if e.get("log_failure") is not None]) == 1
    assert metrics.requests


def test_a_connection_cut_by_the_answer_deadline_is_aborted_if_it_does_not_close() -> None:
    """Review: the deadline's close waits for the send buffer to drain, and a client that never
    reads never lets it (the idle timeout closes nothing while the answer is owed, so nothing else
    would ever end it): as twisted.web's idle timeout does, the connection is aborted
    ``abortTimeout`` seconds later if it has not closed by then."""
    slave = Slave(fast=True)
    protocol: Any = slave.connection.protocol
    slave.send(HIT * 3 + MISS)
    slave.clock.advance(ANSWER_DEADLINE)
    transport = slave.connection.transport
    assert transport.disconnecting and not transport.disconnected
    slave.clock.advance(protocol.abortTimeout)
    assert transport.disconnected, "aborted"


@implementer(IFastResponder)
class LendingResponder:
    """A responder that leaves every miss to twisted.web (``redirect_later`` answers ``None``)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def redirect(self, method: str, key: str, head: bytes = b"") -> Any:
        return self.inner.redirect(method, key, head)

    def redirect_later(self, method: str, key: str, head: bytes = b"") -> None:
        return None

    def add(self, *args: Any) -> Any:
        return self.inner.add(*args)

    def rpc(self, *args: Any) -> Any:
        return self.inner.rpc(*args)

    def internal_error(self, method: str = "GET") -> Any:
        return self.inner.internal_error(method)


def test_a_miss_the_responder_leaves_to_twisted_web_is_lent() -> None:
    """The interface's promise: ``redirect_later`` may answer ``None``, and then twisted.web answers
    that request alone, the connection back on the fast path after it."""
    answers = []
    for fast in (True, False):
        site, _ = goto_site(URLStore({"abc": "https://a.example/x"}), fast=fast)
        if fast:
            site.responder = LendingResponder(site.responder)
        connection = Connection(site)
        connection.send(MISS + HIT)
        protocol: Any = connection.protocol
        if fast:
            assert not protocol._general and not protocol._lent
        answers.append(normalized(connection.received()))
    assert answers[0] == answers[1]
    assert re.findall(rb"HTTP/1\.1 \d+", answers[0]) == [b"HTTP/1.1 404", b"HTTP/1.1 302"]
