"""A narrow fast path for the one request a shortener lives on: ``GET``/``HEAD /KEY`` of a known key.

twisted.web spends most of a redirect's time on machinery this request does not need (a Request
object, header objects, resource traversal). :class:`FastRedirectChannel` is an ``HTTPChannel`` that
answers exactly that request itself, with the very bytes the general path would send, and hands
everything else to twisted.web unchanged:

- only ``GET``/``HEAD`` of ``/KEY`` (base 62, no query, no escapes), ``HTTP/1.1``, no body, no
  ``Connection`` header other than ``keep-alive``, well-formed header lines, and a key the store
  holds locally (``lookup``): anything else, including HTTP/1.0, ``Connection: close``, an unknown
  or uncached key, goes to twisted.web;
- once any bytes have gone to twisted.web, the whole rest of the connection does too, so pipelined
  requests are always answered in order and no parser state is ever shared or guessed;
- a request split across reads is gathered (up to the header size limit) before deciding;
- each answered request is logged and counted exactly as the general path does it.

It uses only public Twisted API: ``HTTPChannel.dataReceived``, ``resetTimeout``, the transport.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from twisted.web.server import version as server_version

from goto_tw.keys import is_reserved
from goto_tw.limits import DeadlineChannel

if TYPE_CHECKING:
    from goto_tw.site import GotoSite

#: The request head the fast path answers; group 1 is the method, group 2 the key.
_SIMPLE_GET = re.compile(
    rb"(GET|HEAD) /([0-9A-Za-z]{1,64}) HTTP/1\.1\r\n"
    rb"((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[ \t]*[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?[ \t]*\r\n"
    rb"|[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[ \t]*\r\n)*)"
    rb"\r\n"
)
#: Headers whose presence means the request is not one the fast path can answer exactly.
_DISQUALIFYING = re.compile(
    rb"(?im)^(content-length|transfer-encoding|expect|upgrade|connection|te|trailer)[ \t]*:"
)
_KEEP_ALIVE = re.compile(rb"(?im)^connection:[ \t]*keep-alive[ \t]*\r$")

#: Largest request head gathered before giving up and handing it to twisted.web (which has its own limit).
MAX_HEAD_BYTES = 16 * 1024
#: Heads larger than this, or with more header lines, go to twisted.web, whose limits
#: (``totalHeadersSize``, ``maxHeaders``) then apply exactly as they would to any request.
MAX_FAST_HEAD_BYTES = 4096
MAX_FAST_HEADERS = 64


def parse_simple_get(head: bytes) -> tuple[str, str] | None:
    """Return ``(method, key)`` if ``head`` (one request head, ending with the blank line) is a
    request the fast path may answer, else ``None``."""
    if len(head) > MAX_FAST_HEAD_BYTES:
        return None
    match = _SIMPLE_GET.fullmatch(head)
    if match is None:
        return None
    headers = match.group(3)
    if headers.count(b"\n") > MAX_FAST_HEADERS:
        return None
    # One "Connection: keep-alive" changes nothing on HTTP/1.1; any other such header disqualifies.
    if _DISQUALIFYING.search(headers) and _DISQUALIFYING.search(_KEEP_ALIVE.sub(b"", headers, count=1)):
        return None
    key = match.group(2).decode("ascii")
    if is_reserved(key):
        return None
    return match.group(1).decode("ascii"), key


class FastRedirectChannel(DeadlineChannel):
    """An ``HTTPChannel`` that answers cached ``GET``/``HEAD /KEY`` itself (see the module doc)."""

    site: GotoSite
    #: The client's address as the access log writes it, found once per connection.
    client: str | None = None
    _general = False
    _gathered = b""

    def dataReceived(self, data: bytes) -> None:
        if self._general:
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
                rest = buffer[start:]
                if len(rest) > MAX_HEAD_BYTES:
                    self._hand_over(rest)
                else:
                    self._gathered = rest
                    if not rest:
                        self.stop_request_clock()
                return
            head_end = end + 4
            answer = site.fast_redirect(buffer[start:head_end], self)
            if answer is None:
                self._hand_over(buffer[start:])
                return
            self.transport.write(answer)  # type: ignore[union-attr] # connected while data arrives
            start = head_end
            if start == len(buffer):
                self._gathered = b""
                self.stop_request_clock()
                return

    def _hand_over(self, data: bytes) -> None:
        """From now on twisted.web parses everything on this connection, starting with ``data``."""
        self._general = True
        self._gathered = b""
        super().dataReceived(data)


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
