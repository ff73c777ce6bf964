"""Issue 13 (the RPC round trip's CPU): what RemoteStore costs per request, counted, not timed (one
callback on the HTTP client's Deferred, no timer per request), and that every request still times
out at its own deadline, answers arriving late changing nothing."""

from __future__ import annotations

import xmlrpc.client as xmlrpclib
from typing import Any
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectingCancelledError, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from goto_tw import remote, rpcwire
from goto_tw.errors import KeyNotFound, MasterUnreachable, StoreUnavailable
from goto_tw.keys import ALPHABET, key_for_index
from goto_tw.metrics import Metrics
from goto_tw.remote import RemoteStore
from tests.conftest import LogCapture
from tests.counting import CountingDeferred
from tests.helpers import failure_of, has_fired, result_of
from tests.test_remote import Link, _at_rpc2, detail_of, method_of
from tests.test_rpcwire import hostile_text

RPC_URL = "http://master.test:8081/RPC2"


class Answer:
    """A 200 handed over whole, as goto_tw.masterhttp hands it over."""

    code = 200

    def __init__(self, body: bytes) -> None:
        self.body = body


class Poster:
    """An HTTP client whose answers the test gives; records whether each post was cancelled."""

    def __init__(self) -> None:
        self.posts: list[tuple[bytes, CountingDeferred]] = []
        self.cancelled: list[int] = []

    def post(self, url: str, /, *, data: bytes, headers: Headers) -> Deferred[Any]:
        index = len(self.posts)
        answer = CountingDeferred(lambda _: self.cancelled.append(index))
        self.posts.append((data, answer))
        return answer

    def answer(self, index: int, value: Any) -> None:
        self.posts[index][1].callback(Answer(xmlrpclib.dumps((value,), methodresponse=True).encode()))


