"""Hostile review of the slave's HTTP/1.1 client (goto_tw.masterhttp): re-entrancy, slots held by
connections that are closing, and cancelling at every stage."""

from __future__ import annotations

from typing import Any, cast

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web import xmlrpc
from twisted.web.client import ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.server import Site

from goto_tw.errors import MasterUnreachable
from goto_tw.masterhttp import (
    IDLE_SECONDS,
    MAX_CONNECTIONS,
    MAX_HEAD_BYTES,
    REFUSED_BODY_SECONDS,
    BadAnswer,
    MasterConnections,
)
from goto_tw.metrics import Metrics
from goto_tw.tap import make_slave
from tests.helpers import failure_of, has_fired, result_of
from tests.test_masterhttp import OK, URL, XML, Endpoint, answer_to, chunked, client, post, reason_of

CLOSE = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(XML), XML)


class StoppingReader:
    """A body reader that stops the body (``transport.stopProducing()``) as soon as bytes come."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.ended: list[Failure] = []

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:
        self.transport.stopProducing()

    def connectionLost(self, reason: Failure) -> None:
        self.ended.append(reason)


REFUSED_HEADS = {
    "length": b"HTTP/1.1 404 Not Found\r\nContent-Length: 14\r\n\r\n",
    "chunked": b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n",
}
REFUSED_BODIES = {"length": b"No link here.\n", "chunked": chunked(b"No link here.\n", 5)}


@pytest.mark.parametrize("kind", sorted(REFUSED_HEADS))
def test_a_body_stopped_inside_its_last_bytes_leaves_the_dropped_connection_unused(kind: str) -> None:
    """A reader that stops the body while its last bytes are being delivered drops the connection:
    that dropped connection must never be handed to the next post (which would fail with "connection
    lost" although the master is fine)."""
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, REFUSED_HEADS[kind])
    reader = StoppingReader()
    result_of(posted).deliverBody(reader)
    answer_to(endpoint, 0, REFUSED_BODIES[kind])
    assert endpoint.transports[0].disconnected  # dropped by the reader
    assert len(reader.ended) == 1 and reader.ended[0].check(ResponseFailed)
    again = post(connections)
    assert len(endpoint.transports) == 2, "the next post goes out on a new connection"
    assert endpoint.transports[0].value().count(b"POST ") == 1
    answer_to(endpoint, 1, OK)
    assert result_of(again).body == XML


