"""Fuzz drill: malformed HTTP and XML-RPC over raw sockets at a real master and a real slave.

A master (``--rpc``, so ``/RPC2`` is served) and a slave of it run on loopback. The drill sends them,
category by category, requests that ``http.client`` could never send, over raw sockets (asyncio,
a bounded number of connections at a time, each exchange bounded in time):

``random_bytes``      random bytes, some ended with a blank line
``mutated``           valid requests (redirect, add, JSON, XML-RPC...) with random bytes flipped,
                      inserted, deleted, duplicated or cut off
``request_line``      broken request lines: bad methods, targets, versions, line endings, NULs
``header_syntax``     broken header lines, folding, duplicate or conflicting framing headers
``huge_headers``      very long header values, names and targets; very many headers
``oversized_bodies``  10 MB bodies (Content-Length and chunked) to ``/add``, ``/api/v1/links`` and
                      ``/RPC2``; lying lengths; ``Expect: 100-continue``
``xml_invalid``       malformed and ill-typed XML-RPC to ``/RPC2``, deep nesting, huge multicalls
``xml_bombs``         entity expansion ("billion laughs", quadratic blow-up), external entities
``wrong_methods``     DELETE/PUT/PATCH/OPTIONS/TRACE/CONNECT/garbage methods on every route
``bad_utf8``          invalid UTF-8 and odd Unicode in paths, queries, form bodies and JSON
``json``              malformed and hostile JSON to ``/api/v1/links``
``pipelining``        many requests in one write, or split at random points: answers must be in order
``disconnects``       clients that close (FIN) or reset (RST) mid-request, or right after sending;
                      an identical add on another connection must still be answered
``slowloris``         a bounded number of connections trickling a request a byte at a time
``operators``         issue 11's inputs: odd ``Authorization`` headers (right, wrong, huge, other
                      schemes), ``DELETE`` of links with and without a key, listing with odd
                      ``after``/``limit``, ``X-Forwarded-For`` from a trusted proxy (garbage, long
                      lists, IPv6), ``OPTIONS`` preflights and ``Origin`` headers (CORS), and
                      ``/api/v1/openapi.json``

After every category the drill checks that both processes are alive and serve a normal add and
redirect, and reads their ``VmRSS``. It fails on any 500 answer (printing the requests that caused
them), on an XML-RPC fault 8002 "error" (an unexpected exception: the XML-RPC form of a 500), on a
pipelined answer out of order, on an oversized body that is not refused, on a dead or unserving
process, on a traceback in a server's log, and on resident memory growing more than 64 MiB.

Usage: ``python drills/fuzz_http.py [--quick] [--seed S] [--workdir DIR] [--keep]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import re
import socket
import struct
import sys
import threading
import time
import urllib.parse
import xmlrpc.client as xmlrpclib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drills._common import (
    DEFAULT_HOST,
    DrillWorkdir,
    Fleet,
    GotoProcess,
    KeepAliveClient,
    Report,
    drill_arguments,
    exit_on_signals,
    rss_mib,
    summarize,
)

#: The API key the servers accept, the origin they allow (CORS), the proxy they trust: issue 11's inputs.
API_KEY = b"fuzz-drill-key-4d9c1e"
CORS_ORIGIN = b"https://app.fuzz.test"
TRUSTED_PROXY = "127.0.0.1"

#: Connections open at once while fuzzing.
CONCURRENCY = 32
#: Seconds after the last byte received (once an answer's head is in) before an exchange is done.
IDLE_AFTER_ANSWER = 0.15
#: Largest resident-memory growth (MiB) of either process over the whole drill. The servers run on
#: the drill's interpreter; PyPy's JIT and garbage collector alone add about 100 MiB in the first
#: minute of any load, so it gets a larger bound.
MAX_RSS_GROWTH_MIB = 64.0 if platform.python_implementation() == "CPython" else 192.0
#: Seconds a pipelined exchange (up to 60 requests, adds among them) may take.
PIPELINE_TIMEOUT = 10.0
#: Longest a server may take to answer a cheap request while being fuzzed (a blocked reactor).
STALL_LIMIT = 1.5
#: Longest an XML entity-expansion bomb may take to be refused (it is one small request).
BOMB_LIMIT = 0.1
#: 10 MB: the oversized body.
BIG_BODY = 10 * 1024 * 1024
#: Bytes written at a time when sending a large body.
SEND_CHUNK = 64 * 1024

ROUTES = (
    "/",
    "/add",
    "/add?url=https%3A%2F%2Ffuzz.test%2Froute",
    "/{key}",
    "/zzzzzz",
    "/api/v1/links",
    "/api/v1/links/{key}",
    "/api/v1/links?after={key}&limit=2",
    "/api/v1/openapi.json",
    "/_goto/health",
    "/_goto/metrics",
    "/RPC2",
    "/favicon.ico",
    "/robots.txt",
    "/_goto/nothing",
)


# --- what is sent, what came back -----------------------------------------------------------------


@dataclass
class Probe:
    """One fuzz input: bytes to send on a new connection, and what to do after sending them.

    ``chunks`` are written in order (``pause`` seconds apart); ``then`` is ``"read"`` (read the
    answers), ``"close"`` (close at once: FIN) or ``"reset"`` (close at once with RST). ``expect``,
    when given, is the exact list of statuses the answers must have, in order (for pipelining).
    """

    category: str
    label: str
    chunks: list[bytes]
    pause: float = 0.0
    then: str = "read"
    expect: list[int] | None = None
    #: Seconds this exchange may take, when not the drill's default.
    timeout: float | None = None

    def sample(self, limit: int = 240) -> str:
        """The first bytes sent, for a report line."""
        data = b""
        for chunk in self.chunks:
            data += chunk[: limit - len(data)]
            if len(data) >= limit:
                break
        total = sum(len(chunk) for chunk in self.chunks)
        more = f" ... ({total} bytes)" if total > len(data) else ""
        return f"{self.label}: {data!r}{more}"


@dataclass
class Result:
    """What one probe got from one server."""

    probe: Probe
    server: str
    statuses: list[int]
    outcome: str  # answered, closed, reset, no answer, client closed, connect failed, not HTTP
    sent: int
    seconds: float
    internal_faults: int = 0
    first_answer: bytes = b""


_STATUS_LINE = re.compile(rb"HTTP/\d\.\d (\d{3})[^\r\n]*\r?\n")


def parse_answers(data: bytes) -> tuple[list[int], list[bytes], bool]:
    """Split the bytes a server sent into answers: ``(statuses, bodies, not_http)``.

    Bodies are framed by ``Content-Length`` or chunked encoding; a body without either runs to the
    end of the data. An answer whose body is not all there yet still counts its status.
    """
    statuses: list[int] = []
    bodies: list[bytes] = []
    position = 0
    while position < len(data):
        match = _STATUS_LINE.match(data, position)
        if match is None:
            return statuses, bodies, not statuses or bool(data[position:].strip())
        head_end = data.find(b"\r\n\r\n", position)
        if head_end < 0:
            statuses.append(int(match.group(1)))
            break
        status = int(match.group(1))
        statuses.append(status)
        head = data[position:head_end].lower()
        position = head_end + 4
        if status < 200 or status in (204, 304):
            continue
        length = re.search(rb"\r\ncontent-length:[ \t]*(\d+)", head)
        if re.search(rb"\r\ntransfer-encoding:[ \t]*chunked", head):
            body, position = _dechunk(data, position)
            bodies.append(body)
        elif length is not None:
            end = position + int(length.group(1))
            bodies.append(data[position:end])
            position = end
        else:
            bodies.append(data[position:])
            position = len(data)
    return statuses, bodies, False


def _dechunk(data: bytes, position: int) -> tuple[bytes, int]:
    body = b""
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            return body, len(data)
        try:
            size = int(data[position:line_end].split(b";")[0], 16)
        except ValueError:
            return body, len(data)
        position = line_end + 2
        if size == 0:
            trailer_end = data.find(b"\r\n", position)
            return body, len(data) if trailer_end < 0 else trailer_end + 2
        body += data[position : position + size]
        position += size + 2


def internal_faults(body: bytes) -> int:
    """How many XML-RPC faults 8002 "error" (an unexpected exception on the server) ``body`` holds."""
    if b"8002" not in body:
        return 0
    try:
        params, _ = xmlrpclib.loads(body)
    except xmlrpclib.Fault as fault:
        return int(fault.faultCode == 8002 and fault.faultString == "error")
    except Exception:
        return 0
    return sum(
        1 for value in _walk(params) if value.get("faultCode") == 8002 and value.get("faultString") == "error"
    )


def _walk(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _walk(item)


async def exchange(port: int, server: str, probe: Probe, timeout: float) -> Result:
    """Send ``probe`` to ``127.0.0.1:port`` on a new connection and collect what comes back."""
    started = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        return Result(probe, server, [], f"connect failed: {exc!r}", 0, time.monotonic() - started)
    sent = 0
    send_error: BaseException | None = None

    async def send() -> None:
        nonlocal sent, send_error
        try:
            for number, chunk in enumerate(probe.chunks):
                if number and probe.pause:
                    await asyncio.sleep(probe.pause)
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
        except (OSError, RuntimeError) as exc:  # RuntimeError: the transport closed under us
            send_error = exc

    if probe.then != "read":
        await send()
        if probe.then == "reset":
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort() if probe.then == "reset" else writer.close()
        return Result(probe, server, [], "client closed", sent, time.monotonic() - started)

    sender = asyncio.ensure_future(send())
    data = b""
    outcome = "no answer"
    deadline = started + timeout
    try:
        while True:
            statuses, _, _ = parse_answers(data)
            wanted = len(probe.expect) if probe.expect is not None else 1
            now = time.monotonic()
            wait = deadline - now
            if len(statuses) >= wanted and sender.done():
                wait = min(wait, IDLE_AFTER_ANSWER)
            if wait <= 0:
                break
            try:
                block = await asyncio.wait_for(reader.read(65536), wait)
            except asyncio.TimeoutError:
                break
            except OSError:
                outcome = "reset"
                break
            if not block:
                outcome = "closed"
                break
            data += block
    finally:
        if not sender.done():
            sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.transport.abort()
    statuses, bodies, not_http = parse_answers(data)
    if not_http:
        outcome = "not HTTP"
    elif statuses and outcome == "no answer":
        outcome = "answered"
    elif statuses:
        outcome = f"answered, then {outcome}"
    faults = sum(internal_faults(body) for body in bodies)
    return Result(probe, server, statuses, outcome, sent, time.monotonic() - started, faults, data[:2000])


async def run_on_both(
    processes: tuple[GotoProcess, GotoProcess], probes: list[Probe], timeout: float, concurrency: int
) -> list[Result]:
    """Run every probe against each of the servers, the servers at the same time."""
    batches = await asyncio.gather(
        *(run_probes(process.port, process.name, probes, timeout, concurrency) for process in processes)
    )
    return [result for batch in batches for result in batch]


async def run_probes(
    port: int, server: str, probes: list[Probe], timeout: float, concurrency: int = CONCURRENCY
) -> list[Result]:
    """Run every probe against one server, ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(probe: Probe) -> Result:
        async with gate:
            return await exchange(port, server, probe, probe.timeout or timeout)

    return list(await asyncio.gather(*(one(probe) for probe in probes)))


