"""A narrow fast path for the requests a shortener lives on: redirects, adds, and a master's RPC.

twisted.web spends most of such a request's time on machinery it does not need (a Request object,
header objects, form parsing through the ``email`` package, resource traversal).
:class:`FastRedirectChannel` is an ``HTTPChannel`` that answers exactly these requests itself, with
the very bytes the general path would send, and hands everything else to twisted.web unchanged:

- ``GET``/``HEAD /KEY`` of any key, and ``GET /add?url=...`` or ``POST /add`` with a small
  ``application/x-www-form-urlencoded`` body naming a ``url``; all ``HTTP/1.1``, with well-formed
  header lines and no ``Connection`` header other than ``keep-alive``. Anything else, including
  HTTP/1.0, ``Connection: close``, chunked bodies, goes to twisted.web;
- on a master with ``--rpc``, ``POST /RPC2`` of ``text/xml`` with a body of at most
  :data:`MAX_FAST_RPC_BYTES` (a slave's batch, a standard client's call), answered by the ``/RPC2``
  resource's own logic (the responder's ``rpc``); a call without the right secret, with another
  Content-Type or a larger body is twisted.web's (lent, below). Before, every RPC call handed its
  connection to twisted.web for good: a slave's keep-alive connection paid a full twisted.web
  request per batch;
- answers go out in request order: an add answered later (once durable), or a key the store does
  not hold locally (a slave's cache miss, answered once the master has; an unknown or disabled key
  on a master), holds back the answers pipelined behind it, and the connection stays on the fast
  path (before, one miss handed the rest of a keep-alive connection to twisted.web, which cost a
  slave three quarters of its throughput with 1% misses);
- the store is asked (an add, a miss, a look-up of a key held locally) only once every answer
  before it is written, as twisted.web asks it one request at a time: what an earlier request or
  the meantime changed (a key just added, an outage it revealed, a link disabled while a miss
  waited for the master) is then known, so the answer is the one twisted.web would give, and a
  client that leaves first has nothing clicked. The requests behind an answer owed later wait
  unparsed (within :data:`BUDGET`);
- a plain ``GET``/``HEAD`` the fast path does not answer (an info page, a QR code, the form,
  ``/_goto/health``), or a ``POST`` with one ``Content-Length`` (an RPC call it leaves, the API,
  a browser's add) is lent to twisted.web whole, once the answers before it are written, with
  no byte after it (a body not yet here is passed on as it arrives, never held here); once
  twisted.web has answered it the connection is back on the fast path (a request boundary of a
  persistent connection: twisted.web's parser is as on a new connection);
- any other request for twisted.web (chunked, a ``GET`` with a body, a body over the site's limit,
  HTTP/1.0, ``Connection: close``, a malformed head) hands it the whole rest of the connection
  (after the fast answers still owed have been written), so no parser state is ever shared or
  guessed;
- a request split across reads is gathered (up to the header size limit) before deciding;
- each answer is logged and counted exactly as the general path does it, once it is written (an
  answer owed to a client that has gone is neither); it leaves at once when nothing waits in the
  connection's send buffer (:func:`~goto_tw.sendnow.send_now`: no writer registration per answer),
  or, with the site's outbox (``twistd goto``'s), with the connection's other answers of the same
  reactor turn once the turn's work is done (:mod:`goto_tw.outbox`), and always before anything
  twisted.web writes on the connection or a close;
- bounds: at most one answer owed (a request behind an owed answer stays unparsed until that
  answer is written: in order, and in the state twisted.web would answer it in), and one byte
  budget (:data:`BUDGET`) for what the connection holds (request bytes not yet parsed, bytes held
  for twisted.web, answers waiting for an earlier one): over it, reading pauses
  (``transport.pauseProducing``) until it drains, as twisted.web does with the requests it holds;
  answers held for the end of the turn have a bound of their own (sent at once past
  :data:`MAX_UNSENT_BYTES`), outside the budget's pause (a pause they caused would wait for a
  resume that their sending never asks for); and no request is answered while the transport's send
  buffer is full (a client that pipelines requests but never reads its answers gets no more
  written than that buffer's limit plus one read's worth, and :data:`MAX_UNSENT_BYTES` with an
  outbox); the transport reads 16 KiB at a time, which is also that buffer's limit
  (:mod:`goto_tw.readsize`);
- the request deadline restarts with each request; the idle timeout closes no connection while an
  answer is owed (twisted.web disarms it while it handles a request), and each answer owed later must be
  ready within :attr:`~FastRedirectChannel.answer_deadline` of its request, or the connection is
  closed (a store that never answers cannot hold a connection for ever; aborted ``abortTimeout``
  later if a client that does not read keeps it from closing); a client that goes away
  cancels what it is owed (nothing more is done for it: no click, no log line); a half-closed client
  (``shutdown(SHUT_WR)``) gets every answer owed before the connection closes.

The channel knows nothing of stores or resources: it asks an :class:`IFastResponder` (the web
layer's) for answers and hands each written answer to a recorder (the site's accounting). It uses
``HTTPChannel.dataReceived``, ``requestDone``, ``resetTimeout``/``setTimeout``, the transport's
``IPushProducer``, ``IHalfCloseableProtocol``, and one documented but underscored ivar,
``HTTPChannel._handlingRequest`` (whether twisted.web is answering a request), for the half-close.
"""

