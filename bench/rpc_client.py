"""RPC client benchmark: ``twisted.web.xmlrpc.Proxy`` against goto's persistent ``RemoteStore``.

Usage: .venv/bin/python bench/rpc_client.py [--rounds 5] [--seconds 2] [--json out.json] [--python PATH]

(about 70 s with the defaults.)

It starts a real master (``twistd -n goto --rpc``, loopback, a small data file) and calls
``Store.Get`` of an existing key from this process, with each client in turn:

- ``Proxy``: ``twisted.web.xmlrpc.Proxy``, a new TCP connection per call (HTTP/1.0);
- ``treq-pool``: one XML-RPC POST per call through treq over a persistent ``HTTPConnectionPool``
  (HTTP/1.1 keep-alive): the persistent connection alone;
- ``RemoteStore``: ``goto_tw.remote.RemoteStore`` as ``goto_tw.tap.make_slave_store`` builds it
  (over ``goto_tw.masterhttp.MasterConnections``, the slave's own persistent connections; less the
  gather pause of a busy slave, a wait and not a cost), which also sends the calls made in one
  reactor turn as one ``system.multicall``: with 20 in flight, that batching is in the figure;
- ``RemoteStore-Agent``: the same ``RemoteStore`` over a pooled ``Agent`` on the slave's endpoints
  (Nagle off), as slaves were built before ``goto_tw.masterhttp``: the two in the same run measure
  what it saves.

The pools keep at most 16 idle connections (``maxPersistentPerHost``; ``--pool``).

Each is run with 1 call in flight (sequential) and with 20 (concurrent): a warm-up, then rounds of
a fixed duration, the clients taking turns round by round so that machine noise hits them alike.
It prints calls/s (median [min-max]), the CPU each side used (100% = one core busy), the CPU other
programs on the machine used meanwhile (noise), and the ratios to ``Proxy``: of the medians, and the
range of the ratios of rounds run back to back. With 2+ CPUs the master runs on CPU 0 (``taskset``)
and this client on CPU 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
import xmlrpc.client as xmlrpclib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from treq.client import HTTPClient
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from goto_tw.keys import key_for_index
from goto_tw.masterhttp import MasterConnections
from goto_tw.masterlink import MasterEndpointFactory
from goto_tw.persistence import encode_record
from goto_tw.remote import MAX_ANSWER_BYTES, AgentPoster, RemoteStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for ``bench._procs`` when run as a script
from bench._procs import (
    CLIENT_CPU,
    SERVER_CPU,
    Child,
    exit_on_signals,
    format_spread,
    give_servers_pypy_nursery,
    goto_command,
    machine_busy_seconds,
    pinning,
    spread,
    twistd_of,
    without_gather_pause,
)

#: Both twisted.web.xmlrpc's import and every ``Proxy`` call warn that ``HTTPClient`` is deprecated.
warnings.filterwarnings(
    "ignore", message=r"twisted\.web\.http\.HTTPClient was deprecated", category=DeprecationWarning
)

BASELINE = "Proxy"
RECORDS = 1000
KEY_INDEX = 123
CALL_TIMEOUT = 10.0


class RoundResult:
    """One round: calls completed, failures, wall time, and the CPU each side (and others) used."""

    def __init__(
        self,
        calls: int,
        failures: int,
        seconds: float,
        client_cpu: float,
        master_cpu: float,
        other_cpu: float,
    ):
        self.calls = calls
        self.failures = failures
        self.seconds = seconds
        self.client_cpu = client_cpu
        self.master_cpu = master_cpu
        self.other_cpu = other_cpu

    @property
    def rate(self) -> float:
        """Completed calls per second."""
        return self.calls / self.seconds

    def as_json(self) -> dict[str, float]:
        """The round as a JSON object."""
        return {
            "calls": self.calls,
            "failures": self.failures,
            "seconds": self.seconds,
            "calls_per_s": self.rate,
            "client_cpu": self.client_cpu,
            "master_cpu": self.master_cpu,
            "other_cpu": self.other_cpu,
        }


def _cpu_time() -> float:
    times = os.times()
    return times.user + times.system


def run_round(
    reactor: Any, call: Callable[[], Deferred[Any]], in_flight: int, seconds: float, master: Child
) -> Deferred[RoundResult]:
    """Keep ``in_flight`` calls going for ``seconds``; fire with what was done once the last one ends."""
    finished: Deferred[RoundResult] = Deferred()
    counts = {"calls": 0, "failures": 0, "running": 0}
    first_error: list[str] = []
    client_cpu, master_cpu, machine = _cpu_time(), master.cpu_seconds(), machine_busy_seconds()
    start = time.perf_counter()
    deadline = reactor.seconds() + seconds

    def launch() -> None:
        counts["running"] += 1
        call().addCallbacks(succeeded, failed)

    def succeeded(_: object) -> None:
        counts["calls"] += 1
        next_call()

    def failed(failure: Any) -> None:
        counts["failures"] += 1
        if not first_error:
            first_error.append(failure.getErrorMessage())
            print(f"  first failure: {first_error[0]}", file=sys.stderr)
        next_call()

    def next_call() -> None:
        counts["running"] -= 1
        if reactor.seconds() < deadline:
            launch()
        elif counts["running"] == 0:
            elapsed = time.perf_counter() - start
            ours = (_cpu_time() - client_cpu) + (master.cpu_seconds() - master_cpu)
            finished.callback(
                RoundResult(
                    counts["calls"],
                    counts["failures"],
                    elapsed,
                    (_cpu_time() - client_cpu) / elapsed,
                    (master.cpu_seconds() - master_cpu) / elapsed,
                    max(0.0, machine_busy_seconds() - machine - ours) / elapsed,
                )
            )

    for _ in range(in_flight):
        launch()
    return finished


def make_clients(reactor: Any, url: str, key: str, pool_size: int) -> tuple[dict[str, Any], list[Any]]:
    """The clients, as ``name -> call()``; and the pools to close at the end."""
    from twisted.web.xmlrpc import Proxy  # deprecated module: imported once its warning is silenced

    proxy = Proxy(url.encode("ascii"))

    def proxy_get() -> Deferred[Any]:
        called: Deferred[Any] = proxy.callRemote("Store.Get", key)
        return called.addTimeout(CALL_TIMEOUT, reactor)

    def pooled_http() -> tuple[HTTPClient, HTTPConnectionPool]:
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = pool_size
        return HTTPClient(Agent(reactor, pool=pool, connectTimeout=CALL_TIMEOUT)), pool

    plain_http, plain_pool = pooled_http()
    body = xmlrpclib.dumps((key,), "Store.Get").encode("utf-8")
    headers = {b"content-type": [b"text/xml"]}

    def pooled_get() -> Deferred[Any]:
        posted: Deferred[Any] = plain_http.post(url, data=body, headers=Headers(headers))
        posted.addCallback(lambda response: response.content())
        posted.addCallback(lambda answer: xmlrpclib.loads(answer)[0][0])
        return posted.addTimeout(CALL_TIMEOUT, reactor)

    # The slave's client before goto_tw.masterhttp: an Agent over its endpoints (Nagle off), pooled.
    store_pool = HTTPConnectionPool(reactor, persistent=True)
    store_pool.maxPersistentPerHost = pool_size
    agent = Agent.usingEndpointFactory(reactor, MasterEndpointFactory(reactor, CALL_TIMEOUT), pool=store_pool)
    no_pause = without_gather_pause(RemoteStore)
    over_agent = RemoteStore(AgentPoster(agent), url, reactor, timeout=CALL_TIMEOUT, **no_pause)
    connections = MasterConnections(reactor, CALL_TIMEOUT, max_answer_bytes=MAX_ANSWER_BYTES)
    remote = RemoteStore(connections, url, reactor, timeout=CALL_TIMEOUT, **no_pause)
    clients = {
        BASELINE: proxy_get,
        "treq-pool": pooled_get,
        "RemoteStore-Agent": lambda: over_agent.get(key),
        "RemoteStore": lambda: remote.get(key),
    }
    return clients, [plain_pool, store_pool, _Closing(connections)]


class _Closing:
    """``closeCachedConnections`` for the slave's own connections (stopping them closes them)."""

    def __init__(self, connections: MasterConnections) -> None:
        self._connections = connections

    def closeCachedConnections(self) -> Deferred[Any]:
        stopped: Deferred[Any] = self._connections.stopService()
        return stopped


