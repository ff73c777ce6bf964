"""The slave's HTTP/1.1 client for its masters (goto_tw.masterhttp), driven over fake connections:
what it sends, how it reads answers in any split, when it reuses a connection, and its bounds."""

from __future__ import annotations

from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed, ResponseNeverReceived, readBody
from twisted.web.http_headers import Headers

from goto_tw.masterhttp import (
    IDLE_SECONDS,
    MAX_CONNECTIONS,
    MAX_HEAD_BYTES,
    MAX_MASTERS,
    MAX_REFUSED_BODY_BYTES,
    MAX_WAITING,
    REFUSED_BODY_SECONDS,
    BadAnswer,
    LinkBusy,
    MasterConnections,
)
from tests.helpers import failure_of, has_fired, result_of

URL = "http://127.0.0.1:8081/RPC2"
HEADERS = Headers({b"content-type": [b"text/xml"], b"authorization": [b"Bearer s3cret"]})
XML = b"<?xml version='1.0'?>\n<methodResponse><params><param><value><string>u</string></value></param></params></methodResponse>\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s" % (len(XML), XML)
MAX_ANSWER = 100_000


class Endpoint:
    """Connects at once (or, with ``hold``, when told) over a fresh StringTransport each time."""

    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.transports: list[StringTransport] = []
        self.protocols: list[Any] = []
        self.pending: list[tuple[Deferred[Any], Any]] = []
        self.cancelled = 0

    def __call__(self, uri: Any) -> Endpoint:
        return self

    def connect(self, factory: Any) -> Deferred[Any]:
        protocol = factory.buildProtocol(None)
        if self.hold:

            def cancel(_: Deferred[Any]) -> None:
                self.cancelled += 1

            connecting: Deferred[Any] = Deferred(cancel)
            self.pending.append((connecting, protocol))
            return connecting
        return succeed(self._made(protocol))

    def _made(self, protocol: Any) -> Any:
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.transports.append(transport)
        self.protocols.append(protocol)
        return protocol

    def finish_connecting(self) -> None:
        connecting, protocol = self.pending.pop(0)
        connecting.callback(self._made(protocol))


class Refusing(Endpoint):
    def connect(self, factory: Any) -> Deferred[Any]:
        connecting: Deferred[Any] = Deferred()
        connecting.errback(ConnectionRefusedError())
        return connecting


def client(endpoint: Endpoint | None = None) -> tuple[MasterConnections, Endpoint, Clock]:
    endpoint = endpoint or Endpoint()
    clock = Clock()
    connections = MasterConnections(clock, 5.0, max_answer_bytes=MAX_ANSWER, endpoints=cast(Any, endpoint))
    return connections, endpoint, clock


def post(connections: MasterConnections, data: bytes = b"<methodCall/>", url: str = URL) -> Deferred[Any]:
    return connections.post(url, data=data, headers=HEADERS)


def answer_to(endpoint: Endpoint, index: int, data: bytes) -> None:
    endpoint.protocols[index].dataReceived(data)


def test_a_post_is_one_write_of_the_request_line_host_headers_length_and_body() -> None:
    connections, endpoint, _ = client()
    post(connections, b"<methodCall>x</methodCall>")
    [transport] = endpoint.transports
    sent = transport.value()
    head, body = sent.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /RPC2 HTTP/1.1"
    assert lines[1] == b"Host: 127.0.0.1:8081"
    assert sorted(lines[2:]) == [
        b"Authorization: Bearer s3cret",
        b"Content-Length: 26",
        b"Content-Type: text/xml",
    ]
    assert body == b"<methodCall>x</methodCall>"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://[::1]:8081/RPC2", b"[::1]:8081"),
        ("http://master.example/RPC2", b"master.example"),
        ("https://master.example/x/RPC2", b"master.example"),
        ("https://master.example:8443/RPC2", b"master.example:8443"),
    ],
)
def test_the_host_header_is_what_twisted_agent_writes(url: str, host: bytes) -> None:
    connections, endpoint, _ = client()
    post(connections, url=url)
    first_lines = endpoint.transports[0].value().split(b"\r\n")[:2]
    assert first_lines[1] == b"Host: " + host