# --- request builders -----------------------------------------------------------------------------


def request(
    method: bytes,
    target: bytes,
    headers: Iterable[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    close: bool = True,
) -> bytes:
    """A request as bytes; ``Content-Length`` is added for a body, ``Connection: close`` if asked."""
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: " + DEFAULT_HOST.encode()]
    lines += [name + b": " + value for name, value in headers]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def form(url: bytes, close: bool = True) -> bytes:
    """``POST /add`` with the form field ``url`` (``url`` is put in as given: no escaping).

    Without ``close`` (no ``Connection: close``) the add is one the channel's fast path may answer.
    """
    headers = [(b"Content-Type", b"application/x-www-form-urlencoded")]
    return request(b"POST", b"/add", headers, b"url=" + url, close=close)


def api(body: bytes, content_type: bytes = b"application/json") -> bytes:
    """``POST /api/v1/links`` with ``body``."""
    return request(b"POST", b"/api/v1/links", [(b"Content-Type", content_type)], body)


def rpc(body: bytes) -> bytes:
    """``POST /RPC2`` with ``body``."""
    return request(b"POST", b"/RPC2", [(b"Content-Type", b"text/xml")], body)


def rpc_call(method: str, *params: Any) -> bytes:
    """A well-formed XML-RPC call as bytes."""
    return xmlrpclib.dumps(params, method).encode("utf-8")


@dataclass
class Context:
    """What the generators need to know: a key both servers hold, the mode, the random source."""

    key: str
    quick: bool
    rng: random.Random
    counter: Iterator[int] = field(default_factory=lambda: iter(range(1, 10**9)))

    def url(self, tag: str) -> str:
        """A new valid long URL."""
        return f"https://fuzz.test/{tag}/{next(self.counter)}"

    def scale(self, quick: int, full: int) -> int:
        return quick if self.quick else full


def gen_random_bytes(ctx: Context) -> list[Probe]:
    probes = []
    for number in range(ctx.scale(40, 600)):
        size = ctx.rng.choice((1, 2, 16, 100, 1000, 4000, 20000))
        data = ctx.rng.randbytes(size)
        if number % 2:
            data += b"\r\n\r\n"
        probes.append(Probe("random_bytes", f"random {size} bytes", [data]))
    for number in range(ctx.scale(10, 150)):  # random printable tokens that look a bit like HTTP
        words = [
            ctx.rng.choice(
                [b"GET", b"POST", b"/", b"HTTP/1.1", b"\r\n", b":", b" ", b"Host", b"?", b"%", b"\n"]
            )
            for _ in range(ctx.rng.randrange(1, 40))
        ]
        probes.append(Probe("random_bytes", f"token soup {number}", [b"".join(words) + b"\r\n\r\n"]))
    return probes


def _templates(ctx: Context) -> list[bytes]:
    put = rpc_call("Store.Put", ctx.url("rpc"))
    return [
        request(b"GET", f"/{ctx.key}".encode(), close=False),
        request(b"HEAD", f"/{ctx.key}".encode(), close=False),
        request(b"GET", b"/add?" + urllib.parse.urlencode({"url": ctx.url("mut")}).encode()),
        form(urllib.parse.quote(ctx.url("mut"), safe="").encode()),
        # The same adds without "Connection: close": the channel's own fast path answers these.
        request(b"GET", b"/add?" + urllib.parse.urlencode({"url": ctx.url("mut")}).encode(), close=False),
        form(urllib.parse.quote(ctx.url("mut"), safe="").encode(), close=False),
        api(json.dumps({"url": ctx.url("mut")}).encode()),
        rpc(put),
        rpc(rpc_call("system.multicall", [{"methodName": "Store.Get", "params": [ctx.key]}])),
        request(b"GET", b"/_goto/health"),
        request(b"GET", f"/api/v1/links/{ctx.key}".encode()),
        request(b"GET", f"/{ctx.key}".encode(), close=False) * 2,
        # Issue 11: no valid API key here, so no mutation can disable a key the drill relies on.
        request(b"DELETE", f"/api/v1/links/{ctx.key}".encode(), [(b"Authorization", b"Bearer wrong")]),
        request(b"GET", b"/api/v1/links?after=0&limit=5", [(b"Authorization", b"Bearer wrong")]),
        request(
            b"OPTIONS",
            b"/api/v1/links",
            [(b"Origin", CORS_ORIGIN), (b"Access-Control-Request-Method", b"POST")],
        ),
        request(b"GET", b"/api/v1/openapi.json", [(b"Origin", CORS_ORIGIN)]),
    ]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """``data`` with one to eight random edits."""
    buffer = bytearray(data)
    for _ in range(rng.randrange(1, 9)):
        if not buffer:
            break
        where = rng.randrange(len(buffer))
        edit = rng.randrange(6)
        if edit == 0:
            buffer[where] = rng.randrange(256)
        elif edit == 1:
            buffer[where:where] = rng.randbytes(rng.randrange(1, 8))
        elif edit == 2:
            del buffer[where : where + rng.randrange(1, 8)]
        elif edit == 3:
            piece = buffer[where : where + rng.randrange(1, 32)]
            buffer[where:where] = piece * rng.randrange(1, 50)
        elif edit == 4:
            buffer[where:where] = rng.choice(
                [b"\r\n", b"\n", b"\x00", b" ", b":", b"%", b"\xff", b"\r\n\r\n"]
            )
        else:
            del buffer[where:]
    return bytes(buffer)


def gen_mutated(ctx: Context) -> list[Probe]:
    templates = _templates(ctx)
    count = ctx.scale(60, 1500)
    return [
        Probe(
            "mutated",
            f"mutation {number} of template {number % len(templates)}",
            [mutate(templates[number % len(templates)], ctx.rng)],
        )
        for number in range(count)
    ]


def gen_request_line(ctx: Context) -> list[Probe]:
    key = ctx.key.encode()
    end = b"\r\nHost: x\r\nConnection: close\r\n\r\n"
    lines = [
        b"GET",
        b"GET /",
        b"GET / HTTP/1.1 extra",
        b"GET  / HTTP/1.1",
        b" GET / HTTP/1.1",
        b"GET / HTTP/2.0",
        b"GET / HTTP/1.10",
        b"GET / HTTP/1.1x",
        b"GET / http/1.1",
        b"GET / FOO/1.1",
        b"GET / HTTP/",
        b"GET / HTTP/1",
        b"GET / HTTP/0.9",
        b"GET / HTTP/1.0",
        b"GET http://evil.test/ HTTP/1.1",
        b"GET http://evil.test/" + key + b" HTTP/1.1",
        b"GET https://" + DEFAULT_HOST.encode() + b"/add?url=https://fuzz.test/abs HTTP/1.1",
        b"GET * HTTP/1.1",
        b"OPTIONS * HTTP/1.1",
        b"GET //// HTTP/1.1",
        b"GET /%00 HTTP/1.1",
        b"GET /\x00 HTTP/1.1",
        b"GET /" + key + b"\x00 HTTP/1.1",
        b"GET /a\tb HTTP/1.1",
        b"GET /../../../../etc/passwd HTTP/1.1",
        b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1",
        b"GET /" + key + b"/ HTTP/1.1",
        b"GET /" + key + b"?x=1 HTTP/1.1",
        b"GET /" + key + b"#frag HTTP/1.1",
        b"GET /" + key + b"%20 HTTP/1.1",
        b"GET /?" + b"&".join(b"a%d=%d" % (n, n) for n in range(2000)) + b" HTTP/1.1",
        b"GET /add?url=" + b"&url=".join(b"https://fuzz.test/%d" % n for n in range(200)) + b" HTTP/1.1",
        b"GET /add?url HTTP/1.1",
        b"GET /add?=x HTTP/1.1",
        b"GET /add?url=%zz HTTP/1.1",
        b"GET /add?%%%%=%%% HTTP/1.1",
        b"GET /api/v1/links/" + key + b"/extra HTTP/1.1",
        b"GET /api/v1/links// HTTP/1.1",
        b"GET /api//v1/links HTTP/1.1",
        b"GET /_goto/health/extra HTTP/1.1",
        b"GET /_goto/ HTTP/1.1",
        b"GET /_goto HTTP/1.1",
        b"GET /api HTTP/1.1",
        b"GET /RPC2/x HTTP/1.1",
        b"GET /" + b"9" * 65 + b" HTTP/1.1",
        b"GET /" + b"Z" * 64 + b" HTTP/1.1",
        b"GET /\xff\xfe HTTP/1.1",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello's first bytes
        b"PRI * HTTP/2.0\r\n\r\nSM",
    ]
    probes = [Probe("request_line", f"line {number}", [line + end]) for number, line in enumerate(lines)]
    bare = [
        b"GET / HTTP/1.1\n\n",
        b"GET /" + key + b" HTTP/1.1\n\n",
        b"GET / HTTP/1.1\r\r\r\r",
        b"\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"\n\n\n\n\n\n",
        b"\r\n" * 1000,
        b"GET / HTTP/1.1\r\n",  # no blank line: an incomplete head
        b"GET /" + key + b" HTTP/1.1\r\nHost: x\r\n",
    ]
    probes += [Probe("request_line", f"bare {number}", [data]) for number, data in enumerate(bare)]
    return probes


def gen_header_syntax(ctx: Context) -> list[Probe]:
    key = ctx.key.encode()
    start = b"GET /" + key + b" HTTP/1.1\r\n"
    post = b"POST /add HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    body = b"url=" + urllib.parse.quote(ctx.url("hdr"), safe="").encode()
    heads = [
        start + b"NoColon\r\n\r\n",
        start + b"Host : x\r\n\r\n",
        start + b": value\r\n\r\n",
        start + b"Bad Name: x\r\n\r\n",
        start + b"X-A: a\r\n folded\r\n\r\n",
        start + b"X-A: a\r\n\tfolded\r\n\r\n",
        start + b" X-A: a\r\n\r\n",
        start + b"X-A: \x00\x01\x02\r\n\r\n",
        start + b"X-A: \xff\xfe\r\n\r\n",
        start + b"Host: a\r\nHost: b\r\n\r\n",
        start + b"Connection: close, close, upgrade\r\n\r\n",
        start + b"Connection: keep-alive\r\nConnection: close\r\n\r\n",
        start
        + b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
        start + b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        start + b"Content-Length: 0\r\n\r\n",
        start + b"Content-Length: 5\r\n\r\nhello",
        start + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        start + b"Expect: 100-continue\r\n\r\n",
        start + b"Expect: something-else\r\n\r\n",
        post + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(body), len(body) + 1) + body,
        post + b"Content-Length: %d, %d\r\n\r\n" % (len(body), len(body)) + body,
        post + b"Content-Length: -1\r\n\r\n" + body,
        post + b"Content-Length: +%d\r\n\r\n" % len(body) + body,
        post + b"Content-Length: 0x10\r\n\r\n" + body,
        post + b"Content-Length: 1e3\r\n\r\n" + body,
        post + b"Content-Length: \r\n\r\n" + body,
        post
        + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(body)
        + b"%x\r\n" % len(body)
        + body
        + b"\r\n0\r\n\r\n",
        post + b"Transfer-Encoding: chunked, identity\r\n\r\n" + body,
        post + b"Transfer-Encoding: gzip\r\n\r\n" + body,
        post + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        post + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + body + b"\r\n0\r\n\r\n",
        post + b"Transfer-Encoding: chunked\r\n\r\n-5\r\n" + body + b"\r\n0\r\n\r\n",
        post + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n" + body,
        post + b"Transfer-Encoding: chunked\r\n\r\n5;ext=\x00\r\nurl=x\r\n0\r\n\r\n",
        post
        + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(body)
        + body
        + b"\r\n0\r\nTrailer: x\r\n\r\n",
        post + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(body) + body + b"XX0\r\n\r\n",
        post + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
        post + b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 10\r\n\r\n--x\r\n--x--",
        _multipart(ctx.url("multipart").encode()),
        # Characters Python's str.splitlines() takes for line breaks, inside a POST's Content-Type.
        *(
            b"POST " + path + b" HTTP/1.1\r\nContent-Type: text/" + breaker + b"plain\r\n"
            b"Content-Length: 5\r\nConnection: close\r\n\r\nurl=x"
            for path in (b"/add", b"/api/v1/links", b"/RPC2")
            for breaker in (b"\x85", b"\x0b", b"\x0c", b"\x1c", b"\x1e")
        ),
    ]
    return [Probe("header_syntax", f"head {number}", [head]) for number, head in enumerate(heads)]


