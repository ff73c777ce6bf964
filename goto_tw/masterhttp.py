"""The slave's HTTP/1.1 client for its masters' ``/RPC2``: persistent connections, one request on each at a time.

Why not ``twisted.web.client.Agent`` and its ``HTTPConnectionPool`` (which a slave used before)? They
are general: per request they parse the URL, build an endpoint, copy the headers, make ``Request``
and ``Response`` objects, parse the answer line by line through ``LineReceiver`` and Deferred
layers, and arm a ``DelayedCall`` per connection handed back to the pool. A slave sends one kind of
request to one or a few URLs fixed at start-up, and the master is a goto master. py-spy
(``bench/profile.py``, non-blocking sampling) put the Agent and its pool at 13% of a CPython
slave's samples on adds through it, and 7% on uncached redirects and on the mixed load, where one
cache miss in fifty paid a whole Agent round trip: this client is what measurably had to go
(``bench/README.md`` has the before and after).

What it does: per master URL (:class:`MasterConnections` routes by URL; a slave with several
``--master`` has one link each), the URL is parsed and the endpoint built once
(:class:`~goto_tw.masterlink.MasterEndpointFactory`: an IP address straight, Nagle off, TLS for
``https``). A ``POST`` goes out in one write on an idle connection (the most recently used), else
on a new one, else it waits for one. The answer is read as HTTP/1.1 says: a status line, headers,
then a body delimited by ``Content-Length``, by ``chunked`` (Twisted's own decoder) or by the
connection's end; interim ``1xx`` answers are skipped. A connection is used again only after a
complete, length-delimited HTTP/1.1 answer without ``Connection: close``, and not after
:data:`IDLE_SECONDS` idle (the master closes idle ones after a minute; taking one it is closing
would fail the call).

A ``200`` answer is handed over once its whole body is in (:attr:`MasterAnswer.body`); any other
status at once, its body following (the slave only reports the status; reading the body to its end
keeps the connection usable). Nothing here logs: every failure reaches the caller, which reports it.

Bounds: an answer's head at most :data:`MAX_HEAD_BYTES`; a ``200``'s body at most the
``max_answer_bytes`` given (``Content-Length`` over it is refused before a byte of the body is
read); another answer's body at most :data:`MAX_REFUSED_BODY_BYTES` and :data:`REFUSED_BODY_SECONDS`;
at most :data:`MAX_CONNECTIONS` connections per master and :data:`MAX_WAITING` posts waiting for
one (past it a post fails at once); at most :data:`MAX_MASTERS` URLs.

Every post's Deferred fires: with the answer; with ``ResponseNeverReceived`` /
``ResponseFailed`` (Twisted's, with the reasons inside) when the connection ended before a
complete answer or the answer was not HTTP this client reads (:class:`BadAnswer`); with the
endpoint's error when no connection could be made; with ``CancelledError`` when the caller cancels
it (its timeout): the connection is then dropped, since its answer may still come.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web._newclient import ResponseDone
from twisted.web.client import URI, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss, _ChunkedTransferDecoder
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH

from goto_tw.masterlink import MasterEndpointFactory
from goto_tw.sendnow import send_now

#: Longest answer head (status line and headers) read; a goto master's is about 200 bytes.
MAX_HEAD_BYTES = 64 * 1024
#: Longest body read of an answer other than ``200`` (to keep its connection); past it, dropped.
MAX_REFUSED_BODY_BYTES = 64 * 1024
#: How long the body of an answer other than ``200`` may take once its head is in.
REFUSED_BODY_SECONDS = 10.0
#: Connections to one master at most (a slave has at most a handful of requests in flight).
MAX_CONNECTIONS = 16
#: Posts that may wait for a connection to one master; past it, a post fails at once.
MAX_WAITING = 256
#: Distinct master URLs one client serves (a slave has one per ``--master``).
MAX_MASTERS = 64
#: An idle connection older than this is closed rather than used (twisted.web closes at 60 s).
IDLE_SECONDS = 30.0

#: The characters a status phrase or header value may not hold: controls but tab.
_CONTROL = rb"\x00-\x08\x0a-\x1f\x7f"
_STATUS = rb"HTTP/1\.([01]) ([1-9][0-9]{2})(?: [^" + _CONTROL + rb"]*)?"
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_STATUS_LINE = re.compile(_STATUS)
_HEADER_NAME = re.compile(_TOKEN)
_BAD_VALUE = re.compile(rb"[" + _CONTROL + rb"]")
#: A whole head that :func:`_read_head_by_lines` accepts line by line: the status line, then header
#: lines ``NAME:VALUE`` (a token, no control characters but tab in the value), each after its CRLF.
_HEAD_SHAPE = re.compile(_STATUS + rb"((?:\r\n" + _TOKEN + rb":[^" + _CONTROL + rb"]*)*)")
#: In a checked, lower-cased header block: the headers that frame the answer, with their values.
_FRAMING = re.compile(rb"\r\n(content-length|transfer-encoding|connection):([^\r]*)")
_DIGITS = re.compile(rb"[0-9]{1,18}")

#: How a body that came whole ended (one instance for all: a Failure is not cheap to make).
_RESPONSE_DONE = Failure(ResponseDone())

# Answer states of a connection.
_IDLE, _HEAD, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(5)


class BadAnswer(Exception):
    """The master's answer is not HTTP this client reads (the message says what was wrong)."""


