"""Hostile review of the slave's HTTP/1.1 client (goto_tw.masterhttp): re-entrancy, slots held by
connections that are closing, and cancelling at every stage."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed

from goto_tw.masterhttp import IDLE_SECONDS, MAX_CONNECTIONS, MasterConnections
from tests.helpers import failure_of, has_fired, result_of
from tests.test_masterhttp import OK, URL, XML, Endpoint, answer_to, chunked, client, post

CLOSE = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(XML), XML)


class StoppingReader:
    """A body reader that stops the body (``transport.stopProducing()``) as soon as bytes come."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.ended: list[Failure] = []

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:
        self.transport.stopProducing()

    def connectionLost(self, reason: Failure) -> None:
        self.ended.append(reason)


REFUSED_HEADS = {
    "length": b"HTTP/1.1 404 Not Found\r\nContent-Length: 14\r\n\r\n",
    "chunked": b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n",
}
REFUSED_BODIES = {"length": b"No link here.\n", "chunked": chunked(b"No link here.\n", 5)}


@pytest.mark.parametrize("kind", sorted(REFUSED_HEADS))
def test_a_body_stopped_inside_its_last_bytes_leaves_the_dropped_connection_unused(kind: str) -> None:
    """A reader that stops the body while its last bytes are being delivered drops the connection:
    that dropped connection must never be handed to the next post (which would fail with "connection
    lost" although the master is fine)."""
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, REFUSED_HEADS[kind])
    reader = StoppingReader()
    result_of(posted).deliverBody(reader)
    answer_to(endpoint, 0, REFUSED_BODIES[kind])
    assert endpoint.transports[0].disconnected  # dropped by the reader
    assert len(reader.ended) == 1 and reader.ended[0].check(ResponseFailed)
    again = post(connections)
    assert len(endpoint.transports) == 2, "the next post goes out on a new connection"
    assert endpoint.transports[0].value().count(b"POST ") == 1
    answer_to(endpoint, 1, OK)
    assert result_of(again).body == XML


class ClosingTransport(StringTransport):
    """Like a TCP or TLS transport whose peer never completes a graceful close (a TLS peer that never
    answers close_notify, a peer that stops reading): ``loseConnection`` never ends the connection;
    ``abortConnection`` always does, on the next turn of ``clock``."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self._clock = clock
        self.protocol: Any = None

    def abortConnection(self) -> None:
        if self.disconnected:
            return
        super().abortConnection()
        self._clock.callLater(0, self.protocol.connectionLost, Failure(ConnectionAborted()))


class ClosingEndpoint(Endpoint):
    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def _made(self, protocol: Any) -> Any:
        transport = ClosingTransport(self.clock)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.transports.append(transport)
        self.protocols.append(protocol)
        return protocol


def closing_client() -> tuple[MasterConnections, ClosingEndpoint, Clock]:
    clock = Clock()
    endpoint = ClosingEndpoint(clock)
    connections = MasterConnections(clock, 5.0, max_answer_bytes=100_000, endpoints=endpoint)
    return connections, endpoint, clock


def test_connections_the_slave_is_done_with_do_not_hold_their_slots_while_the_peer_lingers() -> None:
    """Answers with ``Connection: close`` end their connections. Ending them must not wait on the
    peer: a connection still closing counts against MAX_CONNECTIONS, so MAX_CONNECTIONS of them
    whose close never completes would leave every later post waiting (for ever: until its timeout)."""
    connections, endpoint, clock = closing_client()
    for n in range(MAX_CONNECTIONS):
        posted = post(connections)
        answer_to(endpoint, n, CLOSE)
        assert result_of(posted).body == XML
        clock.advance(0)
    late = post(connections)
    clock.advance(0)
    assert len(endpoint.transports) == MAX_CONNECTIONS + 1, "the late post got a connection"
    answer_to(endpoint, MAX_CONNECTIONS, OK)
    assert result_of(late).body == XML


def test_stale_idle_connections_do_not_hold_their_slots_while_the_peer_lingers() -> None:
    """Idle connections too old to use are closed when a post comes; closing them must not keep
    their slots, or a master that was quiet for IDLE_SECONDS after a burst is never reached again."""
    connections, endpoint, clock = closing_client()
    burst = [post(connections) for _ in range(MAX_CONNECTIONS)]
    for n in range(MAX_CONNECTIONS):
        answer_to(endpoint, n, OK)
    assert all(result_of(posted).body == XML for posted in burst)
    clock.advance(IDLE_SECONDS + 1)
    for _ in range(3):
        late = post(connections)
        clock.advance(0)
        assert has_fired(late) or len(endpoint.transports) > MAX_CONNECTIONS
        answer_to(endpoint, len(endpoint.transports) - 1, OK)
        assert result_of(late).body == XML


def test_cancelling_mid_answer_fails_that_post_once_and_the_next_gets_a_new_connection() -> None:
    """Cancelled with half a chunked 200 in: the post fails once (CancelledError), the rest of that
    answer arriving later reaches nobody, and the connection's slot is freed when it ends."""
    connections, endpoint, clock = closing_client()
    posted = post(connections)
    answer_to(endpoint, 0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(XML, 7)[:30])
    posted.cancel()
    assert failure_of(posted).check(CancelledError)
    answer_to(endpoint, 0, chunked(XML, 7)[30:])  # late bytes, before the abort is through
    clock.advance(0)
    again = post(connections)
    assert len(endpoint.transports) == 2
    answer_to(endpoint, 1, OK)
    assert result_of(again).body == XML
    link: Any = next(iter(connections._links.values()))
    assert link._open == 1


