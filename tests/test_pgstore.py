"""The PostgreSQL store against a real server: schema, adds, group commit, cache, outage."""

from __future__ import annotations

import threading

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, gatherResults

from goto_tw.errors import NO_CUSTOM_KEYS, InvalidKey, InvalidURL, KeyNotFound, StoreUnavailable
from goto_tw.keys import is_reserved
from goto_tw.pgdb import Database, DatabaseBusy, DatabaseDown
from goto_tw.pgschema import LATEST_VERSION, SchemaTooNew, migrate
from goto_tw.pgstore import PGStore, allocate_keys
from tests.pgfixtures import import_psycopg

psycopg = import_psycopg()


def _store(uri: str, **kwargs) -> tuple[PGStore, Database]:
    with psycopg.connect(uri) as connection:
        migrate(connection)
    database = Database(uri, reactor, size=2)
    database.startService()
    return PGStore(database, reactor, **kwargs), database


def test_migrate_is_versioned_and_safe_to_run_concurrently(pg_uri):
    """Two masters migrating at once apply each migration once (advisory lock); again is a no-op."""
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(pg_uri) as connection:
                results.append(migrate(connection))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(results) == [(0, LATEST_VERSION)] + [(LATEST_VERSION, LATEST_VERSION)] * 3
    with psycopg.connect(pg_uri) as connection:
        assert migrate(connection) == (LATEST_VERSION, LATEST_VERSION)
        connection.execute("INSERT INTO goto_schema VALUES (%s)", (LATEST_VERSION + 1,))
        connection.commit()
        with pytest.raises(SchemaTooNew):
            migrate(connection)


def test_allocated_keys_skip_reserved_ones(pg_uri):
    """Keys come from the shared sequence; a reserved path ("add", "api"...) is never handed out."""
    with psycopg.connect(pg_uri) as connection:
        migrate(connection)
        connection.execute("SELECT setval('goto_key_index', 39000)")  # before "add" (39259), "api" (40008)
        keys = allocate_keys(connection, 2000)
    assert len(keys) == len(set(keys)) == 2000
    assert not any(is_reserved(key) for key in keys)
    assert "adc" in keys and "ade" in keys and "apj" in keys and "apk" in keys


@pytest_twisted.inlineCallbacks
def test_put_get_roundtrip_and_same_url_same_key(pg_uri):
    """An add answers a key once committed; the same URL again, through any store, gets the same key."""
    store, database = _store(pg_uri)
    other, other_db = _store(pg_uri)
    try:
        key = yield store.put("https://twisted.org/")
        assert key == "0"
        again = yield other.put("https://twisted.org/")
        assert again == key
        url = yield other.get(key)
        assert url == "https://twisted.org/"
        with pytest.raises(KeyNotFound):
            yield store.get("zzz")
        with pytest.raises(InvalidURL):
            yield store.put("ftp://nope")
    finally:
        yield database.stopService()
        yield other_db.stopService()


@pytest_twisted.inlineCallbacks
def test_an_add_says_whether_it_made_the_link_and_only_new_links_are_counted(pg_uri):
    """Review 35: on PostgreSQL every add was "new" (the API answered 201 for a URL already stored,
    where the README promises 200), and the key count grew by every add, found or made, until the
    next recount. ``add`` tells them apart (through any master), and only made links count."""
    store, database = _store(pg_uri)
    other, other_db = _store(pg_uri)
    try:
        made = yield store.add("https://twisted.org/new")
        assert made == ("0", True) and store.count() == 1
        found = yield other.add("https://twisted.org/new")
        assert found == ("0", False) and other.count() == 0, "found, not made: nothing to count"
        again = yield store.add("https://twisted.org/new")
        assert again == ("0", False) and store.count() == 1
        with pytest.raises(InvalidKey, match=NO_CUSTOM_KEYS):
            yield store.add("https://twisted.org/custom", "my-key")
    finally:
        yield database.stopService()
        yield other_db.stopService()


