"""A narrow fast path for the two requests a shortener lives on: redirects and adds.

twisted.web spends most of such a request's time on machinery it does not need (a Request object,
header objects, form parsing through the ``email`` package, resource traversal).
:class:`FastRedirectChannel` is an ``HTTPChannel`` that answers exactly these requests itself, with
the very bytes the general path would send, and hands everything else to twisted.web unchanged:

- ``GET``/``HEAD /KEY`` of a key the store holds locally (``lookup``), and ``GET /add?url=...`` or
  ``POST /add`` with a small ``application/x-www-form-urlencoded`` body naming a ``url``; all
  ``HTTP/1.1``, with well-formed header lines and no ``Connection`` header other than ``keep-alive``.
  Anything else, including HTTP/1.0, ``Connection: close``, chunked bodies, an unknown or uncached
  key, goes to twisted.web;
- answers go out in request order: an add answered later (once durable) holds back the answers
  pipelined behind it;
- once any bytes have gone to twisted.web, the whole rest of the connection does too (after the
  fast answers still owed have been written), so no parser state is ever shared or guessed;
- a request split across reads is gathered (up to the header size limit) before deciding;
- each answered request is logged and counted exactly as the general path does it.

It uses only public Twisted API: ``HTTPChannel.dataReceived``, ``resetTimeout``, the transport.
"""

from __future__ import annotations

import re
from collections import deque
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES
from twisted.web.server import version as server_version

from goto_tw.keys import is_reserved
from goto_tw.limits import DeadlineChannel

if TYPE_CHECKING:
    from goto_tw.site import GotoSite

#: Well-formed header lines (a token, a colon, visible ASCII), as many as there are; then the blank line.
_HEADER_LINES = (
    rb"((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[ \t]*[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?[ \t]*\r\n"
    rb"|[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[ \t]*\r\n)*)\r\n"
)
#: A redirect head: group 1 the method, 2 the key, 3 the header lines.
_SIMPLE_GET = re.compile(rb"(GET|HEAD) /([0-9A-Za-z]{1,64}) HTTP/1\.1\r\n" + _HEADER_LINES)
#: An add head: group 1 the method, 2 the target, 3 the header lines.
_SIMPLE_ADD = re.compile(rb"(GET|POST) (/add(?:\?[\x21-\x7e]*)?) HTTP/1\.1\r\n" + _HEADER_LINES)

#: Headers that frame or upgrade a request: a request with one (but a lone ``Connection:
#: keep-alive``, which changes nothing on HTTP/1.1) is not one the fast path can answer exactly.
_FRAMING = re.compile(rb"(?im)^(transfer-encoding|expect|upgrade|connection|te|trailer)[ \t]*:")
_KEEP_ALIVE = re.compile(rb"(?im)^connection:[ \t]*keep-alive[ \t]*\r$")
_CONTENT_LENGTH_NAME = re.compile(rb"(?im)^content-length[ \t]*:")
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*([0-9]{1,5})[ \t]*\r$")
_CONTENT_TYPE_NAME = re.compile(rb"(?im)^content-type[ \t]*:")
_FORM_CONTENT_TYPE = re.compile(rb"(?im)^content-type:[ \t]*application/x-www-form-urlencoded[ \t]*\r$")

#: Largest request head gathered before giving up and handing it to twisted.web (which has its own limit).
MAX_HEAD_BYTES = 16 * 1024
#: Heads larger than this, or with more header lines, go to twisted.web, whose limits
#: (``totalHeadersSize``, ``maxHeaders``) then apply exactly as they would to any request.
MAX_FAST_HEAD_BYTES = 4096
MAX_FAST_HEADERS = 64
#: Largest form body the fast path reads itself; a larger one goes to twisted.web.
MAX_FAST_BODY_BYTES = 8192
#: Most fast answers owed on one connection; a client pipelining more is left to twisted.web.
MAX_OWED = 64


def _match_head(pattern: re.Pattern[bytes], head: bytes) -> re.Match[bytes] | None:
    """Match one whole request head against ``pattern``, within the fast path's size limits and
    without framing headers; ``None`` otherwise."""
    if len(head) > MAX_FAST_HEAD_BYTES:
        return None
    match = pattern.fullmatch(head)
    if match is None:
        return None
    headers = match.group(3)
    if headers.count(b"\n") > MAX_FAST_HEADERS:
        return None
    if _FRAMING.search(headers) and _FRAMING.search(_KEEP_ALIVE.sub(b"", headers, count=1)):
        return None
    return match


def parse_simple_get(head: bytes) -> tuple[str, str] | None:
    """Return ``(method, key)`` if ``head`` (one request head, ending with the blank line) is a
    redirect the fast path may answer, else ``None``."""
    match = _match_head(_SIMPLE_GET, head)
    if match is None or _CONTENT_LENGTH_NAME.search(match.group(3)):
        return None
    key = match.group(2).decode("ascii")
    if is_reserved(key):
        return None
    return match.group(1).decode("ascii"), key


