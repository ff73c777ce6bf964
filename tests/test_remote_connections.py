"""The slave's pooled connections to its master, over real loopback sockets: a connection whose answer
was refused is never handed, closing, to the next call."""

from __future__ import annotations

import xmlrpc.client as xmlrpclib
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from goto_tw.errors import GotoError, MasterUnreachable
from goto_tw.remote import RemoteStore
from goto_tw.tap import master_client

NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nNo link here.\n"
#: The same answer with its body cut short: the rest never comes.
NOT_FOUND_CUT_SHORT = NOT_FOUND[:-6]


class NotAMaster(Protocol):
    """Answers every complete request with ``answer`` (a 404) in one write (as one TCP segment), and
    keeps the connection open, as a goto master started without ``--rpc`` does."""

    def __init__(self, seen: list[int], answer: bytes, open_: list[NotAMaster]) -> None:
        self._seen = seen
        self._answer = answer
        self._open = open_
        self._buffer = b""
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self._seen.append(0)
        self._index = len(self._seen) - 1
        self._open.append(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._open.remove(self)
        self.closed.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\r\n\r\n" in self._buffer:
            head, rest = self._buffer.split(b"\r\n\r\n", 1)
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            if len(rest) < length:
                return
            self._buffer = rest[length:]
            self._seen[self._index] += 1
            assert self.transport is not None
            self.transport.write(self._answer)


@pytest.mark.parametrize(
    ("answer", "requests_per_connection"), [(NOT_FOUND, [2]), (NOT_FOUND_CUT_SHORT, [1, 1])]
)
@pytest_twisted.inlineCallbacks
def test_after_a_refused_answer_the_next_post_gets_a_working_connection(answer, requests_per_connection):
    """A 404 from the master fails the call with the hint. The next POST, made in the very next reactor
    turn (the turn in which a user's add that arrived with the 404 goes out), gets the master's own 404:
    over the same connection when the refused answer was complete (it is clean), over a new one when
    it was cut short (the slave dropped it), never "connection closed" from a closing connection."""
    seen: list[int] = []
    connections: list[NotAMaster] = []
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(lambda: NotAMaster(seen, answer, connections))
    )
    parent = MultiService()
    parent.startService()
    url = f"http://127.0.0.1:{port.getHost().port}/RPC2"
    http = master_client(reactor, 5.0, parent)
    remote = RemoteStore(http, url, reactor, timeout=5.0)
    second: Deferred[Any] = Deferred()
    again: Any = None

    def post_again() -> None:
        posted = http.post(url, data=b"<methodCall/>", headers=Headers({b"content-type": [b"text/xml"]}))
        posted.addBoth(lambda outcome: second.callback([outcome]))

    try:
        [first] = yield remote.get("a").addBoth(lambda outcome: [outcome])
        reactor.callLater(0, post_again)
        assert isinstance(first, Failure) and first.check(MasterUnreachable)
        error = first.value
        assert isinstance(error, GotoError)
        assert "answered HTTP 404" in str(error.detail), error.detail
        [again] = yield second
        assert not isinstance(again, Failure), again
        assert again.code == 404
        assert seen == requests_per_connection
    finally:
        yield parent.stopService()
        yield port.stopListening()
        closed = [connection.closed for connection in connections]
        for connection in list(connections):
            assert connection.transport is not None
            connection.transport.loseConnection()
        yield gatherResults(closed)
        if again is not None and not isinstance(again, Failure):
            yield readBody(again).addErrback(lambda _: None)  # its connection, closed by the master


class ChunkedRPC(Resource):
    """Answers every POST with an XML-RPC string, written in two parts (twisted.web then sends it
    chunked: no Content-Length), as a proxy in front of a master may; counts its connections."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.clients: set[tuple[str, int]] = set()

    def render_POST(self, request: Request) -> object:
        peer = request.getClientAddress()
        address: Any = peer
        self.clients.add((address.host, address.port))
        body = xmlrpclib.dumps(("http://example.com/chunked",), methodresponse=True).encode()
        request.setHeader(b"content-type", b"text/xml")
        request.write(body[:40])
        request.write(body[40:])
        request.finish()
        return NOT_DONE_YET


@pytest_twisted.inlineCallbacks
def test_chunked_answers_from_a_real_twisted_web_server_are_read_over_one_connection():
    """The slave's client reads twisted.web's chunked answers, and keeps using the connection."""
    resource = ChunkedRPC()
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(resource))
    parent = MultiService()
    parent.startService()
    url = f"http://127.0.0.1:{port.getHost().port}/RPC2"
    remote = RemoteStore(master_client(reactor, 5.0, parent), url, reactor, timeout=5.0)
    try:
        first = yield remote.get("a")
        second = yield remote.get("b")
        assert first == second == "http://example.com/chunked"
        assert len(resource.clients) == 1
    finally:
        yield parent.stopService()
        yield port.stopListening()
