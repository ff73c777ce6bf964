"""End-to-end tests of a master and its slaves: real ``twistd goto`` processes on 127.0.0.1.

A master (``--rpc``) holds the store and its data file; slaves (``--master 127.0.0.1:PORT``) serve
the same front end from a cache and forward misses and adds to the master over XML-RPC at /RPC2.

Tests that leave every process running share one module-wide cluster (a master and slaves A and
B): each uses URLs of its own and checks the data file only for what it added. Tests that stop a
master or need other options start their own processes through the ``goto_processes`` fixture.
"""

from __future__ import annotations

import signal
import urllib.parse
import xmlrpc.client as xmlrpclib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from goto_tw.keys import key_for_index

from .harness import (
    A_HOST,
    B_HOST,
    HTTP_TIMEOUT,
    MASTER_HOST,
    ClosedThenSilentServer,
    Cluster,
    GotoProcess,
    GotoProcesses,
    Reply,
    add_url,
    get,
    key_of,
    poll_until,
    read_records,
    rpc_proxy,
    running_cluster,
    start_cluster,
)

#: ``--rpc-timeout`` of the slaves in the outage tests: far longer than a client here waits for any
#: answer (``HTTP_TIMEOUT``), so a request that waited for the master's timeout fails the test by
#: itself, whatever the speed of the machine; no latency is measured.
RPC_TIMEOUT = 30.0
assert RPC_TIMEOUT > 2 * HTTP_TIMEOUT
#: Seconds a slave may take to notice that its master is back (it probes about once a second).
RECOVERY_DEADLINE = 10.0
#: Seconds for an unknown key to become visible once added (the negative cache keeps it 1 s).
NEGATIVE_CACHE_DEADLINE = 5.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One healthy cluster for the tests that keep it healthy; stopped (and checked) at the end."""
    with running_cluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


def shorten(process: GotoProcess, long_url: str, host: str) -> str:
    """Add ``long_url`` through ``process``; assert 200 ``text/plain`` ``http://HOST/KEY``; return KEY."""
    reply = add_url(process.base_url, long_url)
    assert reply.status == 200, (process.name, reply, process.output())
    assert reply.headers.get_content_type() == "text/plain", reply.headers
    return key_of(reply.text, host)


def assert_redirects(process: GotoProcess, key: str, long_url: str) -> None:
    """Assert that ``GET /KEY`` on ``process`` answers 302 with exactly ``long_url`` as ``Location``."""
    reply = get(f"{process.base_url}/{key}")
    assert (reply.status, reply.headers["Location"]) == (302, long_url), (process.name, key, reply)


def assert_unavailable(reply: Reply, what: str) -> None:
    """Assert a 503 that tells the client when to retry (``Retry-After``: a positive number of seconds)."""
    assert reply.status == 503, (what, reply)
    retry_after = reply.headers["Retry-After"]
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) > 0, (what, reply)


def records_for(data_file: Path, urls: set[str]) -> list[tuple[str, str]]:
    """The data file's records of ``urls``, duplicates included."""
    return [(key, url) for key, url in read_records(data_file) if url in urls]


# --- a healthy cluster --------------------------------------------------------------------------


def test_add_through_one_slave_redirects_everywhere(cluster: Cluster) -> None:
    """A pair added through slave A redirects, with the exact URL as ``Location``, through A, B and the master.

    B has never seen the key, so it must ask the master; the master wrote the pair to its data
    file once. The URL has a query, an escaped space and a fragment, which must survive the RPC.
    """
    long_url = "https://example.org/a/b?q=1&r=a%20b#frag"
    key = shorten(cluster.a, long_url, A_HOST)

    for process in (cluster.b, cluster.master, cluster.a):
        assert_redirects(process, key, long_url)
    assert records_for(cluster.data_file, {long_url}) == [(key, long_url)]