def parse_simple_add(head: bytes) -> tuple[str, bytes, int] | None:
    """Return ``(method, target, body_length)`` if ``head`` is an add the fast path may answer.

    ``GET /add?...`` without a body, or ``POST /add`` (no query) with one exact ``Content-Length``
    of at most :data:`MAX_FAST_BODY_BYTES` and one ``Content-Type:
    application/x-www-form-urlencoded``. ``None`` for anything else.
    """
    match = _match_head(_SIMPLE_ADD, head)
    if match is None:
        return None
    method, target, headers = match.group(1), match.group(2), match.group(3)
    lengths = _CONTENT_LENGTH_NAME.findall(headers)
    if method == b"GET":
        return ("GET", target, 0) if b"?" in target and not lengths else None
    if b"?" in target or len(lengths) != 1 or len(_CONTENT_TYPE_NAME.findall(headers)) != 1:
        return None
    length = _CONTENT_LENGTH.search(headers)
    if length is None or _FORM_CONTENT_TYPE.search(headers) is None:
        return None
    body_length = int(length.group(1))
    return ("POST", target, body_length) if 0 < body_length <= MAX_FAST_BODY_BYTES else None


class FastRedirectChannel(DeadlineChannel):
    """An ``HTTPChannel`` that answers redirects and adds itself (see the module doc)."""

    site: GotoSite
    #: The client's address as the access log writes it, found once per connection.
    client: str | None = None
    _general = False
    _gathered = b""
    #: Fast answers still owed, in request order: each a one-item list, filled when ready.
    _owed: deque[list[bytes | None]] | None = None
    #: Bytes for twisted.web held back until the fast answers still owed are written.
    _held: list[bytes] | None = None
    _lost = False

    def dataReceived(self, data: bytes) -> None:
        if self._general:
            if self._held is not None:
                self._held.append(data)
            else:
                super().dataReceived(data)
            return
        self.resetTimeout()
        self.start_request_clock()
        buffer = self._gathered + data if self._gathered else data
        site = self.site
        start = 0
        while True:
            end = buffer.find(b"\r\n\r\n", start)
            if end < 0:
                self._gather(buffer[start:])
                return
            head_end = end + 4
            head = buffer[start:head_end]
            answer: bytes | Deferred[bytes] | None = site.fast_redirect(head, self)
            if answer is None:
                add = parse_simple_add(head)
                if add is None or (self._owed is not None and len(self._owed) >= MAX_OWED):
                    self._hand_over(buffer[start:])
                    return
                method, target, body_length = add
                if len(buffer) < head_end + body_length:
                    self._gather(buffer[start:])
                    return
                answer = site.fast_add(method, target, buffer[head_end : head_end + body_length], self)
                if answer is None:
                    self._hand_over(buffer[start:])
                    return
                head_end += body_length
            self._answer(answer)
            start = head_end
            if start == len(buffer):
                self._gathered = b""
                self.stop_request_clock()
                return

    def _gather(self, rest: bytes) -> None:
        """Keep an incomplete request until more arrives (twisted.web takes an oversized one)."""
        if len(rest) > MAX_HEAD_BYTES + MAX_FAST_BODY_BYTES:
            self._hand_over(rest)
            return
        self._gathered = rest
        if not rest:
            self.stop_request_clock()

    def _answer(self, answer: bytes | Deferred[bytes]) -> None:
        """Write ``answer`` now if nothing is owed before it, else once everything before it is."""
        if isinstance(answer, bytes) and not self._owed:
            self.transport.write(answer)  # type: ignore[union-attr] # connected while data arrives
            return
        if self._owed is None:
            self._owed = deque()
        slot: list[bytes | None] = [None]
        self._owed.append(slot)
        if isinstance(answer, bytes):
            slot[0] = answer
        else:
            answer.addCallback(self._ready, slot)

    def _ready(self, answer: bytes, slot: list[bytes | None]) -> None:
        slot[0] = answer
        owed = self._owed
        if self._lost or owed is None:
            return
        while owed and owed[0][0] is not None:
            ready = owed.popleft()[0]
            assert ready is not None
            self.transport.write(ready)  # type: ignore[union-attr] # connected: not _lost
        if not owed and self._held is not None:
            held, self._held = b"".join(self._held), None
            super().dataReceived(held)

    def _hand_over(self, data: bytes) -> None:
        """From now on twisted.web parses everything on this connection, starting with ``data``."""
        self._general = True
        self._gathered = b""
        if self._owed:
            self._held = [data]
        else:
            super().dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._lost = True
        super().connectionLost(reason)


def text_response(status: int, date: bytes, text: bytes, retry_after: int | None = None) -> bytes:
    """The bytes twisted.web sends for ``web.write_text``, header for header."""
    return b"HTTP/1.1 %d %s\r\nServer: %s\r\nDate: %s\r\n%s%s\r\n%s" % (
        status,
        RESPONSES[status],
        server_version,
        date,
        b"Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: %d\r\n"
        % len(text),
        b"" if retry_after is None else b"Retry-After: %d\r\n" % retry_after,
        text,
    )


def redirect_response(location: bytes, date: bytes) -> bytes:
    """The bytes twisted.web sends for our 302 (see ``web._redirect``), header for header."""
    return (
        b"HTTP/1.1 302 Found\r\nServer: "
        + server_version
        + b"\r\nDate: "
        + date
        + b"\r\nLocation: "
        + location
        + b"\r\nContent-Length: 0\r\n\r\n"
    )