class ClosingTransport(StringTransport):
    """Like a TCP or TLS transport whose peer never completes a graceful close (a TLS peer that never
    answers close_notify, a peer that stops reading): ``loseConnection`` never ends the connection;
    ``abortConnection`` always does, on the next turn of ``clock``."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self._clock = clock
        self.protocol: Any = None

    def abortConnection(self) -> None:
        if self.disconnected:
            return
        super().abortConnection()
        self._clock.callLater(0, self.protocol.connectionLost, Failure(ConnectionAborted()))


class ClosingEndpoint(Endpoint):
    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def _made(self, protocol: Any) -> Any:
        transport = ClosingTransport(self.clock)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.transports.append(transport)
        self.protocols.append(protocol)
        return protocol


def closing_client() -> tuple[MasterConnections, ClosingEndpoint, Clock]:
    clock = Clock()
    endpoint = ClosingEndpoint(clock)
    connections = MasterConnections(clock, 5.0, max_answer_bytes=100_000, endpoints=cast(Any, endpoint))
    return connections, endpoint, clock


def test_connections_the_slave_is_done_with_do_not_hold_their_slots_while_the_peer_lingers() -> None:
    """Answers with ``Connection: close`` end their connections. Ending them must not wait on the
    peer: a connection still closing counts against MAX_CONNECTIONS, so MAX_CONNECTIONS of them
    whose close never completes would leave every later post waiting (for ever: until its timeout)."""
    connections, endpoint, clock = closing_client()
    for n in range(MAX_CONNECTIONS):
        posted = post(connections)
        answer_to(endpoint, n, CLOSE)
        assert result_of(posted).body == XML
        clock.advance(0)
    late = post(connections)
    clock.advance(0)
    assert len(endpoint.transports) == MAX_CONNECTIONS + 1, "the late post got a connection"
    answer_to(endpoint, MAX_CONNECTIONS, OK)
    assert result_of(late).body == XML


def test_stale_idle_connections_do_not_hold_their_slots_while_the_peer_lingers() -> None:
    """Idle connections too old to use are closed when a post comes; closing them must not keep
    their slots, or a master that was quiet for IDLE_SECONDS after a burst is never reached again."""
    connections, endpoint, clock = closing_client()
    burst = [post(connections) for _ in range(MAX_CONNECTIONS)]
    for n in range(MAX_CONNECTIONS):
        answer_to(endpoint, n, OK)
    assert all(result_of(posted).body == XML for posted in burst)
    clock.advance(IDLE_SECONDS + 1)
    for _ in range(3):
        late = post(connections)
        clock.advance(0)
        assert has_fired(late) or len(endpoint.transports) > MAX_CONNECTIONS
        answer_to(endpoint, len(endpoint.transports) - 1, OK)
        assert result_of(late).body == XML


def test_cancelling_mid_answer_fails_that_post_once_and_the_next_gets_a_new_connection() -> None:
    """Cancelled with half a chunked 200 in: the post fails once (CancelledError), the rest of that
    answer arriving later reaches nobody, and the connection's slot is freed when it ends."""
    connections, endpoint, clock = closing_client()
    posted = post(connections)
    answer_to(endpoint, 0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(XML, 7)[:30])
    posted.cancel()
    assert failure_of(posted).check(CancelledError)
    answer_to(endpoint, 0, chunked(XML, 7)[30:])  # late bytes, before the abort is through
    clock.advance(0)
    again = post(connections)
    assert len(endpoint.transports) == 2
    answer_to(endpoint, 1, OK)
    assert result_of(again).body == XML
    link: Any = next(iter(connections._links.values()))
    assert link._open == 1


def test_a_post_made_from_a_callback_of_the_answer_it_follows_reuses_the_connection_cleanly() -> None:
    """A caller posting again from its answer's callback (synchronously) gets a working connection
    and its own answer, and the first post fires once."""
    connections, endpoint, _ = client()
    seen: list[Any] = []
    follow: list[Deferred[Any]] = []

    def again(answer: Any) -> Any:
        seen.append(answer.body)
        follow.append(post(connections, b"second"))
        return answer

    first = post(connections, b"first")
    first.addCallback(again)
    answer_to(endpoint, 0, OK)
    assert seen == [XML]
    [second] = follow
    transport = endpoint.transports[-1]
    assert transport.value().endswith(b"second")
    answer_to(endpoint, len(endpoint.transports) - 1, OK)
    assert result_of(second).body == XML


def test_a_refused_answer_whose_reader_posts_again_when_the_body_ends_gets_its_answer() -> None:
    """The body of a refused answer ends (connectionLost of its reader) before its connection is
    released; a post made right then must still be answered, and nothing waits for ever."""
    connections, endpoint, _ = client()
    follow: list[Deferred[Any]] = []

    class Reader:
        def makeConnection(self, transport: Any) -> None:
            pass

        def dataReceived(self, data: bytes) -> None:
            pass

        def connectionLost(self, reason: Failure) -> None:
            follow.append(post(connections, b"again"))

    busy = [post(connections) for _ in range(MAX_CONNECTIONS)]
    answer_to(endpoint, 0, REFUSED_HEADS["length"])
    result_of(busy[0]).deliverBody(Reader())
    answer_to(endpoint, 0, REFUSED_BODIES["length"])
    [again] = follow
    assert endpoint.transports[0].value().endswith(b"again")
    answer_to(endpoint, 0, OK)
    assert result_of(again).body == XML


def test_a_connection_lost_while_idle_after_stop_fires_the_stop() -> None:
    connections, endpoint, _ = client()
    connections.startService()
    posted = post(connections)
    answer_to(endpoint, 0, OK)
    result_of(posted)
    stopped = connections.stopService()
    endpoint.protocols[0].connectionLost(Failure(ConnectionDone()))
    assert has_fired(stopped)


