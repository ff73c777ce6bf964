"""RemoteStore's bounds and guards: batch size, requests in flight, queue, answer size, every waiter
answered, and what a user and the log are told. Driven through the real ``AgentPoster`` over
``treq.testing.RequestTraversalAgent`` (twisted.web's client and server, no sockets)."""

from __future__ import annotations

import xmlrpc.client as xmlrpclib
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web import pages
from twisted.web.client import ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from goto_tw import remote
from goto_tw.errors import GotoError, KeyNotFound, MasterRefused, MasterUnreachable, StoreUnavailable
from goto_tw.keys import key_for_index
from goto_tw.limits import MAX_BODY_BYTES
from goto_tw.metrics import Metrics
from goto_tw.proxystore import ProxyStore
from goto_tw.remote import (
    BUSY_MESSAGE,
    GATHER_IN_FLIGHT,
    MAX_BATCH_BYTES,
    MAX_BATCH_CALLS,
    MAX_IN_FLIGHT,
    MAX_QUEUED_CALLS,
    UNREACHABLE_MESSAGE,
    AgentPoster,
    RemoteStore,
)
from goto_tw.rpc import RPCResource
from goto_tw.store import URLStore
from goto_tw.urls import MAX_URL_LENGTH
from tests.conftest import LogCapture
from tests.helpers import failure_of, has_fired, result_of

RPC_URL = "http://master.test:8081/RPC2"


def detail_of(failure: Failure) -> str:
    """The log-only detail of the store error ``failure`` holds."""
    error = failure.value
    assert isinstance(error, GotoError)
    return str(error.detail)


class Recording(Resource):
    """In front of /RPC2: records each request body's size and refuses, as the master's
    ``BoundedRequest`` does, a body over the master's limit with 413."""

    isLeaf = True

    def __init__(self, inner: Resource) -> None:
        super().__init__()
        self.inner = inner
        self.bodies: list[int] = []

    def render(self, request: Request) -> Any:
        content: Any = request.content
        size = len(content.read())
        content.seek(0)
        self.bodies.append(size)
        if size > MAX_BODY_BYTES:
            return Answer(413, b"Request body too large\n").render(request)
        return self.inner.render(request)


class Answer(Resource):
    """Answers every request with a fixed status and body."""

    isLeaf = True

    def __init__(self, status: int, body: bytes, content_type: bytes = b"text/xml") -> None:
        super().__init__()
        self.status, self.body, self.content_type = status, body, content_type

    def render(self, request: Request) -> bytes:
        request.setResponseCode(self.status)
        request.setHeader(b"content-type", self.content_type)
        return self.body


class Silent(Resource):
    """Accepts requests and never answers; counts them."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def render_POST(self, request: Request) -> object:
        self.requests += 1
        return NOT_DONE_YET


class Link:
    """A RemoteStore over the real AgentPoster, talking to ``root`` through twisted.web in memory."""

    def __init__(self, root: Resource, timeout: float = 5.0, metrics: Metrics | None = None) -> None:
        self.agent = RequestTraversalAgent(root)
        self.clock = Clock()
        self.remote = RemoteStore(
            AgentPoster(self.agent), RPC_URL, self.clock, timeout=timeout, metrics=metrics
        )

    def settle(self) -> None:
        """Let queued calls go out and the in-memory server answer (a few turns, each a gather
        pause apart: calls that wait out the pause go too)."""
        for _ in range(6):
            self.clock.advance(remote.GATHER_PAUSE)
            self.agent.flush()


def master_root(store: URLStore) -> tuple[Resource, Recording]:
    root = Resource()
    recording = Recording(RPCResource(store, None))
    root.putChild(b"RPC2", recording)
    return root, recording


def test_300_adds_of_4_kib_urls_in_one_turn_all_succeed() -> None:
    """Batches are capped by size as well as count: 300 adds of 4 KiB URLs made in one reactor turn
    (1.2 MB) all succeed, each request under the cap and the master's 1 MiB body limit."""
    store = URLStore()
    root, recording = master_root(store)
    link = Link(root)
    urls = [f"http://example.com/{i:04d}/" + "a" * (4096 - 24) for i in range(300)]
    assert all(len(url) <= 4096 for url in urls)
    adds = [link.remote.put(url) for url in urls]
    link.settle()
    keys = [result_of(add) for add in adds]
    assert len(set(keys)) == 300
    assert store.count() == 300
    assert len(recording.bodies) >= 3
    assert max(recording.bodies) <= MAX_BATCH_BYTES < MAX_BODY_BYTES