class LinkBusy(Exception):
    """So many posts already wait for a connection to this master that one more is not queued."""


class MasterAnswer:
    """One answer of the master: ``code``, ``phrase``, ``headers``, ``length`` and the body.

    Enough of ``twisted.web.iweb.IResponse`` for the slave's RPC client and ``readBody``: a ``200``
    comes with its whole :attr:`body`; ``deliverBody`` works for every answer.
    """

    def __init__(self, code: int, phrase: bytes, header_block: bytes, length: Any) -> None:
        self.code = code
        self.phrase = phrase
        self.length = length
        #: The whole body, when the answer was handed over complete (a ``200``); else ``None``.
        self.body: bytes | None = None
        #: The head's header lines, each after its CRLF (checked by _read_head; split when asked for).
        self._header_block = header_block
        self._parts: list[bytes] = []
        self._ended: Failure | None = None
        self._reader: Any = None
        self._connection: _Connection | None = None

    @property
    def headers(self) -> Headers:
        """The answer's headers (built when asked for: the RPC client never asks)."""
        headers = Headers()
        for line in self._header_block.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers.addRawHeader(name, value.strip(b" \t"))
        return headers

    def deliverBody(self, protocol: Any) -> None:
        """Give ``protocol`` the body (what came so far at once), then ``connectionLost`` with
        ``ResponseDone`` (``PotentialDataLoss`` for a body that ended with the connection) or the
        failure that cut it short. Its ``transport.stopProducing()`` drops the connection while the
        body is still coming, and does nothing once it is complete."""
        protocol.makeConnection(_BodyProducer(self))
        self._reader = protocol
        if self.body is not None:
            if self.body:
                protocol.dataReceived(self.body)
        else:
            parts, self._parts = self._parts, []
            for part in parts:
                protocol.dataReceived(part)
        if self._ended is not None:
            self._reader = None
            protocol.connectionLost(self._ended)

    def _whole(self, body: bytes, reason: Failure) -> None:
        """The body came whole (``reason``: how it ended); the answer is handed over with it."""
        self.body = body
        self._ended = reason

    def _received(self, data: bytes) -> None:
        if self._reader is not None:
            self._reader.dataReceived(data)
        else:
            self._parts.append(data)

    def _end(self, reason: Failure) -> None:
        self._connection = None
        self._ended = reason
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.connectionLost(reason)