def _multipart(url: bytes) -> bytes:
    body = b'--b\r\nContent-Disposition: form-data; name="url"\r\n\r\n' + url + b"\r\n--b--\r\n"
    return request(b"POST", b"/add", [(b"Content-Type", b"multipart/form-data; boundary=b")], body)


def gen_huge_headers(ctx: Context) -> list[Probe]:
    key = ctx.key.encode()
    start = b"GET /" + key + b" HTTP/1.1\r\n"
    sizes = [8 * 1024, 16 * 1024, 17 * 1024, 64 * 1024, 1024 * 1024]
    probes = [
        Probe("huge_headers", f"one {size}-byte header", [start + b"X-Big: " + b"a" * size + b"\r\n\r\n"])
        for size in sizes
    ]
    probes += [
        Probe("huge_headers", f"{size}-byte header name", [start + b"X" * size + b": 1\r\n\r\n"])
        for size in sizes[:3]
    ]
    probes += [
        Probe("huge_headers", f"{size}-byte target", [b"GET /" + b"a" * size + b" HTTP/1.1\r\n\r\n"])
        for size in sizes
    ]
    probes += [
        Probe(
            "huge_headers",
            f"{size}-byte add query",
            [b"GET /add?url=https://x.test/" + b"a" * size + b" HTTP/1.1\r\n\r\n"],
        )
        for size in sizes[:3]
    ]
    for count in (100, 499, 500, 501, 1000, 10_000, 100_000):
        lines = b"".join(b"X-H%d: v\r\n" % n for n in range(count))
        probes.append(Probe("huge_headers", f"{count} headers", [start + lines + b"\r\n"]))
    probes.append(
        Probe(
            "huge_headers",
            "10000 cookies",
            [start + b"Cookie: " + b"; ".join(b"c%d=v" % n for n in range(10000)) + b"\r\n\r\n"],
        )
    )
    probes.append(Probe("huge_headers", "1 MB head, no end", [start + b"X-A: b\r\n" * 150_000]))
    return probes