def test_escaped_characters_count_against_the_batch_size() -> None:
    """URLs full of ``&`` (5 bytes each once escaped) still fit the master's limit."""
    store = URLStore()
    root, recording = master_root(store)
    link = Link(root)
    adds = [link.remote.put(f"http://example.com/{i}?" + "&" * 4000) for i in range(300)]
    link.settle()
    assert len({result_of(add) for add in adds}) == 300
    assert max(recording.bodies) < MAX_BODY_BYTES


class Held(Resource):
    """The master's RPC resource, except that each request waits until the test releases it."""

    isLeaf = True

    def __init__(self, store: URLStore) -> None:
        super().__init__()
        self.rpc = RPCResource(store, None)
        self.held: list[Request] = []

    def render_POST(self, request: Request) -> object:
        self.held.append(request)
        return NOT_DONE_YET

    def release(self) -> None:
        request = self.held.pop(0)
        content: Any = request.content
        content.seek(0)
        self.rpc.render(request)


def test_a_full_batch_of_the_longest_urls_is_answered_within_the_bound() -> None:
    """Look-ups of MAX_BATCH_CALLS URLs of the longest kind, every character escaped on the wire,
    travel as one multicall whose answer the slave reads whole (it stays under MAX_ANSWER_BYTES)."""
    longest = "http://a.example/?" + "&" * (MAX_URL_LENGTH - 18)
    store = URLStore({key_for_index(i): longest for i in range(MAX_BATCH_CALLS)})
    root, recording = master_root(store)
    link = Link(root)
    gets = [link.remote.get(key_for_index(i)) for i in range(MAX_BATCH_CALLS)]
    link.settle()
    assert len(recording.bodies) == 1
    assert all(result_of(call) == longest for call in gets)


def test_requests_in_flight_are_capped_and_later_calls_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """At most MAX_IN_FLIGHT requests are open at once, full batches included (here every call is
    a full batch); calls made meanwhile wait, and go out as slots free up."""
    monkeypatch.setattr(remote, "MAX_BATCH_CALLS", 1)
    store = URLStore({"0": "http://zero.example/"})
    held = Held(store)
    link = Link(_at_rpc2(held))
    calls = []
    for _ in range(MAX_IN_FLIGHT + 3):
        calls.append(link.remote.get("0"))
        link.settle()
    assert len(held.held) == MAX_IN_FLIGHT
    held.release()
    link.settle()
    assert result_of(calls[0]) == "http://zero.example/"
    assert len(held.held) == MAX_IN_FLIGHT, "one slot freed, one waiting call sent"
    while held.held:
        held.release()
        link.settle()
    assert [result_of(call) for call in calls[1:]] == ["http://zero.example/"] * (len(calls) - 1)


def method_of(body: bytes) -> str:
    """The XML-RPC method an RPC request body calls."""
    _, method = xmlrpclib.loads(body)
    return str(method)


def _calls_in(request: Request) -> int:
    """How many calls one held request carries (1 unless it is a multicall)."""
    content: Any = request.content
    params: Any
    params, method = xmlrpclib.loads(content.getvalue())
    return len(params[0]) if method == "system.multicall" else 1


def test_calls_made_while_batches_are_in_flight_gather_into_the_next_one() -> None:
    """With GATHER_IN_FLIGHT batches on their way, later calls (made in different turns) wait and
    then travel together as one multicall once a batch is answered; every call is answered."""
    store = URLStore({"0": "http://zero.example/"})
    held = Held(store)
    link = Link(_at_rpc2(held))
    calls = []
    for _ in range(GATHER_IN_FLIGHT + 5):
        calls.append(link.remote.get("0"))
        link.settle()
    assert len(held.held) == GATHER_IN_FLIGHT, "the later calls wait for a batch to be answered"
    held.release()
    link.settle()
    assert len(held.held) == GATHER_IN_FLIGHT
    assert _calls_in(held.held[-1]) == 5
    while held.held:
        held.release()
        link.settle()
    assert [result_of(call) for call in calls] == ["http://zero.example/"] * len(calls)