async def measure(reactor: Any, args: argparse.Namespace, port: int, master: Child) -> dict[str, Any]:
    """Check every client gets the right answer, then run the warm-ups and rounds; return the results."""
    url = f"http://127.0.0.1:{port}/RPC2"
    clients, pools = make_clients(reactor, url, key_for_index(KEY_INDEX), args.pool)
    expected = url_for(KEY_INDEX)
    results: dict[str, Any] = {}
    try:
        for name, call in clients.items():
            answer = await call()
            if answer != expected:
                raise SystemExit(f"{name}: Store.Get answered {answer!r}, expected {expected!r}")
        for in_flight in args.in_flight:
            for call in clients.values():
                await run_round(reactor, call, in_flight, args.warmup, master)
            rounds: dict[str, list[RoundResult]] = {name: [] for name in clients}
            for _ in range(args.rounds):
                for name, call in clients.items():
                    rounds[name].append(await run_round(reactor, call, in_flight, args.seconds, master))
            results[str(in_flight)] = rounds
            line = ", ".join(
                f"{name} {statistics.median(r.rate for r in rs):,.0f}/s" for name, rs in rounds.items()
            )
            print(f"  {in_flight} in flight: {line}", file=sys.stderr)
    finally:
        for pool in pools:
            await pool.closeCachedConnections()
    return results


