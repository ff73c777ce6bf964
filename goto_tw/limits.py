"""Bounds on what one client can make the server hold: time to send a request, size of a head or body.

twisted.web closes connections idle for the site's timeout, but a client that trickles one byte
now and then is never idle, a request body of any size is accepted (spooled to a temporary
file), and an over-long request line or header block is met with a silent close or a bare 400.
These classes close the gaps with ``HTTPChannel``/``Request`` hooks: refusals are answered with
their own status (413, 414, 431; a problem document under ``/api/``) before the connection closes.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, cast

from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

# _getMultiPartArgs, _MultiPartParseException, _parseContentType: twisted.web's own (private) parsers
# of a request's Content-Type and multipart body, so that BoundedRequest reads arguments as it does.
from twisted.web.http import (
    RESPONSES,
    HTTPChannel,
    _getMultiPartArgs,
    _MultiPartParseException,
    _parseContentType,
)
from twisted.web.server import Request

from goto_tw.cors import refusal_headers
from goto_tw.formargs import FORM_CONTENT_TYPE, MULTIPART_CONTENT_TYPE, parse_arguments
from goto_tw.problems import PROBLEM_JSON, is_api_path, problem_body
from goto_tw.throttledlog import ThrottledError

log = Logger()

#: Seconds a client has to send one whole request (head and body) once it starts sending it.
REQUEST_DEADLINE = 30.0

#: Seconds an answer may take from its request until it is ready, on either path (an add waiting for
#: its sync, a miss waiting for the master); then the connection is closed. As long as the request
#: deadline: stores keep their own, shorter timeouts (a slave's ``--rpc-timeout``, 5 s by default;
#: the site gets a longer deadline when that option asks for more), so only a store that never
#: answers (a data file's sync that never returns) meets it.
ANSWER_DEADLINE = REQUEST_DEADLINE

#: Largest request body accepted, in bytes; a larger one is answered 413 before it is read.
MAX_BODY_BYTES = 1 << 20


def _under_api(target: bytes) -> bool:
    """Whether a request target (origin or absolute form) is under ``/api/``."""
    return is_api_path(origin_form(target))


def origin_form(target: bytes) -> bytes:
    """The path of an absolute-form request target (``http://host/KEY`` -> ``/KEY``); others unchanged.

    HTTP/1.1 servers must accept the absolute form (RFC 9112, 3.2.2); twisted.web would take the
    scheme and host for path segments.
    """
    if target[:1] == b"/" or not target[:8].lower().startswith((b"http://", b"https://")):
        return target
    rest = target.split(b"//", 1)[1]
    cut = min((index for index in (rest.find(b"/"), rest.find(b"?")) if index >= 0), default=-1)
    if cut < 0:
        return b"/"
    return rest[cut:] if rest[cut : cut + 1] == b"/" else b"/" + rest[cut:]


def refusal(status: int, text: str, target: bytes = b"", cors: bytes = b"") -> bytes:
    """A whole answer refusing a request before any resource sees it, announcing the close.

    Under ``/api/`` it is a problem document, with ``cors``'s header lines (see
    :func:`~goto_tw.cors.refusal_headers`); elsewhere short plain text.
    """
    if _under_api(target):
        body, content_type = problem_body(status, text), PROBLEM_JSON
    else:
        body, content_type, cors = text.encode("utf-8") + b"\n", b"text/plain; charset=utf-8", b""
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n%s" % (
        status,
        RESPONSES.get(status) or HTTPStatus(status).phrase.encode("ascii"),
        content_type,
        len(body),
        cors,
        body,
    )


def _cors_of(channel: Any, origin: bytes | None) -> bytes:
    """The CORS header lines of a refusal on ``channel`` (its site's ``cors_origins``) for ``origin``."""
    site = getattr(channel, "site", None)
    return refusal_headers(getattr(site, "cors_origins", frozenset()), origin)


_TOO_LARGE_TEXT = f"Request body larger than {MAX_BODY_BYTES} bytes."
#: The answer to a body over :data:`MAX_BODY_BYTES` (outside ``/api/``).
TOO_LARGE = refusal(413, _TOO_LARGE_TEXT)


#: What twisted.web answers to a malformed request, before closing the connection.
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\n\r\n"


#: Seconds between two log lines of one kind about connections a client ended by its own doing (a
#: refused head or body, a request or answer past its deadline): any client can cause one a
#: connection, thousands a second.
CLIENT_LOG_INTERVAL = 10.0


class ConnectionLogLines:
    """The log lines a client can cause once a connection, at most one of each kind an interval
    (with how many were left out): an operations audit (stop 41) counted a line for each of
    2,000 slow connections, and 1,000 lines in 1.6 s of refused heads. One for a site (its
    connections share it); a connection without one makes its own."""

    def __init__(self, clock: IReactorTime) -> None:
        self.refused = ThrottledError(
            log,
            clock,
            "Refused {what} from {peer} ({unlogged} more refused since the last line)",
            CLIENT_LOG_INTERVAL,
            level=LogLevel.info,
        )
        self.closed = ThrottledError(
            log,
            clock,
            "Closing a connection from {peer}: {why} ({unlogged} more closed since the last line)",
            CLIENT_LOG_INTERVAL,
            level=LogLevel.info,
        )
        self.idle = ThrottledError(
            log,
            clock,
            "Timing out client {peer}: idle for {seconds:g} s ({unlogged} more since the last line)",
            CLIENT_LOG_INTERVAL,
            level=LogLevel.info,
        )


def _cancel(call: IDelayedCall | None) -> None:
    """Cancel ``call`` unless it is none or has run."""
    if call is not None and call.active():
        call.cancel()


class DeadlineChannel(HTTPChannel):
    """An ``HTTPChannel`` that closes a connection whose request does not arrive whole in time, or
    whose answer is not ready in time.

    The clock starts with the first byte of a request and stops when its body is complete, so a
    slow-loris client (a byte every few seconds, never idle long enough for the idle timeout) is
    cut off after :data:`REQUEST_DEADLINE` seconds, while idle keep-alive connections are left to
    the site's ordinary idle timeout. twisted.web disarms that idle timeout while it answers a
    request, so a second clock runs from the request's end until its answer is finished: a
    resource waiting on a store that never answers holds the connection :attr:`answer_deadline`
    seconds at most (every answer here is written whole when it is ready: no response streams).
    """

    request_deadline = REQUEST_DEADLINE
    #: Seconds an answer may take (:data:`ANSWER_DEADLINE`); set by the site.
    answer_deadline = ANSWER_DEADLINE
    _deadline_call: IDelayedCall | None = None
    #: The answer deadline of the request twisted.web is answering.
    _general_answer_call: IDelayedCall | None = None
    #: Bytes and lines of the request head being parsed (as twisted.web counts them: no CRLF).
    _head_bytes = 0
    _head_lines = 0
    #: The target of the request being parsed (for the form of a refusal).
    request_target = b""

    #: Set once a request head has been refused: whatever the client still sends is dropped.
    _head_refused = False
    #: The ``Origin`` header of the request being parsed, once its line has passed (for CORS).
    _origin: bytes | None = None
    #: Where the lines about this connection's refusals and deadlines go (set by the site).
    log_lines: ConnectionLogLines | None = None

    def client_log_lines(self) -> ConnectionLogLines:
        """The site's :class:`ConnectionLogLines`, or this connection's own."""
        if self.log_lines is None:
            from twisted.internet import reactor

            self.log_lines = ConnectionLogLines(cast(IReactorTime, reactor))
        return self.log_lines

    def _peer(self) -> object:
        return self.transport.getPeer() if self.transport is not None else "-"

    def timeoutConnection(self) -> None:
        """twisted.web's idle timeout (a line, then the close, aborted ``abortTimeout`` later if the
        client does not read), its line throttled with the others a client causes: every keep-alive
        client that goes quiet ends this way."""
        self.client_log_lines().idle.error(peer=self._peer(), seconds=self.timeOut)
        if self.abortTimeout is not None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._head_refused:
            return
        if not self._handlingRequest:
            # While twisted.web answers a request, what arrives behind it waits for us, not for
            # the client: its clock starts when twisted.web replays it (through this method).
            self.start_request_clock()
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        """Refuse an over-long request line (414) or header block (431) before twisted.web (400) does."""
        if self._head_lines == 0:
            if not line:
                super().lineReceived(line)  # a stray blank line between requests: twisted.web's to judge
                return
            parts = line.split(b" ", 2)
            self.request_target = parts[1] if len(parts) > 1 else b""
            self._origin = None
        elif line[:7].lower() == b"origin:":
            self._origin = line[7:].strip()
        self._head_lines += 1
        self._head_bytes += len(line)
        if self._head_bytes > self.totalHeadersSize:
            self._refuse_head(self._head_lines == 1)
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        """A line longer than twisted.web takes: 414 if it is the request line, else 431."""
        first = self._head_lines == 0
        if first:
            parts = line.split(b" ", 2)
            self.request_target = parts[1] if len(parts) > 1 else b""
            self._origin = None  # not the previous request's
        self._refuse_head(first)

    def _refuse_head(self, request_line: bool) -> None:
        cors = _cors_of(self, self._origin)
        if request_line:
            answer = refusal(414, "The request target is too long.", self.request_target, cors)
        else:
            answer = refusal(431, "The request header fields are too large.", self.request_target, cors)
        self.client_log_lines().refused.error(
            what="an over-long request line" if request_line else "an over-large header block",
            peer=self._peer(),
        )
        self._head_refused = True
        if self.transport is not None:
            self.transport.write(answer)
            self.loseConnection()

    def _respondToBadRequestAndDisconnect(self) -> None:
        """twisted.web's answer to a malformed request (a bare 400); under ``/api/``, a problem document."""
        if not _under_api(self.request_target) or self.transport is None:
            super()._respondToBadRequestAndDisconnect()
            return
        self._head_refused = True
        cors = _cors_of(self, self._origin)
        self.transport.write(refusal(400, "The request is malformed.", self.request_target, cors))
        self.loseConnection()

    def allContentReceived(self) -> None:
        self.stop_request_clock()
        self._head_bytes = self._head_lines = 0
        super().allContentReceived()
        # Answered later: still in hand. (A request answered at once on a connection that then closes
        # leaves ``_handlingRequest`` set, but is no longer among the channel's requests.)
        if self._handlingRequest and self.requests and self._general_answer_call is None:
            self._general_answer_call = self.callLater(self.answer_deadline, self._general_answer_late)

    def requestDone(self, request: Any) -> None:
        self._stop_general_answer_clock()
        super().requestDone(request)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.stop_request_clock()
        self._stop_general_answer_clock()
        super().connectionLost(reason)

    def _stop_general_answer_clock(self) -> None:
        _cancel(self._general_answer_call)
        self._general_answer_call = None

    def _general_answer_late(self) -> None:
        self._general_answer_call = None
        # Its resource learns now that the client is gone (not once the close is done, which a client
        # that does not read puts off until the abort): an answer ready meanwhile is not written.
        gone = Failure(ConnectionLost(f"no answer within {self.answer_deadline:g} s"))
        for request in list(self.requests):
            request.connectionLost(gone)
        self.close_for_a_late_answer()

    def close_for_a_late_answer(self) -> None:
        """Close the connection: an answer was not ready within :attr:`answer_deadline`. Nothing is
        answered or logged for its request (the resource still waiting finds the client gone)."""
        self.client_log_lines().closed.error(
            peer=self._peer(), why=f"an answer was not ready within {self.answer_deadline:g} s"
        )
        if self.transport is not None:
            # As twisted.web's idle timeout: a close waits for the send buffer to drain, which a
            # client that does not read never lets happen (and nothing else is armed): abort then.
            if self.abortTimeout is not None:
                self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
            self.loseConnection()

    def start_request_clock(self) -> None:
        """Start the deadline of the request whose bytes are arriving, unless it is running."""
        if self._deadline_call is None:
            self._deadline_call = self.callLater(self.request_deadline, self._too_slow)

    def stop_request_clock(self) -> None:
        """The request is complete (or the connection gone): no deadline any more."""
        _cancel(self._deadline_call)
        self._deadline_call = None

    def _too_slow(self) -> None:
        self._deadline_call = None
        self.client_log_lines().closed.error(
            peer=self._peer(), why=f"no complete request within {self.request_deadline:g} s"
        )
        if self.transport is not None:
            self.transport.loseConnection()


class BoundedRequest(Request):
    """A ``Request`` that refuses a body over :data:`MAX_BODY_BYTES` with 413 and closes.

    A declared ``Content-Length`` over the limit is refused before any of the body is read; a
    chunked body as soon as it passes the limit. Either way nothing beyond the limit is kept.

    Its ``args`` are split at ``&`` only (:mod:`goto_tw.formargs`), not at ``;`` as twisted.web
    splits them, so a URL given unescaped with a ``;`` in it is not cut there.
    """

    max_body_bytes = MAX_BODY_BYTES
    _refused = False
    _body_bytes = 0
    #: The request target as sent, known before ``requestReceived`` (for the form of a refusal).
    target = b""

    def gotLength(self, length: int | None) -> None:
        self.target = getattr(self.channel, "request_target", b"")
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
            self._close_with(self._malformed(), "a malformed Content-Type header")
            return
        target = origin_form(path)
        if target[:1] != b"/" and (target, command) != (b"*", b"OPTIONS"):
            # twisted.web drops a target's first byte whatever it is (``Xapi/v1/links`` reached the
            # API unseen as such): a target is a path, ``*`` (OPTIONS) or the absolute form (RFC 9112, 3.2).
            self._refused = True
            self._close_with(BAD_REQUEST, "a request target that is not a path")
            return
        self._parsePOSTFormSubmission = False  # process() reads the arguments, once
        super().requestReceived(command, target, version)

    def process(self) -> None:
        arguments = self._arguments()
        if arguments is None:
            return  # refused: a multipart body that cannot be read
        self.args = arguments
        super().process()

    def _arguments(self) -> dict[bytes, list[bytes]] | None:
        """The request's arguments as twisted.web's ``requestReceived`` reads them (the query's, then
        a POST body's of the type twisted.web's own parser names, by its own multipart parser), but
        a query and a form body split at "&" only (goto_tw.formargs): twisted.web's parse_qs splits
        at ";" too. Read here alone, once: a copy of twisted.web's decision of the body's type
        disagreed with it, and reading a multipart body twice doubled what a client could cost
        (review 40). ``None``, answered 400, for a multipart body that cannot be read, as
        twisted.web answers it."""
        parts = self.uri.split(b"?", 1)
        arguments = parse_arguments(parts[1]) if len(parts) > 1 else {}
        content_types = self.requestHeaders.getRawHeaders(b"content-type")
        # twisted.web parses every POST's Content-Type with the email package (about 40 us a
        # request: 5% of a master's RPC work) only to find form bodies to decode; a type without
        # "form" in it is neither of the two, so the parse is skipped. Unless it holds an RFC 2047
        # encoded word ("=?"): the email package decodes those, into "form" too.
        if (
            self.method != b"POST"
            or not content_types
            or not any(b"form" in value.lower() or b"=?" in value for value in content_types)
            or self.content is None
        ):
            return arguments
        body: bytes = self.content.read()
        self.content.seek(0, 0)
        if body:
            kind = _parseContentType(content_types[0])
            if kind == FORM_CONTENT_TYPE:
                arguments.update(parse_arguments(body))
            elif kind == MULTIPART_CONTENT_TYPE:
                try:
                    arguments.update(_getMultiPartArgs(body, content_types[0]))
                except _MultiPartParseException:
                    self._refused = True
                    self._close_with(self._malformed(), "a multipart body that cannot be read")
                    return None
        return arguments

    def _refuse(self) -> None:
        self._refused = True
        if self.content is not None:
            self.content.close()  # a chunked body is spooled to a temporary file: release it now
        self._close_with(
            refusal(413, _TOO_LARGE_TEXT, self.target, self._cors()),
            f"a request body over {self.max_body_bytes} bytes",
        )

    def _malformed(self) -> bytes:
        """The 400 of a request that cannot be read: a problem document under ``/api/``."""
        if _under_api(self.target):
            return refusal(400, "The request is malformed.", self.target, self._cors())
        return BAD_REQUEST

    def _cors(self) -> bytes:
        return _cors_of(self.channel, self.getHeader(b"origin"))

    def _close_with(self, answer: bytes, what: str) -> None:
        """Answer ``answer`` (unless an earlier pipelined request is still owed its own) and close."""
        channel: Any = self.channel
        transport = channel.transport
        if channel.requests and channel.requests[0] is self:
            transport.write(answer)
        channel.client_log_lines().refused.error(what=what, peer=transport.getPeer())
        transport.loseConnection()
