"""Answers held to the end of the reactor turn (goto_tw.outbox, the fast path's ``hold_answers``):
each connection's answers leave once the turn's work is done, in order, in one write, before
anything twisted.web writes or a close; past the byte limit at once; nothing to a lost connection."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from goto_tw.fastpath import MAX_UNSENT_BYTES
from goto_tw.outbox import IHeldWriter, Outbox
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from tests.conftest import LogCapture
from tests.fakes import ManualLog
from tests.test_fastpath import POST_ADD
from tests.wire import CLIENT, goto_site

URLS = {"abc": "https://a.example/x", "Z9": "http://b.example/"}
GET = b"GET /abc HTTP/1.1\r\nHost: go.example\r\n\r\n"
GET_OTHER = b"GET /Z9 HTTP/1.1\r\nHost: go.example\r\n\r\n"
FORM_PAGE = b"GET / HTTP/1.1\r\nHost: go.example\r\n\r\n"


class RecordingTransport(StringTransport):
    """A ``StringTransport`` that also keeps each write (and a close) as one event, in order."""

    def __init__(self) -> None:
        super().__init__(peerAddress=CLIENT)
        self.events: list[Any] = []

    def write(self, data: bytes) -> None:
        self.events.append(data)
        super().write(data)

    def writeSequence(self, data: Any) -> None:
        self.events.append(b"".join(data))
        super().writeSequence(data)

    def loseConnection(self) -> None:
        self.events.append("close")
        super().loseConnection()


def held_site(log: ManualLog | None = None) -> tuple[GotoSite, Clock]:
    clock = Clock()
    site, _ = goto_site(URLStore(dict(URLS), log), clock=clock, hold_answers=True)
    return site, clock


def connect(site: GotoSite) -> tuple[Any, RecordingTransport]:
    channel = site.buildProtocol(CLIENT)
    transport = RecordingTransport()
    channel.makeConnection(transport)
    return channel, transport


def answers(transport: RecordingTransport) -> list[bytes]:
    """The status lines written, in order."""
    return [line for line in transport.value().split(b"\r\n") if line.startswith(b"HTTP/1.")]


def test_the_answers_of_a_turn_leave_once_its_work_is_done() -> None:
    site, clock = held_site()
    first, first_transport = connect(site)
    second, second_transport = connect(site)
    first.dataReceived(GET)
    second.dataReceived(GET_OTHER)
    assert first_transport.value() == second_transport.value() == b""
    assert first.buffered() > 0  # held answers are held by the connection (bounded on their own)
    clock.advance(0)
    assert first.buffered() == 0
    assert b"\r\nLocation: https://a.example/x\r\n" in first_transport.value()
    assert b"\r\nLocation: http://b.example/\r\n" in second_transport.value()


def test_a_connections_answers_of_a_turn_leave_in_one_write_in_order() -> None:
    site, clock = held_site()
    channel, transport = connect(site)
    channel.dataReceived(GET + GET + GET_OTHER)  # not a palindrome: a reversed join would pass one
    clock.advance(0)
    assert len(transport.events) == 1
    locations = [line for line in transport.value().split(b"\r\n") if line.startswith(b"Location: ")]
    assert locations == [
        b"Location: https://a.example/x",
        b"Location: https://a.example/x",
        b"Location: http://b.example/",
    ]


def test_answers_past_the_byte_limit_leave_at_once() -> None:
    site, clock = held_site()
    channel, transport = connect(site)
    requests = MAX_UNSENT_BYTES // 100  # every answer is over 100 bytes
    channel.dataReceived(GET * requests)
    sent = len(transport.value())
    assert sent >= MAX_UNSENT_BYTES  # not held to the end of the turn
    assert channel.buffered() < MAX_UNSENT_BYTES  # what is still held stays under the limit
    clock.advance(0)
    assert len(answers(transport)) == requests


def test_twisted_webs_answer_follows_the_answers_held() -> None:
    """A request the fast path lends to twisted.web (the form page) behind a redirect in the same
    read: twisted.web writes at once, after the redirect held for the turn."""
    site, clock = held_site()
    channel, transport = connect(site)
    channel.dataReceived(GET + FORM_PAGE)
    assert answers(transport) == [b"HTTP/1.1 302 Found", b"HTTP/1.1 200 OK"]
    clock.advance(0)
    assert answers(transport) == [b"HTTP/1.1 302 Found", b"HTTP/1.1 200 OK"]


@pytest.mark.parametrize(
    ("request_behind", "status_line"),
    [
        # HTTP/1.0 hands the rest of the connection to twisted.web (it closes after answering)
        (b"GET /Z9 HTTP/1.0\r\n\r\n", b"HTTP/1.0 302 Found"),
        # a malformed request: twisted.web writes its 400 to the transport itself (not through the
        # channel) and closes
        (b"GET /abc HTTP/1.1 extra\r\nHost: go.example\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    ],
)
def test_a_request_handed_to_twisted_web_is_answered_after_the_answers_held(
    request_behind: bytes, status_line: bytes
) -> None:
    site, _ = held_site()
    channel, transport = connect(site)
    channel.dataReceived(GET + request_behind)
    assert answers(transport) == [b"HTTP/1.1 302 Found", status_line]
    assert transport.events[-1] == "close"


def test_the_answers_held_are_sent_before_the_connection_closes() -> None:
    site, clock = held_site()
    channel, transport = connect(site)
    channel.dataReceived(GET)
    channel.loseConnection()
    assert transport.events[-1] == "close"
    assert answers(transport) == [b"HTTP/1.1 302 Found"]
    clock.advance(0)
    assert answers(transport) == [b"HTTP/1.1 302 Found"]  # not a second time


def test_a_half_closed_client_gets_its_answers_then_the_close() -> None:
    site, clock = held_site()
    channel, transport = connect(site)
    channel.dataReceived(GET + GET_OTHER)
    channel.readConnectionLost()
    clock.advance(0)
    assert len(answers(transport)) == 2
    assert transport.events[-1] == "close"


def test_an_add_acknowledged_later_leaves_at_the_end_of_that_turn() -> None:
    log = ManualLog()
    site, clock = held_site(log)
    channel, transport = connect(site)
    channel.dataReceived(POST_ADD)
    clock.advance(0)
    assert transport.value() == b""  # not durable yet
    log.complete_all()
    assert transport.value() == b""
    clock.advance(0)
    assert answers(transport) == [b"HTTP/1.1 200 OK"]
    assert transport.value().endswith(b"\r\n\r\nhttp://go.example/abd\n")  # the next key


def test_a_lost_connection_is_sent_nothing(log_events: LogCapture) -> None:
    site, clock = held_site()
    channel, transport = connect(site)
    channel.dataReceived(GET)
    channel.connectionLost(Failure(ConnectionDone()))
    clock.advance(0)
    assert transport.events == []
    assert channel.buffered() == 0
    assert not [event for event in log_events.events if event.get("log_failure")]


def test_without_holding_each_answer_leaves_at_once() -> None:
    site, _ = goto_site(URLStore(dict(URLS)), clock=Clock())
    assert site.outbox is None
    channel, transport = connect(site)
    channel.dataReceived(GET)
    assert answers(transport) == [b"HTTP/1.1 302 Found"]


@implementer(IHeldWriter)
class Writer:
    def __init__(self, sent: list[str], name: str, fails: bool = False) -> None:
        self.sent = sent
        self.name = name
        self.fails = fails

    def send_held(self) -> None:
        if self.fails:
            raise OSError("broken")
        self.sent.append(self.name)


def test_the_outbox_calls_every_writer_once_a_turn_even_past_one_that_fails(
    log_events: LogCapture,
) -> None:
    clock = Clock()
    outbox = Outbox(clock)
    sent: list[str] = []
    outbox.hold(Writer(sent, "a"))
    outbox.hold(Writer(sent, "broken", fails=True))
    outbox.hold(Writer(sent, "b"))
    assert len(clock.getDelayedCalls()) == 1  # one call for the turn, not one per writer
    clock.advance(0)
    assert sent == ["a", "b"]
    assert any("held for a connection failed" in message for message in log_events.messages())
    clock.advance(0)
    assert sent == ["a", "b"]  # each hold is called back once
    outbox.hold(Writer(sent, "c"))
    clock.advance(0)
    assert sent == ["a", "b", "c"]


@pytest.mark.parametrize("method", ["write", "writeSequence", "writeHeaders"])
def test_twisted_webs_writes_follow_the_answers_held(method: str) -> None:
    site, _ = held_site()
    channel, transport = connect(site)
    channel.dataReceived(GET)
    if method == "write":
        channel.write(b"after")
    elif method == "writeSequence":
        channel.writeSequence([b"aft", b"er"])
    else:
        channel.writeHeaders(b"HTTP/1.1", b"200", b"OK", [(b"X-After", b"1")])
    assert transport.events[0].startswith(b"HTTP/1.1 302 Found\r\n")
    assert len(transport.events) == 2


def fresh_reactor() -> Any:
    """A reactor of its own (not the global one, never run): its passes are driven by hand."""
    from twisted.internet.selectreactor import SelectReactor

    return SelectReactor()


def close_reactor(reactor: Any) -> None:
    reactor.disconnectAll()
    reactor.removeReader(reactor.waker)
    reactor.waker.connectionLost(None)


def test_answers_held_when_shutdown_ends_in_a_pass_of_thread_results_still_leave() -> None:
    """Review 24: twistd's stop of the services can end inside the reactor's pass of thread results
    (the data file's writer thread with --fsync) or of timed calls (the listener's close): the
    reactor then drops every connection at once (disconnectAll, "during shutdown"), before the
    outbox's call of that pass could run. Answers held then never left (the client saw the close
    alone), where before the outbox they were sent as they were made."""
    import socket

    reactor = fresh_reactor()
    try:
        site, _ = goto_site(URLStore(dict(URLS)), clock=reactor, hold_answers=True)
        outbox = site.outbox
        assert outbox is not None
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
        client.sendall(GET)
        held = False
        for _ in range(100):  # accept, then read: the answer is held for the end of the pass
            reactor.doIteration(0.05)
            held = any(getattr(writer, "_unsent", None) for writer in outbox._holding)
            if held:
                break
        assert held
        # The stop ends with a thread's result: the shutdown's "during" phase drops the connections.
        reactor.callFromThread(reactor.fireSystemEvent, "shutdown")
        reactor.runUntilCurrent()
        received = b""
        while True:
            chunk = client.recv(65536)
            if not chunk:
                break
            received += chunk
        client.close()
        assert received.startswith(b"HTTP/1.1 302 Found\r\n"), received
    finally:
        close_reactor(reactor)


def test_once_shutting_down_each_answer_leaves_at_once() -> None:
    reactor = fresh_reactor()
    try:
        site, _ = goto_site(URLStore(dict(URLS)), clock=reactor, hold_answers=True)
        channel, transport = connect(site)
        channel.dataReceived(GET)
        assert transport.value() == b""
        assert site.outbox is not None
        site.outbox.stop()  # what the reactor's "before shutdown" calls
        assert answers(transport) == [b"HTTP/1.1 302 Found"]
        channel.dataReceived(GET_OTHER)
        assert answers(transport) == [b"HTTP/1.1 302 Found"] * 2
    finally:
        close_reactor(reactor)


def test_an_answer_made_in_a_timed_call_leaves_after_one_more_poll() -> None:
    """Review 24: task.Clock runs a call made during advance() in the same advance; a reactor does
    not: a callLater(0) made from a timed call (the data file's flush of adds without --fsync) waits
    for the next pass, after one more poll that does not wait (the reactor's timeout is 0). One made
    from a thread's result runs in the same pass."""
    reactor = fresh_reactor()
    try:
        log = ManualLog()
        site, _ = goto_site(URLStore(dict(URLS), log), clock=reactor, hold_answers=True)
        channel, transport = connect(site)
        channel.dataReceived(POST_ADD)
        reactor.runUntilCurrent()
        assert transport.value() == b""  # not durable yet
        reactor.callLater(0, log.complete_all)
        reactor.runUntilCurrent()
        assert transport.value() == b""  # held past this pass of timed calls
        assert reactor.timeout() == 0  # the poll in between does not wait
        reactor.runUntilCurrent()
        assert answers(transport) == [b"HTTP/1.1 200 OK"]
        channel.dataReceived(POST_ADD.replace(b"new.example", b"old.example"))
        reactor.callFromThread(log.complete_all)
        reactor.runUntilCurrent()
        assert transport.value().count(b"HTTP/1.1 200 OK\r\n") == 2  # a thread's result: the same pass
    finally:
        close_reactor(reactor)


def test_a_client_that_does_not_read_gets_no_more_than_the_send_buffer_and_the_held_limit() -> None:
    """Review 24: a client pipelining small requests and never reading, with answers held: what is
    written stops at the send buffer's limit plus the held limit, what is held stays under that
    limit, and every request is answered once the client reads."""
    from tests.test_fastpath_bounds import SmallSendBuffer

    site, clock = held_site()
    channel = site.buildProtocol(CLIENT)
    transport = SmallSendBuffer(peerAddress=CLIENT)
    channel.makeConnection(transport)
    requests = 4 * SmallSendBuffer.limit // 100  # answers are over 100 bytes: four buffers' worth
    channel.dataReceived(GET * requests)
    answer_size = 200
    written = len(transport.value())
    assert written <= SmallSendBuffer.limit + MAX_UNSENT_BYTES + answer_size
    assert channel._unsent_bytes < MAX_UNSENT_BYTES
    clock.advance(0)
    assert len(transport.value()) <= SmallSendBuffer.limit + MAX_UNSENT_BYTES + answer_size
    assert channel.buffered() <= len(GET) * requests  # nothing beyond what the client sent
    received = b""
    for _ in range(requests):
        received += transport.drain()
        clock.advance(0)
        if received.count(b"302 Found") == requests:
            break
    received += transport.value()
    assert received.count(b"302 Found") == requests, "every request is answered as the client reads"