def test_stopping_never_waits_on_a_peer_that_does_not_complete_the_close() -> None:
    """twistd waits for stopService without a timeout: closing the idle connections must end them
    even when the master never answers a graceful close (a TLS close_notify it ignores)."""
    connections, endpoint, clock = closing_client()
    connections.startService()
    posted = post(connections)
    answer_to(endpoint, 0, OK)
    result_of(posted)
    stopped = connections.stopService()
    clock.advance(0)
    assert has_fired(stopped)


# --- over real loopback sockets -------------------------------------------------------------------


class ClicksOnly(xmlrpc.XMLRPC):
    """A master's ``/RPC2`` that keeps clicks (and has no change feed)."""

    def __init__(self) -> None:
        super().__init__()
        self.clicks: list[dict[str, int]] = []

    def xmlrpc_Clicks(self, batch: dict[str, int]) -> bool:
        self.clicks.append(batch)
        return True


@pytest_twisted.inlineCallbacks
def test_the_clicks_counted_before_stopping_reach_the_master_while_the_slave_stops():
    """The click forwarder's last flush goes out while the slave stops, after the service that owns
    the connections to the master was told to stop: it still reaches the master."""
    store = ClicksOnly()
    root = xmlrpc.XMLRPC()
    root.putSubHandler("Store", store)
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(root))
    parent = MultiService()
    options = {
        "master": f"http://127.0.0.1:{port.getHost().port}/RPC2",
        "rpc-timeout": 5.0,
        "cache-size": 100,
    }
    try:
        _, counter, _ = make_slave(options, reactor, parent, Metrics("slave"))
        parent.startService()
        counter.click("abc")
        counter.click("abc")
        yield parent.stopService()
        assert store.clicks == [{"abc": 2}]
    finally:
        yield port.stopListening()


# --- parsing: what real servers send (each case kills a mutant the first tests let live) ----------

LENGTH_OK = b"HTTP/1.1 200 OK\r\n%s\r\n\r\n" + XML


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length:\t%d\t" % len(XML),  # optional white space may be a tab
        b"Content-Type: text/xml\r\nX-Empty:\r\nX-Also-Empty: \r\nContent-Length: %d" % len(XML),
        b"Content-Length: %d\r\nContent-Length: %d" % (len(XML), len(XML)),  # the same twice: one length
    ],
    ids=["tabs", "empty-values", "same-length-twice"],
)
def test_answers_real_servers_send_are_read_and_the_connection_kept(headers: bytes) -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, LENGTH_OK % headers)
    assert result_of(posted).body == XML
    post(connections)
    assert len(endpoint.transports) == 1


def test_transfer_coding_names_are_case_insensitive() -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n" + chunked(XML, 9))
    assert result_of(posted).body == XML


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (b"HTTP/1.1 200 OK\r\nX-No-Colon\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "coding"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"y" * MAX_HEAD_BYTES + b"\r\n\r\n" + OK, "head is longer"),
    ],
    ids=["no-colon", "chunked-twice", "long-head-in-one-piece"],
)
def test_answers_this_client_does_not_read_fail(answer: bytes, says: str) -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, answer)
    failure = failure_of(posted)
    assert failure.check(ResponseFailed)
    error: Any = failure.value
    assert error.reasons[0].check(BadAnswer)
    assert says in reason_of(failure)
    assert endpoint.transports[0].disconnected


def test_connection_close_among_other_tokens_ends_the_connection() -> None:
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, LENGTH_OK % (b"Connection: keep-alive, Close\r\nContent-Length: %d" % len(XML)))
    assert result_of(posted).body == XML
    assert endpoint.transports[0].disconnecting
    post(connections)
    assert len(endpoint.transports) == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n",
    ],
    ids=["204", "304-chunked", "304-length"],
)
def test_answers_without_a_body_end_at_their_head(answer: bytes) -> None:
    """204 and 304 have no body whatever their headers say: the answer is complete at its head and
    the connection carries the next request (its answer is not taken for a body)."""
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, answer)
    body = result_of(posted)
    ended: list[Failure] = []

    class Reader:
        def makeConnection(self, transport: Any) -> None:
            pass

        def dataReceived(self, data: bytes) -> None:
            raise AssertionError(data)

        def connectionLost(self, reason: Failure) -> None:
            ended.append(reason)

    body.deliverBody(Reader())
    assert len(ended) == 1
    again = post(connections)
    assert len(endpoint.transports) == 1
    answer_to(endpoint, 0, OK)
    assert result_of(again).body == XML