class _BodyProducer:
    """The ``transport`` a body reader gets: stopping it drops the connection while the body comes."""

    def __init__(self, answer: MasterAnswer) -> None:
        self._answer = answer

    def stopProducing(self) -> None:
        connection = self._answer._connection
        if connection is not None:
            connection.drop(BadAnswer("the body was not wanted"))

    def pauseProducing(self) -> None:
        pass  # bodies are bounded: nothing to hold back

    def resumeProducing(self) -> None:
        pass


class _Post:
    """One POST: its bytes, its caller's Deferred, and where it is (waiting, connecting, sent)."""

    __slots__ = ("answer", "connecting", "connection", "link", "request")

    def __init__(self, link: _Link, request: bytes) -> None:
        self.link = link
        self.request = request
        self.connection: _Connection | None = None
        self.connecting: Deferred[Any] | None = None
        self.answer: Deferred[MasterAnswer] = Deferred(self._cancel)

    def _cancel(self, _: Deferred[MasterAnswer]) -> None:
        """The caller gave up (its timeout): leave the queue, stop connecting, or drop the connection
        (its answer may still come, and must not be taken for the next request's)."""
        if self.connection is not None:
            self.connection.drop(BadAnswer("the call was cancelled"), answered=True)
        elif self.connecting is not None:
            self.connecting.cancel()
        else:
            self.link.forget(self)