@pytest_twisted.inlineCallbacks
def test_adds_arriving_together_share_one_commit(pg_uri):
    """Group commit: 200 adds in one reactor turn are written in one transaction (one database call)."""
    store, database = _store(pg_uri)
    calls = []
    original = database.run

    def counting_run(function, **kwargs):
        calls.append(function)
        return original(function, **kwargs)

    database.run = counting_run  # type: ignore[method-assign]
    try:
        keys = yield gatherResults([store.put(f"https://example.com/{i}") for i in range(200)])
        assert len(set(keys)) == 200
        assert len(calls) == 1
        for i in (0, 199):
            url = yield store.get(keys[i])
            assert url == f"https://example.com/{i}"
        assert len(calls) == 1  # answered from the cache
    finally:
        yield database.stopService()


@pytest_twisted.inlineCallbacks
def test_cache_is_bounded_and_misses_coalesce(pg_uri):
    """The LRU cache never holds more than --cache-size pairs; concurrent misses of a key make one call."""
    writer, writer_db = _store(pg_uri)
    store, database = _store(pg_uri, cache_size=3)
    try:
        keys = yield gatherResults([writer.put(f"https://example.com/{i}") for i in range(10)])
        calls = []
        original = database.run

        def counting_run(function, **kwargs):
            calls.append(function)
            return original(function, **kwargs)

        database.run = counting_run  # type: ignore[method-assign]
        urls = yield gatherResults([store.get(keys[0]) for _ in range(50)])
        assert set(urls) == {"https://example.com/0"} and len(calls) == 1
        for key in keys:
            yield store.get(key)
        assert len(store._cache) == 3 and store.evictions == 7
    finally:
        yield database.stopService()
        yield writer_db.stopService()


@pytest_twisted.inlineCallbacks
def test_database_down_fails_fast_serves_cache_and_recovers(pg_cluster, pg_uri, log_events):
    """With the server stopped: cached keys still answer, the rest is 503 at once, logged once; the
    store reconnects by itself when the server is back, and nothing acknowledged is lost."""
    store, database = _store(pg_uri, retry_interval=0.2)
    try:
        key = yield store.put("https://example.com/kept")
        pg_cluster.stop("immediate")
        try:
            url = yield store.get(key)
            assert url == "https://example.com/kept"
            results = yield DeferredList(
                [store.put(f"https://example.com/down{i}") for i in range(20)] + [store.get("abc")],
                consumeErrors=True,
            )
            assert all(not ok and r.check(StoreUnavailable) for ok, r in results)
            assert database.in_use <= 1  # at most the one probe, no pile-up
            results = yield DeferredList([store.get("abd") for _ in range(5)], consumeErrors=True)
            assert all(not ok and r.check(StoreUnavailable) for ok, r in results)
        finally:
            pg_cluster.start()
        errors = [m for m in log_events.messages() if "database is unavailable" in m]
        assert len(errors) == 1
        assert not store.database_reachable
        deadline = reactor.seconds() + 15
        while True:
            ok = yield store.check_database()
            if ok or reactor.seconds() > deadline:
                break
            yield _sleep(0.1)
        assert ok and store.database_reachable
        new_key = yield store.put("https://example.com/after")
        assert new_key != key
        fresh, fresh_db = _store(pg_uri)
        url = yield fresh.get(key)
        assert url == "https://example.com/kept"
        yield fresh_db.stopService()
    finally:
        yield database.stopService()


