"""End-to-end: masters on a real PostgreSQL (``--store postgresql://...``), and slaves failing over.

Every process here is a real ``twistd goto``; the database is the session's throwaway cluster
(``pg_cluster``), each test with a database of its own.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

from tests.pgcluster import Cluster

from .harness import GotoProcesses, add_url, get, key_of, poll_until, request

#: Seconds within which a master must notice that the database is back (it probes once a second).
RECOVERY_DEADLINE = 15.0
#: An answer that waited on the database (connect timeout 3 s) would take longer than this.
FAST = 1.0


def _master(start: GotoProcesses, uri: str, name: str = "master"):
    return start("--rpc", "--store", uri, data_file=None, name=name)


def test_master_on_postgresql_keeps_links_across_restarts(goto_processes, pg_uri):
    """Adds are answered once committed; a restarted master (empty cache) redirects them all."""
    master = _master(goto_processes, pg_uri)
    keys = {}
    for i in range(5):
        reply = add_url(master.base_url, f"https://example.com/pg/{i}")
        assert reply.status == 200, reply.text
        keys[i] = key_of(reply.text)
    assert len(set(keys.values())) == 5
    assert add_url(master.base_url, "https://example.com/pg/0").text.strip().endswith("/" + keys[0])
    master = goto_processes.restart(master)
    for i, key in keys.items():
        reply = get(f"{master.base_url}/{key}")
        assert reply.status == 302 and reply.headers["Location"] == f"https://example.com/pg/{i}"
    assert get(f"{master.base_url}/zzzz").status == 404
    health = get(f"{master.base_url}/_goto/health")
    assert health.status == 200
    document = json.loads(health.body)
    assert document["database_reachable"] is True and document["keys"] == 5
    metrics = get(f"{master.base_url}/_goto/metrics").text
    assert "goto_database_call_seconds_bucket" in metrics and "goto_database_pool_in_use" in metrics


def test_two_masters_share_one_database(goto_processes, pg_uri):
    """Keys are unique across masters, the same URL added through both at once has one key, and a key
    added through one redirects through the other."""
    a = _master(goto_processes, pg_uri, "a")
    b = _master(goto_processes, pg_uri, "b")

    def add(args: tuple[str, str]) -> str:
        base, url = args
        reply = add_url(base, url)
        assert reply.status == 200, reply.text
        return key_of(reply.text)

    jobs = [(base, f"https://example.com/both/{i}") for i in range(40) for base in (a.base_url, b.base_url)]
    jobs += [(a.base_url if i % 2 else b.base_url, f"https://example.com/own/{i}") for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(add, jobs))
    by_url: dict[str, set[str]] = {}
    for (_, url), key in zip(jobs, keys):
        by_url.setdefault(url, set()).add(key)
    assert all(len(found) == 1 for found in by_url.values())  # one key per URL
    assert len({next(iter(found)) for found in by_url.values()}) == len(by_url)  # no key twice
    for url, (key,) in list(by_url.items())[:10]:
        for process in (a, b):
            assert get(f"{process.base_url}/{key}").headers["Location"] == url


def test_slave_fails_over_when_a_master_is_killed(goto_processes, pg_uri):
    """A slave of two masters keeps adding and redirecting (uncached keys) with one of them killed."""
    a = _master(goto_processes, pg_uri, "a")
    b = _master(goto_processes, pg_uri, "b")
    writer_keys = [key_of(add_url(b.base_url, f"https://example.com/pre/{i}").text) for i in range(20)]
    slave = goto_processes.start(
        "--master", f"127.0.0.1:{a.port},127.0.0.1:{b.port}", data_file=None, name="slave"
    )
    assert add_url(slave.base_url, "https://example.com/before").status == 200
    a.kill()
    for i in range(20):
        started = time.monotonic()
        reply = add_url(slave.base_url, f"https://example.com/after/{i}")
        assert reply.status == 200, reply.text
        reply = get(f"{slave.base_url}/{writer_keys[i]}")
        assert reply.status == 302 and reply.headers["Location"] == f"https://example.com/pre/{i}"
        assert time.monotonic() - started < FAST * 2


def test_database_outage_cached_redirects_503_fast_and_recovery(goto_processes, pg_cluster: Cluster, pg_uri):
    """With PostgreSQL stopped a master redirects what it cached, answers 503 + Retry-After at once for
    the rest, says so on /_goto/health, logs it once, and reconnects by itself when it is back."""
    master = _master(goto_processes, pg_uri)
    cached = key_of(add_url(master.base_url, "https://example.com/cached").text)
    pg_cluster.stop("immediate")
    try:
        assert get(f"{master.base_url}/{cached}").status == 302
        for i in range(10):
            started = time.monotonic()
            reply = add_url(master.base_url, f"https://example.com/down/{i}")
            assert reply.status == 503 and reply.headers["Retry-After"]
            assert get(f"{master.base_url}/abc{i}").status == 503
            assert time.monotonic() - started < FAST * 2
        assert get(f"{master.base_url}/_goto/health").status == 503
    finally:
        pg_cluster.start()
    assert master.output().count("The database is unavailable") == 1

    def back() -> bool | None:
        reply = add_url(master.base_url, "https://example.com/back")
        return True if reply.status == 200 else None

    poll_until(back, RECOVERY_DEADLINE, "the master to reconnect to the database")
    assert get(f"{master.base_url}/{cached}").headers["Location"] == "https://example.com/cached"
    assert "The database answers again" in master.output()


def test_a_frozen_database_is_a_503_at_the_call_deadline_and_the_master_recovers(
    goto_processes, pg_cluster: Cluster, pg_uri
):
    """Review 34: with PostgreSQL frozen (SIGSTOP: connections open, nothing answers) adds, misses and
    health got no answer at all, nothing was logged, and the master hung on until the kernel gave up.
    Now the add waiting on the database is a 503 at its deadline, logged once; then misses and health
    are 503 at once, cached keys redirect, and the master is back by itself once the server is."""
    from goto_tw.pgdb import CALL_TIMEOUT

    master = _master(goto_processes, pg_uri)
    cached = key_of(add_url(master.base_url, "https://example.com/cached").text)
    with pg_cluster.frozen():
        reply = add_url(master.base_url, "https://example.com/frozen", timeout=CALL_TIMEOUT + 10)
        assert reply.status == 503 and reply.headers["Retry-After"]
        assert get(f"{master.base_url}/{cached}").status == 302
        for path in ("abc", "_goto/health"):
            started = time.monotonic()
            assert get(f"{master.base_url}/{path}").status == 503
            assert time.monotonic() - started < FAST, f"/{path} waited on the frozen database"
    assert master.output().count("The database is unavailable") == 1

    def back() -> bool | None:
        return True if add_url(master.base_url, "https://example.com/back").status == 200 else None

    poll_until(back, RECOVERY_DEADLINE, "the master to use the database again")
    assert "The database answers again" in master.output()


def test_a_database_with_a_schema_it_cannot_prepare_stops_start_up_saying_why(
    goto_processes, pg_cluster: Cluster
):
    """Review 34: a database holding another program's ``goto_links`` (or no right to create it)
    stopped start-up with a 30-line traceback; now with one line saying why."""
    import psycopg

    uri = pg_cluster.new_database()
    with psycopg.connect(uri, autocommit=True) as connection:
        connection.execute("CREATE TABLE goto_links (id serial PRIMARY KEY, target text)")
    master = goto_processes.start("--rpc", "--store", uri, data_file=None, name="master", wait=False)
    assert master.wait_exit() != 0
    output = master.output()
    assert "goto: cannot use the database: its schema could not be prepared" in output
    assert "goto_links" in output and "Traceback" not in output


def test_master_with_an_unusable_database_exits_saying_why(goto_processes, pg_cluster: Cluster):
    """A database that does not exist stops start-up with a clear message; nothing listens."""
    master = goto_processes.start(
        "--rpc", "--store", pg_cluster.uri("no_such_database"), data_file=None, name="master", wait=False
    )
    assert master.wait_exit() != 0
    output = master.output()
    assert "cannot use the database" in output and "no_such_database" in output
    assert "Site starting" not in output


def test_slaves_of_postgresql_masters_show_a_link_without_its_clicks(goto_processes, pg_uri):
    """Review 35: on a slave of PostgreSQL masters the info page and the API answered 503 for every
    link (the masters' "not kept" fault 501 was read as "unavailable"). Now as on the master: the
    link, its clicks "not counted by this server", the API without ``clicks``."""
    a = _master(goto_processes, pg_uri, "a")
    b = _master(goto_processes, pg_uri, "b")
    key = key_of(add_url(a.base_url, "https://example.com/info").text)
    slave = goto_processes.start(
        "--master", f"127.0.0.1:{a.port},127.0.0.1:{b.port}", data_file=None, name="slave"
    )
    for _ in range(2):  # both masters answer, in turn
        page = get(f"{slave.base_url}/{key}+")
        assert page.status == 200, page.text
        assert "https://example.com/info" in page.text and "not counted by this server" in page.text
        api = get(f"{slave.base_url}/api/v1/links/{key}")
        assert api.status == 200, api.text
        document = json.loads(api.body)
        assert document["url"] == "https://example.com/info" and "clicks" not in document


def test_a_slave_is_unhealthy_while_its_masters_database_is_down(goto_processes, pg_cluster: Cluster, pg_uri):
    """Review 35: with its master's database stopped, a slave answered 503 to every add and miss and
    still said "ok" on /_goto/health (its probe never reached the database). It says 503 now, and
    "ok" again once the database is back."""
    master = _master(goto_processes, pg_uri)
    slave = goto_processes.start("--master", f"127.0.0.1:{master.port}", data_file=None, name="slave")
    assert get(f"{slave.base_url}/_goto/health").status == 200
    pg_cluster.stop("immediate")
    try:
        # The master learns it from its next database call (this add's), or its count every 10 s.
        assert add_url(slave.base_url, "https://example.com/while-down").status == 503

        def unhealthy():
            reply = get(f"{slave.base_url}/_goto/health")
            return reply if reply.status == 503 else None

        health = poll_until(unhealthy, RECOVERY_DEADLINE, "the slave's health to say its master cannot serve")
        assert health.headers["Retry-After"]
        document = json.loads(health.body)
        assert document["status"] == "master cannot serve" and document["master_reachable"] is True
        assert "database" in document["master_error"]
    finally:
        pg_cluster.start()
    poll_until(
        lambda: True if get(f"{slave.base_url}/_goto/health").status == 200 else None,
        RECOVERY_DEADLINE,
        "the slave's health to be ok again",
    )


def test_the_api_answers_200_for_a_link_already_in_the_database(goto_processes, pg_uri):
    """Review 35: on PostgreSQL the JSON API answered 201 for a URL already stored (on a master and
    through a slave), where the README promises 200 with the existing link."""
    master = _master(goto_processes, pg_uri)
    slave = goto_processes.start("--master", f"127.0.0.1:{master.port}", data_file=None, name="slave")
    body = json.dumps({"url": "https://example.com/api-twice"}).encode()
    headers = {"Content-Type": "application/json"}
    first = request("POST", f"{master.base_url}/api/v1/links", body=body, headers=headers)
    assert first.status == 201, first.text
    key = json.loads(first.body)["key"]
    for base in (master.base_url, slave.base_url):
        again = request("POST", f"{base}/api/v1/links", body=body, headers=headers)
        assert again.status == 200 and json.loads(again.body)["key"] == key, again.text
    custom = json.dumps({"url": "https://example.com/c", "key": "my-key"}).encode()
    refused = request("POST", f"{master.base_url}/api/v1/links", body=custom, headers=headers)
    assert refused.status == 400 and "takes no custom keys" in refused.text


def test_a_master_restarted_on_a_data_file_of_its_own_takes_no_call_of_the_slave(
    goto_processes, pg_uri, tmp_path
):
    """Review 35: a master was checked once, at first contact. Restarted at its address without its
    --store (a data file of its own, handing out key 0 again), it took a slave's calls unchecked:
    key 0 answered two URLs through one slave. A master whose connection was lost is checked again
    before it takes a call: this one is refused (logged), and every add through the slave gets a
    key that holds its URL in the database."""
    a = _master(goto_processes, pg_uri, "a")
    b = _master(goto_processes, pg_uri, "b")
    slave = goto_processes.start(
        "--master", f"127.0.0.1:{a.port},127.0.0.1:{b.port}", data_file=None, name="slave"
    )
    for i in range(4):  # both masters take calls
        assert add_url(slave.base_url, f"https://example.com/before/{i}").status == 200
    port = b.port
    b.stop()
    file_master = goto_processes.start(
        "--rpc", data_file=tmp_path / "own.json", http=f"tcp:{port}:interface=127.0.0.1", name="b-file"
    )
    for i in range(3):  # keys 0, 1, 2 of its own file: the database has them for other URLs
        assert add_url(file_master.base_url, f"https://example.com/file/{i}").status == 200
    for i in range(12):
        reply = add_url(slave.base_url, f"https://example.com/after/{i}")
        assert reply.status == 200, reply.text
        key = key_of(reply.text)
        assert get(f"{a.base_url}/{key}").headers["Location"] == f"https://example.com/after/{i}"
    assert "takes no calls from this slave" in slave.output() and "data file of its own" in slave.output()