from __future__ import annotations

import re
from collections import deque
from functools import partial
from typing import Any, Callable, Optional, Union

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from goto_tw.keys import KEY_PATTERN, is_reserved
from goto_tw.limits import MAX_BODY_BYTES, DeadlineChannel
from goto_tw.negotiation import head_prefers_html
from goto_tw.outbox import IHeldWriter, Outbox
from goto_tw.readsize import read_at_most
from goto_tw.sendnow import send_now

log = Logger()

#: One fast answer: its status, its size for the access log (``"-"`` for none), its bytes.
FastAnswer = tuple[int, Union[int, str], bytes]
#: Records one written answer: (client, method, path, route, status, size).
Recorder = Callable[[str, str, bytes, str, int, Union[int, str]], None]


class IFastResponder(Interface):
    """What answers the requests the fast path takes: the very bytes twisted.web would send."""

    def redirect(method: str, key: str, head: bytes = b"") -> Optional[FastAnswer]:
        """The answer to ``GET``/``HEAD /KEY`` if the store holds ``key`` locally, else ``None``
        (then :meth:`redirect_later`).

        ``head`` is the whole request head (for the click counter's bot check)."""

    def redirect_later(method: str, key: str, head: bytes = b"") -> Optional[Deferred[FastAnswer]]:
        """A Deferred of the answer to ``GET``/``HEAD /KEY`` of a key not held locally (whatever
        the store says: the redirect, 404, 410, 503...), or ``None`` to leave it to twisted.web.

        Asked only once every earlier request on the connection is answered, so the store is
        asked in the state twisted.web would ask it in (after an add pipelined before it). A
        Deferred the channel cancels (its client has gone, or the answer deadline passed) must do
        nothing more: no click, no log line."""

    def add(
        method: str, target: bytes, body: bytes, admit: Optional[Callable[[], Optional[FastAnswer]]] = None
    ) -> Union[FastAnswer, Deferred[FastAnswer], None]:
        """The answer (or a Deferred of it) to an add, or ``None`` to leave it to twisted.web.

        ``admit`` (the channel's ``add_gate`` for this request) is called once the responder has
        decided to answer the add itself, and only then: ``None`` to go ahead, or the answer to send
        instead. A request left to twisted.web is checked there, so each add is checked once."""

    def rpc(
        body: bytes, authorization: Optional[bytes] = None, unchecked_adds: bool = False
    ) -> Union[FastAnswer, Deferred[FastAnswer], None]:
        """The answer (or a Deferred of it) to ``POST /RPC2`` with ``body``, sent with the
        ``Authorization`` header value ``authorization`` (``None`` without one) and, when
        ``unchecked_adds``, :data:`UNCHECKED_ADDS_HEADER`; or ``None`` to leave it to twisted.web.
        Asked only once every earlier request on the connection is answered; a Deferred the channel
        cancels does nothing more (no log line)."""

    def internal_error(method: str = "GET") -> FastAnswer:
        """The 500 answered (to a request with ``method``) in place of an answer whose Deferred
        failed with a bug."""


#: Well-formed header lines (a token, a colon, visible ASCII), as many as there are; then the blank line.
_HEADER_LINES = (
    rb"((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[ \t]*[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?[ \t]*\r\n"
    rb"|[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[ \t]*\r\n)*)\r\n"
)
#: A redirect head: group 1 the method, 2 the key, 3 the header lines.
_SIMPLE_GET = re.compile(
    rb"(GET|HEAD) /(" + KEY_PATTERN.encode("ascii") + rb") HTTP/1\.1\r\n" + _HEADER_LINES
)
#: An add head: group 1 the method, 2 the target, 3 the header lines.
_SIMPLE_ADD = re.compile(rb"(GET|POST) (/add(?:\?[\x21-\x7e]*)?) HTTP/1\.1\r\n" + _HEADER_LINES)

#: An XML-RPC call's head: group 1 the method, 2 the target, 3 the header lines.
_SIMPLE_RPC = re.compile(rb"(POST) (/RPC2) HTTP/1\.1\r\n" + _HEADER_LINES)

#: A head twisted.web may answer alone (a ``GET``/``HEAD`` without a body, a ``POST`` with one of a
#: known length): group 1 the method, 2 the target, 3 the header lines.
_LENDABLE = re.compile(rb"(GET|HEAD|POST) (/[\x21-\x7e]*) HTTP/1\.1\r\n" + _HEADER_LINES)

