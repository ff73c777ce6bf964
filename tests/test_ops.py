"""``/_goto/health`` and ``/_goto/metrics``."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import RequestTraversalAgent
from twisted.application.service import MultiService
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from goto_tw.errors import RETRY_AFTER_SECONDS, KeyNotFound, MasterUnreachable, StoreUnavailable
from goto_tw.keys import HEALTH_PROBE_KEY
from goto_tw.metrics import Metrics
from goto_tw.ops import DOWN_MASTER_WAIT
from goto_tw.proxystore import ProxyStore
from goto_tw.remote import GATHER_PAUSE, AgentPoster
from goto_tw.rpc import RPCResource
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from goto_tw.tap import Options, make_root, make_slave_store
from tests.fakes import FakeMaster
from tests.helpers import has_fired
from tests.stub_client import Client
from tests.wire import exchange


def test_master_health() -> None:
    """A master is healthy when it serves: 200 with its role and key count."""
    client = Client(make_root(URLStore({"a": "http://a/"}), "h", Metrics("master")))
    status, headers, body = client.request("GET", "/_goto/health")
    assert status == 200
    assert headers.getRawHeaders("content-type") == ["application/json"]
    assert json.loads(body) == {"status": "ok", "role": "master", "keys": 1}


def slave_client(clock: Clock | None = None) -> tuple[Client, FakeMaster, ProxyStore]:
    master = FakeMaster()
    clock = clock or Clock()
    store = ProxyStore(master, clock)
    return Client(make_root(store, "h", Metrics("slave"), clock=clock)), master, store


def health_when_the_master_fails(
    client: Client, master: FakeMaster, error: Exception
) -> tuple[int, Any, bytes]:
    """A slave's ``/_goto/health`` whose probe of the master fails with ``error``: its answer."""
    response = client.start("GET", "/_goto/health")
    client.stub.flush()
    master.fail(error)
    return client.finish(response)


def test_slave_health_asks_the_master_now() -> None:
    """A slave's health check makes a call to the master; its proper 'unknown key' means healthy."""
    client, master, _ = slave_client()
    response = client.start("GET", "/_goto/health")
    client.stub.flush()
    [(method, key, _)] = master.calls
    assert (method, key) == ("get", HEALTH_PROBE_KEY)
    master.fail(KeyNotFound("no"))
    status, _, body = client.finish(response)
    assert status == 200
    assert json.loads(body) == {"status": "ok", "role": "slave", "keys": 0, "master_reachable": True}


def test_slave_health_is_503_without_master_and_recovers() -> None:
    """A slave whose master does not answer is unhealthy (503, with ``Retry-After`` as every 503);
    the next check sees it recover."""
    client, master, store = slave_client()
    status, headers, body = health_when_the_master_fails(client, master, MasterUnreachable("refused"))
    assert status == 503
    assert headers.getRawHeaders(b"retry-after") == [b"%d" % RETRY_AFTER_SECONDS]
    assert json.loads(body)["master_reachable"] is False
    assert not store.master_reachable
    assert health_when_the_master_fails(client, master, KeyNotFound("no"))[0] == 200
    assert store.master_reachable


def test_a_master_known_down_is_a_fast_503_and_the_probe_goes_on() -> None:
    """A new user's trial (stop 41): with its master stopped (SIGSTOP), every health check of a slave
    took the whole --rpc-timeout (5 s) to say 503, while its misses were 503s at once: a load
    balancer probing with a shorter timeout saw no answer. A master known down gets DOWN_MASTER_WAIT
    (1 s); the call goes on, and a later check that it answers in time is a 200. A master believed
    up is waited for (its own timeout)."""
    clock = Clock()
    client, master, store = slave_client(clock)
    assert health_when_the_master_fails(client, master, MasterUnreachable("refused"))[0] == 503
    assert not store.master_reachable
    response = client.start("GET", "/_goto/health")
    client.stub.flush()
    clock.advance(DOWN_MASTER_WAIT - 0.01)
    client.stub.flush()
    assert not has_fired(response), "waits for the probe a little"
    clock.advance(0.01)
    status, headers, body = client.finish(response)
    assert status == 503 and headers.getRawHeaders(b"retry-after") == [b"%d" % RETRY_AFTER_SECONDS]
    assert json.loads(body)["status"] == "master unreachable"
    assert [call[0] for call in master.calls] == [
        "get"
    ]  # the probe is still out: the next check gets its answer
    master.fail(KeyNotFound("no"))
    assert store.master_reachable
    response = client.start("GET", "/_goto/health")
    client.stub.flush()
    clock.advance(DOWN_MASTER_WAIT * 3)
    client.stub.flush()
    assert not has_fired(response), "a master believed up is waited for"
    master.fail(KeyNotFound("no"))
    assert client.finish(response)[0] == 200


def test_slave_health_says_when_its_master_answers_that_it_cannot_serve() -> None:
    """Review 35: a master whose database is down answers the probe with a 503. The slave is
    unhealthy (it can neither add nor look up), but its master is reachable: the document says so,
    and why, rather than "master unreachable"."""
    client, master, store = slave_client()
    error = StoreUnavailable("the master cannot reach its database now")
    status, _, body = health_when_the_master_fails(client, master, error)
    assert status == 503
    assert json.loads(body) == {
        "status": "master cannot serve",
        "role": "slave",
        "keys": 0,
        "master_reachable": True,
        "master_error": "the master cannot reach its database now",
    }
    assert store.master_reachable, "no outage: misses still go to the master"
    assert health_when_the_master_fails(client, master, KeyNotFound("no"))[0] == 200