class CountingClock(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.armed = 0

    def callLater(self, delay: float, *args: Any, **kwargs: Any) -> Any:
        self.armed += 1
        return super().callLater(delay, *args, **kwargs)


def test_a_request_hangs_one_callback_on_the_posts_deferred() -> None:
    """Reading, translating, the metrics, the timeout, handing out the answers and the batch's
    bookkeeping are one callback (they were five, and addTimeout's own)."""
    clock = Clock()
    poster = Poster()
    store = RemoteStore(poster, RPC_URL, clock, timeout=5.0, gather_pause=0, metrics=Metrics("slave"))
    single = store.get("a")
    clock.advance(0)
    batch = [store.get("b"), store.get("c")]
    clock.advance(0)
    assert [answer.added for _, answer in poster.posts] == [1, 1]
    poster.answer(0, "https://a.example/")
    poster.answer(1, [["https://b.example/"], {"faultCode": 404, "faultString": "no link"}])
    assert result_of(single) == "https://a.example/"
    assert result_of(batch[0]) == "https://b.example/"
    assert failure_of(batch[1]).check(KeyNotFound)


def test_requests_one_after_another_arm_one_timer_between_them() -> None:
    """Each request used to arm and cancel a timer of its own (addTimeout); now the first one arms
    the store's timer and the others find it armed: one flush per request, and one timer."""
    clock = CountingClock()
    poster = Poster()
    store = RemoteStore(poster, RPC_URL, clock, timeout=5.0)
    for index in range(20):
        asked = store.get(f"k{index}")
        clock.advance(0.01)
        poster.answer(index, f"https://{index}.example/")
        assert result_of(asked) == f"https://{index}.example/"
    assert clock.armed == 20 + 1
    clock.advance(5.0)  # the timer fires, finds nothing in flight, and is not armed again
    assert clock.getDelayedCalls() == []
    assert poster.cancelled == []


def test_each_request_times_out_at_its_own_deadline() -> None:
    """Requests sent at different times fail each at its own send time plus the timeout, with the
    message a timeout always had; the post is cancelled (the connection dropped); an answer that
    comes after changes nothing."""
    clock = Clock()
    poster = Poster()
    store = RemoteStore(poster, RPC_URL, clock, timeout=5.0)
    first = store.get("a")
    clock.advance(0)
    clock.advance(3.0)
    second = store.get("b")
    clock.advance(0)
    clock.advance(1.99)
    assert not has_fired(first) and not has_fired(second)
    clock.advance(0.01)
    failure = failure_of(first)
    assert failure.check(MasterUnreachable)
    assert "no answer in time (--rpc-timeout)" in detail_of(failure)
    assert poster.cancelled == [0]
    assert not has_fired(second)
    clock.advance(2.99)
    assert not has_fired(second)
    clock.advance(0.01)
    assert failure_of(second).check(MasterUnreachable)
    assert poster.cancelled == [0, 1]
    assert clock.getDelayedCalls() == []


def test_a_request_sent_after_the_clock_went_back_still_times_out_in_time() -> None:
    """The wall clock may step back: a request sent then has an earlier deadline than the timer's,
    and the timer is moved to it."""
    clock = Clock()
    clock.advance(100.0)
    poster = Poster()
    store = RemoteStore(poster, RPC_URL, clock, timeout=5.0, gather_pause=0)
    first = store.get("a")
    clock.advance(0)
    clock.rightNow = 10.0
    second = store.get("b")
    clock.advance(0)
    clock.advance(5.0)
    assert failure_of(second).check(MasterUnreachable)
    assert not has_fired(first)
    clock.advance(90.0)
    assert failure_of(first).check(MasterUnreachable)


def test_a_cancelled_post_that_fails_otherwise_is_reported_as_it_failed() -> None:
    """A client whose cancel fails the post with an error of its own: that error is the cause."""
    clock = Clock()

    class Refusing(Poster):
        def post(self, url: str, /, *, data: bytes, headers: Headers) -> Deferred[Any]:
            answer: Deferred[Any] = Deferred(lambda d: d.errback(ConnectingCancelledError(None)))
            return answer

    store = RemoteStore(Refusing(), RPC_URL, clock, timeout=1.0)
    asked = store.get("a")
    clock.advance(0)
    clock.advance(1.0)
    failure = failure_of(asked)
    assert failure.check(MasterUnreachable)
    assert "ConnectingCancelledError" in detail_of(failure)
    assert clock.getDelayedCalls() == []


def _reference_call_size(method: str, params: tuple[Any, ...]) -> int:
    """The size estimate as it was first written (encode, count)."""
    size = remote._CALL_OVERHEAD + len(method)
    for param in params:
        if isinstance(param, str):
            size += (
                len(param.encode("utf-8")) + 4 * param.count("&") + 3 * (param.count("<") + param.count(">"))
            )
        else:
            size += len(xmlrpclib.dumps((param,)))
    return size


@given(params=st.lists(st.one_of(hostile_text, st.integers(0, 2**31 - 1)), max_size=3).map(tuple))
def test_a_calls_size_is_estimated_as_before(params: tuple[Any, ...]) -> None:
    """The same estimate (or the same exception, for a lone surrogate)."""
    try:
        expected: object = _reference_call_size("Store.Get", params)
    except Exception as exc:
        expected = type(exc)
    try:
        got: object = remote._call_size("Store.Get", params)
    except Exception as exc:
        got = type(exc)
    assert got == expected


_click_keys = st.one_of(
    st.text(alphabet=ALPHABET, min_size=1, max_size=8),
    hostile_text,
    st.text(alphabet="a&<>\xe9\u20ac", min_size=1, max_size=64),  # escaped or wider in UTF-8
)
_click_counts = st.one_of(
    st.integers(-(2**31), 2**31 - 1), st.integers(), st.booleans(), st.floats(allow_nan=False), st.none()
)


@settings(max_examples=300)
@given(
    struct=st.one_of(
        st.dictionaries(_click_keys, _click_counts, max_size=30),
        st.dictionaries(st.integers(), st.integers(), max_size=3),
    )
)
@example(struct={"a": 2**31 - 1, "b": -(2**31)})
@example(struct={"a": 2**31})
@example(struct={"a": -(2**31) - 1, "b": 1})
@example(struct={key_for_index(index): -(2**31) for index in range(200)})
@example(struct={"a": True})
@example(struct={"a&b": 1})
@example(struct={})
@example(struct={"&" * 64: 1, "<>" * 32: 2})
@example(struct={"\xe9" * 64: 1})
@example(struct={"\u20ac" * 60 + str(index): 1 for index in range(5)})
def test_a_structs_size_is_never_estimated_under_what_it_adds(struct: dict[Any, Any]) -> None:
    """A click batch (``{key: count}``) is measured without marshalling it, and never as smaller
    than the request it makes, alone or in a multicall; what cannot be marshalled fails to be
    measured, as before."""
    try:
        bodies = [
            rpcwire.dumps_call((struct,), "Store.Clicks"),
            rpcwire.dumps_multicall([("Store.Clicks", [struct])]),
        ]
    except Exception as exc:
        with pytest.raises(type(exc)):
            remote._call_size("Store.Clicks", (struct,))
        return
    written = max(len(body.encode("utf-8", "surrogatepass")) for body in bodies)
    size = remote._call_size("Store.Clicks", (struct,))
    assert written <= size + remote._BODY_OVERHEAD
    # What it adds to a multicall, with no envelope's slack: batches add up their calls' sizes.
    others = [("Store.Get", ["0"])]
    before = len(rpcwire.dumps_multicall(others).encode("utf-8", "surrogatepass"))
    after = len(
        rpcwire.dumps_multicall([*others, ("Store.Clicks", [struct])]).encode("utf-8", "surrogatepass")
    )
    assert after - before <= size


def test_a_bug_while_answering_a_request_answers_its_calls_and_frees_its_slot(log_events: LogCapture) -> None:
    """Whatever fails while a request's answers are handed out, its calls get a 503 and its slot is
    free for the next request (MAX_IN_FLIGHT such bugs would otherwise stop every call)."""
    clock = Clock()
    poster = Poster()
    store = RemoteStore(poster, RPC_URL, clock, timeout=5.0, gather_pause=0)
    for index in range(remote.MAX_IN_FLIGHT + 2):
        asked = store.get("a")
        clock.advance(0)
        with mock.patch.object(remote, "_deliver", side_effect=RuntimeError("a bug")):
            poster.answer(index, "https://a.example/")
        assert failure_of(asked).check(StoreUnavailable)
    assert len(poster.posts) == remote.MAX_IN_FLIGHT + 2
    assert len([e for e in log_events.events if e.get("log_failure") is not None]) == remote.MAX_IN_FLIGHT + 2
    asked = store.get("b")
    clock.advance(0)
    poster.answer(len(poster.posts) - 1, "https://b.example/")
    assert result_of(asked) == "https://b.example/"


def batches_on_their_way() -> tuple[Clock, Poster, RemoteStore]:
    """A store (no pause) with GATHER_IN_FLIGHT batches on their way (a look-up of "a" each), and the
    test's clock and HTTP client."""
    clock = Clock()
    poster = Poster()
    store = RemoteStore(poster, RPC_URL, clock, timeout=5.0, gather_pause=0)
    for _ in range(remote.GATHER_IN_FLIGHT):
        store.get("a")
        clock.advance(0)
    return clock, poster, store


def test_a_bug_while_taking_calls_forgets_the_calls_alone_it_answered(log_events: LogCapture) -> None:
    """A bug while queued calls are taken for a request answers every queued call with a 503 (logged),
    the calls alone among them too, and they count no more: a look-up made next, while
    GATHER_IN_FLIGHT batches are on their way, waits for one of them and is answered (a call alone
    still counted would let it go to a take that finds no call alone to pass it: another 503)."""
    clock, poster, store = batches_on_their_way()
    assert len(poster.posts) == remote.GATHER_IN_FLIGHT
    queued = [store.get("b"), store.call_alone("Store.Clicks", {"b": 1})]
    with mock.patch.object(RemoteStore, "_take_batch", side_effect=RuntimeError("a bug")):
        clock.advance(0)
    assert all(failure_of(call).check(StoreUnavailable) for call in queued)
    assert len([e for e in log_events.events if e.get("log_failure") is not None]) == 1
    later = store.get("c")
    clock.advance(0)
    assert not has_fired(later), "it waits for a batch slot"
    assert len(poster.posts) == remote.GATHER_IN_FLIGHT
    poster.answer(0, "https://a.example/")
    clock.advance(0)
    poster.answer(len(poster.posts) - 1, "https://c.example/")
    assert result_of(later) == "https://c.example/"
    assert len([e for e in log_events.events if e.get("log_failure") is not None]) == 1


@pytest.mark.parametrize("spare", [0, 1])
def test_calls_that_fill_the_byte_budget_exactly_are_a_full_batch(
    spare: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With GATHER_IN_FLIGHT batches on their way, two look-ups whose bytes fill a batch's budget
    (MAX_BATCH_BYTES less the envelope) to the byte are a full batch and go; one byte of room left,
    they are not, and wait for a batch to be answered."""
    size = remote._call_size("Store.Get", ("b",))
    monkeypatch.setattr(remote, "MAX_BATCH_BYTES", 2 * size + remote._BODY_OVERHEAD + spare)
    clock, poster, store = batches_on_their_way()
    store.get("b")
    store.get("b")
    clock.advance(0)
    if spare:
        assert len(poster.posts) == remote.GATHER_IN_FLIGHT, "one byte short of full: they wait"
    else:
        assert len(poster.posts) == remote.GATHER_IN_FLIGHT + 1, "full to the byte: they go"
        assert method_of(poster.posts[-1][0]) == "system.multicall"


@pytest.mark.parametrize("full_by", ["calls", "bytes"])
def test_a_full_batch_before_a_call_alone_takes_the_last_slot(
    full_by: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With GATHER_IN_FLIGHT batches and a call alone on their way, one slot is left: calls before a
    second call alone that make a full batch (by their count, or by bytes: one call over the budget)
    take it, as a full batch does not wait; the call alone waits for the next slot."""
    if full_by == "calls":
        monkeypatch.setattr(remote, "MAX_BATCH_CALLS", 3)
        keys = ["b"] * 3
    else:
        monkeypatch.setattr(remote, "MAX_BATCH_BYTES", 1024)
        keys = ["b" * 1000]
    clock, poster, store = batches_on_their_way()
    store.call_alone("Store.Clicks", {"a": 1})
    clock.advance(0)
    assert len(poster.posts) == remote.GATHER_IN_FLIGHT + 1 == remote.MAX_IN_FLIGHT - 1
    for key in keys:
        store.get(key)
    store.call_alone("Store.Clicks", {"b": 1})
    clock.advance(0)
    assert len(poster.posts) == remote.MAX_IN_FLIGHT
    assert method_of(poster.posts[-1][0]) == ("system.multicall" if full_by == "calls" else "Store.Get")
    poster.answer(0, "https://a.example/")
    clock.advance(0)
    assert method_of(poster.posts[-1][0]) == "Store.Clicks"


def test_a_post_whose_cancel_raises_still_times_out(log_events: LogCapture) -> None:
    """A client whose cancel raises: the call fails at its deadline all the same (503, logged), the
    other requests in flight still time out, and an answer coming after changes nothing."""
    clock = Clock()

    class Stubborn(Poster):
        def post(self, url: str, /, *, data: bytes, headers: Headers) -> Deferred[Any]:
            def refuse(_: Deferred[Any]) -> None:
                raise RuntimeError("cannot cancel")

            answer = CountingDeferred(refuse if not self.posts else None)
            self.posts.append((data, answer))
            return answer

    poster = Stubborn()
    store = RemoteStore(poster, RPC_URL, clock, timeout=5.0)
    first = store.call_alone("Store.Get", "a")
    second = store.call_alone("Store.Get", "b")
    clock.advance(0)
    assert len(poster.posts) == 2
    clock.advance(5.0)
    assert failure_of(first).check(StoreUnavailable)
    assert failure_of(second).check(MasterUnreachable)
    poster.answer(0, "https://a.example/")  # late: nobody is answered twice
    assert result_of(poster.posts[0][1]) is None, (
        "the late answer is taken quietly (no error in the Deferred)"
    )
    third = store.get("c")
    clock.advance(0)
    poster.answer(2, "https://c.example/")
    assert result_of(third) == "https://c.example/"
    clock.advance(5.0)
    assert clock.getDelayedCalls() == []


class Stalling(Resource):
    """Answers 200 and the start of its body, then nothing more: the connection stays open."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.dropped: list[object] = []

    def render_POST(self, request: Request) -> object:
        request.setHeader(b"content-type", b"text/xml")
        request.write(b"<?xml version='1.0'?>\n<methodResponse>\n")
        request.notifyFinish().addBoth(self.dropped.append)
        return NOT_DONE_YET


def test_a_body_that_stops_coming_times_out_at_the_deadline() -> None:
    """The timeout covers reading the body too: a 200 whose body stops halfway (read through an
    ``IAgent``, not handed over whole) fails at the request's deadline, the read is cancelled and
    its connection dropped, and the request's slot is free again. (The post's Deferred has fired by
    then: the timer's cancel must reach the body's read chained behind it.)"""
    stalling = Stalling()
    link = Link(_at_rpc2(stalling), timeout=2.0)
    asked = link.remote.get("k")
    link.clock.advance(0)  # the call leaves at 0: its deadline is 2.0
    link.settle()
    assert not has_fired(asked)
    link.clock.advance(1.99 - link.clock.seconds())
    assert not has_fired(asked)
    link.clock.advance(2.0 - link.clock.seconds())
    failure = failure_of(asked)
    assert failure.check(MasterUnreachable)
    assert "no answer in time (--rpc-timeout)" in detail_of(failure)
    link.settle()
    assert len(stalling.dropped) == 1, "the stalled answer's connection is dropped"
    assert link.remote._in_flight == 0


def test_the_remembered_latency_histograms_are_bounded() -> None:
    """The labelled histograms kept for reuse are at most _MAX_HISTOGRAMS, however many methods are
    called; a call of a method past the bound is still observed, every time."""
    clock = Clock()
    poster = Poster()
    metrics = Metrics("slave")
    store = RemoteStore(poster, RPC_URL, clock, timeout=5.0, metrics=metrics)
    methods = [f"Store.M{n}" for n in range(remote._MAX_HISTOGRAMS + 5)]
    for method in [*methods, methods[-1]]:
        asked = store.call_alone(method, "a")
        clock.advance(0)
        poster.answer(len(poster.posts) - 1, "x")
        assert result_of(asked) == "x"
    assert len(store._histograms) == remote._MAX_HISTOGRAMS
    counts = {
        dict(sample.labels)["method"]: sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
        if sample.name == "goto_rpc_call_seconds_count"
    }
    assert counts == {method: (2.0 if method == methods[-1] else 1.0) for method in methods}


class Unruly(Poster):
    """An HTTP client whose posts with the given indexes refuse to be cancelled (cancel raises)."""

    def __init__(self, stubborn: set[int]) -> None:
        super().__init__()
        self.stubborn = stubborn

    def post(self, url: str, /, *, data: bytes, headers: Headers) -> Deferred[Any]:
        index = len(self.posts)

        def cancel(_: Deferred[Any]) -> None:
            if index in self.stubborn:
                raise RuntimeError("cannot cancel")

        answer = CountingDeferred(cancel)
        self.posts.append((data, answer))
        return answer

    def reply(self, index: int, kind: str) -> None:
        """Answer post ``index`` (if it is still open): values, faults, a transport failure or junk."""
        data, answer = self.posts[index]
        if answer.called:
            return
        if kind == "refused":
            answer.errback(ConnectionRefusedError())
        elif kind == "junk":
            answer.callback(Answer(b"junk"))
        elif b"<methodName>system.multicall</methodName>" in data:
            calls = data.count(b"<name>methodName</name>")
            value: Any = ["u"] if kind == "ok" else {"faultCode": 404, "faultString": "no link"}
            answer.callback(Answer(xmlrpclib.dumps(([value] * calls,), methodresponse=True).encode()))
        elif kind == "ok":
            answer.callback(Answer(xmlrpclib.dumps(("u",), methodresponse=True).encode()))
        else:
            fault = xmlrpclib.Fault(404, "no link")
            answer.callback(Answer(xmlrpclib.dumps(fault, methodresponse=True).encode()))


def _note(result: object, answered: list[int], number: int) -> object:
    answered.append(number)
    return result


_EVENTS = st.one_of(
    st.tuples(st.just("call"), st.booleans()),
    st.tuples(st.just("advance"), st.sampled_from([0.0, 0.5, 1.0, 2.5, 5.0])),
    st.tuples(st.just("reply"), st.integers(0, 6), st.sampled_from(["ok", "fault", "refused", "junk"])),
    st.tuples(st.just("cancel"), st.integers(0, 12)),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_EVENTS, max_size=40), st.sets(st.integers(0, 6), max_size=3))
@example([("call", False), ("advance", 0.0), ("advance", 5.0), ("reply", 0, "ok")], {0})
@example([("call", True), ("call", False), ("advance", 0.0), ("advance", 5.0), ("reply", 1, "ok")], {0})
@example([("call", False), ("call", False), ("cancel", 0), ("advance", 0.0), ("reply", 0, "ok")], set())
@example(  # a silent master fails the calls still queued, a call alone among them
    [
        ("call", True),
        ("advance", 0.0),
        ("call", True),
        ("advance", 0.0),
        ("call", True),
        ("advance", 0.0),
        ("call", True),
        ("advance", 0.0),
        ("call", True),
        ("advance", 0.0),
        ("reply", 0, "refused"),
    ],
    set(),
)
@example(  # a call alone passes a look-up that waits for a batch slot
    [
        ("call", False),
        ("advance", 0.0),
        ("call", False),
        ("advance", 0.0),
        ("call", False),
        ("call", True),
        ("advance", 0.0),
        ("reply", 0, "ok"),
        ("advance", 0.0),
    ],
    set(),
)
def test_every_call_is_answered_once_whatever_happens(
    events: list[tuple[Any, ...]], stubborn: set[int]
) -> None:
    """Calls, alone or batched, answered, failed, refused, timed out (their cancel failing or not),
    cancelled by their callers, answered after their deadline, in any order: once the clock has run
    past every deadline each call has had exactly one answer, every slot and the timer are free, and
    the store's own callback never failed on a post's Deferred (a late answer is taken quietly); and
    the count of calls alone waiting, which lets them pass the look-ups before them, stays true."""
    clock = Clock()
    poster = Unruly(stubborn)
    store = RemoteStore(poster, RPC_URL, clock, timeout=5.0, metrics=Metrics("slave"))
    calls: list[Deferred[Any]] = []
    answered: list[int] = []
    for event in events:
        if event[0] == "call":
            call: Deferred[Any] = store.call_alone("Store.Get", "k") if event[1] else store.get("k")
            call.addBoth(_note, answered, len(calls))
            calls.append(call)
        elif event[0] == "advance":
            clock.advance(event[1])
        elif event[0] == "reply" and event[1] < len(poster.posts):
            poster.reply(event[1], event[2])
        elif event[0] == "cancel" and event[1] < len(calls):
            calls[event[1]].cancel()
        assert store._alone_queued == sum(call.alone for call in store._queue)
        assert store._queued_bytes == sum(call.size for call in store._queue)
    for _ in range(4):
        clock.advance(5.0)
    assert sorted(answered) == list(range(len(calls)))
    assert (store._in_flight, store._gathering, store._requests, store._queue) == (0, 0, [], [])
    assert clock.getDelayedCalls() == []
    for call in calls:
        call.addErrback(lambda _: None)
    for _, posted in poster.posts:
        if posted.called:  # (one whose cancel raised, never answered, has not)
            assert result_of(posted) is None