def gathering_full() -> tuple[Held, Link, list[Deferred[Any]]]:
    """A slave's link to a master that holds each request until the test releases it, with
    GATHER_IN_FLIGHT batches on their way (a look-up of key "0" each), and those look-ups."""
    held = Held(URLStore({"0": "http://zero.example/"}))
    link = Link(_at_rpc2(held))
    calls = []
    for _ in range(GATHER_IN_FLIGHT):
        calls.append(link.remote.get("0"))
        link.settle()
    return held, link, calls


def test_a_full_batch_does_not_wait_for_the_batches_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gathering never holds back a batch that is already full: it goes while a slot is free."""
    monkeypatch.setattr(remote, "MAX_BATCH_CALLS", 3)
    held, link, calls = gathering_full()
    calls += [link.remote.get("0") for _ in range(2)]
    link.settle()
    assert len(held.held) == GATHER_IN_FLIGHT, "two calls are not a full batch: they wait"
    calls.append(link.remote.get("0"))
    link.settle()
    assert len(held.held) == GATHER_IN_FLIGHT + 1, "three are: they go"
    assert _calls_in(held.held[-1]) == 3
    while held.held:
        held.release()
        link.settle()
    assert [result_of(call) for call in calls] == ["http://zero.example/"] * len(calls)


def test_a_silent_master_answers_the_waiting_calls_too() -> None:
    """When the requests in flight get no answer, the calls waiting behind them are answered (503)
    at the same time, not one timeout later each."""
    silent = Silent()
    link = Link(_at_rpc2(silent), timeout=2.0)
    calls = []
    for turn in range(MAX_IN_FLIGHT + 3):
        calls.append(link.remote.get(f"k{turn}"))
        link.settle()
    assert silent.requests == GATHER_IN_FLIGHT
    link.clock.advance(2.0)
    assert all(failure_of(call).check(MasterUnreachable) for call in calls)
    assert silent.requests == GATHER_IN_FLIGHT


def test_calls_beyond_the_queue_bound_fail_at_once(
    log_events: LogCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_QUEUED_CALLS waiting calls, a call fails at once with a 503 (logged once), and the
    queue works again once it drains."""
    monkeypatch.setattr(remote, "MAX_BATCH_CALLS", 1)  # every call a full batch: 4 fill the slots
    silent = Silent()
    root = Resource()
    root.putChild(b"RPC2", silent)
    link = Link(root, timeout=1.0)
    for turn in range(MAX_IN_FLIGHT):
        link.remote.get(f"k{turn}").addErrback(lambda _: None)
        link.settle()
    waiting = [link.remote.get("w") for _ in range(MAX_QUEUED_CALLS)]
    refused = [link.remote.get("x") for _ in range(3)]
    for call in refused:
        failure = failure_of(call)
        assert failure.check(StoreUnavailable) and not failure.check(MasterUnreachable)
        assert str(failure.value) == BUSY_MESSAGE
    assert not any(has_fired(call) for call in waiting[:10])
    assert sum("too slowly" in message for message in log_events.messages()) == 1
    link.clock.advance(1.0)
    assert all(failure_of(call).check(MasterUnreachable) for call in waiting)
    assert not has_fired(link.remote.get("after")), "accepted again once the queue drained"