def gen_oversized_bodies(ctx: Context) -> list[Probe]:
    chunk = b"u" * SEND_CHUNK
    big_chunks = [chunk] * (BIG_BODY // SEND_CHUNK)
    probes = []
    for path, content_type in (
        (b"/add", b"application/x-www-form-urlencoded"),
        (b"/api/v1/links", b"application/json"),
        (b"/RPC2", b"text/xml"),
    ):
        head = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: " + content_type + b"\r\n"
        name = path.decode()
        probes += [
            Probe(
                "oversized_bodies",
                f"{name} 10 MB Content-Length",
                [head + b"Content-Length: %d\r\n\r\n" % BIG_BODY, *big_chunks],
            ),
            Probe(
                "oversized_bodies",
                f"{name} 10 MB chunked",
                [head + b"Transfer-Encoding: chunked\r\n\r\n"]
                + [b"%x\r\n" % len(chunk) + chunk + b"\r\n"] * len(big_chunks)
                + [b"0\r\n\r\n"],
            ),
            Probe(
                "oversized_bodies",
                f"{name} 10 MB announced, 1 KB sent",
                [head + b"Content-Length: %d\r\n\r\n" % BIG_BODY + b"u" * 1024],
            ),
            Probe(
                "oversized_bodies",
                f"{name} 10 MB announced, Expect: 100-continue",
                [head + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % BIG_BODY],
            ),
            Probe(
                "oversized_bodies",
                f"{name} Content-Length 2**64",
                [head + b"Content-Length: 18446744073709551616\r\n\r\nurl=x"],
            ),
            Probe(
                "oversized_bodies",
                f"{name} Content-Length 10**30",
                [head + b"Content-Length: " + b"1" + b"0" * 30 + b"\r\n\r\nurl=x"],
            ),
            Probe(
                "oversized_bodies",
                f"{name} 1 MB + 1 byte",
                [head + b"Content-Length: %d\r\n\r\n" % (2**20 + 1), b"u" * (2**20 + 1)],
            ),
            Probe(
                "oversized_bodies",
                f"{name} 1 MB exactly",
                [head + b"Content-Length: %d\r\n\r\n" % 2**20, b"u" * 2**20],
            ),
            Probe(
                "oversized_bodies",
                f"{name} 100 KB",
                [head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % 100_000, b"u" * 100_000],
            ),
        ]
    url_field = b"url=https://fuzz.test/" + b"a" * (900 * 1024)
    probes.append(Probe("oversized_bodies", "/add 900 KB url field", [form(url_field)]))
    return probes


#: Probes of this category whose body exceeds the server's limit and must be refused.
def _must_be_refused(probe: Probe) -> bool:
    return probe.category == "oversized_bodies" and (
        "10 MB" in probe.label or "+ 1 byte" in probe.label or "**" in probe.label
    )


def gen_xml_invalid(ctx: Context) -> list[Probe]:
    url = ctx.url("xml")
    bodies: list[bytes] = [
        b"",
        b"not xml at all",
        b"<",
        b"<?xml version='1.0'?>",
        b"<methodCall>",
        b"<methodCall></methodCall>",
        b"<methodCall><methodName></methodName></methodCall>",
        b"<methodCall><methodName>Store.Get</methodName></methodCall>",
        b"<methodCall><methodName>Store.Get</methodName><params></params></methodCall>",
        b"<methodCall><methodName>Store.Get</methodName><params><param></param></params></methodCall>",
        b"<methodCall><methodName>Store.Get</methodName><params><param><value><int>x</int></value></param></params></methodCall>",
        b"<methodResponse><params><param><value>x</value></param></params></methodResponse>",
        b"<html><body>hello</body></html>",
        b"<methodCall><methodName>Store.Get</methodName><params><param><value><string>a</string></value></param></params>",
        b"<methodCall><methodName>Store.Get</methodName><params><param><value><string>a</value></string></param></params></methodCall>",
        b"<?xml version='1.0' encoding='utf-16'?><methodCall/>",
        b"<?xml version='1.0' encoding='bogus'?><methodCall/>",
        b"\xff\xfe<\x00m\x00",
        b"<methodCall><methodName>Store.Put</methodName><params><param><value><string>\xff\xfe</string></value></param></params></methodCall>",
        b"<methodCall><methodName>Store.Put</methodName><params><param><value><string>https://x.test/&#0;</string></value></param></params></methodCall>",
        b"<methodCall><methodName>Store.Put</methodName><params><param><value><string>https://x.test/&#xD800;</string></value></param></params></methodCall>",
        b"<methodCall><methodName>Store.Put</methodName><params><param><value><string><![CDATA[https://fuzz.test/cdata]]></string></value></param></params></methodCall>",
        b"<methodCall><methodName>\xc3\xa9t\xc3\xa9</methodName><params/></methodCall>",
        b"<methodCall><methodName>Store.Get</methodName><methodName>Store.Put</methodName><params/></methodCall>",
        b"<methodCall><methodName>Store.Get</methodName><params><param><value><i4>99999999999999999999</i4></value></param></params></methodCall>",
        b"<methodCall><methodName>Store.Get</methodName><params><param><value><double>1e99999</double></value></param></params></methodCall>",
        b"<methodCall><methodName>Store.Get</methodName><params><param><value><double>nan</double></value></param></params></methodCall>",
        b"<methodCall><methodName>Store.Get</methodName><params><param><value><base64>!!!notbase64</base64></value></param></params></methodCall>",
        b"<methodCall><methodName>Store.Get</methodName><params><param><value><dateTime.iso8601>garbage</dateTime.iso8601></value></param></params></methodCall>",
        b"<methodCall><methodName>Store.Get</methodName><params><param><value><nil/></value></param></params></methodCall>",
        b"<methodCall><methodName>Store.Get</methodName><params><param><value><boolean>2</boolean></value></param></params></methodCall>",
        b"<methodCall><methodName>Store.Get</methodName><params><param><value><bogus>1</bogus></value></param></params></methodCall>",
        b"<methodCall><methodName>Store.Get</methodName><params><param><value><struct><member><value>1</value></member></struct></value></param></params></methodCall>",
        b"<methodCall><methodName>Store.Get</methodName><params><param><value><struct><member><name>a</name></member></struct></value></param></params></methodCall>",
        b"<methodCall><methodName>system.multicall</methodName><params><param><value><array><data><value><struct><member><name>methodName</name><value>Store.Get</value></member></struct></value></data></array></value></param></params></methodCall>",
        b'<methodCall xmlns="http://evil.test/"><methodName>Store.Get</methodName><params/></methodCall>',
        b"<!-- comment --><?pi data?><methodCall><methodName>Store.Get</methodName><params/></methodCall>",
        b"<methodCall "
        + b" ".join(b'a%d="1"' % n for n in range(10000))
        + b"><methodName>x</methodName></methodCall>",
        b"<methodCall><methodName>" + b"x" * 500_000 + b"</methodName></methodCall>",
    ]
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("Store.Get", ()),
        ("Store.Get", (ctx.key, ctx.key)),
        ("Store.Get", (1,)),
        ("Store.Get", (1.5,)),
        ("Store.Get", (True,)),
        ("Store.Get", ([ctx.key],)),
        ("Store.Get", ({"key": ctx.key},)),
        ("Store.Get", (xmlrpclib.Binary(b"\x00\xff"),)),
        ("Store.Get", (xmlrpclib.DateTime(0),)),
        ("Store.Get", ("",)),
        ("Store.Get", ("\u00e9",)),
        ("Store.Get", ("_goto_health",)),
        ("Store.Get", ("../../etc/passwd",)),
        ("Store.Get", ("x" * 150_000,)),
        ("Store.Put", ()),
        ("Store.Put", (url, url)),
        ("Store.Put", (1,)),
        ("Store.Put", ([url],)),
        ("Store.Put", ({"url": url},)),
        ("Store.Put", ("",)),
        ("Store.Put", ("javascript:alert(1)",)),
        ("Store.Put", ("https://x.test/" + "a" * 5000,)),
        ("Store.Put", ("https://x.test/\u00e9\u2028",)),
        ("Store.Put", ("https://\u00e9xample.test/\U0001f600",)),
        ("Store.Put", ("https://x.test/\r\nLocation: evil",)),
        ("Store.Put", ("https://[::1/",)),
        ("Store.Put", ("https://x.test:99999/",)),
        ("Store.Put", ("https://xn--zz/",)),
        ("Store.Put", ("https://a..b/",)),
        ("Store.Put", ("https://\u0000/",)),
        ("Store.Set", (ctx.key, url)),
        ("Store", ()),
        ("Store.", ()),
        ("Store.Get.x", ()),
        ("store.get", (ctx.key,)),
        ("system.listMethods", ()),
        ("system.methodHelp", ("Store.Get",)),
        ("system.methodSignature", ("Store.Get",)),
        ("system.multicall", ()),
        ("system.multicall", ("x",)),
        ("system.multicall", ([1, "x", [], {}],)),
        ("system.multicall", ([{"methodName": "Store.Get"}],)),
        ("system.multicall", ([{"methodName": 5, "params": []}],)),
        ("system.multicall", ([{"methodName": "Store.Get", "params": "x"}],)),
        ("system.multicall", ([{"methodName": "Store.Get", "params": [1, 2, 3]}],)),
        ("system.multicall", ([{"methodName": "system.multicall", "params": [[]]}],)),
        ("system.multicall", ([{"methodName": "Nope.Nope", "params": []}],)),
        ("system.multicall", ([{"methodName": "Store.Put", "params": ["not a url"]}] * 10,)),
        ("system.multicall", ([{"methodName": "Store.Get", "params": [ctx.key]}] * 1000,)),
        ("system.multicall", ([{"methodName": "Store.Get", "params": [ctx.key]}] * 1001,)),
        (
            "system.multicall",
            ([{"methodName": "Store.Put", "params": [f"https://fuzz.test/mc/{n}"]} for n in range(300)],),
        ),
        ("system.multicall", ([],)),
    ]
    bodies += [rpc_call(method, *params) for method, params in calls]
    depth = 100_000
    bodies.append(
        b"<methodCall><methodName>Store.Get</methodName><params><param>"
        + b"<value><array><data>" * depth
        + b"</data></array></value>" * depth
        + b"</param></params></methodCall>"
    )
    bodies.append(
        b"<methodCall><methodName>Store.Get</methodName><params><param>" + b"<value><array><data>" * depth
    )
    probes = [Probe("xml_invalid", f"rpc body {number}", [rpc(body)]) for number, body in enumerate(bodies)]
    probes.append(
        Probe(
            "xml_invalid",
            "rpc without content type",
            [request(b"POST", b"/RPC2", (), rpc_call("Store.Get", ctx.key))],
        )
    )
    probes.append(Probe("xml_invalid", "GET /RPC2", [request(b"GET", b"/RPC2")]))
    for number in range(ctx.scale(20, 300)):
        template = rpc_call("Store.Put", ctx.url("xmlmut")) if number % 2 else rpc_call("Store.Get", ctx.key)
        probes.append(Probe("xml_invalid", f"mutated rpc body {number}", [rpc(mutate(template, ctx.rng))]))
    return probes


def gen_xml_bombs(ctx: Context) -> list[Probe]:
    laughs = [b'<!ENTITY lol0 "lol">']
    for level in range(1, 10):
        laughs.append(b'<!ENTITY lol%d "' % level + b"&lol%d;" % (level - 1) * 10 + b'">')
    billion = (
        b'<?xml version="1.0"?><!DOCTYPE methodCall [' + b"".join(laughs) + b"]>"
        b"<methodCall><methodName>Store.Put</methodName><params><param><value><string>&lol9;"
        b"</string></value></param></params></methodCall>"
    )
    in_name = billion.replace(b"<methodName>Store.Put</methodName>", b"<methodName>&lol9;</methodName>")
    blowup = b"A" * 100_000
    quadratic = (
        b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "' + blowup + b'">]>'
        b"<methodCall><methodName>Store.Put</methodName><params><param><value><string>"
        + b"&a;" * 200_000
        + b"</string></value></param></params></methodCall>"
    )
    external = (
        b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<methodCall><methodName>Store.Put</methodName><params><param><value><string>https://fuzz.test/&x;"
        b"</string></value></param></params></methodCall>"
    )
    external_dtd = (
        b'<?xml version="1.0"?><!DOCTYPE m SYSTEM "http://127.0.0.1:9/evil.dtd">'
        b"<methodCall><methodName>Store.Get</methodName><params/></methodCall>"
    )
    parameter = (
        b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>'
        b"<methodCall><methodName>Store.Get</methodName><params/></methodCall>"
    )
    recursive = (
        b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "&b;"><!ENTITY b "&a;">]>'
        b"<methodCall><methodName>&a;</methodName><params/></methodCall>"
    )
    internal_url = (
        b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY u "https://fuzz.test/entity">]>'
        b"<methodCall><methodName>Store.Put</methodName><params><param><value><string>&u;"
        b"</string></value></param></params></methodCall>"
    )
    bombs = [
        ("billion laughs", billion),
        ("billion laughs in the method name", in_name),
        ("quadratic blow-up", quadratic),
        ("external entity file:///etc/passwd", external),
        ("external DTD", external_dtd),
        ("external parameter entity", parameter),
        ("recursive entities", recursive),
        ("internal entity holding a URL", internal_url),
    ]
    return [Probe("xml_bombs", label, [rpc(body)]) for label, body in bombs]


