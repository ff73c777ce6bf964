"""End-to-end tests of the HTTP front end's process-level behaviour (issue 9): the ops endpoint on a
port of its own, and half-closed clients answered by a slave."""

from __future__ import annotations

import re
import socket
import time
import urllib.parse
from pathlib import Path

from .harness import HTTP_TIMEOUT, GotoProcesses, add_url, get, key_of


def test_ops_endpoints_move_to_their_own_port(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """Item 8: with --ops, /_goto/health and /_goto/metrics answer there and 404 on the public port."""
    master = goto_processes.start(
        "--ops", "tcp:0:interface=127.0.0.1", data_file=tmp_path / "data.json", wait=False
    )
    master.wait_ready(listeners=2)
    public, ops = (f"http://127.0.0.1:{port}" for port in master.ports()[:2])
    assert add_url(public, "https://ops.example/").status == 200
    for path in ("/_goto/health", "/_goto/metrics"):
        assert get(public + path).status == 404, path
        assert get(ops + path).status == 200, path
    assert b"goto_http_requests" in get(ops + "/_goto/metrics").body
    assert get(ops + "/0").status == 404, "the ops port serves nothing else"
    assert get(public + "/0").status == 302


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (or the deadline passes)."""
    deadline = time.monotonic() + timeout
    received = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the connection was not closed within {timeout} s; received {received!r}")


def test_a_half_closed_client_gets_every_answer_from_a_slave(
    goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """Item 16: a client that sends its requests then shuts down its sending side gets every answer
    (an uncached redirect through the general path, an add forwarded to the master, a cached
    redirect) before the slave closes the connection."""
    master = goto_processes.start("--rpc", data_file=tmp_path / "data.json")
    slave = goto_processes.start("--master", f"127.0.0.1:{master.port}", data_file=None)
    key = key_of(add_url(master.base_url, "https://half.example/").text)
    form = b"url=" + urllib.parse.quote("https://half-added.example/", safe="").encode()
    requests = (
        b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n" % key.encode()  # not cached yet: asks the master
        + b"POST /add HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        + b"Content-Length: %d\r\n\r\n%s" % (len(form), form)
        + b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n" % key.encode()
    )
    with socket.create_connection(("127.0.0.1", slave.port), timeout=HTTP_TIMEOUT) as sock:
        sock.sendall(requests)
        sock.shutdown(socket.SHUT_WR)
        answer = read_until_closed(sock, HTTP_TIMEOUT)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert statuses == [b"302", b"200", b"302"], answer
    # The same with the fast path's add first (an answer owed when the half-close arrives).
    with socket.create_connection(("127.0.0.1", slave.port), timeout=HTTP_TIMEOUT) as sock:
        sock.sendall(requests[requests.index(b"POST") :] + b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        answer = read_until_closed(sock, HTTP_TIMEOUT)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert statuses == [b"200", b"302", b"404"], answer