def test_a_master_that_could_not_serve_then_went_down_is_said_unreachable() -> None:
    """A hostile review (stop 42): the master answered "cannot serve", then a miss found it
    unreachable; a health check that then timed out waiting for the probe said "master cannot
    serve" and ``master_reachable: true`` (what the master said before it went away)."""
    clock = Clock()
    client, master, store = slave_client(clock)
    error = StoreUnavailable("the master cannot reach its database now")
    assert health_when_the_master_fails(client, master, error)[0] == 503
    store.get("abc").addErrback(lambda _: None)
    master.fail(MasterUnreachable("connection refused"))
    assert not store.master_reachable
    response = client.start("GET", "/_goto/health")
    client.stub.flush()
    clock.advance(DOWN_MASTER_WAIT)
    status, _, body = client.finish(response)
    document = json.loads(body)
    assert status == 503
    assert document["status"] == "master unreachable" and document["master_reachable"] is False
    assert "master_error" not in document


def test_metrics_after_traffic_parse_as_prometheus_text() -> None:
    """After real requests, /_goto/metrics parses with prometheus_client and counts them."""
    metrics = Metrics("master")
    store = URLStore()
    site = GotoSite(make_root(store, "h", metrics), metrics, reactor=Clock())
    for request in (
        b"GET /add?url=https%3A%2F%2Fa.example%2F HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /0 HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /0 HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /zz HTTP/1.1\r\nHost: h\r\n\r\n",
    ):
        exchange(site, request)
    answer = exchange(site, b"GET /_goto/metrics HTTP/1.1\r\nHost: h\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Type: text/plain; version=" in head
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    assert samples[("goto_redirects_total", ())] == 2
    assert samples[("goto_adds_total", ())] == 1
    assert samples[("goto_store_keys", (("role", "master"),))] == 1
    assert (
        samples[("goto_http_requests_total", (("method", "GET"), ("route", "redirect"), ("status", "404")))]
        == 1
    )
    assert ("goto_data_file_write_seconds_count", ()) not in samples, "a store without a data file"
    assert ("goto_rpc_call_seconds_count", (("method", "Store.Get"), ("outcome", "ok"))) not in samples


class RealSlave:
    """A slave store built by the real wiring (``tap.make_slave_store``), talking to a real master's
    /RPC2 in memory (twisted.web client and server, no sockets)."""

    def __init__(self, *args: str) -> None:
        master = URLStore({"0": "http://zero.example/", "1": "http://one.example/"})
        root = Resource()
        root.putChild(b"RPC2", RPCResource(master, None))
        self.agent = RequestTraversalAgent(root)
        self.clock = Clock()
        self.metrics = Metrics("slave")
        options = Options()
        options.parseOptions(["--master", "127.0.0.1:8081", *args])
        self.store = make_slave_store(
            options, self.clock, MultiService(), self.metrics, http=AgentPoster(self.agent)
        )

    def settle(self) -> None:
        """A few turns, each a gather pause apart (the slave's calls to its master wait one out)."""
        for _ in range(6):
            self.clock.advance(GATHER_PAUSE)
            self.agent.flush()

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(self.metrics.render().decode())
            for sample in family.samples
        }


def test_slave_metrics_include_the_cache() -> None:
    """A slave wired by makeService's own function exports its cache hits, misses and evictions."""
    slave = RealSlave("--cache-size", "1")
    for key in ("0", "0", "1"):
        slave.store.get(key)
        slave.settle()
    samples = slave.samples()
    assert samples[("goto_cache_hits_total", ())] == 1
    assert samples[("goto_cache_misses_total", ())] == 2
    assert samples[("goto_cache_evictions_total", ())] == 1


def test_adds_total_counts_adds_answered_with_a_key_and_nothing_else() -> None:
    """``goto_adds_total`` ("added or found") counts every add answered with its key, on the fast
    path, the general path and the API, new or found; the form page (a 200 on ``/add`` too) is not
    an add (review 33: loading the form counted as one)."""
    metrics = Metrics("master")
    store = URLStore()
    site = GotoSite(make_root(store, "h", metrics), metrics, reactor=Clock())
    body = b'{"url":"https://c.example/"}'
    api = (
        b"POST /api/v1/links HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (
            len(body),
            body,
        )
    )
    answers = [
        exchange(site, request)
        for request in (
            b"GET /add HTTP/1.0\r\n\r\n",
            b"GET /add?foo=1 HTTP/1.0\r\n\r\n",
            b"GET /add?url=https://a.example/&key= HTTP/1.0\r\n\r\n",
            b"GET /add?url=https://a.example/ HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /add?url=https://a.example/ HTTP/1.0\r\n\r\n",
            b"GET /add?url=https://b.example/ HTTP/1.0\r\nAccept: text/html\r\n\r\n",
            api,
            api,
        )
    ]
    assert [answer.split(b" ", 2)[1] for answer in answers] == [b"200"] * 6 + [b"201", b"200"]
    assert metrics.adds == 6, "all but the two form pages (an empty key= is an add without a key)"


def test_slave_health_check_is_not_an_rpc_error() -> None:
    """The health check's look-up of a reserved key is answered "unknown key" by a healthy master:
    counted as an ``ok`` call, never as an RPC error."""
    slave = RealSlave()
    client = Client(make_root(slave.store, "h", slave.metrics))
    response = client.start("GET", "/_goto/health")
    slave.settle()
    assert client.finish(response)[0] == 200
    calls = {
        labels: value
        for (name, labels), value in slave.samples().items()
        if name == "goto_rpc_call_seconds_count"
    }
    assert calls == {(("method", "Store.Get"), ("outcome", "ok")): 1}