def gen_wrong_methods(ctx: Context) -> list[Probe]:
    methods = [
        b"DELETE", b"PUT", b"PATCH", b"OPTIONS", b"TRACE", b"CONNECT", b"PROPFIND", b"MKCOL", b"FOO",
        b"get", b"Get", b"GETT", b"G@T", b"G\x00T", b"\xff\xfe", b"M" * 1000, b"POST", b"HEAD",
    ]  # fmt: skip
    probes = []
    for route in ROUTES:
        target = route.replace("{key}", ctx.key).encode()
        for method in methods:
            probes.append(Probe("wrong_methods", f"{method[:20]!r} {route}", [request(method, target)]))
        for method in (b"PUT", b"PATCH", b"DELETE", b"POST"):
            body = b"url=" + urllib.parse.quote(ctx.url("method"), safe="").encode()
            headers = [(b"Content-Type", b"application/x-www-form-urlencoded")]
            probes.append(
                Probe(
                    "wrong_methods", f"{method!r} {route} with body", [request(method, target, headers, body)]
                )
            )
    return probes


def gen_bad_utf8(ctx: Context) -> list[Probe]:
    key = ctx.key.encode()
    bad = [
        b"\xff",
        b"\xc0\xaf",
        b"\xc3\x28",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\xe2\x82",
        b"\xfe\xff",
        b"\x80",
    ]
    probes = []
    for number, sequence in enumerate(bad):
        escaped = urllib.parse.quote_from_bytes(sequence).encode()
        targets = [
            b"/" + sequence,
            b"/" + escaped,
            b"/" + key + sequence,
            b"/api/v1/links/" + sequence,
            b"/api/v1/links/" + escaped,
            b"/_goto/" + escaped,
            b"/add?url=" + sequence,
            b"/add?url=" + escaped,
            b"/add?url=https://fuzz.test/" + escaped,
            b"/add?url=https://" + escaped + b".test/",
            b"/add?" + escaped + b"=" + escaped,
        ]
        probes += [Probe("bad_utf8", f"GET {target!r}", [request(b"GET", target)]) for target in targets]
        probes += [
            Probe("bad_utf8", f"keep-alive GET {target!r}", [request(b"GET", target, close=False)])
            for target in targets
        ]
        bodies = [
            form(escaped),
            form(sequence),
            form(b"https%3A%2F%2Ffuzz.test%2F" + escaped),
            form(b"https://fuzz.test/" + sequence),
            api(b'{"url": "https://fuzz.test/' + sequence + b'"}'),
            api(b'{"url": "' + sequence + b'"}'),
            api(b'{"' + sequence + b'": "https://fuzz.test/"}'),
        ]
        bodies += [
            form(escaped, close=False),
            form(sequence, close=False),
            form(b"https%3A%2F%2Ffuzz.test%2F" + escaped, close=False),
            form(b"https://fuzz.test/" + sequence, close=False),
        ]
        probes += [Probe("bad_utf8", f"body {number}.{n}", [body]) for n, body in enumerate(bodies)]
    odd_urls = [
        "https://fuzz.test/\ud800",
        "https://\ud800.test/",
        "https://fuzz.test/\udfff\ud800",
        "https://fuzz.test/\u202e\u200b\ufeff",
        "https://fuzz.test/\U0001f600",
        "https://xn--nxasmq6b.test/",
        "https://xn--zz.test/",
        "https://\u00df.test/",
        "https://\uff41\uff42.test/",
        "https://\u0661\u0662.test/",
        "https://" + "\u00e9" * 300 + ".test/",
        "https://a.test/" + "\u00e9" * 2000,
        "https://fuzz.test/\u00e9?\u00e9=\u00e9#\u00e9",
        "https://user:\u00e9@fuzz.test/",
        "https://[\u00e9]/",
        "https://fuzz.test:\u0661\u0662/",
        "https://\u3002/",
        "https://a\u3002b/",
        "https://.\u00e9/",
    ]
    for number, url in enumerate(odd_urls):
        raw = url.encode("utf-8", "surrogatepass")
        quoted = urllib.parse.quote_from_bytes(raw).encode()
        rpc_body = xmlrpclib.dumps((url,), "Store.Put").encode("utf-8", "surrogatepass")
        probes += [
            Probe("bad_utf8", f"odd url {number} by GET", [request(b"GET", b"/add?url=" + quoted)]),
            Probe("bad_utf8", f"odd url {number} by form", [form(quoted)]),
            Probe("bad_utf8", f"odd url {number} by JSON", [api(json.dumps({"url": url}).encode())]),
            Probe("bad_utf8", f"odd url {number} by XML-RPC", [rpc(rpc_body)]),
            # Without "Connection: close", so that the channel's fast path for adds answers them.
            Probe(
                "bad_utf8",
                f"odd url {number} by keep-alive GET",
                [request(b"GET", b"/add?url=" + quoted, close=False)],
            ),
            Probe("bad_utf8", f"odd url {number} by keep-alive form", [form(quoted, close=False)]),
        ]
    return probes


def gen_json(ctx: Context) -> list[Probe]:
    url = ctx.url("json")
    documents = [
        b"",
        b"{",
        b"[]",
        b"null",
        b"1",
        b'"https://fuzz.test/"',
        b"{}",
        b'{"url": null}',
        b'{"url": 1}',
        b'{"url": 1e999}',
        b'{"url": NaN}',
        b'{"url": Infinity}',
        b'{"url": ["' + url.encode() + b'"]}',
        b'{"url": {"url": "' + url.encode() + b'"}}',
        b'{"url": "' + url.encode() + b'", "url": "https://fuzz.test/dup"}',
        b'{"url": "' + url.encode() + b'", "extra": ' + b"1" * 5000 + b"}",
        b'{"url": "https://fuzz.test/\\u0000"}',
        b'{"url": "https://fuzz.test/\\ud800"}',
        b'{"url": "https://fuzz.test/\\u"}',
        b'{"url": "https://fuzz.test/\\x41"}',
        b'\xef\xbb\xbf{"url": "https://fuzz.test/bom"}',
        json.dumps({"url": "https://fuzz.test/utf16"}).encode("utf-16"),
        json.dumps({"url": "https://fuzz.test/utf32"}).encode("utf-32"),
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b'{"url": "' + b"a" * 15_000 + b'"}',
        b'{"url": "' + b"a" * 17_000 + b'"}',
        b'{"url": "https://fuzz.test/"}garbage',
        b'{"url": "https://fuzz.test/ok"}\n{"url": "https://fuzz.test/second"}',
    ]
    probes = [
        Probe("json", f"document {number}", [api(document)]) for number, document in enumerate(documents)
    ]
    for content_type in (
        b"",
        b"text/plain",
        b"application/json; charset=latin-1",
        b"application/x+json",
        b"application/json\x00",
        b"APPLICATION/JSON",
    ):
        probes.append(
            Probe(
                "json",
                f"content type {content_type!r}",
                [api(json.dumps({"url": ctx.url("ct")}).encode(), content_type)],
            )
        )
    for number in range(ctx.scale(10, 200)):
        probes.append(
            Probe(
                "json",
                f"mutated document {number}",
                [api(mutate(json.dumps({"url": ctx.url("jm")}).encode(), ctx.rng))],
            )
        )
    return probes


#: Accept values a client may send: browsers', scripts', and nonsense (negotiation must never fail).
ACCEPTS = (
    b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    b"*/*",
    b"text/html;q=0",
    b"text/html;q=1e999",
    b"text/html;q=NaN, text/plain;q=-1",
    b"text/html;;;q==;,,,",
    b"text/html," * 500,
    b";" * 2000,
    b"\xff\xfe text/html",
    b"text/html; q=0.5; q=0.9",
)