#: Headers that frame or upgrade a request: a request with one (but a lone ``Connection:
#: keep-alive``, which changes nothing on HTTP/1.1) is not one the fast path can answer exactly.
_FRAMING_NAMES = rb"transfer-encoding|expect|upgrade|connection|te|trailer"
#: The same names, for a loop that has each header line's name in lower case.
_FRAMING_NAME_SET = frozenset(_FRAMING_NAMES.split(b"|"))
_FRAMING = re.compile(rb"(?im)^(" + _FRAMING_NAMES + rb")[ \t]*:")
_KEEP_ALIVE = re.compile(rb"(?im)^connection:[ \t]*keep-alive[ \t]*\r$")
_CONTENT_LENGTH_NAME = re.compile(rb"(?im)^content-length[ \t]*:")
#: Any header name :data:`_FRAMING` or :data:`_CONTENT_LENGTH_NAME` finds: a redirect head without
#: one passes both checks at once.
_GET_SUSPECT = re.compile(rb"(?im)^(" + _FRAMING_NAMES + rb"|content-length)[ \t]*:")
#: The methods of a redirect head, as text.
_METHOD_TEXT = {b"GET": "GET", b"HEAD": "HEAD"}
#: A Content-Length value: at most 7 digits, more than any body the site takes (1 MiB); each use
#: caps the number itself.
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*([0-9]{1,7})[ \t]*\r$")
#: The Content-Type XML-RPC clients send (``xmlrpc.client``, our slaves: ``text/xml``); twisted.web
#: parses no body of it (no form), so the fast path answers it as the general path does.
_XML_CONTENT_TYPE = re.compile(rb"text/xml(?:[ \t]*;[ \t]*charset=utf-8)?")

#: Largest request head gathered before giving up and handing it to twisted.web (which has its own limit).
MAX_HEAD_BYTES = 16 * 1024
#: Heads larger than this, or with more header lines, go to twisted.web, whose limits
#: (``totalHeadersSize``, ``maxHeaders``) then apply exactly as they would to any request.
MAX_FAST_HEAD_BYTES = 4096
MAX_FAST_HEADERS = 64
#: Largest form body the fast path reads itself; a larger one goes to twisted.web.
MAX_FAST_BODY_BYTES = 8192
#: Largest XML-RPC body the fast path gathers and answers itself; a larger one is lent to twisted.web
#: (streamed to it, not held here), the connection back on the fast path after its answer. A slave
#: sends batches of up to 512 KiB (``remote.MAX_BATCH_BYTES``) but, under load, of a few KB (about
#: 300 bytes a call, 9 to 17 calls a batch): 32 KiB holds about a hundred calls, where the general
#: path's cost per batch (about 0.4 ms) is small beside the calls'. With :data:`MAX_FAST_HEAD_BYTES`
#: it stays within :data:`BUDGET`, so a call being gathered never pauses reading by itself.
MAX_FAST_RPC_BYTES = 32 * 1024
#: The path of XML-RPC calls (a master's ``--rpc``).
RPC_PATH = b"/RPC2"
#: The header (and its value, in any case) a slave sends with every call when it checks no API keys
#: itself (started without ``--private``): a private master refuses its adds, rather than store what
#: anyone added through it. A slave that checks keys, and any other XML-RPC client, sends none.
UNCHECKED_ADDS_HEADER = b"x-goto-adds"
UNCHECKED_ADDS = b"unchecked"


def says_unchecked(value: bytes) -> bool:
    """Whether a :data:`UNCHECKED_ADDS_HEADER` value is :data:`UNCHECKED_ADDS` (white space
    around it stripped, as twisted.web strips a header value; any case): one rule for both paths."""
    return value.strip(b" \t").lower() == UNCHECKED_ADDS


#: Bytes one connection may hold (unparsed requests, bytes held for twisted.web, answers waiting
#: behind an earlier one) before it stops reading. At least the largest request gathered (a head
#: of :data:`MAX_HEAD_BYTES` and a form body, or a fast head and an RPC body), so a request being
#: gathered never pauses reading by itself.
BUDGET = 2 * (MAX_HEAD_BYTES + MAX_FAST_BODY_BYTES)
assert BUDGET >= MAX_FAST_HEAD_BYTES + MAX_FAST_RPC_BYTES
#: Bytes of answers one connection holds until the end of the reactor turn (with an outbox, see
#: :mod:`goto_tw.outbox`): past it they are sent at once, so a client pipelining many requests
#: meets the transport's backpressure as it would without the outbox. Dozens of answers.
MAX_UNSENT_BYTES = 16 * 1024


#: The fields of an owed answer's slot.
_ANSWER, _METHOD, _PATH, _ROUTE, _AWAITED, _DUE, _CLIENT = range(7)


def _match_head(pattern: re.Pattern[bytes], head: bytes) -> re.Match[bytes] | None:
    """Match one whole request head against ``pattern``, within the fast path's size limits and
    without framing headers; ``None`` otherwise."""
    match = _match_within_limits(pattern, head)
    if match is None or _frames(match.group(3)):
        return None
    return match


def _match_within_limits(pattern: re.Pattern[bytes], head: bytes) -> re.Match[bytes] | None:
    """Match one whole request head against ``pattern`` (group 3: its header lines), within the
    fast path's size and header-count limits; ``None`` otherwise."""
    if len(head) > MAX_FAST_HEAD_BYTES:
        return None
    match = pattern.fullmatch(head)
    if match is None or match.group(3).count(b"\n") > MAX_FAST_HEADERS:
        return None
    return match


def _only_keep_alive(suspects: list[bytes], headers: bytes) -> bool:
    """Tell whether the one header line :data:`_GET_SUSPECT` found (``suspects``: the names it
    found) is a ``Connection: keep-alive`` (what browsers send): then both checks pass. (A
    keep-alive line is one of the lines it finds: if there is one, it is that one.)"""
    return len(suspects) == 1 and _KEEP_ALIVE.search(headers) is not None