def test_a_post_made_from_a_callback_of_the_answer_it_follows_reuses_the_connection_cleanly() -> None:
    """A caller posting again from its answer's callback (synchronously) gets a working connection
    and its own answer, and the first post fires once."""
    connections, endpoint, _ = client()
    seen: list[Any] = []
    follow: list[Deferred[Any]] = []

    def again(answer: Any) -> Any:
        seen.append(answer.body)
        follow.append(post(connections, b"second"))
        return answer

    first = post(connections, b"first")
    first.addCallback(again)
    answer_to(endpoint, 0, OK)
    assert seen == [XML]
    [second] = follow
    transport = endpoint.transports[-1]
    assert transport.value().endswith(b"second")
    answer_to(endpoint, len(endpoint.transports) - 1, OK)
    assert result_of(second).body == XML


def test_a_refused_answer_whose_reader_posts_again_when_the_body_ends_gets_its_answer() -> None:
    """The body of a refused answer ends (connectionLost of its reader) before its connection is
    released; a post made right then must still be answered, and nothing waits for ever."""
    connections, endpoint, _ = client()
    follow: list[Deferred[Any]] = []

    class Reader:
        def makeConnection(self, transport: Any) -> None:
            pass

        def dataReceived(self, data: bytes) -> None:
            pass

        def connectionLost(self, reason: Failure) -> None:
            follow.append(post(connections, b"again"))

    busy = [post(connections) for _ in range(MAX_CONNECTIONS)]
    answer_to(endpoint, 0, REFUSED_HEADS["length"])
    result_of(busy[0]).deliverBody(Reader())
    answer_to(endpoint, 0, REFUSED_BODIES["length"])
    [again] = follow
    assert endpoint.transports[0].value().endswith(b"again")
    answer_to(endpoint, 0, OK)
    assert result_of(again).body == XML


def test_a_connection_lost_while_idle_after_stop_fires_the_stop() -> None:
    connections, endpoint, _ = client()
    connections.startService()
    posted = post(connections)
    answer_to(endpoint, 0, OK)
    result_of(posted)
    stopped = connections.stopService()
    endpoint.protocols[0].connectionLost(Failure(ConnectionDone()))
    assert has_fired(stopped)


def test_stopping_never_waits_on_a_peer_that_does_not_complete_the_close() -> None:
    """twistd waits for stopService without a timeout: closing the idle connections must end them
    even when the master never answers a graceful close (a TLS close_notify it ignores)."""
    connections, endpoint, clock = closing_client()
    connections.startService()
    posted = post(connections)
    answer_to(endpoint, 0, OK)
    result_of(posted)
    stopped = connections.stopService()
    clock.advance(0)
    assert has_fired(stopped)