def test_a_header_value_with_a_line_break_is_never_sent() -> None:
    connections, endpoint, _ = client()
    bad = Headers({b"authorization": [b"Bearer x"]})
    bad._rawHeaders[b"authorization"] = [b"Bearer x\r\nX-Evil: 1"]  # Headers itself would clean it
    failure = failure_of(connections.post(URL, data=b"x", headers=bad))
    assert failure.check(ValueError)
    assert endpoint.transports == []


def chunked(body: bytes, size: int) -> bytes:
    out = b""
    for start in range(0, len(body), size):
        part = body[start : start + size]
        out += b"%x\r\n%s\r\n" % (len(part), part)
    return out + b"0\r\n\r\n"


ANSWERS = {
    "length": OK,
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(XML, 7),
    "interim": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX: y\r\n\r\n" + OK,
}


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(sorted(ANSWERS)),
    cuts=st.lists(st.integers(min_value=0, max_value=len(ANSWERS["interim"])), max_size=6),
)
def test_an_answer_in_any_split_is_read_whole_and_the_connection_is_used_again(
    kind: str, cuts: list[int]
) -> None:
    connections, endpoint, _ = client()
    first = post(connections)
    data = ANSWERS[kind]
    points = sorted({0, len(data), *(cut for cut in cuts if cut < len(data))})
    for start, end in zip(points, points[1:]):
        assert not has_fired(first)
        answer_to(endpoint, 0, data[start:end])
    answer = result_of(first)
    assert (answer.code, answer.body) == (200, XML)
    second = post(connections)
    assert len(endpoint.transports) == 1, "the same connection carries the next request"
    answer_to(endpoint, 0, OK)
    assert result_of(second).body == XML


def test_an_answer_ended_by_the_connection_is_read_whole_and_the_connection_not_kept() -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n\r\n" + XML[:20])
    answer_to(endpoint, 0, XML[20:])
    assert not has_fired(posted)
    endpoint.protocols[0].connectionLost(Failure(ConnectionDone()))
    assert result_of(posted).body == XML
    post(connections)
    assert len(endpoint.transports) == 2


def test_an_answer_ended_by_a_reset_fails() -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, b"HTTP/1.1 200 OK\r\n\r\n" + XML[:20])
    endpoint.protocols[0].connectionLost(Failure(ConnectionLost()))
    assert failure_of(posted).check(ResponseFailed)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(XML), XML),
        b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(XML), XML),
        OK + b"HTTP/1.1 200 OK\r\n",  # more than was asked for
    ],
    ids=["connection-close", "http-1.0", "extra-bytes"],
)
def test_a_connection_is_not_used_again_after_an_answer_that_ends_it(answer: bytes) -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, answer)
    assert result_of(posted).body == XML
    assert endpoint.transports[0].disconnecting
    post(connections)
    assert len(endpoint.transports) == 2


def test_a_connection_lost_before_any_answer_is_response_never_received() -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    endpoint.protocols[0].connectionLost(Failure(ConnectionDone()))
    assert failure_of(posted).check(ResponseNeverReceived)


def test_a_connection_lost_mid_answer_is_response_failed() -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, OK[:60])
    endpoint.protocols[0].connectionLost(Failure(ConnectionDone()))
    assert type(failure_of(posted).value) is ResponseFailed  # not its subclass ResponseNeverReceived


def reason_of(failure: Failure) -> str:
    error: Any = failure.value
    return " ".join(str(reason.value) for reason in error.reasons)


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n", "control characters"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "transfer coding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", "both"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "Chunk"),
    ],
)
def test_an_answer_that_is_not_http_this_client_reads_fails_and_drops_the_connection(
    answer: bytes, says: str
) -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, answer)
    failure = failure_of(posted)
    assert failure.check(ResponseFailed)
    error: Any = failure.value
    assert error.reasons[0].check(BadAnswer)
    assert says in reason_of(failure)
    assert endpoint.transports[0].disconnected  # aborted
    post(connections)
    assert len(endpoint.transports) == 2


def test_bytes_from_an_idle_connection_drop_it() -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, OK)
    result_of(posted)
    answer_to(endpoint, 0, b"HTTP/1.1 200 OK\r\n")
    assert endpoint.transports[0].disconnected


# --- answers other than 200 -----------------------------------------------------------------------

NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nNo link here.\n"


