"""bench/floor_server.py: the benchmarks' floor answers every whole request once, in order, and
holds no more than it may."""

from __future__ import annotations

import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

from twisted.internet.testing import StringTransport

from bench.floor_server import ADDED, MAX_UNPARSED, REDIRECT, FloorProtocol, body_length

FLOOR_SERVER = Path(__file__).resolve().parent.parent / "bench" / "floor_server.py"

GET = b"GET /abc HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
POST = (
    b"POST /add HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 31\r\n\r\nurl=http%3A%2F%2Fexample.com%2F"
)


def connected() -> tuple[FloorProtocol, StringTransport]:
    protocol = FloorProtocol()
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_pipelined_requests_are_answered_in_order() -> None:
    protocol, transport = connected()
    protocol.dataReceived(GET + POST + GET)
    assert transport.value() == REDIRECT + ADDED + REDIRECT


def test_a_request_is_answered_once_its_head_and_body_are_whole() -> None:
    protocol, transport = connected()
    head, body = POST.split(b"\r\n\r\n")
    protocol.dataReceived(head[:20])
    protocol.dataReceived(head[20:] + b"\r\n\r\n" + body[:5])
    assert transport.value() == b""
    protocol.dataReceived(body[5:] + GET[:10])
    assert transport.value() == ADDED
    protocol.dataReceived(GET[10:])
    assert transport.value() == ADDED + REDIRECT


def test_a_content_length_that_is_no_number_aborts() -> None:
    protocol, transport = connected()
    protocol.dataReceived(GET + b"POST /add HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n" + GET)
    assert transport.value() == b""  # nothing of a connection it aborts
    assert transport.disconnecting


def test_more_than_it_may_hold_unanswered_aborts() -> None:
    protocol, transport = connected()
    protocol.dataReceived(b"GET /" + b"a" * (MAX_UNPARSED - 5))
    assert not transport.disconnecting  # exactly the bound: still held
    protocol.dataReceived(b"a")
    assert transport.disconnecting


def test_body_length_reads_the_header_in_any_case() -> None:
    assert body_length(b"GET / HTTP/1.1\r\nHost: x\r\n") == 0
    assert body_length(b"POST / HTTP/1.1\r\ncontent-LENGTH:  12 \r\n") == 12
    assert body_length(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n") is None


def test_the_script_listens_and_answers_on_loopback() -> None:
    process = subprocess.Popen(
        [sys.executable, str(FLOOR_SERVER), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30)  # it prints once listening, or exits
        assert ready, "the floor server printed nothing within 30 s"
        line = process.stdout.readline()
        found = re.match(r"Site starting on (\d+)\n", line)
        assert found, line + (process.stdout.read() if process.poll() is not None else "")
        with socket.create_connection(("127.0.0.1", int(found.group(1))), timeout=10) as client:
            client.sendall(GET + POST)
            answer = b""
            deadline = time.monotonic() + 10
            while len(answer) < len(REDIRECT + ADDED) and time.monotonic() < deadline:
                answer += client.recv(4096)
        assert answer == REDIRECT + ADDED
    finally:
        process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_the_script_exits_with_the_reason_when_it_cannot_listen() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, str(FLOOR_SERVER), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert "Site starting" not in done.stdout
    assert done.returncode != 0
    assert "CannotListenError" in done.stderr
