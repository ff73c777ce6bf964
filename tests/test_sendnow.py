"""send_now: a small answer leaves at once on an idle TCP connection, and everything else is
exactly ``transport.write`` (order, partial sends, errors, other transports).

Real sockets (a connected pair) under a real ``tcp.Connection``; the reactor is a MemoryReactor,
so what the transport asks of it (watching for writability) is seen and nothing runs by itself.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.internet.tcp import Connection
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport

from goto_tw.sendnow import send_now


@pytest.fixture
def pair() -> Iterator[tuple[Connection, socket.socket, MemoryReactor]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(5)
    reactor = MemoryReactor()
    transport = Connection(ours, Protocol(), reactor)
    transport.connected = True
    yield transport, theirs, reactor
    ours.close()
    theirs.close()


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        assert chunk, "the connection closed early"
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def test_an_answer_on_an_idle_connection_is_sent_without_watching_for_writability(
    pair: tuple[Connection, socket.socket, MemoryReactor],
) -> None:
    transport, peer, reactor = pair
    send_now(transport, b"HTTP/1.1 301 Moved Permanently\r\n\r\n")
    assert _read_exactly(peer, 34) == b"HTTP/1.1 301 Moved Permanently\r\n\r\n"
    assert transport not in reactor.getWriters()
    assert not transport.dataBuffer and not transport._tempDataBuffer


def test_an_answer_behind_buffered_bytes_waits_its_turn(
    pair: tuple[Connection, socket.socket, MemoryReactor],
) -> None:
    transport, peer, reactor = pair
    transport.write(b"first ")
    send_now(transport, b"second")
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(100)  # nothing jumped the queue: both wait for the reactor's write turn
    assert transport in reactor.getWriters()
    transport.doWrite()
    peer.setblocking(True)
    assert _read_exactly(peer, 12) == b"first second"
    assert transport not in reactor.getWriters()


def test_what_the_socket_does_not_take_is_buffered_in_order(
    pair: tuple[Connection, socket.socket, MemoryReactor],
) -> None:
    transport, peer, reactor = pair
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    payload = bytes(range(256)) * 4096  # 1 MiB: far more than the socket's buffer
    send_now(transport, payload)
    buffered = len(transport.dataBuffer) + transport._tempDataLen
    assert 0 < buffered < len(payload), "part sent at once, the rest left to the transport"
    assert transport in reactor.getWriters()
    transport.doWrite()  # the socket is still full: the rest moves to the transport's send buffer
    assert transport.dataBuffer and not transport._tempDataLen
    received = bytearray(peer.recv(1 << 16))  # room in the socket again, the rest still in the buffer
    send_now(transport, b"after")  # behind the rest, never before it
    while len(received) < len(payload) + 5:
        transport.doWrite()
        received += peer.recv(1 << 16)
    assert bytes(received) == payload + b"after"


def test_a_broken_connection_is_left_to_the_transport_to_close(
    pair: tuple[Connection, socket.socket, MemoryReactor],
) -> None:
    transport, peer, reactor = pair
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    peer.close()  # a reset: the send fails
    send_now(transport, b"answer")
    send_now(transport, b"answer")  # the first may still be taken by the kernel; the second is not
    assert transport in reactor.getWriters(), "the reactor is asked to write, and will meet the error"
    assert isinstance(transport.doWrite(), ConnectionLost)


def test_a_closing_connection_gets_the_answer_as_write_would_give_it(
    pair: tuple[Connection, socket.socket, MemoryReactor],
) -> None:
    transport = pair[0]
    transport.loseConnection()
    send_now(transport, b"last words")
    assert transport._tempDataBuffer == [b"last words"]


def test_a_transport_that_is_not_plain_tcp_is_simply_written_to() -> None:
    transport = StringTransport()
    send_now(transport, b"answer")
    assert transport.value() == b"answer"


def test_a_tls_connection_is_simply_written_to(pair: tuple[Connection, socket.socket, MemoryReactor]) -> None:
    transport = pair[0]
    written: list[bytes] = []
    transport.TLS = True
    transport.write = written.append  # type: ignore[method-assign] # what TLS's write would get
    send_now(transport, b"answer")
    assert written == [b"answer"]


def test_an_aborted_connection_sends_nothing_more() -> None:
    """After ``abortConnection`` (before the reactor's next turn closes it) ``transport.write``
    buffers and never sends: its ``doWrite`` is gone. ``send_now`` must not send either."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    try:
        transport = Connection(ours, Protocol(), MemoryReactorClock())
        transport.connected = True
        transport.abortConnection()  # connectionLost is only scheduled: still "connected"
        send_now(transport, b"after the abort")
        with pytest.raises(BlockingIOError):
            theirs.recv(100)
    finally:
        ours.close()
        theirs.close()