@pytest_twisted.inlineCallbacks
def test_the_reachable_gauge_follows_the_database(pg_cluster, pg_uri):
    """``goto_database_reachable`` on a master's /_goto/metrics: 1 while PostgreSQL answers, 0 from
    the first call that finds it down, 1 again once a call reaches it."""
    from twisted.application.service import MultiService

    from goto_tw.metrics import Metrics
    from goto_tw.pgmaster import make_pg_store

    metrics = Metrics("master")
    parent = MultiService()
    store = make_pg_store(pg_uri, reactor, parent, metrics, cache_size=10)
    parent.startService()

    def gauge() -> bytes:
        lines = metrics.render().splitlines()
        return next(line for line in lines if line.startswith(b"goto_database_reachable "))

    try:
        yield store.put("https://example.com/up")
        assert gauge() == b"goto_database_reachable 1.0"
        pg_cluster.stop("immediate")
        try:
            missed = yield DeferredList([store.get("abc")], consumeErrors=True)
            assert not missed[0][0] and missed[0][1].check(StoreUnavailable)
            assert gauge() == b"goto_database_reachable 0.0"
        finally:
            pg_cluster.start()
        deadline = reactor.seconds() + 15
        while not (yield store.check_database()) and reactor.seconds() < deadline:
            yield _sleep(0.1)
        assert gauge() == b"goto_database_reachable 1.0"
    finally:
        yield parent.stopService()


def _sleep(seconds: float):
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


@pytest_twisted.inlineCallbacks
def test_the_link_policy_refuses_before_anything_is_written(pg_uri):
    """The operator's policy (blocklist, own host) applies to a PostgreSQL master's adds too."""
    store, database = _store(pg_uri)

    def policy(url: str) -> None:
        if "blocked.example" in url:
            raise InvalidURL("links to blocked.example may not be shortened")

    store.policy = policy
    try:
        with pytest.raises(InvalidURL):
            yield store.put("https://blocked.example/x")
        key = yield store.put("https://fine.example/x")
        assert key == "0", "nothing was written for the refused URL"
    finally:
        yield database.stopService()


def _select_one(connection) -> int:
    return int(connection.execute("SELECT 1").fetchone()[0])


@pytest_twisted.inlineCallbacks
def test_a_frozen_server_fails_calls_at_their_deadline_and_frees_their_threads(pg_cluster, pg_uri):
    """Review 34: with the server frozen (SIGSTOP: its sockets open, nothing answers) a call blocked
    its thread and its caller until the kernel gave up (minutes). Each call now fails with
    DatabaseDown at its deadline, the connection it waited on is shut down, and once the server is
    back every thread of the pool answers again."""
    database = Database(pg_uri, reactor, size=2, call_timeout=1.0)
    database.startService()
    try:
        assert (yield database.run(_select_one, transaction=False)) == 1  # one connection pooled
        with pg_cluster.frozen():
            results = yield DeferredList(
                [database.run(_select_one, transaction=False) for _ in range(3)], consumeErrors=True
            )
        # Two calls in the pool's two threads, one waiting for a thread (busy, or down if it got one).
        assert all(not ok and result.check(DatabaseDown, DatabaseBusy) for ok, result in results)
        assert any("no answer from the database within 1 s" in str(r.value) for _, r in results)
        deadline = reactor.seconds() + 10  # a thread still connecting is let go by libpq's timeout
        while database.in_use and reactor.seconds() < deadline:
            yield _sleep(0.05)
        assert database.in_use == 0
        answers = yield gatherResults([database.run(_select_one, transaction=False) for _ in range(4)])
        assert answers == [1, 1, 1, 1]
    finally:
        yield database.stopService()


class _SocketConnection:
    """A stand-in for a psycopg connection whose "query" waits on a socket nobody writes to."""

    def __init__(self, sock) -> None:
        self._socket = sock
        self.closed = False
        self.broken = False

        class PGConn:
            socket = sock.fileno()

        self.pgconn = PGConn()

    def close(self) -> None:
        self.closed = True
        self._socket.close()