def test_queue_is_bounded_in_bytes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls with huge arguments count by their size: the queue holds at most MAX_QUEUED_BYTES."""
    monkeypatch.setattr(remote, "MAX_IN_FLIGHT", 0)  # nothing leaves: everything queues
    link = Link(Resource())
    big = "k" * (1024 * 1024)
    calls = [link.remote.get(big) for _ in range(20)]
    refused = [call for call in calls if has_fired(call)]
    assert 0 < len(refused) <= 20 - 15
    assert all(failure_of(call).check(StoreUnavailable) for call in refused)
    for call in calls:
        call.addErrback(lambda _: None)


class Raising:
    """An HTTP client that raises instead of sending (as treq did for an IPv6 master)."""

    def __init__(self) -> None:
        self.posts = 0

    def post(self, url: str, /, *, data: bytes, headers: Headers) -> Deferred[Any]:
        self.posts += 1
        raise ValueError("cannot encode the master's host")


def test_an_exception_inside_the_flush_answers_every_waiter(log_events: LogCapture) -> None:
    """Whatever fails while a batch is built or sent, every call in it gets a 503 (with a human
    message), and the failure is logged with its traceback."""
    clock = Clock()
    poster = Raising()
    store = RemoteStore(poster, RPC_URL, clock, timeout=5.0)
    calls = [store.get("a"), store.put("http://b.example/"), store.get("c")]
    single = []
    clock.advance(0)
    single.append(store.get("d"))
    clock.advance(0)
    for call in calls + single:
        failure = failure_of(call)
        assert failure.check(StoreUnavailable)
        assert str(failure.value) == UNREACHABLE_MESSAGE
    assert poster.posts == 2
    assert len([e for e in log_events.events if e.get("log_failure") is not None]) == 2


def test_an_argument_that_cannot_be_encoded_is_answered_at_once(log_events: LogCapture) -> None:
    """A call whose argument XML-RPC cannot carry fails at once (503, logged as a bug); calls made
    with it still go out and are answered."""
    store = URLStore({"0": "http://zero.example/"})
    root, _ = master_root(store)
    link = Link(root)
    bad = link.remote.call("Store.Get", object())
    other = link.remote.get("0")
    failure = failure_of(bad)
    assert failure.check(StoreUnavailable) and str(failure.value) == UNREACHABLE_MESSAGE
    link.settle()
    assert result_of(other) == "http://zero.example/"
    assert len([e for e in log_events.events if e.get("log_failure") is not None]) == 1


@pytest.mark.parametrize("declared", [True, False])
def test_an_answer_over_the_bound_is_unreachable(declared: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The slave reads at most MAX_ANSWER_BYTES of an answer; past that the master counts as broken
    (503), whether the answer declares its length or not."""
    monkeypatch.setattr(remote, "MAX_ANSWER_BYTES", 10_000)
    body = xmlrpclib.dumps(("x" * 20_000,), methodresponse=True).encode()

    class Big(Resource):
        isLeaf = True

        def render_POST(self, request: Request) -> object:
            if declared:
                return body
            request.write(body[:5000])
            request.write(body[5000:])
            request.finish()
            return NOT_DONE_YET

    root = Resource()
    root.putChild(b"RPC2", Big())
    link = Link(root)
    call = link.remote.get("k")
    link.settle()
    failure = failure_of(call)
    assert failure.check(MasterUnreachable)
    assert "longer than 10000 bytes" in detail_of(failure)
    assert str(failure.value) == UNREACHABLE_MESSAGE


def test_an_answer_under_the_bound_is_read() -> None:
    """An answer within the bound is read whole (a long URL's answer is nowhere near it)."""
    store = URLStore({"0": "http://example.com/" + "a" * 4000})
    root, _ = master_root(store)
    link = Link(root)
    call = link.remote.get("0")
    link.settle()
    assert result_of(call) == "http://example.com/" + "a" * 4000


@pytest.mark.parametrize(
    ("root_of", "cause"),
    [
        (
            lambda: pages.notFound(),
            "answered HTTP 404 at http://master.test:8081/RPC2: is it a goto master started with --rpc?",
        ),
        (
            lambda: _at_rpc2(Answer(200, b"<html><body>hello</body></html>", b"text/html")),
            "is not XML-RPC",
        ),
        (lambda: _at_rpc2(Answer(200, b"\xff\xfe<\x00?\x00", b"text/xml")), "must be UTF-8"),
        (
            lambda: _at_rpc2(Answer(200, b'<?xml version="1.0"?><!DOCTYPE x []><methodResponse/>')),
            "no use for a DOCTYPE",
        ),
    ],
)
def test_something_that_is_not_a_goto_master_is_unreachable_with_the_cause(root_of: Any, cause: str) -> None:
    """Any HTTP server that is not a goto master with --rpc is an unreachable master: the user gets
    the human 503 message, the log (``detail``) the cause and a hint."""
    link = Link(root_of())
    call = link.remote.get("k")
    link.settle()
    failure = failure_of(call)
    assert failure.check(MasterUnreachable)
    assert str(failure.value) == UNREACHABLE_MESSAGE
    assert cause in detail_of(failure)