def gen_people(ctx: Context) -> list[Probe]:
    """Issue 10's inputs: custom keys, Accept headers, ``/KEY+`` and ``/KEY.qr`` paths, click batches."""
    keys = [
        b"ok-" + str(ctx.rng.randrange(10**9)).encode(),
        b"",
        b"a" * 64,
        b"a" * 65,
        b"a" * 10_000,
        b"add",
        b"_goto",
        b"a.b",
        b"%2e%2e",
        b"%00",
        b"%C3%BC",
        b"%FF",
        b"a%20b",
        b"a%0D%0ASet-Cookie:x",
        b"<script>",
        b"key&key=other",
    ]
    probes = []
    for number, key in enumerate(keys):
        target = b"/add?url=" + urllib.parse.quote(ctx.url("key"), safe="").encode() + b"&key=" + key
        for accept in (b"*/*", ACCEPTS[0]):
            headers = [(b"Accept", accept)]
            probes.append(
                Probe("people", f"key {number} accept {accept[:9]!r}", [request(b"GET", target, headers)])
            )
        body = json.dumps({"url": ctx.url("apikey"), "key": key.decode("latin-1")}).encode()
        probes.append(Probe("people", f"api key {number}", [api(body)]))
    for document in (b'{"url": "https://fuzz.test/k", "key": 1}', b'{"url": "https://fuzz.test/k", "key": null}',
                     b'{"url": "https://fuzz.test/k", "key": ["a"]}', b'{"url": "https://fuzz.test/k", "key": ""}'):  # fmt: skip
        probes.append(Probe("people", f"api key document {document[-12:]!r}", [api(document)]))
    for number, accept in enumerate(ACCEPTS):
        for target in (
            b"/",
            b"/add?url=" + urllib.parse.quote(ctx.url("acc"), safe="").encode(),
            b"/" + ctx.key.encode() + b"+",
        ):
            probes.append(
                Probe(
                    "people",
                    f"accept {number} {target[:8]!r}",
                    [request(b"GET", target, [(b"Accept", accept)])],
                )
            )
    paths = [
        ctx.key + "+", ctx.key + "++", ctx.key + ".qr", ctx.key + ".qr?format=png", ctx.key + ".qr?format=gif",
        ctx.key + ".qr?format=", ctx.key + ".qr.qr", "+", ".qr", "zzzzzzzz+", "zzzzzzzz.qr", ctx.key + "+/x",
        ctx.key + ".qr/x", ctx.key + "%2B", "a" * 64 + ".qr", "a" * 65 + "+", "_goto+", "add.qr",
    ]  # fmt: skip
    for path in paths:
        for method in (b"GET", b"HEAD", b"POST"):
            probes.append(
                Probe("people", f"{method.decode()} /{path[:20]}", [request(method, b"/" + path.encode())])
            )
    batches: list[Any] = [
        {}, {"a.b": 1}, {ctx.key: 0}, {ctx.key: -1}, {ctx.key: 2**31 - 1}, {ctx.key: 1.5}, [ctx.key],
        {ctx.key: "1"}, {"zzzzzzzz": 1}, {f"k{n}": 1 for n in range(5001)},
    ]  # fmt: skip
    for number, batch in enumerate(batches):
        probes.append(Probe("people", f"Store.Clicks {number}", [rpc(rpc_call("Store.Clicks", batch))]))
    stats_params: list[tuple[Any, ...]] = [(ctx.key,), ("zzzzzzzz",), ("a.b",), (1,), ()]
    for params in stats_params:
        probes.append(
            Probe("people", f"Store.Stats {params!r}"[:40], [rpc(rpc_call("Store.Stats", *params))])
        )
    add_params: list[tuple[Any, ...]] = [
        ("https://fuzz.test/rpc", "rpc-key"),
        ("https://fuzz.test/rpc", "a.b"),
        ("x", ""),
        (1, 2),
    ]
    for add_args in add_params:
        for rpc_method in ("Store.Add", "Store.Put"):
            probes.append(
                Probe("people", f"{rpc_method} {add_args!r}"[:40], [rpc(rpc_call(rpc_method, *add_args))])
            )
    return probes


def _statuses_match(got: list[int], expected: list[int]) -> bool:
    """Pipelined statuses in order; a 201 (new link) may be a 200: both servers get the same bytes, so
    the second to store a URL finds it stored already, and the JSON API then answers 200."""
    return len(got) == len(expected) and all(
        status == wanted or (wanted == 201 and status == 200) for status, wanted in zip(got, expected)
    )


def gen_operators(ctx: Context, victims: list[str]) -> list[Probe]:
    """Issue 11's endpoints and headers. Only ``victims`` (keys added for this) are ever disabled
    with the right key, so the drill's own key keeps redirecting."""
    key = ctx.key.encode()
    good = b"Bearer " + API_KEY
    authorizations = [
        good,
        b"Bearer wrong",
        b"bearer " + API_KEY,
        b"Bearer  " + API_KEY + b"  ",
        b"Basic " + API_KEY,
        b"Bearer",
        b"Bearer ",
        b"Bearer " + API_KEY + b"x",
        b"Bearer " + API_KEY[:-1],
        b"Bearer " + b"k" * 5000,
        b"Bearer \xff\xfe",
        b"Bearer \x00" + API_KEY,
        b"Token " + API_KEY,
        b"",
    ]
    probes: list[Probe] = []
    for number, value in enumerate(authorizations):
        headers = [(b"Authorization", value)]
        probes += [
            Probe(
                "operators", f"list with authorization {number}", [request(b"GET", b"/api/v1/links", headers)]
            ),
            Probe(
                "operators",
                f"delete unknown with authorization {number}",
                [request(b"DELETE", b"/api/v1/links/zzzzzz", headers)],
            ),
            Probe(
                "operators",
                f"delete own key without the right authorization {number}",
                [request(b"DELETE", b"/api/v1/links/" + key, headers if value != good else [])],
            ),
            Probe(
                "operators",
                f"add by API with authorization {number}",
                [
                    request(
                        b"POST",
                        b"/api/v1/links",
                        [*headers, (b"Content-Type", b"application/json")],
                        json.dumps({"url": ctx.url("auth")}).encode(),
                    )
                ],
            ),
        ]
    for victim in victims:
        target = f"/api/v1/links/{victim}".encode()
        probes += [
            Probe("operators", f"disable {victim}", [request(b"DELETE", target, [(b"Authorization", good)])]),
            Probe(
                "operators",
                f"disable {victim} again",
                [request(b"DELETE", target, [(b"Authorization", good)])],
            ),
            Probe("operators", f"read disabled {victim}", [request(b"GET", target)]),
            Probe(
                "operators",
                f"redirect disabled {victim}",
                [request(b"GET", b"/" + victim.encode(), close=False)],
            ),
        ]
    for delete_target in (
        b"/api/v1/links",
        b"/api/v1/links/",
        b"/api/v1/links/a/b",
        b"/api/v1/links/%00",
        b"/api/v1/links/_goto",
        b"/api/v1/links/" + b"9" * 70,
    ):
        probes.append(
            Probe(
                "operators",
                f"DELETE {delete_target[:40]!r}",
                [request(b"DELETE", delete_target, [(b"Authorization", good)])],
            )
        )
    queries = [
        b"", b"?limit=0", b"?limit=-1", b"?limit=1001", b"?limit=1e3", b"?limit=99999999999999999999",
        b"?limit=%00", b"?limit=1&limit=2", b"?after=", b"?after=" + key, b"?after=%FF%FE", b"?after=%00",
        b"?after=" + b"a" * 65, b"?after=" + b"z" * 64 + b"&limit=1000", b"?after=zzzzzz&limit=1",
        b"?after[]=1", b"?%zz", b"?after=\xff", b"?limit=" + b"9" * 5000,
    ]  # fmt: skip
    for query in queries:
        probes.append(
            Probe(
                "operators",
                f"list {query[:40]!r}",
                [request(b"GET", b"/api/v1/links" + query, [(b"Authorization", good)])],
            )
        )
    forwarded = [
        b"198.51.100.7", b"198.51.100.7, 203.0.113.9", b"2001:db8::1", b"[2001:db8::1]:443", b"unknown",
        b"", b",,,", b"999.1.1.1", b"198.51.100.7:80", b"\xff\xfe", b", ".join([b"10.0.0.1"] * 2000),
        b"1" * 5000, b"127.0.0.1", b"::1", b"fe80::1%eth0",
    ]  # fmt: skip
    for number, value in enumerate(forwarded):
        headers = [(b"X-Forwarded-For", value)]
        probes += [
            Probe(
                "operators",
                f"add with X-Forwarded-For {number}",
                [
                    request(
                        b"GET",
                        b"/add?" + urllib.parse.urlencode({"url": ctx.url("xff")}).encode(),
                        headers,
                        close=False,
                    )
                ],
            ),
            Probe(
                "operators",
                f"wrong key with X-Forwarded-For {number}",
                [request(b"GET", b"/api/v1/links", [*headers, (b"Authorization", b"Bearer no")])],
            ),
        ]
    origins = [
        CORS_ORIGIN,
        b"https://evil.test",
        b"null",
        b"",
        b"HTTPS://APP.FUZZ.TEST",
        b"\xff",
        b"https://app.fuzz.test" + b"x" * 5000,
        b"*",
    ]
    for number, origin in enumerate(origins):
        for method, target in (
            (b"OPTIONS", b"/api/v1/links"),
            (b"OPTIONS", b"/api/v1/links/" + key),
            (b"OPTIONS", b"/" + key),
            (b"OPTIONS", b"/api/v1/openapi.json"),
        ):
            preflight = [
                (b"Origin", origin),
                (b"Access-Control-Request-Method", b"DELETE"),
                (b"Access-Control-Request-Headers", b"authorization"),
            ]
            probes.append(
                Probe(
                    "operators", f"preflight {number} {target[:30]!r}", [request(method, target, preflight)]
                )
            )
        probes.append(
            Probe(
                "operators",
                f"GET with origin {number}",
                [request(b"GET", b"/api/v1/links/" + key, [(b"Origin", origin)])],
            )
        )
    probes += [
        Probe("operators", "openapi.json", [request(b"GET", b"/api/v1/openapi.json", close=False)]),
        Probe("operators", "openapi.json HEAD", [request(b"HEAD", b"/api/v1/openapi.json")]),
        Probe("operators", "openapi.json/x", [request(b"GET", b"/api/v1/openapi.json/x")]),
        Probe("operators", "openapi.json POST", [request(b"POST", b"/api/v1/openapi.json", body=b"{}")]),
    ]
    for number in range(ctx.scale(20, 300)):
        template = ctx.rng.choice(
            [
                request(
                    b"GET", b"/api/v1/links?after=0&limit=5", [(b"Authorization", b"Bearer x" + API_KEY)]
                ),
                request(
                    b"OPTIONS",
                    b"/api/v1/links",
                    [(b"Origin", CORS_ORIGIN), (b"Access-Control-Request-Method", b"POST")],
                ),
                request(
                    b"GET",
                    b"/add?url=https%3A%2F%2Ffuzz.test%2Fm",
                    [(b"X-Forwarded-For", b"198.51.100.1, 203.0.113.2")],
                ),
            ]
        )
        probes.append(Probe("operators", f"mutated {number}", [mutate(template, ctx.rng)]))
    return probes