class _Connection(Protocol):
    """One connection to the master: sends a request, reads its answer (see the module doc)."""

    def __init__(self, link: _Link) -> None:
        self._link = link
        self._post: _Post | None = None
        #: An answer other than 200 handed over before its body ended.
        self._streaming: MasterAnswer | None = None
        self._state = _IDLE
        self._buffer = bytearray()
        self._received_any = False
        self._remaining = 0
        self._chunks: _ChunkedTransferDecoder | None = None
        self._parts: list[bytes] = []
        self._size = 0
        self._limit = 0
        self._answer: MasterAnswer | None = None
        self._reusable = False
        self._deadline: IDelayedCall | None = None
        self.idle_since = 0.0
        self.lost: Deferred[None] | None = None
        #: Whether this side ended it (an answer that closes it, an idle one): no sign of a restart.
        self.ended_here = False

    # --- sending ---

    def send(self, post: _Post) -> None:
        """Send ``post``'s request; its answer fires ``post.answer``."""
        post.connection = self
        self._post = post
        self._state = _HEAD
        self._received_any = False
        send_now(self.transport, post.request)

    def drop(self, reason: Exception, answered: bool = False) -> None:
        """Abort the connection; a post waiting here fails with ``reason`` (unless ``answered``:
        it is being cancelled, and Deferred's cancel fails it)."""
        post, self._post = self._post, None
        self._state = _IDLE
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()
        if post is not None and not answered and not post.answer.called:
            post.answer.errback(ResponseFailed([Failure(reason)]))
        self._end_streaming(Failure(ResponseFailed([Failure(reason)])))

    def end(self) -> None:
        """End a connection no answer is expected on (an answer is complete, or it is idle).

        Aborted, not closed gracefully: a graceful close waits on the master (a TLS close waits for
        its close_notify, a TCP close for it to read what is unsent), and until the connection is lost
        it holds one of the link's MAX_CONNECTIONS (a master that never completes closes would leave
        every later post waiting) and, at stop, the service's shutdown."""
        self.ended_here = True
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    # --- receiving ---

    def dataReceived(self, data: bytes) -> None:
        try:
            self._receive(data)
        except BadAnswer as refused:
            self.drop(refused)
        except Exception as exc:  # the chunked decoder's errors are private to Twisted
            self.drop(BadAnswer(f"{type(exc).__name__}: {exc}"[:200]))

    def _receive(self, data: bytes) -> None:
        while True:
            state = self._state
            if state == _HEAD:
                if not data:
                    return
                self._received_any = True
                data = self._head(data)
            elif state == _LENGTH:
                if len(data) < self._remaining:
                    if data:
                        self._body(data)
                        self._remaining -= len(data)
                    return
                body, extra = data[: self._remaining], data[self._remaining :]
                self._remaining = 0
                if body:
                    self._body(body)
                self._complete(extra)
                return
            elif state == _CHUNKED:
                if data:
                    assert self._chunks is not None
                    self._chunks.dataReceived(data)
                return
            elif state == _UNTIL_CLOSE:
                if data:
                    self._body(data)
                return
            else:
                if data:
                    raise BadAnswer("the master sent bytes nobody asked for")
                return

    def _head(self, data: bytes) -> bytes:
        """Read the answer's head from what came before (``self._buffer``) and ``data``; return the
        bytes after it. A head that comes in pieces is gathered in a bytearray and each byte searched
        once (copying and searching it whole for each piece cost a trickling master quadratic time)."""
        buffer: bytes | bytearray
        if self._buffer:
            start = max(len(self._buffer) - 3, 0)  # the terminator may straddle the pieces
            self._buffer += data
            buffer = self._buffer
            end = buffer.find(b"\r\n\r\n", start)
        else:
            buffer = data
            end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                raise BadAnswer(f"the answer's head is longer than {MAX_HEAD_BYTES} bytes")
            if buffer is data:
                self._buffer = bytearray(data)
            return b""
        if end > MAX_HEAD_BYTES:
            raise BadAnswer(f"the answer's head is longer than {MAX_HEAD_BYTES} bytes")
        self._buffer = bytearray()
        head, rest = bytes(buffer[:end]), bytes(buffer[end + 4 :])
        self._start_answer(head)
        return rest

    def _start_answer(self, head: bytes) -> None:
        code, phrase, keep_alive, length, chunked, header_block = _read_head(head)
        if chunked and length is not None:
            raise BadAnswer("both Content-Length and Transfer-Encoding")
        if 100 <= code < 200:
            if code == 101:
                raise BadAnswer("the master switched protocols")
            return  # an interim answer: the real one follows
        if code in (204, 304):
            length, chunked = 0, False
        self._parts = []
        self._size = 0
        self._limit = self._link.max_answer_bytes if code == 200 else MAX_REFUSED_BODY_BYTES
        if code == 200 and length is not None and length > self._limit:
            raise BadAnswer(f"the answer is longer than {self._limit} bytes ({length})")
        answer = MasterAnswer(code, phrase, header_block, length if length is not None else UNKNOWN_LENGTH)
        self._answer = answer
        if chunked:
            self._state = _CHUNKED
            self._chunks = _ChunkedTransferDecoder(self._body, self._complete)
        elif length is not None:
            self._state = _LENGTH
            self._remaining = length
        else:
            self._state = _UNTIL_CLOSE
            keep_alive = False
        self._reusable = keep_alive
        if code != 200:
            self._hand_over_streaming(answer)
            if length is not None and length > self._limit:
                raise BadAnswer(f"the refused answer's body is longer than {self._limit} bytes")

    def _hand_over_streaming(self, answer: MasterAnswer) -> None:
        """Hand an answer other than 200 to its caller now; its body follows (bounded in time)."""
        post, self._post = self._post, None
        answer._connection = self
        self._streaming = answer
        self._deadline = self._link.clock.callLater(REFUSED_BODY_SECONDS, self._too_slow)
        if post is not None and not post.answer.called:
            post.answer.callback(answer)

    def _too_slow(self) -> None:
        self._deadline = None
        self.drop(BadAnswer(f"the answer's body took longer than {REFUSED_BODY_SECONDS} s"))

    def _body(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            raise BadAnswer(f"the answer is longer than {self._limit} bytes")
        streaming = self._streaming
        if streaming is not None:
            streaming._received(data)
        else:
            self._parts.append(data)

    def _complete(self, extra: bytes) -> None:
        """The answer is whole: hand it over (or end its streamed body); reuse or close the connection."""
        if self._state not in (_LENGTH, _CHUNKED):
            return  # dropped while the answer's last bytes were being delivered (by its body's reader)
        answer, self._answer = self._answer, None
        post, self._post = self._post, None
        self._state = _IDLE
        self._chunks = None
        parts, self._parts = self._parts, []
        streaming = self._streaming is not None
        self._end_streaming(_RESPONSE_DONE)
        if extra or not self._reusable:
            self.end()
        else:
            self._link.release(self)
        if not streaming and answer is not None:
            answer._whole(b"".join(parts), _RESPONSE_DONE)
            if post is not None and not post.answer.called:
                post.answer.callback(answer)

    def _end_streaming(self, reason: Failure) -> None:
        streaming, self._streaming = self._streaming, None
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()
        if streaming is not None:
            streaming._end(reason)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._link.lost(self)
        post, self._post = self._post, None
        state, self._state = self._state, _IDLE
        if state == _UNTIL_CLOSE and reason.check(ConnectionDone):
            if self._streaming is not None:
                self._end_streaming(Failure(PotentialDataLoss()))
            elif self._answer is not None and post is not None and not post.answer.called:
                self._answer._whole(b"".join(self._parts), Failure(PotentialDataLoss()))
                post.answer.callback(self._answer)
        else:
            self._end_streaming(Failure(ResponseFailed([reason])))
            if post is not None and not post.answer.called:
                if state == _HEAD and not self._received_any:
                    post.answer.errback(ResponseNeverReceived([reason]))
                else:
                    post.answer.errback(ResponseFailed([reason]))
        self._answer = None
        self._parts = []
        lost, self.lost = self.lost, None
        if lost is not None:
            lost.callback(None)


class _ConnectionFactory(Factory):
    """Makes the link's connections; quiet (no "Starting factory" line per connection)."""

    noisy = False

    def __init__(self, link: _Link) -> None:
        self._link = link

    def buildProtocol(self, addr: Any) -> _Connection:
        return _Connection(self._link)


class _Link:
    """The connections to one master URL (see the module doc)."""

    def __init__(
        self,
        clock: IReactorTime,
        endpoint: IStreamClientEndpoint,
        host: bytes,
        path: bytes,
        max_answer_bytes: int,
    ) -> None:
        self.clock = clock
        self.max_answer_bytes = max_answer_bytes
        self._endpoint = endpoint
        self._factory = _ConnectionFactory(self)
        self._request_line = b"POST " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n"
        self._idle: list[_Connection] = []
        self._open = 0  # connections made or being made, not yet lost
        self._waiting: deque[_Post] = deque()
        self._closing = False
        #: Counts connections the master closed, that broke, or that could not be made, and idle ones
        #: ended after IDLE_SECONDS (see :meth:`generation_now`; not a connection an answer's
        #: ``Connection: close`` ended): when it moves, the next connection may reach another
        #: process at the same address (a master restarted, perhaps on another store).
        self.generation = 0

    def post(self, data: bytes, headers: Headers) -> Deferred[MasterAnswer]:
        lines = [self._request_line]
        for name, values in headers.getAllRawHeaders():
            if name.lower() in (b"host", b"content-length"):
                continue
            if _HEADER_NAME.fullmatch(name) is None:
                return fail(ValueError(f"a header this client will not send: {name[:40]!r}"))
            for value in values:
                if _BAD_VALUE.search(value) is not None:
                    return fail(ValueError(f"a header this client will not send: {name[:40]!r}"))
                lines.append(name + b": " + value + b"\r\n")
        lines.append(b"Content-Length: %d\r\n\r\n" % len(data))
        lines.append(data)
        post = _Post(self, b"".join(lines))
        connection = self._take_idle()
        if connection is not None:
            connection.send(post)
        elif self._open < MAX_CONNECTIONS:
            self._connect(post)
        elif len(self._waiting) < MAX_WAITING:
            self._waiting.append(post)
        else:
            return fail(
                ResponseNeverReceived(
                    [Failure(LinkBusy(f"{MAX_WAITING} calls already wait for a connection"))]
                )
            )
        return post.answer

    def _take_idle(self) -> _Connection | None:
        now = self.clock.seconds()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.idle_since < IDLE_SECONDS:
                return connection
            self._end_expired(connection)
        return None

    def _end_expired(self, connection: _Connection) -> None:
        """End an idle connection too old to use. The process at the address may have changed
        meanwhile without a close reaching us (a host that crashed and came back): the connection
        made instead counts as a new generation."""
        self.generation += 1
        connection.end()

    def generation_now(self) -> int:
        """:attr:`generation`, once the idle connections too old to use are ended: a caller that
        asks before a post (a check made first if it moved) learns that the post would go on a new
        connection before it is made."""
        if self._idle:
            now = self.clock.seconds()
            # Each looked at (a wall clock set back breaks their order by age); usually none is old.
            for connection in self._idle:
                if now - connection.idle_since >= IDLE_SECONDS:
                    for old in [c for c in self._idle if now - c.idle_since >= IDLE_SECONDS]:
                        self._idle.remove(old)
                        self._end_expired(old)
                    break
        return self.generation

    def _connect(self, post: _Post) -> None:
        self._open += 1
        connecting: Deferred[Any] = self._endpoint.connect(self._factory)
        post.connecting = connecting  # (both callbacks clear it, even when they run at once)
        connecting.addCallbacks(
            self._connected, self._not_connected, callbackArgs=(post,), errbackArgs=(post,)
        )

    def _connected(self, connection: _Connection, post: _Post) -> None:
        post.connecting = None
        if post.answer.called:  # cancelled just as the connection was made
            self.release(connection)
            return
        connection.send(post)

    def _not_connected(self, failure: Failure, post: _Post) -> None:
        self._open -= 1
        self.generation += 1
        post.connecting = None
        if not post.answer.called:
            post.answer.errback(failure)
        self._serve_waiting()

    def release(self, connection: _Connection) -> None:
        """``connection`` finished an answer and may carry another."""
        if self._waiting:
            connection.send(self._waiting.popleft())
        elif self._closing:
            connection.end()
        else:
            connection.idle_since = self.clock.seconds()
            self._idle.append(connection)

    def lost(self, connection: _Connection) -> None:
        """``connection`` ended (after it was made)."""
        self._open -= 1
        if not connection.ended_here:  # the master closed it, or it broke: a restart, perhaps
            self.generation += 1
        if connection in self._idle:
            self._idle.remove(connection)
        self._serve_waiting()

    def _serve_waiting(self) -> None:
        while self._waiting and self._open < MAX_CONNECTIONS:
            self._connect(self._waiting.popleft())

    def forget(self, post: _Post) -> None:
        """A waiting post was cancelled."""
        if post in self._waiting:
            self._waiting.remove(post)

    def close(self) -> Deferred[Any]:
        """Close the idle connections now and the others once their answers are in."""
        self._closing = True
        closed = []
        idle, self._idle = self._idle, []
        for connection in idle:
            if connection.transport is not None:
                connection.lost = Deferred()
                closed.append(connection.lost)
                connection.end()
        return gatherResults(closed)


class MasterConnections(Service):
    """The slave's HTTP client for its masters (``post`` as :class:`goto_tw.remote.HTTPPoster`);
    stopping the service closes the connections (see the module doc)."""

    def __init__(
        self,
        reactor: Any,
        connect_timeout: float,
        max_answer_bytes: int,
        endpoints: Callable[[URI], IStreamClientEndpoint] | None = None,
    ) -> None:
        self._clock: IReactorTime = reactor
        self._max_answer_bytes = max_answer_bytes
        self._endpoint_for = endpoints or MasterEndpointFactory(reactor, connect_timeout).endpointForURI
        self._links: dict[str, _Link] = {}

    def post(self, url: str, /, *, data: bytes, headers: Headers) -> Deferred[MasterAnswer]:
        """POST ``data`` to ``url``; fire with the :class:`MasterAnswer`."""
        link = self._links.get(url)
        if link is None:
            if len(self._links) >= MAX_MASTERS:
                return fail(ValueError(f"this client serves at most {MAX_MASTERS} master URLs"))
            uri = URI.fromBytes(url.encode("ascii"))
            link = _Link(
                self._clock, self._endpoint_for(uri), _host_value(uri), uri.originForm, self._max_answer_bytes
            )
            self._links[url] = link
        return link.post(data, headers)

    def generation(self, url: str) -> int:
        """How many connections to ``url`` the master closed, broke or could not be made so far,
        and idle ones ended for their age (see ``_Link.generation``; those too old to use are
        ended now): a caller that checked the master at one count checks it again once it moves
        (see :class:`~goto_tw.failover.FailoverStore`)."""
        link = self._links.get(url)
        return 0 if link is None else link.generation_now()

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        if not self._links:
            return succeed(None)
        return gatherResults([link.close() for link in self._links.values()])


def _host_value(uri: URI) -> bytes:
    """The ``Host`` header for ``uri``, as Twisted's Agent writes it."""
    host: bytes = uri.host
    if b":" in host:
        host = b"[" + host + b"]"
    if (uri.scheme, uri.port) in ((b"http", 80), (b"https", 443)):
        return host
    return b"%b:%d" % (host, uri.port)


def _read_head(head: bytes) -> tuple[int, bytes, bool, int | None, bool, bytes]:
    """Read an answer's head (without its final blank line), or raise :class:`BadAnswer`.

    One regular expression checks the whole head and one finds the three headers that frame the
    answer, instead of a split, a partition, two regular expressions and a lower-casing per header
    line (measured, CPython 3.11, timeit of a goto master's 4-header head: 4.6 -> 2.5 us; ``_start_answer``
    was the costliest function of the slave's RPC client under cProfile). A head it does not accept
    is read by :func:`_read_head_by_lines`, which says what is wrong: the two accept the same heads
    and read them alike (property-tested in ``tests/test_masterhttp_head.py``).
    """
    match = _HEAD_SHAPE.fullmatch(head)
    if match is None:
        return _read_head_by_lines(head)
    block = match.group(3)
    length: int | None = None
    chunked = False
    keep_alive = match.group(1) == b"1"
    if block:
        for name, value in _FRAMING.findall(block.lower()):
            value = value.strip(b" \t")
            if name == b"content-length":
                if _DIGITS.fullmatch(value) is None or (length is not None and int(value) != length):
                    return _read_head_by_lines(head)  # refused, in the words of the line it is on
                length = int(value)
            elif name == b"transfer-encoding":
                if value != b"chunked" or chunked:
                    return _read_head_by_lines(head)
                chunked = True
            elif b"close" in value.replace(b" ", b"").split(b","):
                keep_alive = False
    return int(match.group(2)), head[13 : match.start(3)], keep_alive, length, chunked, block


def _read_head_by_lines(head: bytes) -> tuple[int, bytes, bool, int | None, bool, bytes]:
    """:func:`_read_head`, a line at a time: the reference it is tested against, and what says what
    is wrong with a head the fast reading does not accept."""
    lines = head.split(b"\r\n")
    status = _STATUS_LINE.fullmatch(lines[0])
    if status is None:
        raise BadAnswer(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    code = int(status.group(2))
    phrase = lines[0][13:]
    keep_alive = status.group(1) == b"1"
    length: int | None = None
    chunked = False
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or _HEADER_NAME.fullmatch(name) is None:
            raise BadAnswer(f"a malformed header line: {line[:80]!r}")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value) is not None:
            raise BadAnswer(f"a header value with control characters: {name[:40]!r}")
        lowered = name.lower()
        if lowered == b"content-length":
            if _DIGITS.fullmatch(value) is None or (length is not None and int(value) != length):
                raise BadAnswer(f"a bad Content-Length: {value[:40]!r}")
            length = int(value)
        elif lowered == b"transfer-encoding":
            if value.lower() != b"chunked" or chunked:
                raise BadAnswer(f"a transfer coding this client does not read: {value[:40]!r}")
            chunked = True
        elif lowered == b"connection" and b"close" in value.lower().replace(b" ", b"").split(b","):
            keep_alive = False
    return code, phrase, keep_alive, length, chunked, head[len(lines[0]) :]
