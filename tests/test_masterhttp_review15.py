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