def _at_rpc2(resource: Resource) -> Resource:
    root = Resource()
    root.putChild(b"RPC2", resource)
    return root


class Failing:
    """An HTTP client whose every request fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def post(self, url: str, /, *, data: bytes, headers: Headers) -> Deferred[Any]:
        return fail(self.error)


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (DNSLookupError("no-such-master.invalid"), "DNSLookupError"),
        (ConnectionRefusedError("111: Connection refused"), "Connection refused"),
        (ResponseNeverReceived([Exception("reset")]), "reset"),
    ],
)
def test_transport_failures_are_unreachable_with_a_human_message(error: Exception, cause: str) -> None:
    """A name that does not resolve, a refused connection, a reset: all mean the master is
    unreachable (503, fail-fast), never a 500; the message hides the internals, the detail has them."""
    clock = Clock()
    store = RemoteStore(Failing(error), RPC_URL, clock, timeout=5.0)
    call = store.get("k")
    clock.advance(0)
    failure = failure_of(call)
    assert failure.check(MasterUnreachable)
    assert str(failure.value) == UNREACHABLE_MESSAGE
    assert cause in detail_of(failure)
    assert "Failure" not in detail_of(failure)


def test_a_refused_secret_is_a_human_503() -> None:
    """The master refusing our secret is the operator's mistake: the user sees the human message."""
    root = Resource()
    root.putChild(b"RPC2", RPCResource(URLStore(), b"secret"))
    link = Link(root)
    call = link.remote.put("http://a.example/")
    link.settle()
    failure = failure_of(call)
    assert failure.check(MasterRefused)
    assert str(failure.value) == UNREACHABLE_MESSAGE
    assert "--rpc-secret-file" in detail_of(failure)


def test_a_master_fault_text_is_shown_only_when_fit_for_a_user() -> None:
    """A fault text from the master reaches users only when short and printable."""
    for text, shown in (
        ("the URL has no host", "the URL has no host"),
        ("x\r\nSet-Cookie: a=b", None),
        ("y" * 1000, None),
    ):
        body = xmlrpclib.dumps(xmlrpclib.Fault(400, text), methodresponse=True).encode()
        link = Link(_at_rpc2(Answer(200, body)))
        call = link.remote.put("http://a.example/")
        link.settle()
        error = failure_of(call).value
        assert isinstance(error, GotoError) and error.http_status == 400
        assert str(error) == (shown or UNREACHABLE_MESSAGE)


def test_a_not_found_answer_is_an_ok_call_in_the_metrics() -> None:
    """An unknown key (what every health check asks for) is a proper answer: outcome ``ok``."""
    metrics = Metrics("slave")
    root, _ = master_root(URLStore())
    link = Link(root, metrics=metrics)
    call = link.remote.get("_goto_health")
    link.settle()
    assert failure_of(call).check(KeyNotFound)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
        if sample.name == "goto_rpc_call_seconds_count"
    }
    assert samples == {("goto_rpc_call_seconds_count", (("method", "Store.Get"), ("outcome", "ok")))}


def test_a_non_answer_is_not_read_and_its_connection_is_dropped() -> None:
    """A master that answers 404 with a body that never ends (a wrong --master) costs no
    connection: the slave does not read it and drops the connection at once."""
    dropped: list[Failure] = []

    class Endless(Resource):
        isLeaf = True

        def render_POST(self, request: Request) -> object:
            request.setResponseCode(404)
            request.write(b"x" * 100)  # and never finishes
            request.notifyFinish().addErrback(dropped.append)
            return NOT_DONE_YET

    link = Link(_at_rpc2(Endless()))
    call = link.remote.get("k")
    link.settle()
    assert failure_of(call).check(MasterUnreachable)
    assert len(dropped) == 1, "the connection of the endless 404 is dropped"