def test_an_answer_other_than_200_is_handed_over_at_its_head_and_its_body_follows() -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, NOT_FOUND[:-10])
    answer = result_of(posted)
    assert (answer.code, answer.body) == (404, None)
    assert answer.headers.getRawHeaders(b"content-type") == [b"text/plain"]
    body = readBody(answer)
    assert not has_fired(body)
    answer_to(endpoint, 0, NOT_FOUND[-10:])
    assert result_of(body) == b"No link here.\n"
    post(connections)
    assert len(endpoint.transports) == 1, "a complete refusal leaves its connection usable"


def test_a_refused_answers_body_not_wanted_drops_the_connection_while_it_comes() -> None:
    stopped: list[Failure] = []

    class Reader:
        transport: Any = None

        def makeConnection(self, transport: Any) -> None:
            self.transport = transport

        def dataReceived(self, data: bytes) -> None:
            pass

        def connectionLost(self, reason: Failure) -> None:
            stopped.append(reason)

    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, NOT_FOUND[:-10])
    reader = Reader()
    result_of(posted).deliverBody(reader)
    reader.transport.stopProducing()
    assert endpoint.transports[0].disconnected
    assert stopped and stopped[0].check(ResponseFailed)
    post(connections)
    assert len(endpoint.transports) == 2


def test_stopping_a_complete_refused_body_keeps_the_connection() -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, NOT_FOUND)
    answer = result_of(posted)
    assert result_of(readBody(answer)) == b"No link here.\n"

    class Reader:
        def makeConnection(self, transport: Any) -> None:
            transport.stopProducing()

        def dataReceived(self, data: bytes) -> None:
            pass

        def connectionLost(self, reason: Failure) -> None:
            pass

    answer.deliverBody(Reader())
    assert not endpoint.transports[0].disconnected
    post(connections)
    assert len(endpoint.transports) == 1


def test_a_refused_answers_body_that_never_ends_is_dropped_after_its_deadline() -> None:
    connections, endpoint, clock = client()
    posted = post(connections)
    answer_to(endpoint, 0, NOT_FOUND[:-10])
    body = readBody(result_of(posted))
    clock.advance(REFUSED_BODY_SECONDS - 0.1)
    assert not endpoint.transports[0].disconnected
    clock.advance(0.2)
    assert endpoint.transports[0].disconnected
    assert failure_of(body).check(ResponseFailed)


def test_a_refused_answers_body_longer_than_its_bound_is_not_read() -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(
        endpoint, 0, b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n" % (MAX_REFUSED_BODY_BYTES + 1)
    )
    answer = result_of(posted)
    assert answer.code == 404
    assert endpoint.transports[0].disconnected
    assert failure_of(readBody(answer)).check(ResponseFailed)


def test_a_refused_chunked_body_past_its_bound_drops_the_connection() -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n")
    body = readBody(result_of(posted))
    answer_to(
        endpoint, 0, b"%x\r\n%s\r\n" % (MAX_REFUSED_BODY_BYTES + 1, b"x" * (MAX_REFUSED_BODY_BYTES + 1))
    )
    assert endpoint.transports[0].disconnected
    assert failure_of(body).check(ResponseFailed)


# --- bounds --------------------------------------------------------------------------------------


def test_a_head_longer_than_its_bound_fails() -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"y" * MAX_HEAD_BYTES)
    assert "head is longer" in reason_of(failure_of(posted))
    assert endpoint.transports[0].disconnected


def test_a_head_just_within_its_bound_is_read() -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    filler = b"X-Filler: " + b"y" * (MAX_HEAD_BYTES - 200)
    answer_to(endpoint, 0, OK.replace(b"\r\n\r\n", b"\r\n" + filler + b"\r\n\r\n", 1))
    assert result_of(posted).body == XML


def test_a_200_whose_length_is_past_the_bound_fails_before_its_body_is_read() -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_ANSWER + 1))
    assert "longer than" in reason_of(failure_of(posted))
    assert endpoint.transports[0].disconnected


def test_a_200_exactly_at_the_bound_is_read() -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % MAX_ANSWER + b"x" * MAX_ANSWER)
    assert len(result_of(posted).body) == MAX_ANSWER