@pytest_twisted.inlineCallbacks
def test_a_call_past_its_deadline_has_its_connection_shut_down_and_its_thread_freed():
    """The deadline does not only answer the caller: the socket the thread blocks on is shut down,
    so the thread is free again at once (not when the server wakes up), and the connection is closed
    instead of going back to the pool."""
    import socket

    ours, theirs = socket.socketpair()
    connection = _SocketConnection(ours)
    finished = threading.Event()
    received: list[bytes] = []

    def wait_for_an_answer(_connection) -> None:
        try:
            received.append(ours.recv(1))  # b"" once shut down; blocks for ever otherwise
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        finally:
            finished.set()

    database = Database("unused", reactor, size=1, connector=lambda uri: connection, call_timeout=0.2)
    database.startService()
    try:
        with pytest.raises(DatabaseDown, match=r"within 0\.2 s"):
            yield database.run(wait_for_an_answer, transaction=False)
        deadline = reactor.seconds() + 10
        while not finished.is_set() and reactor.seconds() < deadline:
            yield _sleep(0.02)
        assert finished.is_set() and received == [b""], "the thread woke: its socket was shut down"
        while not connection.closed and reactor.seconds() < deadline:
            yield _sleep(0.02)
        assert connection.closed and database._idle == []
    finally:
        theirs.close()
        yield database.stopService()


class _FakeConnection:
    closed = False
    broken = False

    def close(self) -> None:
        self.closed = True


@pytest_twisted.inlineCallbacks
def test_calls_waiting_for_a_thread_are_busy_not_down_and_touch_no_connection():
    """Review 34's second read: the deadline counted from the call, so calls queued behind a busy
    but healthy pool failed as DatabaseDown (the master then said the database was gone), and each
    one opened and closed a connection on its way out. A call that waits for a thread longer than
    its deadline is DatabaseBusy now, and its thread skips it."""
    import time as clock

    made: list[_FakeConnection] = []

    def connector(uri: str) -> _FakeConnection:
        made.append(_FakeConnection())
        return made[-1]

    def slow(connection) -> int:
        clock.sleep(0.2)
        return 1

    database = Database("unused", reactor, size=2, connector=connector, call_timeout=1.0)
    database.startService()
    try:
        results = yield DeferredList(
            [database.run(slow, transaction=False) for _ in range(20)], consumeErrors=True
        )
        answered = [result for ok, result in results if ok]
        busy = [result for ok, result in results if not ok and result.check(DatabaseBusy)]
        assert answered and busy and len(answered) + len(busy) == 20, results
        assert "no database connection was free within 1 s" in str(busy[0].value)
        assert len(made) == 2 and not any(connection.closed for connection in made)
        assert database.in_use == 0
    finally:
        yield database.stopService()


@pytest_twisted.inlineCallbacks
def test_stopping_while_a_call_is_stuck_ends_at_its_deadline():
    """Review 34's second read: SIGTERM while a call waited on a frozen server joined the pool's
    threads in the reactor thread, so the deadline that would wake the stuck one never ran and the
    master hung until the server came back. Stopping now waits for the calls (their deadlines bound
    it), then joins threads that are free."""
    import socket

    ours, theirs = socket.socketpair()
    connection = _SocketConnection(ours)
    rescued = threading.Event()

    def rescue() -> None:  # only if stopping hangs: wake the thread so the test can fail, not hang
        rescued.set()
        theirs.close()

    watchdog = threading.Timer(20.0, rescue)
    watchdog.start()

    def wait_for_an_answer(_connection) -> None:
        ours.recv(1)
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    # Two threads: the stuck call's, and one free to close the idle connections on the way out.
    database = Database("unused", reactor, size=2, connector=lambda uri: connection, call_timeout=0.5)
    database.startService()
    try:
        stuck = database.run(wait_for_an_answer, transaction=False)
        yield _sleep(0.1)  # the call is in its thread
        yield database.stopService()
        assert not rescued.is_set(), "stopping waited for the stuck call to be rescued"
        with pytest.raises(DatabaseDown, match=r"within 0\.5 s"):
            yield stuck
        with pytest.raises(DatabaseDown, match="stopped"):
            yield database.run(wait_for_an_answer, transaction=False)
    finally:
        watchdog.cancel()
        theirs.close()