class Hanging:
    """An HTTP client whose requests are never answered (a master that accepts and says nothing)."""

    def __init__(self) -> None:
        self.posted: list[Deferred[Any]] = []

    def post(self, url: str, /, *, data: bytes, headers: Headers) -> Deferred[Any]:
        self.posted.append(Deferred())
        return self.posted[-1]


def test_giving_up_answers_every_call_at_once_and_every_later_one() -> None:
    """Review 39: a slave that stops and can wait no longer (``give_up``) answers the calls in flight
    and those queued behind them with a 503 at once, rather than leaving them to the reactor's
    shutdown, and fails every later call at once, sending nothing."""
    clock = Clock()
    poster = Hanging()
    store = RemoteStore(poster, RPC_URL, clock, timeout=30.0)
    in_flight = [store.get("a"), store.put("http://b.example/")]
    clock.advance(0)
    assert len(poster.posted) == 1
    queued = [store.get(f"q{n}") for n in range(3)]  # behind the batch in flight, gathering
    assert not any(has_fired(call) for call in in_flight + queued)
    sent = len(poster.posted)
    store.give_up()
    for call in in_flight + queued:
        failure = failure_of(call)
        assert failure.check(MasterUnreachable) and str(failure.value) == UNREACHABLE_MESSAGE
        assert getattr(failure.value, "detail", None) == "this slave is stopping", "not a timeout"
    later = store.get("late")
    assert failure_of(later).check(MasterUnreachable)
    assert all(has_fired(posted) for posted in poster.posted), "the requests themselves are cancelled"
    clock.advance(60)
    assert len(poster.posted) == sent, "nothing more is sent"


def test_giving_up_answers_calls_queued_with_nothing_in_flight() -> None:
    """The calls of this turn, not sent yet (nothing in flight to cancel), are answered too."""
    clock = Clock()
    poster = Hanging()
    store = RemoteStore(poster, RPC_URL, clock, timeout=30.0)
    queued = store.get("a")
    assert not poster.posted
    store.give_up()
    assert failure_of(queued).check(MasterUnreachable)
    clock.advance(1)
    assert not poster.posted


def _lines_from(log_events: LogCapture, first: str) -> list[str]:
    """The messages logged from the first one containing ``first`` on."""
    lines = log_events.messages()
    return lines[next(index for index, line in enumerate(lines) if first in line) :]


STOP_LINE = "Stopping with {calls} calls to the master still unanswered after 10 s: answering them 503"


@pytest.mark.parametrize("masters", ["one", "two", "two, still being checked"])
def test_a_stop_that_gives_up_on_hung_masters_is_logged_once(masters: str, log_events: LogCapture) -> None:
    """Review 39 (of its own fix): a slave whose drain gives up on masters that do not answer logs
    that once, and nothing of the masters for it (no "did not answer", no "does not answer ...
    trying the others", no "could not be checked"): its own shutdown is no outage. Every miss
    waiting is answered 503."""
    from goto_tw.failover import FailoverStore, shares_a_database

    clock = Clock()
    a = RemoteStore(Hanging(), RPC_URL, clock, timeout=30.0)
    b = RemoteStore(Hanging(), RPC_URL.replace("8081", "8082"), clock, timeout=30.0)
    if masters == "one":
        master: Any = a
    else:
        master = FailoverStore(
            [("a", a), ("b", b)], clock, check=shares_a_database if "checked" in masters else None
        )
    store = ProxyStore(master, clock)
    misses = [store.get(f"k{n}") for n in range(3)]
    clock.advance(0)
    store.drain(10.0)
    clock.advance(10.0)
    for miss in misses:
        assert failure_of(miss).check(MasterUnreachable)
    assert _lines_from(log_events, "Stopping with") == [STOP_LINE.format(calls=3)]