def test_each_process_writes_its_own_host_and_the_same_key(cluster: Cluster) -> None:
    """The same URL added through A, B and the master gets one key; each answers with its own ``--host``.

    A answers ``http://a.test/KEY``, B ``http://b.test/KEY``, the master ``http://master.test/KEY``
    (``key_of`` checks the whole short URL), and the data file holds the URL once.
    """
    long_url = "http://example.com/hosts"
    key_a = shorten(cluster.a, long_url, A_HOST)
    key_b = shorten(cluster.b, long_url, B_HOST)
    key_master = shorten(cluster.master, long_url, MASTER_HOST)

    assert key_a == key_b == key_master
    assert records_for(cluster.data_file, {long_url}) == [(key_a, long_url)]


def test_concurrent_adds_of_one_url_through_both_slaves_get_one_key(cluster: Cluster) -> None:
    """Adds of one new URL arriving together through A and B all answer the same key, stored once.

    Twelve clients add it at the same moment, alternating between the slaves: adds are idempotent
    however they race on the master.
    """
    long_url = "http://example.com/race"
    slaves = [(cluster.a, A_HOST), (cluster.b, B_HOST)] * 6
    with ThreadPoolExecutor(max_workers=len(slaves)) as pool:
        keys = list(pool.map(lambda slave: shorten(slave[0], long_url, slave[1]), slaves))

    assert len(set(keys)) == 1, keys
    assert records_for(cluster.data_file, {long_url}) == [(keys[0], long_url)]


def test_unknown_key_is_404_on_a_slave(cluster: Cluster) -> None:
    """A key the master never stored is 404 on both slaves, asked twice (the second from the negative cache).

    So is a path that cannot be a key (``/_x``); neither changes the data file.
    """
    before = cluster.data_file.read_bytes()
    unknown = "zzzzzz"
    assert all(key != unknown for key, _ in read_records(cluster.data_file))
    for slave in (cluster.a, cluster.b):
        for path in (unknown, unknown, "_x"):
            reply = get(f"{slave.base_url}/{path}")
            assert reply.status == 404, (slave.name, path, reply)
            assert "Location" not in reply.headers
    assert cluster.data_file.read_bytes() == before


def test_bad_url_is_400_on_a_slave_and_never_reaches_the_master(cluster: Cluster) -> None:
    """A refused URL is 400 ``text/plain`` on a slave and the master stores nothing.

    Afterwards the slave still adds a good URL.
    """
    before = cluster.data_file.read_bytes()
    for bad_url in (
        "ftp://example.com/",
        "not a url",
        "http://",
        "http://exa mple.com/",
        "javascript:alert(1)",
    ):
        for method in ("GET", "POST"):
            reply = add_url(cluster.a.base_url, bad_url, method=method)
            assert reply.status == 400, (bad_url, method, reply)
            assert reply.headers.get_content_type() == "text/plain", reply.headers
    assert cluster.data_file.read_bytes() == before

    good_url = "http://example.com/after-bad-urls"
    key = shorten(cluster.a, good_url, A_HOST)
    assert records_for(cluster.data_file, {good_url}) == [(key, good_url)]


def test_key_added_on_the_master_reaches_a_slave_once_the_negative_cache_expires(cluster: Cluster) -> None:
    """A slave that looked a key up as unknown sees it once added on the master, within a few seconds.

    The slave asks for the key the master will hand out next (keys are base 62 of the count of
    stored pairs): 404. The key is then added directly on the master. A slave remembers "unknown"
    for 1 s only, so polling the slave must soon get the 302 (5 s deadline, no fixed sleep).
    Slave B, which never asked, redirects at once.
    """
    next_key = key_for_index(len(read_records(cluster.data_file)))
    long_url = "http://example.com/added-on-the-master"
    assert get(f"{cluster.a.base_url}/{next_key}").status == 404

    assert shorten(cluster.master, long_url, MASTER_HOST) == next_key
    assert_redirects(cluster.b, next_key, long_url)

    def visible_on_a() -> Reply | None:
        reply = get(f"{cluster.a.base_url}/{next_key}")
        return reply if reply.status != 404 else None

    reply = poll_until(visible_on_a, NEGATIVE_CACHE_DEADLINE, f"key {next_key} to be visible on slave A")
    assert (reply.status, reply.headers["Location"]) == (302, long_url), reply