def gen_pipelining(ctx: Context, slave_key: str) -> list[Probe]:
    """Pipelined requests with the statuses they must get, in order (answers are never reordered)."""
    key = ctx.key.encode()
    menu: list[tuple[Callable[[], bytes], int]] = [
        (lambda: request(b"GET", b"/" + key, close=False), 302),
        (lambda: request(b"HEAD", b"/" + key, close=False), 302),
        (lambda: request(b"GET", b"/zzzzzzzz", close=False), 404),
        (lambda: request(b"GET", b"/" + slave_key.encode(), close=False), 302),
        (
            lambda: request(
                b"GET", b"/add?" + urllib.parse.urlencode({"url": ctx.url("pipe")}).encode(), close=False
            ),
            200,
        ),
        (
            lambda: api(json.dumps({"url": ctx.url("pipe")}).encode()).replace(b"Connection: close\r\n", b""),
            201,
        ),
        (lambda: form(urllib.parse.quote(ctx.url("pipe"), safe="").encode(), close=False), 200),
        (lambda: request(b"GET", b"/add?url=javascript%3Aalert(1)", close=False), 400),
        (lambda: form(b"ftp%3A%2F%2Fx", close=False), 400),
        (lambda: request(b"GET", b"/api/v1/links/" + key, close=False), 200),
        (lambda: request(b"GET", b"/_goto/health", close=False), 200),
        (lambda: request(b"DELETE", b"/api/v1/links", close=False), 405),
    ]
    probes = []
    for number in range(ctx.scale(10, 120)):
        picks = [ctx.rng.choice(menu) for _ in range(ctx.rng.randrange(2, 60))]
        data = b"".join(make() for make, _ in picks)
        expect = [status for _, status in picks]
        if number % 2:
            cuts = sorted(ctx.rng.sample(range(1, len(data)), min(len(data) - 1, ctx.rng.randrange(1, 20))))
            chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
            probes.append(
                Probe(
                    "pipelining",
                    f"{len(picks)} requests in {len(chunks)} pieces",
                    chunks,
                    pause=0.005,
                    expect=expect,
                    timeout=PIPELINE_TIMEOUT,
                )
            )
        else:
            probes.append(
                Probe(
                    "pipelining",
                    f"{len(picks)} requests in one write",
                    [data],
                    expect=expect,
                    timeout=PIPELINE_TIMEOUT,
                )
            )
    return probes


def gen_disconnects(ctx: Context) -> list[Probe]:
    probes = []
    templates = [
        form(urllib.parse.quote(ctx.url("cut"), safe="").encode()),
        api(json.dumps({"url": ctx.url("cut")}).encode()),
        rpc(rpc_call("Store.Put", ctx.url("cut"))),
        request(b"GET", f"/{ctx.key}".encode()),
        request(b"GET", b"/add?" + urllib.parse.urlencode({"url": ctx.url("cut")}).encode()),
        request(b"GET", b"/_goto/health"),
    ]
    for number in range(ctx.scale(30, 400)):
        template = templates[number % len(templates)]
        cut = ctx.rng.randrange(1, len(template) + 1)
        how = "reset" if number % 3 == 0 else "close"
        probes.append(
            Probe("disconnects", f"{how} after {cut} of {len(template)} bytes", [template[:cut]], then=how)
        )
    return probes


class StallMonitor(threading.Thread):
    """Asks a server for a cheap page every few milliseconds, each time on a new connection, and
    keeps the slowest answer: a server whose reactor is blocked (by one costly request) shows here."""

    def __init__(self, process: GotoProcess, target: str) -> None:
        super().__init__(name=f"monitor-{process.name}", daemon=True)
        self.server = process.name
        self.port = process.port
        self.target = target
        self.slowest = 0.0
        self.failures = 0
        self._stop_event = threading.Event()
        self._deadline = time.monotonic() + 1800

    def run(self) -> None:
        while not self._stop_event.is_set() and time.monotonic() < self._deadline:
            client = KeepAliveClient(self.port, timeout=30)
            started = time.monotonic()
            try:
                client.request("GET", self.target, headers={"Connection": "close"})
            except Exception:
                self.failures += 1
            finally:
                client.close()
            self.slowest = max(self.slowest, time.monotonic() - started)
            self._stop_event.wait(0.05)

    def stop(self) -> None:
        """Stop asking; returns once the request under way is answered."""
        self._stop_event.set()
        self.join(timeout=35)


def rpc_summary(answer: bytes) -> str:
    """The fault or value of the XML-RPC answer in ``answer`` (an HTTP response), in brief."""
    body = answer.partition(b"\r\n\r\n")[2]
    try:
        (value,), _ = xmlrpclib.loads(body)
    except xmlrpclib.Fault as fault:
        return f"fault {fault.faultCode} {fault.faultString[:100]!r}"
    except Exception:
        return repr(answer[:100])
    return f"value {value!r:.100}"


# --- the drill ------------------------------------------------------------------------------------


@dataclass
class Servers:
    """The master and the slave under test, and a key each of them holds."""

    master: GotoProcess
    slave: GotoProcess
    key: str


def sanity(servers: Servers, tag: str) -> tuple[bool, float, str]:
    """A normal add and redirect through each server; ``(worked, seconds, what failed)``."""
    started = time.monotonic()
    for process in (servers.master, servers.slave):
        if process.returncode is not None:
            return False, 0.0, f"{process.name} exited with status {process.returncode}"
        url = f"https://fuzz.test/sanity/{tag}/{process.name}"
        client = KeepAliveClient(process.port)
        try:
            status, _, body = client.request("GET", "/add?" + urllib.parse.urlencode({"url": url}))
            if status != 200:
                return False, 0.0, f"{process.name}: add answered {status} {body[:100]!r}"
            key = body.decode("ascii").strip().rsplit("/", 1)[1]
            status, headers, _ = client.request("GET", f"/{key}")
            if status != 302 or headers.get("Location") != url:
                return False, 0.0, f"{process.name}: GET /{key} answered {status} {headers.get('Location')!r}"
        except Exception as exc:
            return False, 0.0, f"{process.name}: {exc!r}"
        finally:
            client.close()
    return True, time.monotonic() - started, ""


async def sibling_adds(port: int, count: int, tag: str) -> tuple[int, int]:
    """Add URLs twice at once, one client resetting at once: ``(answered 200, tried)``."""
    answered = 0
    for number in range(count):
        url = urllib.parse.quote(f"https://fuzz.test/sibling/{tag}/{number}", safe="").encode()
        data = form(url)
        quitter = exchange(port, "x", Probe("disconnects", "quitter", [data], then="reset"), 5.0)
        stayer = exchange(port, "x", Probe("disconnects", "stayer", [data]), 5.0)
        _, result = await asyncio.gather(quitter, stayer)
        answered += result.statuses == [200]
    return answered, count


async def slowloris(
    port: int, connections: int, seconds: float, interval: float
) -> tuple[int, list[float], int]:
    """Open ``connections`` that send a request one byte per ``interval``; return
    ``(cut off by the server, seconds until each was cut, still open at the end)``."""
    body = (
        b"GET /add?url=https%3A%2F%2Ffuzz.test%2Floris HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 10_000
    )
    cut: list[float] = []
    still_open = 0

    async def one() -> None:
        nonlocal still_open
        started = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return
        try:
            for byte in range(len(body)):
                if time.monotonic() - started > seconds:
                    still_open += 1
                    return
                writer.write(body[byte : byte + 1])
                await writer.drain()
                try:
                    data = await asyncio.wait_for(reader.read(1024), interval)
                except asyncio.TimeoutError:
                    continue
                if not data or b"HTTP/1.1" in data:
                    cut.append(time.monotonic() - started)
                    return
        except OSError:
            cut.append(time.monotonic() - started)
        finally:
            writer.transport.abort()

    await asyncio.gather(*(one() for _ in range(connections)))
    return len(cut), cut, still_open


def run(args_list: list[str] | None = None) -> int:
    """Run the drill with command-line ``args_list``; return the exit status."""
    parser = drill_arguments("Fuzz drill: malformed HTTP and XML-RPC at a real master and slave.")
    parser.add_argument(
        "--slowloris-seconds",
        type=float,
        default=None,
        help="how long slow-loris clients trickle (40; quick: 1.5)",
    )
    args = parser.parse_args(args_list)
    exit_on_signals()
    report = Report(f"fuzz drill ({'quick' if args.quick else 'full'}), seed {args.seed}")
    started = time.monotonic()
    with DrillWorkdir("fuzz", args.workdir, args.keep) as work, Fleet(work.path) as fleet:
        status = _drill(report, fleet, work.path, args)
        work.failed = status != 0
        report.figure("drill seconds", f"{time.monotonic() - started:.1f}")
    return status


