"""Issue 13, the master's RPC on the fast path: which calls it takes, that a slave's connection stays
on it, its bounds (the fast cap, the byte budget, bodies lent to twisted.web), order and deadlines,
and the shared secret. Byte equality on any conversation is the property test's
(tests/test_rpc_fastpath_property.py); each test here compares with the general path too."""

from __future__ import annotations

import gc
import hmac
import xmlrpc.client as xmlrpclib
from typing import Any
from unittest import mock

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from goto_tw.fastpath import BUDGET, MAX_FAST_HEAD_BYTES, MAX_FAST_RPC_BYTES, lend_length, parse_simple_rpc
from goto_tw.interfaces import ILocalLookup, IURLStore
from goto_tw.limits import MAX_BODY_BYTES
from goto_tw.metrics import Metrics
from goto_tw.rpc import RPCResource
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from goto_tw.tap import make_root
from goto_tw.xmlrpcbody import parse_call
from tests.conftest import LogCapture
from tests.fakes import ManualLog
from tests.test_rpc_fastpath_property import SECRET, URLS, pinned_dates
from tests.wire import Connection, ListAccessLog

GET_ABC = xmlrpclib.dumps(("abc",), "Store.Get").encode()
HIT = b"GET /abc HTTP/1.1\r\n\r\n"


def post(body: bytes, headers: bytes = b"Content-Type: text/xml\r\n") -> bytes:
    """``POST /RPC2`` of ``body``, as a slave or ``xmlrpc.client`` sends it."""
    return b"POST /RPC2 HTTP/1.1\r\nHost: m\r\n%sContent-Length: %d\r\n\r\n%s" % (headers, len(body), body)


def put(url: str) -> bytes:
    return post(xmlrpclib.dumps((url,), "Store.Put").encode())


def multicall(count: int) -> bytes:
    """A slave's batch of ``count`` look-ups."""
    calls = [{"methodName": "Store.Get", "params": ["abc"]}] * count
    return xmlrpclib.dumps((calls,), "system.multicall").encode()


class Master:
    """A master serving ``--rpc``, fast path on or off, its data file acknowledging on demand."""

    def __init__(
        self, fast: bool = True, secret: bytes | None = None, store: Any = None, private: bool = False
    ) -> None:
        self.clock = Clock()
        self.log = ManualLog()
        self.store = store if store is not None else URLStore(dict(URLS), self.log)
        self.metrics = Metrics("master")
        self.lines: list[tuple[Any, ...]] = []
        self.site = GotoSite(
            make_root(
                self.store, "go.example", self.metrics, RPCResource(self.store, secret, private=private)
            ),
            self.metrics,
            reactor=self.clock,
            store=self.store if fast else None,
            host="go.example",
            access_log=ListAccessLog(self.lines),
        )
        self.connection = Connection(self.site)
        self.protocol: Any = self.connection.protocol
        self.transport = self.connection.transport

    def send(self, data: bytes, chunk: int = 0) -> None:
        with pinned_dates(self.clock):
            if not chunk:
                self.connection.send(data)
                return
            for start in range(0, len(data), chunk):
                self.connection.send(data[start : start + chunk])

    def received(self) -> bytes:
        return self.connection.received()

    def complete(self) -> None:
        with pinned_dates(self.clock):
            self.log.complete_all()