def test_master_rpc_is_standard_xml_rpc(cluster: Cluster) -> None:
    """The standard library's ``ServerProxy`` speaks to the master's /RPC2 with no adapter.

    ``Store.Get`` of an unknown key is ``Fault`` 404; ``Store.Put`` returns a key that ``Store.Get``
    maps back to the URL and that redirects through a slave; a second ``Put`` of the URL returns
    the same key; a refused URL is ``Fault`` 400.
    """
    long_url = "https://example.net/rpc?x=1"
    with rpc_proxy(cluster.master.base_url) as proxy:
        with pytest.raises(xmlrpclib.Fault) as unknown:
            proxy.Store.Get("zzzzzz")
        assert unknown.value.faultCode == 404

        key = proxy.Store.Put(long_url)
        assert isinstance(key, str)
        assert proxy.Store.Get(key) == long_url
        assert proxy.Store.Put(long_url) == key

        with pytest.raises(xmlrpclib.Fault) as refused:
            proxy.Store.Put("ftp://example.com/")
        assert refused.value.faultCode == 400

    assert_redirects(cluster.b, key, long_url)
    assert records_for(cluster.data_file, {long_url, "ftp://example.com/"}) == [(key, long_url)]


# --- the master goes away and comes back ---------------------------------------------------------