def test_a_complete_refused_answer_leaves_no_deadline_behind() -> None:
    """The refused body's deadline is for that body: once it is complete, the connection (idle, or
    carrying the next request) is not dropped when the deadline would have come."""
    connections, endpoint, clock = client()
    posted = post(connections)
    answer_to(endpoint, 0, REFUSED_HEADS["length"] + REFUSED_BODIES["length"])
    assert result_of(posted).code == 404
    again = post(connections)
    clock.advance(REFUSED_BODY_SECONDS + 1)
    assert not endpoint.transports[0].disconnected
    answer_to(endpoint, 0, OK)
    assert result_of(again).body == XML


def test_a_refused_body_ended_by_the_close_is_potential_data_loss() -> None:
    """A refused answer with neither length nor chunks ends with its connection: its reader gets
    PotentialDataLoss (what Agent gives), not a failure."""
    connections, endpoint, _ = client()
    posted = post(connections)
    answer_to(endpoint, 0, b"HTTP/1.1 503 Busy\r\n\r\ntry later")
    ended: list[Failure] = []
    parts: list[bytes] = []

    class Reader:
        def makeConnection(self, transport: Any) -> None:
            pass

        def dataReceived(self, data: bytes) -> None:
            parts.append(data)

        def connectionLost(self, reason: Failure) -> None:
            ended.append(reason)

    result_of(posted).deliverBody(Reader())
    endpoint.protocols[0].connectionLost(Failure(ConnectionDone()))
    assert b"".join(parts) == b"try later"
    assert [reason.type for reason in ended] == [PotentialDataLoss]


def test_the_callers_host_and_length_headers_are_not_sent_twice() -> None:
    connections, endpoint, _ = client()
    headers = Headers({b"host": [b"evil.example"], b"content-length": [b"999"], b"x-a": [b"1"]})
    connections.post(URL, data=b"abc", headers=headers)
    head = endpoint.transports[0].value().split(b"\r\n\r\n")[0].lower()
    assert head.count(b"host:") == 1 and b"evil" not in head
    assert head.count(b"content-length:") == 1 and b"content-length: 3" in head


class RefusingAtFirst(Endpoint):
    """Refuses the first ``refusals`` connections (at once), then connects as Endpoint does."""

    def __init__(self, refusals: int, hold: bool = False) -> None:
        super().__init__(hold)
        self.refusals = refusals

    def connect(self, factory: Any) -> Deferred[Any]:
        if self.refusals:
            self.refusals -= 1
            refused: Deferred[Any] = Deferred()
            refused.errback(ConnectionRefusedError())
            return refused
        return super().connect(factory)


def test_refused_connections_give_their_slots_back() -> None:
    """A master that was down for more than MAX_CONNECTIONS attempts is reached once it is back."""
    connections, endpoint, _ = client(RefusingAtFirst(MAX_CONNECTIONS + 4))
    for _ in range(MAX_CONNECTIONS + 4):
        failure_of(post(connections)).trap(ConnectionRefusedError)
    back = post(connections)
    assert len(endpoint.transports) == 1
    answer_to(endpoint, 0, OK)
    assert result_of(back).body == XML


def test_a_failed_connection_attempt_lets_a_waiting_post_try_at_once() -> None:
    endpoint = Endpoint(hold=True)
    connections, _, _ = client(endpoint)
    first = [post(connections) for _ in range(MAX_CONNECTIONS)]
    waiting = post(connections)
    assert len(endpoint.pending) == MAX_CONNECTIONS
    connecting, _ = endpoint.pending.pop(0)
    connecting.errback(ConnectionRefusedError())
    failure_of(first[0]).trap(ConnectionRefusedError)
    assert len(endpoint.pending) == MAX_CONNECTIONS, "the waiting post is connecting"
    endpoint.finish_connecting()  # the second post's
    endpoint.pending[-1][0].callback(endpoint._made(endpoint.pending.pop()[1]))
    assert endpoint.transports[-1].value().endswith(b"<methodCall/>")
    answer_to(endpoint, len(endpoint.transports) - 1, OK)
    assert result_of(waiting).body == XML