def _frames(headers: bytes) -> bool:
    """Tell whether ``headers`` has a framing header (:data:`_FRAMING`), a lone ``Connection:
    keep-alive`` aside."""
    return (
        _FRAMING.search(headers) is not None
        and _FRAMING.search(_KEEP_ALIVE.sub(b"", headers, count=1)) is not None
    )


def parse_simple_get(head: bytes) -> tuple[str, str] | None:
    """Return ``(method, key)`` if ``head`` (one request head, ending with the blank line) is a
    redirect the fast path may answer, else ``None``.

    The checks of :func:`_match_head`, and no ``Content-Length``; a head with none of the header
    names either check looks at (nearly every one), or only a ``Connection: keep-alive``, is passed
    by one or two searches, not three or four (CPython 3.11, timeit: 1.9 -> 1.6 us a head; with a
    keep-alive line 2.8 -> 2.3 us)."""
    match = _match_within_limits(_SIMPLE_GET, head)
    if match is None:
        return None
    method, key, headers = match.groups()
    suspects = _GET_SUSPECT.findall(headers)
    if (
        suspects
        and not _only_keep_alive(suspects, headers)
        and (_CONTENT_LENGTH_NAME.search(headers) or _frames(headers))
    ):
        return None
    text = key.decode("ascii")
    if is_reserved(text):
        return None
    return _METHOD_TEXT[method], text


def lend_length(head: bytes) -> int | None:
    """The length of the body of ``head`` if it is one request twisted.web can answer alone, after
    which the connection comes back to the fast path at the next request boundary; else ``None``.

    A plain ``HTTP/1.1`` ``GET``/``HEAD`` without a body (0), or a ``POST`` with exactly one
    ``Content-Length`` of at most ``limits.MAX_BODY_BYTES`` (twisted.web reads that many bytes and
    no more); none with a framing header or ``Connection: close``.
    """
    match = _match_head(_LENDABLE, head)
    if match is None:
        return None
    headers = match.group(3)
    if match.group(1) != b"POST":
        return None if _CONTENT_LENGTH_NAME.search(headers) else 0
    if len(_CONTENT_LENGTH_NAME.findall(headers)) != 1:
        return None
    length = _CONTENT_LENGTH.search(headers)
    if length is None or int(length.group(1)) > MAX_BODY_BYTES:
        return None
    return int(length.group(1))


def parse_simple_rpc(head: bytes) -> tuple[int, bytes | None, bool] | None:
    """Return ``(body_length, authorization, unchecked_adds)`` if ``head`` is an XML-RPC call the
    fast path may answer, else ``None``.

    ``POST /RPC2`` over ``HTTP/1.1`` with exactly one ``Content-Length`` of at most
    :data:`MAX_FAST_RPC_BYTES`, no ``Content-Type`` or one ``text/xml`` (with at most a
    ``charset=utf-8``), at most one ``Authorization`` (its value, or ``None``), and at most one
    :data:`UNCHECKED_ADDS_HEADER` (whether it says :data:`UNCHECKED_ADDS`). The header lines
    are read in one pass (measured, CPython 3.11: 6.0 -> 3.3 us a head, against five regular-expression
    searches).
    """
    if not head.startswith(b"POST /RPC2 "):
        return None
    match = _match_head(_SIMPLE_RPC, head)
    if match is None:
        return None
    length = content_type = authorization = adds = None
    for line in match.group(3).split(b"\r\n")[:-1]:  # well-formed lines: NAME:VALUE, no space before ':'
        name, _, value = line.partition(b":")
        name = name.lower()
        if name == b"content-length":
            if length is not None:
                return None
            length = value.strip(b" \t")
        elif name == b"content-type":
            if content_type is not None:
                return None
            content_type = value.strip(b" \t").lower()
        elif name == b"authorization":
            if authorization is not None:
                return None
            authorization = value.strip(b" \t")  # as twisted.web strips a header value
        elif name == UNCHECKED_ADDS_HEADER:
            if adds is not None:
                return None
            adds = value
    if length is None or not length.isdigit() or len(length) > 7 or int(length) > MAX_FAST_RPC_BYTES:
        return None
    if content_type is not None and _XML_CONTENT_TYPE.fullmatch(content_type) is None:
        return None
    return int(length), authorization, adds is not None and says_unchecked(adds)


