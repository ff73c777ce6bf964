"""End to end (issue 13): a keep-alive connection that asks for a key its server does not hold (an
unknown key, a slave's cache miss), or for a page only twisted.web answers (an info page, a QR
code, health), is answered correctly, and so is every request after it on the same connection,
sent one after the other or pipelined, on a real master and a real slave.

Which path answered is not visible from outside by design (both send the same bytes, log the
same line and count the same metrics); the unit tests (tests/test_fastpath_misses.py) show that
the connection stays on the fast path.
"""

from __future__ import annotations

import http.client
import re
import socket
import time
from pathlib import Path

from .harness import HTTP_TIMEOUT, GotoProcess, GotoProcesses, add_url, get, key_of


def keep_alive(process: GotoProcess) -> http.client.HTTPConnection:
    """One HTTP/1.1 connection to ``process``, kept open across requests."""
    return http.client.HTTPConnection("127.0.0.1", process.port, timeout=HTTP_TIMEOUT)


def ask(connection: http.client.HTTPConnection, method: str, path: str) -> tuple[int, str | None, bytes]:
    """Send one request on ``connection`` and read the whole answer (the connection stays open)."""
    connection.request(method, path)
    response = connection.getresponse()
    body = response.read()
    assert not response.will_close, (method, path, response.status)
    return response.status, response.getheader("Location"), body


def pipelined(process: GotoProcess, paths: list[str]) -> list[tuple[int, str | None]]:
    """Send ``GET`` of every path in one write and read one answer per request, in order."""
    requests = b"".join(b"GET %s HTTP/1.1\r\nHost: short.test\r\n\r\n" % path.encode() for path in paths)
    answers: list[tuple[int, str | None]] = []
    with socket.create_connection(("127.0.0.1", process.port), timeout=HTTP_TIMEOUT) as sock:
        sock.sendall(requests)
        data = b""
        deadline = time.monotonic() + HTTP_TIMEOUT
        while len(answers) < len(paths):
            assert time.monotonic() < deadline, (paths, answers, data)
            match = re.match(rb"HTTP/1\.1 (\d{3}) [^\r]*\r\n((?:[^\r]*\r\n)*?)\r\n", data)
            if match is None:
                chunk = sock.recv(65536)
                assert chunk, ("closed early", paths, answers, data)
                data += chunk
                continue
            headers = match.group(2)
            length = re.search(rb"(?i)content-length: (\d+)", headers)
            end = match.end() + (int(length.group(1)) if length else 0)
            if len(data) < end:
                chunk = sock.recv(65536)
                assert chunk, ("closed early", paths, answers, data)
                data += chunk
                continue
            location = re.search(rb"(?i)location: ([^\r]*)", headers)
            answers.append((int(match.group(1)), location.group(1).decode() if location else None))
            data = data[end:]
    return answers


def test_a_miss_costs_nothing_to_the_requests_after_it(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """On a slave and on its master: an unknown key, then a known one (cached, or only on the
    master), on one keep-alive connection, one after the other and pipelined: each answered right."""
    master = goto_processes("--rpc", data_file=tmp_path / "data.json", name="master")
    slave = goto_processes("--master", f"127.0.0.1:{master.port}", data_file=None, name="slave")
    cached_url, uncached_url = "https://example.org/cached", "https://example.org/uncached"
    cached = key_of(add_url(master.base_url, cached_url).text)
    uncached = key_of(add_url(master.base_url, uncached_url).text)
    assert get(f"{slave.base_url}/{cached}").status == 302  # now in the slave's cache

    connection = keep_alive(slave)
    try:
        assert ask(connection, "GET", "/unknownkey")[0] == 404
        assert ask(connection, "GET", f"/{cached}")[:2] == (302, cached_url)
        assert ask(connection, "HEAD", "/unknownkey") == (404, None, b"")
        assert ask(connection, "GET", f"/{uncached}")[:2] == (302, uncached_url)
        assert ask(connection, "GET", f"/{cached}")[:2] == (302, cached_url)
        # Pages only twisted.web answers, each followed by a redirect on the same connection.
        assert ask(connection, "GET", "/unknownkey+")[0] == 404
        assert ask(connection, "GET", f"/{cached}")[:2] == (302, cached_url)
        status, _, body = ask(connection, "GET", f"/{uncached}+")
        assert status == 200 and uncached_url.encode() in body
        assert ask(connection, "HEAD", f"/{cached}.qr")[0] == 200
        assert ask(connection, "GET", "/_goto/health")[0] == 200
        assert ask(connection, "GET", f"/{cached}")[:2] == (302, cached_url)
    finally:
        connection.close()

    assert pipelined(
        slave, ["/otherunknown", f"/{cached}", "/otherunknown", f"/{uncached}", "/x+", f"/{cached}"]
    ) == [
        (404, None),
        (302, cached_url),
        (404, None),
        (302, uncached_url),
        (404, None),
        (302, cached_url),
    ]

    connection = keep_alive(master)
    try:
        assert ask(connection, "GET", "/unknownkey")[0] == 404
        assert ask(connection, "GET", f"/{cached}")[:2] == (302, cached_url)
    finally:
        connection.close()
    assert pipelined(master, ["/unknownkey", f"/{uncached}"]) == [(404, None), (302, uncached_url)]