@pytest.mark.parametrize("kind", ["chunked", "until-close"])
def test_a_200_without_a_length_fails_once_past_the_bound(kind: str) -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    if kind == "chunked":
        answer_to(endpoint, 0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(MAX_ANSWER // 10_000 + 1):
            answer_to(endpoint, 0, b"%x\r\n%s\r\n" % (10_000, b"x" * 10_000))
    else:
        answer_to(endpoint, 0, b"HTTP/1.1 200 OK\r\n\r\n")
        for _ in range(MAX_ANSWER // 10_000 + 1):
            answer_to(endpoint, 0, b"x" * 10_000)
    assert "longer than" in reason_of(failure_of(posted))
    assert endpoint.transports[0].disconnected


def test_connections_are_capped_and_a_waiting_post_takes_the_first_one_free() -> None:
    connections, endpoint, _ = client()
    posts = [post(connections, b"%d" % n) for n in range(MAX_CONNECTIONS + 1)]
    assert len(endpoint.transports) == MAX_CONNECTIONS
    assert not has_fired(posts[MAX_CONNECTIONS])
    answer_to(endpoint, 3, OK)
    assert result_of(posts[3]).body == XML
    assert endpoint.transports[3].value().endswith(b"\r\n\r\n%d" % MAX_CONNECTIONS)
    answer_to(endpoint, 3, OK)
    assert result_of(posts[MAX_CONNECTIONS]).body == XML


def test_posts_waiting_past_their_bound_fail_at_once() -> None:
    connections, _, _ = client()
    waiting = [post(connections) for _ in range(MAX_CONNECTIONS + MAX_WAITING)]
    assert not any(has_fired(posted) for posted in waiting)
    refused = failure_of(post(connections))
    assert refused.check(ResponseNeverReceived)
    assert "already wait for a connection" in reason_of(refused)
    error: Any = refused.value
    assert error.reasons[0].check(LinkBusy)


def test_master_urls_are_bounded() -> None:
    connections, _, _ = client()
    for n in range(MAX_MASTERS):
        post(connections, url=f"http://127.0.0.1:{9000 + n}/RPC2")
    assert failure_of(post(connections, url="http://127.0.0.1:8999/RPC2")).check(ValueError)


def test_an_idle_connection_too_old_is_closed_and_a_new_one_made() -> None:
    connections, endpoint, clock = client()
    posted = post(connections)
    answer_to(endpoint, 0, OK)
    result_of(posted)
    clock.advance(IDLE_SECONDS - 1)
    post(connections)
    assert len(endpoint.transports) == 1
    answer_to(endpoint, 0, OK)
    clock.advance(IDLE_SECONDS)
    post(connections)
    assert endpoint.transports[0].disconnecting
    assert len(endpoint.transports) == 2


def test_an_idle_connection_the_master_closed_is_not_used() -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, OK)
    result_of(posted)
    endpoint.protocols[0].connectionLost(Failure(ConnectionDone()))
    post(connections)
    assert len(endpoint.transports) == 2


# --- cancelling and connecting --------------------------------------------------------------------


def test_cancelling_a_sent_post_drops_its_connection_so_a_late_answer_goes_nowhere() -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    posted.cancel()
    assert failure_of(posted).check(CancelledError)
    assert endpoint.transports[0].disconnected
    again = post(connections)
    assert len(endpoint.transports) == 2
    answer_to(endpoint, 1, OK)
    assert result_of(again).body == XML


def test_cancelling_a_waiting_post_leaves_the_queue_to_the_others() -> None:
    connections, endpoint, _ = client()
    busy = [post(connections) for _ in range(MAX_CONNECTIONS)]
    first, second = post(connections, b"first"), post(connections, b"second")
    first.cancel()
    assert failure_of(first).check(CancelledError)
    answer_to(endpoint, 0, OK)
    result_of(busy[0])
    assert endpoint.transports[0].value().endswith(b"second")
    answer_to(endpoint, 0, OK)
    assert result_of(second).body == XML


def test_cancelling_a_post_while_connecting_cancels_the_connection_attempt() -> None:
    endpoint = Endpoint(hold=True)
    connections, _, _ = client(endpoint)
    posted = post(connections)
    posted.cancel()
    assert endpoint.cancelled == 1
    assert failure_of(posted).check(CancelledError)


def test_a_refused_connection_fails_the_post_and_the_waiting_ones() -> None:
    connections, _, _ = client(Refusing())
    posts = [post(connections) for _ in range(3)]
    for posted in posts:
        assert failure_of(posted).check(ConnectionRefusedError)


def test_stopping_closes_idle_connections_and_later_posts_still_work() -> None:
    connections, endpoint, _ = client()
    connections.startService()
    posted = post(connections)
    answer_to(endpoint, 0, OK)
    result_of(posted)
    stopped = connections.stopService()
    assert endpoint.transports[0].disconnecting
    assert not has_fired(stopped)
    endpoint.protocols[0].connectionLost(Failure(ConnectionDone()))
    assert has_fired(stopped)
    late = post(connections)
    answer_to(endpoint, 1, OK)
    assert result_of(late).body == XML
    assert endpoint.transports[1].disconnecting, "not kept once stopped"


def test_the_generation_moves_when_a_connection_is_lost_or_not_made() -> None:
    """Review 35: what a slave of several masters checks them again by (goto_tw.failover): it moves
    when a connection to the URL is lost or cannot be made, not while one carries answer after
    answer."""
    connections, endpoint, _ = client()
    assert connections.generation(URL) == 0
    first = post(connections)
    answer_to(endpoint, 0, OK)
    result_of(first)
    second = post(connections)  # the same connection, kept alive
    answer_to(endpoint, 0, OK)
    result_of(second)
    assert len(endpoint.protocols) == 1 and connections.generation(URL) == 0
    endpoint.protocols[0].connectionLost(Failure(ConnectionDone()))
    assert connections.generation(URL) == 1
    closing = post(connections)  # review 35's second read: a master (a proxy) that closes after each
    answer_to(endpoint, 1, OK.replace(b"Content-Type", b"Connection: close\r\nContent-Type"))
    result_of(closing)
    endpoint.protocols[1].connectionLost(Failure(ConnectionDone()))  # this side's abort, after it
    assert connections.generation(URL) == 1, "a close the answer announced is no sign of a restart"
    refused, _, _ = client(Refusing())
    failure_of(post(refused))
    assert refused.generation(URL) == 1
    assert connections.generation("http://other.example/RPC2") == 0


def test_the_generation_moves_when_an_idle_connection_is_ended_for_its_age() -> None:
    """Review 39: an idle connection this side ended after IDLE_SECONDS left the generation where it
    was, so the connection made instead (maybe to another process: a host that crashed without a
    close reaching us and came back) took calls unchecked. Reading the generation ends those too old
    to use first, so a check can be made before the post that would open the new connection."""
    connections, endpoint, clock = client()
    kept = post(connections)
    answer_to(endpoint, 0, OK)
    result_of(kept)
    clock.advance(IDLE_SECONDS - 1)
    assert connections.generation(URL) == 0, "idle, young enough to use"
    again = post(connections)
    answer_to(endpoint, 0, OK)
    result_of(again)
    clock.advance(IDLE_SECONDS)
    assert connections.generation(URL) == 1 and endpoint.transports[0].disconnected, "ended, before any post"
    assert connections.generation(URL) == 1, "once"
    fresh = post(connections)
    assert len(endpoint.protocols) == 2
    answer_to(endpoint, 1, OK)
    result_of(fresh)
    clock.advance(IDLE_SECONDS)
    late = post(connections)  # a post finds it too old itself: the same count
    assert connections.generation(URL) == 2 and len(endpoint.protocols) == 3
    answer_to(endpoint, 2, OK)
    result_of(late)


def test_idle_connections_too_old_are_found_whatever_their_order() -> None:
    """The idle connections are kept in the order they were released, which is their age only as
    long as the wall clock does not go back: each is looked at, so one too old behind a young one
    is ended (and counted) before a post could take it."""
    connections, endpoint, clock = client()
    first, second = post(connections), post(connections)  # two connections
    clock.advance(100)
    answer_to(endpoint, 0, OK)  # released at 100
    clock.rightNow = 50.0  # the wall clock set back
    answer_to(endpoint, 1, OK)  # released at 50, after the first
    result_of(first), result_of(second)
    clock.rightNow = 50.0 + IDLE_SECONDS
    assert connections.generation(URL) == 1
    assert endpoint.transports[1].disconnected and not endpoint.transports[0].disconnected