def test_slaves_ride_out_a_master_restart(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """While the master is stopped, slaves serve what they cached and fail the rest fast; then recover.

    Before: pairs are added through A and through B, and B looks some of A's keys up (so caches
    differ). The master is stopped with SIGTERM (a clean exit). Meanwhile each slave still
    redirects every key it cached, and answers 503 with ``Retry-After`` for a stored key it has not
    cached, for an unknown key (it cannot know) and for adds, each within the client's 5 s although
    the slaves would wait 30 s for an answer (``--rpc-timeout 30``): no request waits for a timeout.
    The master restarts on the same data file and port; without being
    touched, each slave accepts an uncached add again within 10 s. Then every key acknowledged
    before redirects through both slaves and the master, re-adding its URL through the other slave
    answers the same key, and the data file holds each key and each URL exactly once: exactly the
    acknowledged pairs, nothing that was refused during the outage.
    """
    data_file = tmp_path / "data.json"
    cluster = start_cluster(goto_processes, data_file, "--rpc-timeout", str(RPC_TIMEOUT))
    via_a = {f"http://example.com/via-a/{i}": "" for i in range(6)}
    via_b = {f"http://example.com/via-b/{i}": "" for i in range(6)}
    for long_url in via_a:
        via_a[long_url] = shorten(cluster.a, long_url, A_HOST)
    for long_url in via_b:
        via_b[long_url] = shorten(cluster.b, long_url, B_HOST)
    url_of = {key: long_url for long_url, key in {**via_a, **via_b}.items()}
    a_keys = list(via_a.values())
    looked_up_on_b, uncached_on_b = a_keys[:3], a_keys[3:]
    for key in looked_up_on_b:
        assert_redirects(cluster.b, key, url_of[key])
    cached = {cluster.a: list(via_a.values()), cluster.b: list(via_b.values()) + looked_up_on_b}

    assert cluster.master.stop() == -signal.SIGTERM, cluster.master.output()
    assert not cluster.master.stop_timed_out

    uncached = {cluster.a: list(via_b.values()), cluster.b: uncached_on_b}
    for slave, host in ((cluster.a, A_HOST), (cluster.b, B_HOST)):
        # The first failure is a refused connection: no timeout either.
        first = get(f"{slave.base_url}/{uncached[slave][0]}")
        assert_unavailable(first, f"{slave.name}: first uncached look-up after the master stopped")

        for key in cached[slave]:
            assert_redirects(slave, key, url_of[key])
        add = "/add?" + urllib.parse.urlencode({"url": f"http://example.com/outage/{host}"})
        targets = {"unknown key": "/zzzzzz", "add": add, "add again": add}
        targets.update({f"stored, uncached key {key}": f"/{key}" for key in uncached[slave]})
        for what, target in targets.items():
            assert_unavailable(get(slave.base_url + target), f"{slave.name}: {what}")
        for key in cached[slave]:
            assert_redirects(slave, key, url_of[key])

    master = goto_processes.restart(cluster.master, keep_port=True)
    assert master.port == cluster.master.port

    recovered = {}
    for slave, host in ((cluster.a, A_HOST), (cluster.b, B_HOST)):
        long_url = f"http://example.com/after-restart/{host}"

        def add_accepted(slave: GotoProcess = slave, long_url: str = long_url) -> Reply | None:
            reply = add_url(slave.base_url, long_url)
            return reply if reply.status == 200 else None

        reply = poll_until(
            add_accepted, RECOVERY_DEADLINE, f"{slave.name} to add through the restarted master"
        )
        recovered[key_of(reply.text, host)] = long_url

    for key, long_url in url_of.items():
        for process in (cluster.a, cluster.b, master):
            assert_redirects(process, key, long_url)
    for long_url, key in via_a.items():
        assert shorten(cluster.b, long_url, B_HOST) == key
    for long_url, key in via_b.items():
        assert shorten(cluster.a, long_url, A_HOST) == key

    for slave in (cluster.a, cluster.b):
        assert "_HTTP11ClientFactory" not in slave.output(), "no Starting/Stopping factory lines per probe"
        assert sum("master is unreachable" in line for line in slave.output().splitlines()) == 1

    records = read_records(data_file)
    assert [key for key, count in Counter(key for key, _ in records).items() if count > 1] == []
    assert [url for url, count in Counter(url for _, url in records).items() if count > 1] == []
    assert dict(records) == {**url_of, **recovered}


def test_a_silent_master_costs_one_probe_and_no_request_waits(goto_processes: GotoProcesses) -> None:
    """Once a slave knows its master is down, a master that accepts connections and never answers
    holds one probe at a time, and every other request is answered at once.

    The master's port first refuses connections (a stopped master): the first uncached look-up is a
    503 and the slave marks the master down. Then the port accepts connections and never answers,
    and the slave waits 30 s for an answer (``--rpc-timeout 30``). One call becomes the slave's
    probe of the master and waits: a request's, or the change-feed poller's check of its master
    (once a second while the master is down). While it waits, and while the master is still silent, 4 clients
    make 40 more requests (uncached keys, adds): each is a 503 with ``Retry-After`` within the
    client's 5 s, so none waited for the master; and the master saw exactly one connection: the probe.
    A request for the probe's own key is such a 503 too (it once joined the probe and waited with it).
    """
    with ClosedThenSilentServer() as master:
        slave = goto_processes(
            "--master",
            f"127.0.0.1:{master.port}",
            "--rpc-timeout",
            str(RPC_TIMEOUT),
            data_file=None,
            host=A_HOST,
            name="slave",
        )
        assert_unavailable(get(f"{slave.base_url}/{key_for_index(1000)}"), "look-up while the master refuses")
        master.silence()

        asked: list[str] = []

        def probe_once_allowed() -> list[Reply]:
            # Ask until the master sees a probe (about 1 s after the failure): a request let through
            # waits until the master's connection is closed at the end. Its keys are far from the
            # clients' below (which must not be the probe's by chance).
            replies: list[Reply] = []
            while master.connections == 0:
                asked.append(key_for_index(1_000_000 + len(replies)))
                replies.append(get(f"{slave.base_url}/{asked[-1]}", timeout=3 * RPC_TIMEOUT))
            return replies

        with ThreadPoolExecutor(max_workers=5) as pool:
            prober = pool.submit(probe_once_allowed)
            poll_until(lambda: True if master.connections else None, 10, "the slave to probe the master")
            # The probe's own key is no exception: a request for it is answered at once too.
            assert_unavailable(
                get(f"{slave.base_url}/{asked[-1]}"), "the probe's own key while the master is silent"
            )

            def client(number: int) -> list[Reply]:
                replies = []
                for request in range(10):
                    if request % 2:
                        replies.append(
                            get(f"{slave.base_url}/{key_for_index(3000 + number * 100 + request)}")
                        )
                    else:
                        replies.append(
                            add_url(slave.base_url, f"http://example.com/silent/{number}/{request}")
                        )
                return replies

            answers = [reply for replies in pool.map(client, range(4)) for reply in replies]
            assert master.connections == 1, "only the probe reached the master"
            for number, reply in enumerate(answers):
                assert_unavailable(reply, f"request {number} while the master is silent")
            master.close()  # the probe's connection drops: it is answered too
            assert all(reply.status == 503 for reply in prober.result())
    assert len(answers) == 40


# --- the shared secret ---------------------------------------------------------------------------


def start_secret_cluster(
    start: GotoProcesses, tmp_path: Path
) -> tuple[GotoProcess, GotoProcess, GotoProcess]:
    """A master requiring a secret, slave A sending it, slave B sending none; returns (master, a, b)."""
    secret_file = tmp_path / "rpc-secret"
    secret_file.write_text("correct-horse-battery-staple\n")
    secret = ("--rpc-secret-file", str(secret_file))
    master = start("--rpc", *secret, data_file=tmp_path / "data.json", host=MASTER_HOST, name="master")
    master_option = ("--master", f"127.0.0.1:{master.port}")
    a = start(*master_option, *secret, data_file=None, host=A_HOST, name="slave-a", wait=False)
    b = start(*master_option, data_file=None, host=B_HOST, name="slave-b", wait=False)
    a.wait_ready()
    b.wait_ready()
    return master, a, b


def test_rpc_secret_admits_only_slaves_that_send_it(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """With ``--rpc-secret-file`` on the master, a slave with the secret works; one without it gets nothing.

    Slave A (with the secret) adds and redirects. Slave B (without it) answers 503 with
    ``Retry-After`` for an add and for A's key: the fault is the operator's, so its clients are
    neither told they are forbidden nor shown a redirect. The master stores nothing from B. A plain
    XML-RPC client without the secret gets ``Fault`` 401 and stores nothing either.
    """
    secret_file = tmp_path / "rpc-secret"
    secret_file.write_text("correct-horse-battery-staple\n")
    secret = ("--rpc-secret-file", str(secret_file))
    data_file = tmp_path / "data.json"
    master = goto_processes("--rpc", *secret, data_file=data_file, host=MASTER_HOST, name="master")
    master_option = ("--master", f"127.0.0.1:{master.port}")
    a = goto_processes(*master_option, *secret, data_file=None, host=A_HOST, name="slave-a", wait=False)
    b = goto_processes(*master_option, data_file=None, host=B_HOST, name="slave-b", wait=False)
    a.wait_ready()
    b.wait_ready()

    long_url = "http://example.com/with-secret"
    key = shorten(a, long_url, A_HOST)
    assert_redirects(a, key, long_url)

    assert_unavailable(add_url(b.base_url, "http://example.com/without-secret"), "add without the secret")
    reply = get(f"{b.base_url}/{key}")
    assert_unavailable(reply, "look-up without the secret")
    assert "Location" not in reply.headers

    with rpc_proxy(master.base_url) as proxy:
        with pytest.raises(xmlrpclib.Fault) as refused:
            proxy.Store.Put("http://example.com/rpc-without-secret")
        assert refused.value.faultCode == 401

    assert read_records(data_file) == [(key, long_url)]
