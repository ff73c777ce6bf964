"""Bounds on what one client can make the server hold: time to send a request, size of a body.

twisted.web closes connections idle for the site's timeout, but a client that trickles one byte
now and then is never idle, and a request body of any size is accepted (spooled to a temporary
file). These two classes close both gaps with public ``HTTPChannel``/``Request`` hooks only.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request

log = Logger()

#: Seconds a client has to send one whole request (head and body) once it starts sending it.
REQUEST_DEADLINE = 30.0

#: Largest request body accepted, in bytes; a larger one is answered 413 before it is read.
MAX_BODY_BYTES = 1 << 20

_TOO_LARGE_BODY = f"Request body larger than {MAX_BODY_BYTES} bytes.\n".encode("ascii")
TOO_LARGE = (
    b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY)
)


#: What twisted.web answers to a malformed request, before closing the connection.
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\n\r\n"


class DeadlineChannel(HTTPChannel):
    """An ``HTTPChannel`` that closes a connection whose request does not arrive whole in time.

    The clock starts with the first byte of a request and stops when its body is complete, so a
    slow-loris client (a byte every few seconds, never idle long enough for the idle timeout) is
    cut off after :data:`REQUEST_DEADLINE` seconds, while idle keep-alive connections are left to
    the site's ordinary idle timeout.
    """

    request_deadline = REQUEST_DEADLINE
    _deadline_call: IDelayedCall | None = None

    def dataReceived(self, data: bytes) -> None:
        self.start_request_clock()
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        self.stop_request_clock()
        super().allContentReceived()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.stop_request_clock()
        super().connectionLost(reason)

    def start_request_clock(self) -> None:
        """Start the deadline of the request whose bytes are arriving, unless it is running."""
        if self._deadline_call is None:
            self._deadline_call = self.callLater(self.request_deadline, self._too_slow)

    def stop_request_clock(self) -> None:
        """The request is complete (or the connection gone): no deadline any more."""
        if self._deadline_call is not None:
            if self._deadline_call.active():
                self._deadline_call.cancel()
            self._deadline_call = None

    def _too_slow(self) -> None:
        self._deadline_call = None
        log.info(
            "Closing a connection from {peer}: no complete request within {seconds:g} s",
            peer=self.transport.getPeer() if self.transport is not None else "-",
            seconds=self.request_deadline,
        )
        if self.transport is not None:
            self.transport.loseConnection()


class BoundedRequest(Request):
    """A ``Request`` that refuses a body over :data:`MAX_BODY_BYTES` with 413 and closes.

    A declared ``Content-Length`` over the limit is refused before any of the body is read; a
    chunked body as soon as it passes the limit. Either way nothing beyond the limit is kept.
    """

    max_body_bytes = MAX_BODY_BYTES
    _refused = False
    _body_bytes = 0

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body_bytes:
            super().gotLength(0)
            self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after our 413
            self._refuse()
        else:
            super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._body_bytes += len(data)
        if self._body_bytes > self.max_body_bytes:
            self._refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return  # already answered; the connection is closing
        content_types = self.requestHeaders.getRawHeaders(b"content-type") or []
        if any(len(value.decode("latin-1").splitlines()) > 1 for value in content_types):
            # twisted.web hands this header to the email package, which raises on anything that
            # str.splitlines() takes for a line break (CR, LF, VT, FF, \x1c-\x1e, \x85): an unhandled
            # error that drops the connection. Answer as for any malformed request.
            self._refused = True
            self._close_with(BAD_REQUEST, "a malformed Content-Type header")
            return
        super().requestReceived(command, path, version)

    def _refuse(self) -> None:
        self._refused = True
        if self.content is not None:
            self.content.close()  # a chunked body is spooled to a temporary file: release it now
        self._close_with(TOO_LARGE, f"a request body over {self.max_body_bytes} bytes")

    def _close_with(self, answer: bytes, what: str) -> None:
        """Answer ``answer`` (unless an earlier pipelined request is still owed its own) and close."""
        channel: Any = self.channel
        transport = channel.transport
        if channel.requests and channel.requests[0] is self:
            transport.write(answer)
        log.info("Refused {what} from {peer}", what=what, peer=transport.getPeer())
        transport.loseConnection()