def both(play: Any) -> list[tuple[Any, ...]]:
    """Play the same conversation on a master with the fast path and one without; what each sent,
    logged and counted."""
    outcomes = []
    for fast in (True, False):
        master = Master(fast)
        play(master)
        outcomes.append((master.received(), master.lines, dict(master.metrics.requests)))
    return outcomes


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"POST /RPC2 HTTP/1.1\r\nContent-Type: text/xml\r\nContent-Length: 10\r\n\r\n", (10, None, False)),
        (b"POST /RPC2 HTTP/1.1\r\nContent-Length: 0\r\n\r\n", (0, None, False)),
        (
            b"POST /RPC2 HTTP/1.1\r\ncontent-type: TEXT/XML; charset=UTF-8\r\ncontent-length:7\r\n\r\n",
            (7, None, False),
        ),
        (
            b"POST /RPC2 HTTP/1.1\r\nAuthorization:  Bearer x \r\nContent-Length: 1\r\n\r\n",
            (1, b"Bearer x", False),
        ),
        (b"POST /RPC2 HTTP/1.1\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", (1, None, False)),
        (
            b"POST /RPC2 HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % MAX_FAST_RPC_BYTES,
            (MAX_FAST_RPC_BYTES, None, False),
        ),
        # Over the fast cap, or not exactly one length: twisted.web's (lent or handed over).
        (b"POST /RPC2 HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_FAST_RPC_BYTES + 1), None),
        (b"POST /RPC2 HTTP/1.1\r\n\r\n", None),
        (b"POST /RPC2 HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", None),
        (b"POST /RPC2 HTTP/1.1\r\nContent-Length: -1\r\n\r\n", None),
        (b"POST /RPC2 HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", None),
        (b"POST /RPC2 HTTP/1.1\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n", None),
        (b"POST /RPC2 HTTP/1.1\r\nContent-Length: 1\r\nConnection: close\r\n\r\n", None),
        # Another Content-Type (a form is parsed by twisted.web), two, or two Authorization lines.
        (b"POST /RPC2 HTTP/1.1\r\nContent-Type: application/xml\r\nContent-Length: 1\r\n\r\n", None),
        (
            b"POST /RPC2 HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1\r\n\r\n",
            None,
        ),
        (
            b"POST /RPC2 HTTP/1.1\r\nContent-Type: text/xml\r\nContent-Type: text/xml\r\nContent-Length: 1\r\n\r\n",
            None,
        ),
        (b"POST /RPC2 HTTP/1.1\r\nAuthorization: a\r\nAuthorization: a\r\nContent-Length: 1\r\n\r\n", None),
        # A slave that checks no keys says so, in any case (a private master refuses its adds); said
        # twice: twisted.web's (which refuses if any says so).
        (b"POST /RPC2 HTTP/1.1\r\nX-Goto-Adds: unchecked\r\nContent-Length: 1\r\n\r\n", (1, None, True)),
        (b"POST /RPC2 HTTP/1.1\r\nx-goto-adds:  UNCHECKED \r\nContent-Length: 1\r\n\r\n", (1, None, True)),
        (b"POST /RPC2 HTTP/1.1\r\nX-Goto-Adds: other\r\nContent-Length: 1\r\n\r\n", (1, None, False)),
        (
            b"POST /RPC2 HTTP/1.1\r\nX-Goto-Adds: unchecked\r\nX-Goto-Adds: unchecked\r\nContent-Length: 1\r\n\r\n",
            None,
        ),
        # Another target, method or version.
        (b"POST /RPC2/ HTTP/1.1\r\nContent-Length: 1\r\n\r\n", None),
        (b"POST /RPC2?x HTTP/1.1\r\nContent-Length: 1\r\n\r\n", None),
        (b"POST http://m/RPC2 HTTP/1.1\r\nContent-Length: 1\r\n\r\n", None),
        (b"PUT /RPC2 HTTP/1.1\r\nContent-Length: 1\r\n\r\n", None),
        (b"POST /RPC2 HTTP/1.0\r\nContent-Length: 1\r\n\r\n", None),
        (b"POST /RPC2 HTTP/1.1\r\nX-Folded: a\r\n b\r\nContent-Length: 1\r\n\r\n", None),
        (
            b"POST /RPC2 HTTP/1.1\r\nX-Pad: %s\r\nContent-Length: 1\r\n\r\n" % (b"p" * MAX_FAST_HEAD_BYTES),
            None,
        ),
    ],
)
def test_which_rpc_heads_the_fast_path_answers(
    head: bytes, expected: tuple[int, bytes | None, bool] | None
) -> None:
    """Only a plain HTTP/1.1 ``POST /RPC2`` of one known length within the cap, of ``text/xml``."""
    assert parse_simple_rpc(head) == expected


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /abc+ HTTP/1.1\r\n\r\n", 0),
        (b"POST /RPC2 HTTP/1.1\r\nContent-Type: application/xml\r\nContent-Length: 12\r\n\r\n", 12),
        (b"POST /api/v1/links HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 0),
        (b"POST /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % MAX_BODY_BYTES, MAX_BODY_BYTES),
        (b"POST /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1), None),  # twisted.web's 413
        (b"POST /x HTTP/1.1\r\n\r\n", None),
        (b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", None),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", None),
        (b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nConnection: close\r\n\r\n", None),
        (b"GET /abc HTTP/1.1\r\nContent-Length: 1\r\n\r\n", None),
        (b"DELETE /x HTTP/1.1\r\n\r\n", None),
        (b"POST /x HTTP/1.0\r\nContent-Length: 1\r\n\r\n", None),
    ],
)
def test_which_requests_are_lent_to_twisted_web(head: bytes, expected: int | None) -> None:
    """Item 2: a ``GET``/``HEAD`` without a body, or a ``POST`` with one ``Content-Length`` (within
    the site's body limit), is lent whole (its body length); anything else is handed over."""
    assert lend_length(head) == expected


def test_a_slaves_connection_stays_on_the_fast_path() -> None:
    """Item 1: batch after batch on one keep-alive connection, look-ups and puts, is answered by
    the fast path (twisted.web answers none of them), logged and counted as twisted.web does."""
    batches = [post(GET_ABC), post(multicall(17)), put("https://n.example/1"), post(multicall(1))] * 5

    def play(master: Master) -> None:
        for batch in batches:
            master.send(batch)
            master.complete()

    fast, general = both(play)
    assert fast == general
    assert fast[0].count(b"HTTP/1.1 200 OK\r\n") == len(batches)
    assert fast[2] == {("rpc", "POST", 200): len(batches)}
    master = Master()
    play(master)
    assert not master.protocol._general and master.protocol.requests == []
    assert master.metrics.general_requests == {}


def test_a_call_the_fast_path_declines_is_lent_and_the_connection_comes_back() -> None:
    """Item 2: a call twisted.web answers (another Content-Type) gets its answer from twisted.web,
    with nothing after it; the calls pipelined behind it are the fast path's again."""
    odd = post(GET_ABC, b"Content-Type: application/xml\r\n")

    def play(master: Master) -> None:
        master.send(post(GET_ABC) + odd + post(GET_ABC) + HIT)

    fast, general = both(play)
    assert fast == general and fast[0].count(b"HTTP/1.1 200 OK\r\n") == 3
    master = Master()
    play(master)
    assert master.metrics.general_requests == {"rpc": 1}
    assert not master.protocol._general and not master.protocol._lent


def test_an_rpc_body_at_the_fast_cap_is_gathered_without_pausing_reading() -> None:
    """Item 3: a call as large as the fast path takes, arriving a KB at a time, never pauses
    reading by itself (it fits the byte budget) and is answered by the fast path."""
    body = multicall(1)
    body = body.replace(b"<params>", b"<params>" + b" " * (MAX_FAST_RPC_BYTES - len(body)), 1)
    assert len(body) == MAX_FAST_RPC_BYTES
    master = Master()
    request = post(body)
    for start in range(0, len(request), 1024):
        master.send(request[start : start + 1024])
        assert master.transport.producerState == "producing"
        assert master.protocol.buffered() <= BUDGET
    assert master.received().startswith(b"HTTP/1.1 200 OK\r\n")
    assert master.metrics.general_requests == {}


def test_a_batch_over_the_fast_cap_is_streamed_to_twisted_web_then_back() -> None:
    """Items 2 and 3: a slave's largest batch (over the fast cap, up to 512 KiB) is lent to
    twisted.web with its body passed on as it arrives, never held by the fast path (reading never
    paused); twisted.web answers it, and the next batch is the fast path's."""
    big = multicall(2000)
    assert 400 * 1024 < len(big) <= 512 * 1024

    def play(master: Master) -> None:
        request = post(big) + post(GET_ABC)
        for start in range(0, len(request), 4096):
            master.send(request[start : start + 4096])
            assert master.transport.producerState == "producing"
            assert master.protocol.buffered() <= 4096 if master.protocol.responder else True

    fast, general = both(play)
    assert fast == general and fast[0].count(b"HTTP/1.1 200 OK\r\n") == 2
    master = Master()
    play(master)
    assert master.metrics.general_requests == {"rpc": 1}
    assert not master.protocol._general


def test_a_body_over_the_sites_limit_is_refused_by_twisted_web() -> None:
    """A ``Content-Length`` over the site's limit goes to twisted.web as before: 413 and the close."""

    def play(master: Master) -> None:
        master.send(b"POST /RPC2 HTTP/1.1\r\nContent-Length: %d\r\n\r\n<x" % (MAX_BODY_BYTES + 1))

    fast, general = both(play)
    assert fast == general and fast[0].startswith(b"HTTP/1.1 413 ")


def test_calls_pipelined_behind_an_owed_put_are_bounded_by_the_budget() -> None:
    """Items 3 and 4: behind a put waiting for the data file, pipelined calls wait unparsed; past the
    byte budget reading pauses; once the put is durable every call is answered, in order."""
    master = Master()
    calls = post(GET_ABC) * (BUDGET // len(post(GET_ABC)) + 5)
    master.send(put("https://n.example/p") + calls, chunk=4096)
    assert master.received() == b""
    assert master.transport.producerState == "paused"
    assert master.protocol.buffered() <= BUDGET + 4096
    master.complete()
    answers = master.received()
    assert answers.count(b"HTTP/1.1 200 OK\r\n") == 1 + calls.count(b"POST /RPC2")
    first, *rest = answers.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert b"https://a.example" not in first and all(b"https://a.example" in answer for answer in rest)
    assert master.transport.producerState == "producing"


def test_a_put_holds_back_what_is_pipelined_behind_it() -> None:
    """Item 4: a put is answered once durable; a redirect and a call pipelined behind it wait for it
    (in order), dated when twisted.web would date them."""

    def play(master: Master) -> None:
        master.send(put("https://n.example/q") + HIT + post(GET_ABC))
        assert master.received() == b""
        master.clock.advance(3)
        master.complete()

    fast, general = both(play)
    assert fast == general
    assert [line[4] for line in fast[1]] == [200, 302, 200]


def test_an_answer_not_ready_in_time_closes_the_connection() -> None:
    """Item 4: a put whose write never completes holds its connection only until the answer
    deadline; nothing is answered or logged for it."""
    master = Master()
    master.send(put("https://n.example/slow") + post(GET_ABC))
    master.clock.advance(master.protocol.answer_deadline)
    assert master.transport.disconnecting
    assert master.received() == b"" and master.lines == []


def test_a_client_that_leaves_cancels_its_call_without_a_log_line(log_events: LogCapture) -> None:
    """Item 4: a client gone while its put waits for the data file: nothing is written, logged
    (no access-log line, no failure) or counted; the put itself is still made durable."""
    master = Master()
    master.send(put("https://n.example/left"))
    key = master.log.appended[0][0]
    master.protocol.connectionLost(Failure(ConnectionLost()))
    master.complete()
    assert master.received() == b"" and master.lines == [] and master.metrics.requests == {}
    assert not [event for event in log_events.events if event.get("log_failure") is not None]
    assert master.store.lookup(key) == "https://n.example/left"


def test_a_client_that_leaves_the_general_path_gets_nothing_written(log_events: LogCapture) -> None:
    """The general path's twin of the test above: a client gone while its put waits for the data
    file gets no answer written or finished on its lost connection (twisted.web would raise for a
    ``finish()`` after the connection is lost) and no failure is logged; the put is still durable."""
    master = Master(fast=False)
    master.send(put("https://n.example/gone"))
    key = master.log.appended[0][0]
    master.protocol.connectionLost(Failure(ConnectionLost()))
    master.complete()
    gc.collect()  # a Deferred's unhandled failure is logged once it is collected
    assert master.received() == b"" and master.lines == []
    assert not [event for event in log_events.events if event.get("log_failure") is not None]
    assert master.store.lookup(key) == "https://n.example/gone"


def test_without_the_right_secret_the_fast_path_parses_nothing(log_events: LogCapture) -> None:
    """Item 5: with a shared secret, a call without it (or with another) is twisted.web's refusal,
    fault 401, and its body is never parsed; the secret is compared in constant time; with it, the
    call is the fast path's."""
    parsed: list[bytes] = []
    real_parse = parse_call

    def counting_parse(body: bytes, **kwargs: Any) -> Any:
        parsed.append(body)
        return real_parse(body, **kwargs)

    refused = [
        post(GET_ABC),
        post(GET_ABC, b"Authorization: Bearer wrong\r\n"),
        post(GET_ABC, b"Authorization: Basic " + SECRET + b"\r\n"),
    ]
    answers = []
    for fast in (True, False):
        master = Master(fast, secret=SECRET)
        with mock.patch("goto_tw.rpc.parse_call", counting_parse):
            master.send(b"".join(refused))
        answers.append(master.received())
        assert parsed == []
    assert answers[0] == answers[1] and answers[0].count(b"<int>401</int>") == 3
    master = Master(secret=SECRET)
    with mock.patch("goto_tw.rpc.hmac.compare_digest", wraps=hmac.compare_digest) as compare:
        master.send(post(GET_ABC, b"Authorization: Bearer " + SECRET + b"\r\n"))
    assert compare.call_count == 1
    assert b"<string>https://a.example/x?y=1</string>" in master.received()
    assert master.metrics.general_requests == {}


@implementer(IURLStore, ILocalLookup)
class SurrogateStore:
    """A store holding a URL that cannot be written as UTF-8 (a bug elsewhere)."""

    def get(self, key: str) -> Deferred[str]:
        return succeed("https://x.example/\ud800")

    def put(self, url: str) -> Deferred[str]:
        return succeed("0")

    def count(self) -> int:
        return 1

    def lookup(self, key: str) -> str | None:
        return "https://x.example/\ud800"


def test_an_answer_that_cannot_be_encoded_is_a_fault_on_both_paths() -> None:
    """rpc.py's one answer for both paths: a value that cannot be written as UTF-8 is the
    "Can't serialize output" fault (twisted.web's own answer for what it cannot marshal), where
    it used to be an empty chunked 200 that no XML-RPC client can read."""
    answers = []
    for fast in (True, False):
        master = Master(fast, store=SurrogateStore())
        master.send(post(GET_ABC))
        answers.append(master.received())
    assert answers[0] == answers[1]
    assert b"<int>8002</int>" in answers[0] and b"Can't serialize output" in answers[0]


def test_a_client_that_half_closes_in_a_lent_body_is_closed_as_on_twisted_web() -> None:
    """A client that half-closes before the body of a lent call is whole will never complete it:
    the connection closes at once, as when twisted.web has it (not at the request deadline)."""
    request = post(multicall(400))
    assert parse_simple_rpc(request[: request.index(b"\r\n\r\n") + 4]) is None  # over the fast cap: lent
    for fast in (True, False):
        master = Master(fast)
        master.send(request[: len(request) // 2])
        master.protocol.readConnectionLost()
        master.clock.advance(0)
        assert master.transport.disconnecting, fast
        assert master.received() == b""


def test_a_call_whose_answer_is_already_known_is_answered_at_once(log_events: LogCapture) -> None:
    """rpc.py answers a call whose Deferred has already fired (an unknown key's fault, a failure)
    with its bytes at once, not a Deferred: nothing is owed later on the fast path (no answer
    deadline armed), and the failure it consumed is not reported again as unhandled."""
    store = URLStore(dict(URLS), ManualLog())
    resource = RPCResource(store)
    unknown = xmlrpclib.dumps(("nope",), "Store.Get").encode()
    answered = resource.fast_call(None, unknown)
    assert isinstance(answered, bytes) and b"<int>404</int>" in answered
    master = Master()
    master.send(post(unknown))
    assert b"<int>404</int>" in master.received()
    assert master.protocol._answer_call is None and not master.protocol._owed  # nothing owed later
    gc.collect()  # an unconsumed failure in a dropped Deferred is reported when it is collected
    assert not [event for event in log_events.events if "Unhandled error" in str(event.get("log_format", ""))]
