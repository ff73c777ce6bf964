"""The floor for the load benchmarks: what a request costs on goto-tw's own machinery before any of
goto-tw's own work.

Usage: python bench/floor_server.py [--port 0]

One ``Protocol`` on the reactor ``twistd goto`` runs (epoll, with goto-tw's poll step,
:func:`goto_tw.leanpoll.use_lean_poll`), answering every complete request of a keep-alive
connection with a fixed answer sent as goto-tw's fast path sends one
(:func:`goto_tw.sendnow.send_now`): ``302`` to a fixed URL for any request without a body (a
``GET``), ``200`` with a fixed short URL for one with a body (a ``POST /add``, its body skipped by its
``Content-Length``). It reads nothing else: no parsing of the request line or headers, no store, no
validation, no access log, no metrics. ``bench/run.py`` runs it as ``floor`` (redirects) and
``floor-add`` (adds) beside goto-tw and Go: the distance from the floor is goto-tw's own Python work,
the floor's distance from Go is what Twisted and the interpreter cost.

It is a benchmark peer for 127.0.0.1, not a server: a connection holding more than
:data:`MAX_UNPARSED` bytes it cannot answer, or a ``Content-Length`` that is not a number, is
aborted; what it writes to a client that never reads is not bounded (wrk reads everything). It
prints ``Site starting on PORT`` when it listens, as twistd does. It imports this checkout's
``goto_tw`` whatever the interpreter (``--python`` of another venv): the floor is this checkout's
machinery.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: this checkout's goto_tw, not bench/'s modules
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.python.failure import Failure

from goto_tw.leanpoll import use_lean_poll
from goto_tw.sendnow import send_now

#: Bytes a connection may hold unanswered (an incomplete head and body); past it, it is aborted.
MAX_UNPARSED = 64 * 1024

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]{1,9})[ \t]*\r\n", re.IGNORECASE)
_ANY_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:", re.IGNORECASE)

#: The answers, the size of goto-tw's (a Date, a Content-Type, a short URL).
REDIRECT = (
    b"HTTP/1.1 302 Found\r\nDate: Mon, 30 Nov 2026 12:00:00 GMT\r\n"
    b"Location: http://bench.example/floor\r\nContent-Length: 0\r\n\r\n"
)
ADDED = (
    b"HTTP/1.1 200 OK\r\nDate: Mon, 30 Nov 2026 12:00:00 GMT\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 25\r\n\r\nhttp://bench.test/floor1\n"
)


def body_length(head: bytes) -> int | None:
    """The ``Content-Length`` of ``head`` (its bytes up to the blank line), 0 without one; ``None``
    when it has one that is not a plain number."""
    found = _CONTENT_LENGTH.search(head)
    if found is not None:
        return int(found.group(1))
    return None if _ANY_CONTENT_LENGTH.search(head) else 0


class FloorProtocol(Protocol):
    """Answers each complete request with :data:`REDIRECT` or :data:`ADDED`, in order."""

    def __init__(self) -> None:
        self._unparsed = b""

    def dataReceived(self, data: bytes) -> None:
        buffer = self._unparsed + data if self._unparsed else data
        start = 0
        answers = []
        while True:
            end = buffer.find(b"\r\n\r\n", start)
            if end < 0:
                break
            length = body_length(buffer[start : end + 2])
            if length is None:
                self._abort()
                return
            if len(buffer) < end + 4 + length:
                break
            answers.append(ADDED if length else REDIRECT)
            start = end + 4 + length
        self._unparsed = buffer[start:]
        if answers:
            send_now(self.transport, b"".join(answers))
        if len(self._unparsed) > MAX_UNPARSED:
            self._abort()

    def _abort(self) -> None:
        self._unparsed = b""
        transport: Any = self.transport
        transport.abortConnection()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args()
    from twisted.internet import epollreactor

    epollreactor.install()  # the reactor twistd runs on Linux
    from twisted.internet import reactor

    use_lean_poll(reactor)
    endpoint = serverFromString(reactor, f"tcp:{args.port}:interface=127.0.0.1")
    listening = endpoint.listen(ServerFactory.forProtocol(FloorProtocol))

    def listened(port: Any) -> None:
        print(f"Site starting on {port.getHost().port}", flush=True)

    refusals: list[Failure] = []

    def refused(failure: Failure) -> None:
        refusals.append(failure)
        if reactor.running:
            reactor.stop()

    listening.addCallbacks(listened, refused)
    if not refusals:  # a TCP listen fails at once; run until stopped
        reactor.run()
    if refusals:
        sys.exit(refusals[0].getTraceback())


if __name__ == "__main__":
    main()