def parse_simple_add(head: bytes) -> tuple[str, bytes, int] | None:
    """Return ``(method, target, body_length)`` if ``head`` is an add the fast path may answer.

    ``GET /add?...`` without a body, or ``POST /add`` (no query) with one exact ``Content-Length``
    of at most :data:`MAX_FAST_BODY_BYTES` and one ``Content-Type:
    application/x-www-form-urlencoded``; either within the fast path's head limits and without a
    framing header (:func:`_frames`: any but one ``Connection: keep-alive``). ``None`` for anything
    else.

    The header lines are read in one pass, as :func:`parse_simple_rpc` reads them, instead of four
    regular-expression scans over them (measured, CPython 3.11, the head wrk sends: 5.4 -> 3.9 us,
    2.1 of them in :func:`_match_head`); that pass also refuses the framing headers, which
    :func:`_frames` searched for with one or two more scans (timeit, the head wrk sends, on a slower
    day than the figures before: 5.3 -> 4.2 us). A property test holds it equal to those scans.
    """
    if not head.startswith((b"POST /add", b"GET /add")):
        return None  # what _SIMPLE_ADD refuses, without matching it (an RPC call's head comes here first)
    match = _match_within_limits(_SIMPLE_ADD, head)
    if match is None:
        return None
    method, target, headers = match.groups()
    lengths = types = 0
    length = content_type = b""
    kept_alive = False
    for line in headers.lower().split(b"\r\n")[:-1]:  # well-formed lines: NAME:VALUE, no space before ':'
        name, _, value = line.partition(b":")
        if name == b"content-length":
            lengths += 1
            length = value
        elif name == b"content-type":
            types += 1
            content_type = value
        elif name in _FRAMING_NAME_SET:  # what _frames refuses: any but one "Connection: keep-alive"
            if kept_alive or name != b"connection" or value.strip(b" \t") != b"keep-alive":
                return None
            kept_alive = True
    if method == b"GET":
        return ("GET", target, 0) if b"?" in target and not lengths else None
    if b"?" in target or lengths != 1 or types != 1:
        return None
    length = length.strip(b" \t")  # as twisted.web strips a header value
    if not length.isdigit() or len(length) > 7:
        return None
    if content_type.strip(b" \t") != b"application/x-www-form-urlencoded":
        return None
    body_length = int(length)
    return ("POST", target, body_length) if 0 < body_length <= MAX_FAST_BODY_BYTES else None