def _self_signed(name: str) -> tuple[bytes, bytes]:
    """A certificate for ``name`` and its key, both PEM."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest_twisted.inlineCallbacks
def test_an_https_master_is_reached_only_with_a_certificate_the_slave_trusts(tmp_path, monkeypatch):
    """Over real TLS through the slave's client: a master whose certificate the slave trusts (here
    through SSL_CERT_FILE) for the name in --master answers; the same master under another name
    (the certificate does not match) is never sent the request."""
    from twisted.internet.endpoints import SSL4ServerEndpoint
    from twisted.internet.ssl import PrivateCertificate

    from goto_tw.remote import RemoteStore

    certificate, key = _self_signed("localhost")
    (tmp_path / "ca.pem").write_bytes(certificate)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    options = PrivateCertificate.loadPEM(certificate + key).options()
    master = ClicksOnly()
    root = xmlrpc.XMLRPC()
    root.putSubHandler("Store", master)
    port = yield SSL4ServerEndpoint(reactor, 0, options, interface="127.0.0.1").listen(Site(root))
    number = port.getHost().port
    parent = MultiService()
    parent.startService()
    from goto_tw.tap import master_client

    http = master_client(reactor, 5.0, parent)
    try:
        trusted = RemoteStore(http, f"https://localhost:{number}/RPC2", reactor, timeout=5.0)
        assert (yield trusted.call("Store.Clicks", {"k": 1})) is True
        assert master.clicks == [{"k": 1}]
        wrong_name = RemoteStore(http, f"https://127.0.0.1:{number}/RPC2", reactor, timeout=5.0)
        [outcome] = yield wrong_name.call("Store.Clicks", {"k": 2}).addBoth(lambda result: [result])
        assert isinstance(outcome, Failure), outcome
        assert outcome.check(MasterUnreachable)
        unreachable: Any = outcome.value
        assert "VerificationError" in str(unreachable.detail)  # service_identity's: the name does not match
        assert master.clicks == [{"k": 1}]
    finally:
        yield parent.stopService()
        yield port.stopListening()


def test_a_head_trickled_a_byte_at_a_time_is_read() -> None:
    """A master (or whatever listens at --master) sending its head one byte per segment gets its
    answer read. (Each byte is looked at once: the copy-and-search-again of each piece cost 1.4 s of
    CPU for a 64 KiB head, now 0.04 s; measured, not asserted here: tests time nothing.)"""
    connections, endpoint, _ = client()
    posted = post(connections)
    protocol = endpoint.protocols[0]
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    for _ in range(MAX_HEAD_BYTES - 100):
        protocol.dataReceived(b"y")
    for byte in b"\r\nContent-Length: %d\r\n\r\n" % len(XML):
        assert not has_fired(posted)
        protocol.dataReceived(bytes([byte]))
    protocol.dataReceived(XML)
    assert result_of(posted).body == XML


@pytest_twisted.inlineCallbacks
def test_the_slaves_connections_have_nagle_off_and_log_nothing(log_events):
    """What MasterEndpointFactory gave Agent's pool, the slave's own client keeps: TCP_NODELAY on
    every connection, and no "Starting factory" / "Stopping factory" lines per connection."""
    from goto_tw.remote import RemoteStore
    from goto_tw.tap import master_client

    master = ClicksOnly()
    root = xmlrpc.XMLRPC()
    root.putSubHandler("Store", master)
    site = Site(root)
    site.noisy = False  # the master's own lines are not the slave's
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    url = f"http://127.0.0.1:{port.getHost().port}/RPC2"
    parent = MultiService()
    parent.startService()
    http: Any = master_client(reactor, 5.0, parent)
    try:
        remote = RemoteStore(http, url, reactor, timeout=5.0)
        assert (yield remote.call("Store.Clicks", {"k": 1})) is True
        [connection] = http._links[url]._idle
        assert connection.transport.getTcpNoDelay()
    finally:
        yield parent.stopService()
        yield port.stopListening()
    assert not [m for m in log_events.messages() if "factory" in m.lower()]