def _drill(report: Report, fleet: Fleet, workdir: Path, args: argparse.Namespace) -> int:
    quick = bool(args.quick)
    timeout = 0.5 if quick else 2.0
    keys_file = workdir / "api-keys"
    keys_file.write_bytes(API_KEY + b"\n")
    operators = [
        "--api-keys-file", str(keys_file), "--cors-origin", CORS_ORIGIN.decode(), "--trusted-proxy", TRUSTED_PROXY,
    ]  # fmt: skip
    master = fleet.start("--rpc", *operators, name="master", data_file=workdir / "data.json")
    slave = fleet.start(
        "--master",
        f"127.0.0.1:{master.port}",
        "--rpc-timeout",
        "3",
        *operators,
        name="slave",
        data_file=None,
        wait=False,
    )
    setup = KeepAliveClient(master.port)
    status, _, body = setup.request("GET", "/add?url=https%3A%2F%2Ffuzz.test%2Fknown")
    victims = []
    for number in range(3):  # links the operators category disables (never the drill's own key)
        victim_status, _, victim = setup.request("GET", f"/add?url=https%3A%2F%2Ffuzz.test%2Fvictim{number}")
        if victim_status == 200:
            victims.append(victim.decode("ascii").strip().rsplit("/", 1)[1])
    setup.close()
    if status != 200 or len(victims) != 3:
        raise RuntimeError(f"setup: add answered {status} {body!r}")
    key = body.decode("ascii").strip().rsplit("/", 1)[1]
    slave.wait_ready()
    servers = Servers(master, slave, key)
    ok, _, failure = sanity(servers, "start")
    if not ok:
        raise RuntimeError(f"setup: {failure}")
    # A key the slave holds in its cache (its fast path) and one only the master holds.
    warm = KeepAliveClient(slave.port)
    warm.request("GET", f"/{key}")
    warm.close()
    rng = random.Random(args.seed)
    ctx = Context(key, quick, rng)
    rss_start = {p.name: rss_mib(p.pid) for p in (master, slave)}
    rss_peak = dict(rss_start)

    generators: list[tuple[str, Callable[[], list[Probe]]]] = [
        ("random_bytes", lambda: gen_random_bytes(ctx)),
        ("mutated", lambda: gen_mutated(ctx)),
        ("request_line", lambda: gen_request_line(ctx)),
        ("header_syntax", lambda: gen_header_syntax(ctx)),
        ("huge_headers", lambda: gen_huge_headers(ctx)),
        ("oversized_bodies", lambda: gen_oversized_bodies(ctx)),
        ("xml_invalid", lambda: gen_xml_invalid(ctx)),
        ("xml_bombs", lambda: gen_xml_bombs(ctx)),
        ("wrong_methods", lambda: gen_wrong_methods(ctx)),
        ("bad_utf8", lambda: gen_bad_utf8(ctx)),
        ("json", lambda: gen_json(ctx)),
        ("people", lambda: gen_people(ctx)),
        ("pipelining", lambda: gen_pipelining(ctx, key)),
        ("disconnects", lambda: gen_disconnects(ctx)),
        ("operators", lambda: gen_operators(ctx, victims)),
    ]
    all_results: list[Result] = []
    tried: Counter[str] = Counter()
    unserved: list[str] = []
    stalls: dict[str, float] = {}
    for category, generate in generators:
        probes = generate()
        batch_started = time.monotonic()
        monitors = [StallMonitor(master, "/_goto/health"), StallMonitor(slave, f"/{key}")]
        for monitor in monitors:
            monitor.start()
        try:
            # Both servers at once. XML bombs one at a time, so that each one's time is its own cost.
            concurrency = 1 if category == "xml_bombs" else CONCURRENCY
            results = asyncio.run(run_on_both((master, slave), probes, timeout, concurrency))
        finally:
            for monitor in monitors:
                monitor.stop()
        stalls[category] = max(monitor.slowest for monitor in monitors)
        all_results += results
        tried[category] = len(results)
        statuses = Counter(status for result in results for status in result.statuses)
        outcomes = Counter(result.outcome.split(":")[0] for result in results)
        served, _, failure = sanity(servers, category)
        if not served:
            unserved.append(f"after {category}: {failure}")
        for process in (master, slave):
            if process.returncode is None:
                rss_peak[process.name] = max(rss_peak[process.name], rss_mib(process.pid))
        report.figure(
            f"{category}",
            f"{len(results)} inputs ({len(probes)} per server) in {time.monotonic() - batch_started:.1f}s; "
            f"statuses {dict(sorted(statuses.items()))}; outcomes {dict(sorted(outcomes.items()))}; "
            f"slowest health probe meanwhile {' / '.join(f'{m.server} {m.slowest * 1000:.0f}ms' for m in monitors)}; "
            f"then add+redirect {'ok' if served else 'FAILED'}",
        )
        if category == "oversized_bodies":
            for result in results:
                if result.server == "master":
                    report.note(
                        f"{result.server} {result.probe.label}: {result.statuses or '-'} {result.outcome}, "
                        f"{result.sent} bytes sent in {result.seconds:.2f}s"
                    )
        if category == "xml_bombs":
            for result in results:
                if result.server == "master":
                    report.note(
                        f"{result.server} {result.probe.label}: {result.statuses or '-'} in {result.seconds:.2f}s: "
                        f"{rpc_summary(result.first_answer)}"
                    )

    # Concurrent identical adds, one client resetting: the other must still get its answer.
    sibling_counts = [asyncio.run(sibling_adds(p.port, 5 if quick else 50, p.name)) for p in (master, slave)]
    sibling_answered = sum(answered for answered, _ in sibling_counts)
    sibling_tried = sum(count for _, count in sibling_counts)
    tried["disconnects"] += 2 * sibling_tried
    report.figure(
        "identical add beside a resetting client answered 200", f"{sibling_answered} of {sibling_tried}"
    )

    # Slow-loris clients, while normal requests go on.
    loris_seconds: float = (
        args.slowloris_seconds if args.slowloris_seconds is not None else (1.5 if quick else 40.0)
    )
    loris_connections = 50
    interval = 0.2 if quick else 1.0

    async def loris_and_serve() -> tuple[list[tuple[int, list[float], int]], list[float], list[str]]:
        lorises = [
            asyncio.ensure_future(slowloris(p.port, loris_connections, loris_seconds, interval))
            for p in (master, slave)
        ]
        latencies: list[float] = []
        failures: list[str] = []
        loop = asyncio.get_running_loop()
        while not all(loris.done() for loris in lorises):
            await asyncio.sleep(0.5)
            ok, seconds, failure = await loop.run_in_executor(None, sanity, servers, "loris")
            if ok:
                latencies.append(seconds)
            else:
                failures.append(failure)
        return [loris.result() for loris in lorises], latencies, failures

    loris_results, latencies, failures = asyncio.run(loris_and_serve())
    tried["slowloris"] += 2 * loris_connections
    unserved += [f"during slow-loris: {failure}" for failure in failures]
    for process, (cut_count, cut_times, still_open) in zip((master, slave), loris_results):
        cut_text = f"cut off by the server: {cut_count}"
        if cut_times:
            cut_text += f" (after {min(cut_times):.1f}-{max(cut_times):.1f}s)"
        report.figure(
            f"slowloris {process.name}",
            f"{loris_connections} connections for up to {loris_seconds:g}s; {cut_text}; "
            f"still open at the end: {still_open}",
        )
    report.figure(
        "add+redirect on both servers during slow-loris", f"{summarize(latencies)}, failed {len(failures)}"
    )

    report.figure("inputs tried per category", dict(tried))
    report.figure("inputs tried", sum(tried.values()))
    server_errors = [r for r in all_results if 500 in r.statuses]
    faults = [r for r in all_results if r.internal_faults]
    misordered = [
        r
        for r in all_results
        if r.probe.expect is not None and not _statuses_match(r.statuses, r.probe.expect)
    ]
    not_refused = [
        r for r in all_results if _must_be_refused(r.probe) and not (413 in r.statuses or r.sent < BIG_BODY)
    ]
    report.figure("answers with status 500", len(server_errors))
    for result in server_errors[:30]:
        report.note(f"500 from {result.server}: {result.probe.sample()}")
    report.figure("XML-RPC faults 8002 'error'", len(faults))
    for result in faults[:20]:
        report.note(f"fault 8002 from {result.server}: {result.probe.sample()}")
    report.figure("pipelined exchanges answered out of order or incompletely", len(misordered))
    for result in misordered[:10]:
        report.note(
            f"{result.server} {result.probe.label}: expected {result.probe.expect}, got {result.statuses} ({result.outcome})"
        )
    for result in not_refused[:10]:
        report.note(
            f"not refused by {result.server}: {result.probe.label}: {result.statuses} {result.outcome}, {result.sent} bytes sent"
        )
    rss_end = {p.name: rss_mib(p.pid) for p in (master, slave) if p.returncode is None}
    growth = {name: rss_end.get(name, rss_peak[name]) - rss_start[name] for name in rss_start}
    report.figure("VmRSS MiB at start", {n: round(v, 1) for n, v in rss_start.items()})
    report.figure("VmRSS MiB peak (after a category)", {n: round(v, 1) for n, v in rss_peak.items()})
    report.figure("VmRSS MiB at end", {n: round(v, 1) for n, v in rss_end.items()})
    report.figure("VmRSS growth MiB", {n: round(v, 1) for n, v in growth.items()})
    problems = fleet.problems()
    report.figure("tracebacks in server logs", len(problems))
    for line in problems[:10]:
        report.note(line)

    worst = max(stalls, key=lambda category: stalls[category])
    report.check(
        f"no stall over {STALL_LIMIT:g}s while fuzzing",
        stalls[worst] < STALL_LIMIT,
        f"slowest health probe {stalls[worst]:.2f}s, during {worst}",
    )
    bomb_seconds = max((r.seconds for r in all_results if r.probe.category == "xml_bombs"), default=0.0)
    report.check(
        f"each XML bomb costs < {BOMB_LIMIT:g}s",
        bomb_seconds < BOMB_LIMIT,
        f"slowest {bomb_seconds:.2f}s of server time for a request of about 1 KB",
    )
    report.check("no 500 answers", not server_errors)
    report.check("no XML-RPC 8002 'error' faults", not faults)
    report.check("pipelined answers complete and in order", not misordered)
    report.check("oversized bodies refused", not not_refused)
    report.check("identical add beside a resetting client answered", sibling_answered == sibling_tried)
    report.check("processes alive and serving after every batch", not unserved, "; ".join(unserved[:3]))
    peak_growth = max(rss_peak[name] - rss_start[name] for name in rss_start)
    report.check(
        f"memory growth < {MAX_RSS_GROWTH_MIB:g} MiB",
        peak_growth < MAX_RSS_GROWTH_MIB,
        f"peak growth {peak_growth:.1f} MiB",
    )
    report.check("no tracebacks in server logs", not problems)
    return report.exit_status()


def main() -> None:
    """Entry point: run the drill with the command line's arguments and exit with its status."""
    raise SystemExit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