@implementer(IHalfCloseableProtocol, IHeldWriter)
class FastRedirectChannel(DeadlineChannel):
    """An ``HTTPChannel`` that answers redirects and adds itself (see the module doc).

    ``responder`` and ``record`` are set by the site that builds it; without a responder every
    request goes to twisted.web.
    """

    responder: IFastResponder | None = None
    record: Recorder
    #: Asked with (client, request head) before each add the fast path answers itself (the responder
    #: calls it once it has decided to answer; an add it leaves to twisted.web is checked there):
    #: ``None`` to go ahead, or the answer to send instead (a rate limit's 429). Set by the site.
    add_gate: Callable[[str, bytes], Optional[FastAnswer]] | None = None
    #: The client's address as the access log writes it, found once per connection.
    client: str = "-"
    #: Names the client from the transport's peer address (set by the site). Asked at the first
    #: bytes, not when the connection is made: a wrapping transport (a ``haproxy:`` endpoint) knows
    #: the real peer only once it has read the PROXY header, and twisted.web names that one.
    client_of: Callable[[object], str] | None = None
    #: Names a request's client from the connection's and the request head (``X-Forwarded-For``
    #: from a ``--trusted-proxy``), for its access-log line; ``None``: the connection's client.
    #: Set by the site only when it trusts proxies.
    forwarded_client: Callable[[str, bytes], str] | None = None
    _client_named = False
    _general = False
    #: Bytes received on the fast path and not parsed yet (an incomplete request, or requests
    #: waiting for owed answers).
    _unparsed = b""
    #: Tells the time for :attr:`answer_deadline`; set by the site (its reactor).
    clock: IReactorTime | None = None
    #: Fast answers still owed, in request order: each ``[answer or None, method, path, route,
    #: the Deferred still awaited or None, when it is due]`` (see ``_ANSWER``...).
    _owed: deque[list[Any]] | None = None
    #: How many owed answers are still awaited (their Deferred has not fired).
    _awaited = 0
    #: Checks the oldest awaited answer's deadline; left armed when none is awaited (it then does
    #: nothing), so a steady stream of answers owed later costs one timer per deadline, not one each.
    _answer_call: IDelayedCall | None = None
    #: Bytes of the owed answers that are ready but wait behind an earlier one.
    _owed_bytes = 0
    #: Bytes for twisted.web held back until the fast answers still owed are written.
    _held: list[bytes] | None = None
    _held_bytes = 0
    _budget_paused = False
    _send_blocked = False
    _parsing = False
    _read_closed = False
    _close_check_due = False
    _lost = False
    #: Whether twisted.web is answering one request lent to it (see :meth:`_lend`).
    _lent = False
    #: Bytes of a lent request's body still to come (passed on to twisted.web as they arrive).
    _lend_left = 0
    #: Where written answers wait for the end of the reactor turn (set by the site), or ``None``:
    #: each is sent at once. See :mod:`goto_tw.outbox`.
    outbox: Outbox | None = None
    #: Answers written this turn and not sent yet (with an outbox), and their bytes.
    _unsent: list[bytes] | None = None
    _unsent_bytes = 0

    def connectionMade(self) -> None:
        super().connectionMade()
        read_at_most(self.transport)  # see goto_tw.readsize: 16 KiB reads, not 64

    def buffered(self) -> int:
        """Bytes this connection holds now: what the budget counts, and the answers held for the
        end of the turn (bounded by :data:`MAX_UNSENT_BYTES` on their own)."""
        return len(self._unparsed) + self._held_bytes + self._owed_bytes + self._unsent_bytes

    def _send(self, data: bytes) -> None:
        """Send an answer: at the end of the reactor turn with an outbox (at once past
        :data:`MAX_UNSENT_BYTES`), else now."""
        outbox = self.outbox
        if outbox is None:
            send_now(self.transport, data)
            return
        unsent = self._unsent
        if unsent is None:
            self._unsent = [data]
            self._unsent_bytes = len(data)
            outbox.hold(self)
        else:
            unsent.append(data)
            self._unsent_bytes += len(data)
        if self._unsent_bytes >= MAX_UNSENT_BYTES:
            self.send_held()

    def send_held(self) -> None:
        """Send the answers written this turn, in one send (the outbox's call, or before anything
        else may write to or close the connection)."""
        unsent = self._unsent
        if unsent is None:
            return
        self._unsent = None
        self._unsent_bytes = 0
        send_now(self.transport, unsent[0] if len(unsent) == 1 else b"".join(unsent))

    def _web_receives(self, data: bytes) -> None:
        """Pass ``data`` to twisted.web's parser, after the answers held for this turn: what it
        answers (or refuses, writing to the transport itself) must follow them."""
        self.send_held()
        super().dataReceived(data)

    # twisted.web writes its answers, and closes, through these: after the answers held.

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        self.send_held()
        super().writeHeaders(version, code, reason, headers)

    def write(self, data: bytes) -> None:
        self.send_held()
        super().write(data)

    def writeSequence(self, iovec: list[bytes]) -> None:
        self.send_held()
        super().writeSequence(iovec)

    def loseConnection(self) -> None:
        self.send_held()
        super().loseConnection()

    def dataReceived(self, data: bytes) -> None:
        left = self._lend_left
        if left:  # the rest of a lent request's body: twisted.web's, and nothing after it
            self._lend_left = max(0, left - len(data))
            self._web_receives(data[:left])
            data = data[left:]
            if not data:
                return
        if self._general:
            if self._held is not None:
                self._held.append(data)
                self._held_bytes += len(data)
                self._check_budget()
            else:
                self._web_receives(data)
            return
        if self.responder is None:
            self._hand_over(data)
            return
        if not self._client_named:
            self._client_named = True
            if self.client_of is not None and self.transport is not None:
                self.client = self.client_of(self.transport.getPeer())
        self._unparsed = self._unparsed + data if self._unparsed else data
        self._parse()
        if not self._owed:
            # Idle from now. With answers owed it is restarted once they are written (_flush), and
            # until then it does not close the connection (timeoutConnection): an add or a miss
            # restarts it once, not twice.
            self.resetTimeout()

    def _parse(self) -> None:
        """Answer every complete request in ``_unparsed`` that the bounds allow."""
        buffer = self._unparsed
        responder = self.responder
        assert responder is not None  # dataReceived hands everything to twisted.web without one
        start = 0
        waiting_for_client = False
        self._parsing = True
        try:
            while True:
                owed = self._owed
                if owed and self._owed_bytes >= BUDGET:
                    break  # resumed once the owed answer is written
                if self._send_blocked:
                    break  # the client is not reading its answers: resumed when the transport drains
                if self._lent:
                    break  # twisted.web is answering a request: resumed by requestDone
                end = buffer.find(b"\r\n\r\n", start)
                if end < 0:
                    if len(buffer) - start > MAX_HEAD_BYTES + MAX_FAST_BODY_BYTES:
                        self._hand_over(buffer[start:])  # twisted.web takes (and limits) an oversized head
                        return
                    waiting_for_client = start < len(buffer)
                    break
                head_end = end + 4
                head = buffer[start:head_end]
                get = parse_simple_get(head)
                answer: Union[FastAnswer, Deferred[FastAnswer], None] = None
                body_length = 0
                if get is not None:
                    if owed:
                        # Looked up once the answers before it are written, in the state twisted.web
                        # would look it up in (one request at a time: an add before it is in, an
                        # outage it revealed, a link disabled meanwhile are known), and clicked only
                        # if its client is still there.
                        break  # resumed by _flush
                    method, key = get
                    answer = responder.redirect(method, key, head)
                    if answer is None:
                        answer = responder.redirect_later(method, key, head)
                    path = b"/" + key.encode("ascii")
                    route = "redirect"
                else:
                    add = parse_simple_add(head)
                    rpc = parse_simple_rpc(head) if add is None else None
                    route = ""  # none: twisted.web answers
                    if add is not None and not head_prefers_html(head):  # a browser gets twisted.web's page
                        method, path, body_length = add
                        route = "add"
                    elif rpc is not None:
                        body_length, authorization, unchecked_adds = rpc
                        method, path, route = "POST", RPC_PATH, "rpc"
                    if route:
                        if len(buffer) < head_end + body_length:
                            waiting_for_client = True
                            break
                        if owed:
                            break  # as a miss: the store is asked once the answers before it are written
                        body = buffer[head_end : head_end + body_length]
                        if route == "add":
                            gate = self.add_gate
                            answer = responder.add(
                                method, path, body, None if gate is None else partial(gate, self.client, head)
                            )
                        else:
                            answer = responder.rpc(body, authorization, unchecked_adds)
                if answer is None:
                    length = lend_length(head)
                    if length is None:
                        self._hand_over(buffer[start:])
                        return
                    if owed:
                        break  # twisted.web answers once the answers before it are written
                    # Lent with its body, or as much of it as is here (the rest is passed on as it
                    # comes, never held here); nothing after it.
                    lent_end = min(head_end + length, len(buffer))
                    self._lend(buffer[start:lent_end], head_end + length - lent_end)
                    start = lent_end
                    if self._lend_left:
                        waiting_for_client = True  # its body: the request deadline runs
                        break  # resumed by requestDone
                    if self._lent or self._lost:
                        break  # resumed by requestDone
                    continue
                head_end += body_length
                forwarded = self.forwarded_client
                self._answer(
                    answer,
                    method,
                    path,
                    route,
                    self.client if forwarded is None else forwarded(self.client, head),
                )
                start = head_end
                if self._deadline_call is not None:
                    self.stop_request_clock()  # that request is whole: the next one gets its own deadline
        finally:
            self._parsing = False
        self._unparsed = buffer[start:] if start else buffer
        if waiting_for_client:
            self.start_request_clock()
        elif self._deadline_call is not None:
            self.stop_request_clock()  # what is left waits for us, not for the client
        self._check_budget()

    def _answer(
        self,
        answer: Union[FastAnswer, Deferred[FastAnswer]],
        method: str,
        path: bytes,
        route: str,
        client: str,
    ) -> None:
        """Write ``answer`` now if nothing is owed before it, else once everything before it is;
        ``client`` is the request's, for its access-log line."""
        owed = self._owed
        if not owed and isinstance(answer, tuple):
            self._send(answer[2])
            self.record(client, method, path, route, answer[0], answer[1])
            return
        if owed is None:
            owed = self._owed = deque()
        slot: list[Any] = [None, method, path, route, None, 0.0, client]
        owed.append(slot)
        if isinstance(answer, tuple):
            slot[_ANSWER] = answer
            self._owed_bytes += len(answer[2])
            return
        slot[_AWAITED] = answer
        self._awaited += 1
        clock = self.clock
        if clock is not None:
            slot[_DUE] = clock.seconds() + self.answer_deadline
            if self._answer_call is None:
                self._answer_call = self.callLater(self.answer_deadline, self._check_answer_deadline)
        answer.addCallbacks(self._ready, self._failed, callbackArgs=(slot,), errbackArgs=(slot,))

    def _ready(self, answer: FastAnswer, slot: list[Any]) -> None:
        if slot[_AWAITED] is None:
            return  # given up (the client has gone, or the deadline passed): nothing more to do
        slot[_AWAITED] = None
        self._awaited -= 1
        slot[_ANSWER] = answer
        self._owed_bytes += len(answer[2])
        self._flush()

    def _failed(self, failure: Failure, slot: list[Any]) -> None:
        if slot[_AWAITED] is None:
            return  # cancelled by us: the client has gone, nothing is answered or logged
        log.failure("A fast answer failed; answering 500", failure)
        assert self.responder is not None  # only its answers are owed
        self._ready(self.responder.internal_error(slot[_METHOD]), slot)

    def _check_answer_deadline(self) -> None:
        """Close the connection if the oldest answer still awaited is overdue; else check again
        when it is due."""
        self._answer_call = None
        if self._lost or not self._awaited or self._owed is None or self.clock is None:
            return
        now = self.clock.seconds()
        for slot in self._owed:
            if slot[_AWAITED] is not None:  # the oldest one awaited: the first in request order
                if slot[_DUE] > now:
                    self._answer_call = self.callLater(slot[_DUE] - now, self._check_answer_deadline)
                    return
                break
        self._give_up()
        self.close_for_a_late_answer()

    def _give_up(self) -> None:
        """Nothing more is written or done on this connection: cancel every answer still awaited
        (a responder's Deferred that is cancelled does nothing more)."""
        self._lost = True
        if self._answer_call is not None:
            if self._answer_call.active():
                self._answer_call.cancel()
            self._answer_call = None
        if not self._awaited or self._owed is None:
            return
        self._awaited = 0
        for slot in self._owed:
            awaited = slot[_AWAITED]
            if awaited is not None:
                slot[_AWAITED] = None
                awaited.cancel()

    def _flush(self) -> None:
        """Write the owed answers that are ready, in order; then carry on with what waited for them."""
        owed = self._owed
        if self._lost or owed is None:
            return  # nothing is written, logged or counted for a client that has gone
        while owed and owed[0][_ANSWER] is not None:
            answer, method, path, route, _, _, client = owed.popleft()
            self._owed_bytes -= len(answer[2])
            self._send(answer[2])
            try:
                self.record(client, method, path, route, answer[0], answer[1])
            except Exception:
                log.failure("Failed to record an answer to {method} {path}", method=method, path=path)
        if not owed:
            self.resetTimeout()  # nothing owed: idle again, for a whole period from now
        if self._parsing:
            return  # an answer that was ready at once: the parsing loop carries on by itself
        if not owed and self._held is not None:
            held, self._held, self._held_bytes = b"".join(self._held), None, 0
            self._check_budget()
            self._web_receives(held)
        if not self._general and self._unparsed:
            self._parse()
        else:
            self._check_budget()
        self._close_if_done()

    def _lend(self, request: bytes, left: int = 0) -> None:
        """Let twisted.web answer one whole request (``request``: its head and body, but the last
        ``left`` bytes of the body, passed on as they arrive), nothing after it.

        At a request boundary of a persistent connection twisted.web's parser is where it is on a
        new connection, and it gets no byte beyond this request: no parser state is shared or
        guessed. Once it has answered (``requestDone``), the fast path carries on with what came
        meanwhile, so an info page, a QR code, the form, or an RPC call the fast path does not
        answer costs the requests after it nothing.
        """
        self._lent = True
        self._lend_left = left
        self._web_receives(request)

    def _hand_over(self, data: bytes) -> None:
        """From now on twisted.web parses everything on this connection, starting with ``data``."""
        self._general = True
        self._unparsed = b""
        if self._owed:
            self._held = [data]
            self._held_bytes = len(data)
            if self._deadline_call is not None:
                # It waits for the answers before it, not for the client; twisted.web's own clock
                # starts when it is replayed there (a split head held here once ran out meanwhile).
                self.stop_request_clock()
            self._check_budget()
        else:
            self._check_budget()
            self._web_receives(data)

    def _check_budget(self) -> None:
        """Pause reading while the connection holds more than :data:`BUDGET` bytes; resume below it.

        A connection being closed answers nothing after the request that closed it, so it holds
        none of what it has not parsed (a pipelined tail, what arrives before the close completes),
        and its reading is not resumed."""
        closing = self.transport is not None and self.transport.disconnecting  # type: ignore[attr-defined]
        if closing:
            self._unparsed = b""
        if len(self._unparsed) + self._held_bytes + self._owed_bytes > BUDGET:
            if not self._budget_paused and self.transport is not None:
                self._budget_paused = True
                self.transport.pauseProducing()  # type: ignore[attr-defined] # TCP, TLS: IPushProducer
        elif self._budget_paused:
            self._budget_paused = False
            if not self._send_blocked and self.transport is not None and not closing:
                self.transport.resumeProducing()  # type: ignore[attr-defined]

    def pauseProducing(self) -> None:
        """The transport's send buffer is full (twisted.web pauses reading then, and so do we)."""
        self._send_blocked = True
        super().pauseProducing()

    def resumeProducing(self) -> None:
        """The send buffer drained: answer what waited for it, and read again unless the byte
        budget still says no."""
        self._send_blocked = False
        super().resumeProducing()
        if self._budget_paused and self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]
        if not self._general and self._unparsed and not self._parsing and not self._lost:
            self._parse()
        self._close_if_done()  # after a half-close, what waited for the drain is answered now

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        if self._lent and not self.requests:
            self._lent = False
            if self._budget_paused and self.transport is not None:
                self.transport.pauseProducing()  # type: ignore[attr-defined] # twisted.web resumed it
            if not self._parsing and not self._lost and self.persistent and self._unparsed:
                self._parse()  # as twisted.web itself goes on with the requests it holds
        self._close_if_done()

    def timeoutConnection(self) -> None:
        """Idle for the whole timeout: close, unless an answer is still owed (twisted.web disarms
        its idle timeout while it handles a request; this one runs on for another period instead,
        which costs nothing per answer owed later, where disarming and re-arming it cost a timer
        each: ``bench/master_adds.py`` on CPython 3.11, 27.0 -> 24.7 us a ``POST /add``)."""
        if self._owed:
            if not self._lost:
                self.setTimeout(self.timeOut)
            # Lost with answers owed: the answer deadline closed it and armed the abort already (a
            # second close would arm a second abort that twisted.web no longer tracks).
            return
        super().timeoutConnection()

    def readConnectionLost(self) -> None:
        """The client will send no more (``shutdown(SHUT_WR)``): answer what is owed, then close."""
        self._read_closed = True
        self.stop_request_clock()
        self._close_if_done()

    def writeConnectionLost(self) -> None:
        """We never half-close ourselves; should the write side go, nothing more can be answered."""
        self.loseConnection()

    def _close_if_done(self) -> None:
        """After a half-close, close once nothing more is owed (an incomplete request never completes).

        Checked once the current call unwinds: twisted.web answers a request inside the parsing
        loop that holds the next pipelined ones, so "no request in hand" is only true after it.
        """
        if self._read_closed and not self._lost and not self._close_check_due:
            self._close_check_due = True
            self.callLater(0, self._close_when_done)

    def _close_when_done(self) -> None:
        self._close_check_due = False
        if self._lost or self._owed:
            return  # an owed answer's flush calls back (what the fast path still holds is incomplete)
        if self._send_blocked and self._unparsed and not self._general:
            return  # requests wait for the client to read its answers: resumeProducing calls back
        if (self._lent and not self._lend_left) or (
            self._general and (self._handlingRequest or self._held is not None)
        ):
            return  # twisted.web is answering: requestDone calls back (a lent body never completes)
        if self.transport is not None and not self.transport.disconnecting:  # type: ignore[attr-defined]
            self.loseConnection()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._unsent = None  # nowhere to send them
        self._unsent_bytes = 0
        self._give_up()
        super().connectionLost(reason)