def url_for(index: int) -> str:
    """The URL stored under ``key_for_index(index)`` in the benchmark's data file."""
    return f"https://www.example.com/articles/{index:08d}/a-readable-slug?ref=bench"


def report(
    results: dict[str, dict[str, list[RoundResult]]], args: argparse.Namespace, layout: str
) -> dict[str, Any]:
    """Print the table and return the JSON document."""
    print(
        f"\nStore.Get of an existing key over loopback: {args.rounds} rounds of {args.seconds:g} s per client "
        f"(clients alternating), after a {args.warmup:g} s warm-up; {sys.implementation.name} "
        f"{sys.version.split()[0]} client"
    )
    print(layout)
    print("CPU: 100% = one core busy; 'others' = CPU used by other programs on the machine meanwhile (noise)")
    header = (
        f"{'client':<17} {'in flight':>9}  {'calls/s median [min-max]':<26} {'x Proxy':>7} "
        f"{'[pairs]':<13} {'client':>6} {'master':>6} {'others':>6} {'failed':>6}"
    )
    print(header)
    print("-" * len(header))
    document: dict[str, Any] = {
        "benchmark": "rpc_client",
        "python": sys.version.split()[0],
        "implementation": sys.implementation.name,
        "layout": layout,
        "rounds": args.rounds,
        "round_seconds": args.seconds,
        "warmup_seconds": args.warmup,
        "pool_max_persistent_per_host": args.pool,
        "results": [],
    }
    for in_flight, rounds in results.items():
        baseline = rounds[BASELINE]
        base_median = statistics.median(r.rate for r in baseline)
        for name, rs in rounds.items():
            rates = [r.rate for r in rs]
            ratio = statistics.median(rates) / base_median
            pairs = [mine.rate / base.rate for mine, base in zip(rs, baseline)]
            medians = {
                part: statistics.median(getattr(r, f"{part}_cpu") for r in rs)
                for part in ("client", "master", "other")
            }
            failures = sum(r.failures for r in rs)
            pair_text = "" if name == BASELINE else f"[{min(pairs):.2f}-{max(pairs):.2f}]"
            print(
                f"{name:<17} {in_flight:>9}  {format_spread(rates):<26} {ratio:>6.2f}x {pair_text:<13} "
                f"{medians['client']:>6.0%} {medians['master']:>6.0%} {medians['other']:>6.0%} {failures:>6}"
            )
            document["results"].append(
                {
                    "client": name,
                    "in_flight": int(in_flight),
                    "calls_per_s": spread(rates),
                    "ratio_to_proxy": ratio,
                    "round_pair_ratios": pairs,
                    "cpu_median": medians,
                    "failures": failures,
                    "rounds": [r.as_json() for r in rs],
                }
            )
    return document


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per client and concurrency")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one round")
    parser.add_argument("--warmup", type=float, default=1.0, help="length of the warm-up per client")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 20], help="calls kept in flight")
    parser.add_argument("--pool", type=int, default=16, help="maxPersistentPerHost of the persistent pools")
    parser.add_argument(
        "--python", type=Path, default=Path(sys.executable), help="interpreter whose twistd runs the master"
    )
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args()
    exit_on_signals()
    print(f"master: {args.python}, {give_servers_pypy_nursery()}", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="goto-bench-rpc-") as tmp:
        data_file = Path(tmp) / "store.json"
        with data_file.open("wb") as out:
            for index in range(RECORDS):
                out.write(encode_record(key_for_index(index), url_for(index)))
        command = goto_command(
            twistd_of(args.python), "--rpc", "--file", str(data_file), "--host", "bench.test"
        )
        with Child("master", command, Path(tmp), cpu=SERVER_CPU) as master:
            port = master.wait_port()
            if pinning():
                os.sched_setaffinity(0, {CLIENT_CPU})
                layout = (
                    f"master pinned to CPU {SERVER_CPU} (taskset), "
                    f"client (this process) to CPU {CLIENT_CPU} (sched_setaffinity)"
                )
            else:
                layout = "not pinned (fewer than 2 CPUs or no taskset): master and client share the CPUs"
            print(f"master pid {master.pid} on 127.0.0.1:{port}; {layout}", file=sys.stderr)
            results = run_reactor(lambda reactor: ensureDeferred(measure(reactor, args, port, master)))
    document = report(results, args, layout)
    if args.json:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nwrote {args.json}")


def run_reactor(work: Callable[[Any], Deferred[Any]]) -> Any:
    """Run the global reactor until ``work(reactor)`` fires; return its result or raise its error."""
    from twisted.internet import reactor

    outcome: list[Any] = []

    def start() -> None:
        work(reactor).addBoth(outcome.append).addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    if not outcome:
        raise SystemExit("interrupted")
    if hasattr(outcome[0], "raiseException"):
        outcome[0].raiseException()
    return outcome[0]


if __name__ == "__main__":
    main()
