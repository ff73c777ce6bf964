"""Load benchmark of goto: real ``twistd -n goto`` processes driven by ``wrk`` over loopback.

Usage: .venv/bin/python bench/run.py [--quick] [--json out.json] [--python .venv-pypy/bin/python]

``wrk`` must be installed (Debian: ``apt-get install wrk``). ``--python`` picks the virtualenv whose
``twistd`` (and interpreter, for the reference server) runs the servers; default: this one.

Throughput scenarios (``wrk -t1 -c50``, Lua scripts in ``bench/lua/``, each one a warm-up then
``--rounds`` rounds, all scenarios taking turns round by round so that machine noise hits them alike):

- ``ref``: the reference, a plain ``twisted.web`` server (``bench/reference_server.py``: one leaf
  ``Resource`` redirecting from a dict of the same keys, default ``Site`` logging each request
  through ``twisted.logger`` as it does under twistd), and ``ref-nolog``, the same without its
  access log line. Every redirect figure is also given as a ratio to ``ref`` in the same round.
- ``a``: cached redirect on a slave (every key requested once through the slave beforehand);
- ``b``: redirect on the master; ``b-nolog``: the same with ``--access-log none``;
- ``e``: uncached redirect through a slave with ``--cache-size 1``: nearly every GET is a cache miss
  and a ``Store.Get`` to the master (slave and master both count as the server);
- ``c``: durable add on the master (``POST /add``, every URL new, synced: the default);
  ``c-nofsync``: the same with ``--no-fsync``; ``d``: the same through a slave.

The redirect scenarios cycle through ``--keys`` keys (the master's data file holds exactly those).

With ``--postgres``, the PostgreSQL scenarios (``p-b``, ``p-miss``, ``p-c``, ``p-d2``; see
:func:`postgres_scenarios`) run in the same rounds.

Memory and start-up:

- ``f``: a master with a 1,000,000-record data file: seconds from spawn until it answers
  ``GET /0`` (polled every 10 ms), and its RSS (``VmRSS``) then;
- ``g``: a slave with ``--cache-size 1000000`` filled by requesting distinct keys, each once (wrk,
  in chunks, until all 1M are cached or ``--fill-budget`` seconds run out; the master moves to CPU 1
  for the fill). Filling goes through the RPC, so it is bounded: when the budget ends first, the RSS
  at 1M keys is a linear extrapolation from the RSS measured after each chunk, and the output says so.

Placement: with 2+ CPUs, every server process runs on CPU 0 and wrk on CPU 1 (``taskset``). Each
row also gives the CPU the servers used (100% = one core) and the CPU that other programs on the
machine took meanwhile (noise). Every process started here is stopped at the end, also on error,
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for ``bench.*`` when run as a script
from bench._procs import (
    CLIENT_CPU,
    SERVER_CPU,
    Child,
    ChildError,
    exit_on_signals,
    format_spread,
    free_port,
    goto_command,
    machine_busy_seconds,
    pinned,
    pinning,
    spread,
    twistd_of,
)
from bench.startup import write_data_file

BENCH_DIR = Path(__file__).resolve().parent
LUA_DIR = BENCH_DIR / "lua"
REFERENCE_SERVER = BENCH_DIR / "reference_server.py"

CONNECTIONS = 50
WRK_THREADS = 1
WRK_TIMEOUT = "5s"
BIG_RECORDS = 1_000_000
HOST = "bench.test"
HTTP_TIMEOUT = 10.0


@dataclass
class Settings:
    """How long and how much: the defaults, or ``--quick``."""

    rounds: int
    seconds: float
    warmup: float
    keys: int
    startup_rounds: int
    fill_budget: float
    fill_chunk: float


DEFAULT = Settings(
    rounds=3, seconds=5, warmup=2, keys=10_000, startup_rounds=3, fill_budget=240, fill_chunk=10
)
QUICK = Settings(rounds=1, seconds=2, warmup=1, keys=10_000, startup_rounds=1, fill_budget=20, fill_chunk=5)


class BenchError(RuntimeError):
    """A load run or check did not do what it should; the message says what happened."""


# --- wrk -------------------------------------------------------------------------------------------


def run_wrk(url: str, script: str, args: Sequence[str], seconds: float, rundir: Path) -> dict[str, Any]:
    """Run wrk with one of our Lua scripts; return its JSON summary plus ``rps`` and ``wrk_cpu``.

    wrk's own text output goes to ``rundir/wrk.log`` (appended), for a look when something is odd.
    """
    command = pinned(
        [
            "wrk",
            f"-t{WRK_THREADS}",
            f"-c{CONNECTIONS}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            WRK_TIMEOUT,
            "-s",
            str(LUA_DIR / script),
            url,
            "--",
            *args,
        ],
        CLIENT_CPU,
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(rundir / "wrk.log", "a") as log:
        log.write(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}\n")
    found = re.search(r"^BENCH_JSON (.*)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or found is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    result: dict[str, Any] = json.loads(found.group(1))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["wrk_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result


def fetch(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request to 127.0.0.1:PORT on a fresh connection; redirects are not followed."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def cache_counts(port: int) -> tuple[int, int] | None:
    """A slave's cache (hits, misses) from ``/_goto/metrics``, or ``None`` if it does not say."""
    try:
        status, _, body = fetch(port, "GET", "/_goto/metrics")
    except OSError:
        return None
    text = body.decode("utf-8", "replace")
    hits = re.search(r"^goto_cache_hits(?:_total)?\s+([0-9.e+]+)$", text, re.MULTILINE)
    misses = re.search(r"^goto_cache_misses(?:_total)?\s+([0-9.e+]+)$", text, re.MULTILINE)
    if status != 200 or hits is None or misses is None:
        return None
    return int(float(hits.group(1))), int(float(misses.group(1)))


def held_keys(port: int) -> int | None:
    """How many keys a process says it holds (``/_goto/health``), or ``None`` if it does not say."""
    try:
        status, _, body = fetch(port, "GET", "/_goto/health")
        keys = json.loads(body).get("keys") if status == 200 else None
    except (OSError, ValueError, AttributeError):
        return None
    return keys if isinstance(keys, int) else None


# --- throughput scenarios -----------------------------------------------------------------------


@dataclass
class Scenario:
    """One wrk load: what it hits, with which script, and which processes count as the server."""

    name: str
    title: str
    kind: str  # "redirect" or "add"
    port: int
    script: str
    args: list[str]
    servers: list[Child]
    slave_port: int | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    warmup: dict[str, Any] | None = None

    def run(self, seconds: float, rundir: Path) -> dict[str, Any]:
        """One wrk run, with the CPU the servers, wrk and everything else used meanwhile."""
        cpu_before = [server.cpu_seconds() for server in self.servers]
        machine_before = machine_busy_seconds()
        cache_before = cache_counts(self.slave_port) if self.slave_port else None
        args = [uuid.uuid4().hex[:12]] if self.kind == "add" else self.args
        started = time.perf_counter()
        result = run_wrk(f"http://127.0.0.1:{self.port}", self.script, args, seconds, rundir)
        elapsed = time.perf_counter() - started
        servers_cpu = sum(s.cpu_seconds() - b for s, b in zip(self.servers, cpu_before))
        machine = machine_busy_seconds() - machine_before
        result["server_cpu"] = servers_cpu / elapsed
        result["other_cpu"] = max(0.0, machine - servers_cpu - result["wrk_cpu_s"]) / elapsed
        result["wrk_cpu"] = result["wrk_cpu_s"] / elapsed
        cache_after = cache_counts(self.slave_port) if self.slave_port else None
        if cache_before and cache_after:
            hits, misses = (after - before for after, before in zip(cache_after, cache_before))
            result["cache_hit_ratio"] = hits / (hits + misses) if hits + misses else None
        return result


def check_redirect(port: int, key_index: int, what: str) -> None:
    """``GET /KEY`` must answer 302 to the URL the data file holds."""
    from goto_tw.keys import key_for_index

    status, headers, _ = fetch(port, "GET", f"/{key_for_index(key_index)}")
    if status != 302 or f"/articles/{key_index:08d}/" not in headers.get("location", ""):
        raise BenchError(
            f"{what}: GET /{key_for_index(key_index)} answered {status} {headers.get('location')}"
        )


def check_add(port: int, what: str) -> None:
    """``POST /add`` of a new URL must answer 200 with a short URL."""
    status, _, body = fetch(
        port, "POST", "/add", f"url=http://bench.example/check-{uuid.uuid4().hex}".encode()
    )
    if status != 200 or not body.startswith(f"http://{HOST}/".encode()):
        raise BenchError(f"{what}: POST /add answered {status} {body[:200]!r}")


def fill_cache(
    port: int, first: int, count: int, budget: float, chunk: float, rundir: Path, child: Child | None = None
) -> dict[str, Any]:
    """Request keys ``first .. first+count-1`` through ``port`` once each, in wrk chunks, within ``budget``.

    Returns how many distinct keys were requested, the errors, the time taken, and (with ``child``)
    its RSS after each chunk as ``points``: ``[keys requested, MiB]``.
    """
    deadline = time.monotonic() + budget
    started = time.perf_counter()
    done = 0
    errors = {"status": 0, "socket": 0}
    points: list[list[float]] = []
    if child is not None:
        points.append([0, child.rss_mib()])
    while done < count:
        left = deadline - time.monotonic()
        if left < 1:
            break
        result = run_wrk(
            f"http://127.0.0.1:{port}",
            "redirect.lua",
            [str(count - done), str(first + done), "once"],
            min(chunk, left),
            rundir,
        )
        done += int(result["issued"])
        errors["status"] += result["errors"]["status"]
        errors["socket"] += sum(v for k, v in result["errors"].items() if k != "status")
        if child is not None:
            time.sleep(0.2)  # let the last answers of the chunk arrive and be cached
            points.append([done, child.rss_mib()])
        print(f"    {done:,} of {count:,} keys requested", file=sys.stderr)
    return {"requested": done, "errors": errors, "seconds": time.perf_counter() - started, "points": points}


def throughput(
    settings: Settings, python: Path, tmp: Path, stack: contextlib.ExitStack, postgres: bool = False
) -> list[Scenario]:
    """Start the servers of scenarios a-e and the references (and with ``postgres`` those of p-*),
    then run every scenario's rounds."""
    twistd = twistd_of(python)
    data = tmp / "store.json"
    write_data_file(data, settings.keys)
    quiet_data = tmp / "store-nolog.json"  # a master locks its data file: the second master gets a copy
    shutil.copyfile(data, quiet_data)
    keys = [str(settings.keys)]

    def start(name: str, command: list[str]) -> tuple[Child, int]:
        child = stack.enter_context(Child(name, command, tmp / name, cpu=SERVER_CPU))
        return child, child.wait_port()

    print("starting servers...", file=sys.stderr)
    master, master_port = start("master", goto_command(twistd, "--rpc", "--file", str(data), "--host", HOST))
    master_args = ["--master", f"127.0.0.1:{master_port}", "--host", HOST]
    slave, slave_port = start("slave", goto_command(twistd, *master_args))
    small, small_port = start("slave-cache1", goto_command(twistd, *master_args, "--cache-size", "1"))
    quiet, quiet_port = start(
        "master-nolog",
        goto_command(twistd, "--file", str(quiet_data), "--host", HOST, "--access-log", "none"),
    )
    unsynced_data = tmp / "store-nofsync.json"
    shutil.copyfile(data, unsynced_data)
    unsynced, unsynced_port = start(
        "master-nofsync", goto_command(twistd, "--file", str(unsynced_data), "--host", HOST, "--no-fsync")
    )
    ref, ref_port = start("reference", [str(python), str(REFERENCE_SERVER), "--data", str(data)])
    ref_quiet, ref_quiet_port = start(
        "reference-nolog", [str(python), str(REFERENCE_SERVER), "--data", str(data), "--no-access-log"]
    )
    for port, what in [
        (master_port, "master"),
        (slave_port, "slave"),
        (small_port, "slave --cache-size 1"),
        (quiet_port, "master --access-log none"),
        (ref_port, "reference"),
        (ref_quiet_port, "reference, no access log"),
    ]:
        check_redirect(port, settings.keys - 1, what)
    check_add(master_port, "master")
    check_add(unsynced_port, "master --no-fsync")
    check_add(slave_port, "slave")

    print(f"warming the slave's cache with all {settings.keys:,} keys...", file=sys.stderr)
    fill = fill_cache(slave_port, 0, settings.keys, 120, 5, tmp)
    if fill["requested"] < settings.keys or fill["errors"]["status"] or fill["errors"]["socket"]:
        raise BenchError(f"warming the slave's cache failed: {fill}")

    scenarios = [
        Scenario(
            "ref", "reference: twisted.web Site + dict", "redirect", ref_port, "redirect.lua", keys, [ref]
        ),
        Scenario(
            "ref-nolog",
            "reference, no access log",
            "redirect",
            ref_quiet_port,
            "redirect.lua",
            keys,
            [ref_quiet],
        ),
        Scenario("b", "b) redirect, master", "redirect", master_port, "redirect.lua", keys, [master]),
        Scenario(
            "b-nolog",
            "b) redirect, master --access-log none",
            "redirect",
            quiet_port,
            "redirect.lua",
            keys,
            [quiet],
        ),
        Scenario(
            "a",
            "a) cached redirect, slave",
            "redirect",
            slave_port,
            "redirect.lua",
            keys,
            [slave, master],
            slave_port,
        ),
        Scenario(
            "e",
            "e) uncached redirect, slave (RPC)",
            "redirect",
            small_port,
            "redirect.lua",
            keys,
            [small, master],
            small_port,
        ),
        Scenario("c", "c) durable add, master", "add", master_port, "add.lua", [], [master]),
        Scenario("c-nofsync", "c) add, master --no-fsync", "add", unsynced_port, "add.lua", [], [unsynced]),
        Scenario("d", "d) add through slave", "add", slave_port, "add.lua", [], [slave, master], slave_port),
    ]
    if postgres:
        scenarios += postgres_scenarios(settings, data, tmp, stack, start, twistd)
    for scenario in scenarios:
        print(f"warm-up: {scenario.title}", file=sys.stderr)
        scenario.warmup = scenario.run(settings.warmup, tmp)
    for number in range(settings.rounds):
        for scenario in scenarios:
            result = scenario.run(settings.seconds, tmp)
            scenario.rounds.append(result)
            print(
                f"round {number + 1}/{settings.rounds}: {scenario.title}: {result['rps']:,.0f} req/s",
                file=sys.stderr,
            )
    return scenarios


def postgres_scenarios(
    settings: Settings,
    data: Path,
    tmp: Path,
    stack: contextlib.ExitStack,
    start: Any,
    twistd: Path,
) -> list[Scenario]:
    """``--postgres``: masters on a throwaway PostgreSQL (fsync on) holding the same keys (imported
    with goto-admin), measured in the same rounds as the file store. The PostgreSQL server's own CPU
    is not in the "server" column (it shows under "others"): compare req/s and latency.

    - ``p-b``: redirect answered from a PostgreSQL master's cache (warmed with every key);
    - ``p-miss``: cold misses: a master with ``--cache-size 1``, nearly every GET a database read;
    - ``p-c``: durable add on a PostgreSQL master (group commit);
    - ``p-d2``: durable add through a slave of two PostgreSQL masters (both commit).
    """
    from goto_tw.admin import import_file
    from tests.pgcluster import Cluster, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise BenchError("--postgres: no PostgreSQL server programs (apt-get install postgresql)")
    cluster = Cluster(bin_dir, fsync=True)
    stack.callback(cluster.destroy)
    cluster.start()
    uri = cluster.new_database("bench")
    copy = tmp / "store-pg.json"  # the file master holds the lock on its own data file
    shutil.copyfile(data, copy)
    import_file(str(copy), uri)
    pg, pg_port = start("pg-master", goto_command(twistd, "--rpc", "--store", uri, "--host", HOST))
    pg2, pg2_port = start("pg-master2", goto_command(twistd, "--rpc", "--store", uri, "--host", HOST))
    cold, cold_port = start(
        "pg-master-cache1", goto_command(twistd, "--store", uri, "--host", HOST, "--cache-size", "1")
    )
    both = f"127.0.0.1:{pg_port},127.0.0.1:{pg2_port}"
    pg_slave, pg_slave_port = start("pg-slave", goto_command(twistd, "--master", both, "--host", HOST))
    for port, what in [(pg_port, "PostgreSQL master"), (cold_port, "PostgreSQL master, cache 1")]:
        check_redirect(port, settings.keys - 1, what)
    check_add(pg_port, "PostgreSQL master")
    check_add(pg_slave_port, "slave of two PostgreSQL masters")
    fill = fill_cache(pg_port, 0, settings.keys, 120, 5, tmp)
    if fill["requested"] < settings.keys or fill["errors"]["status"] or fill["errors"]["socket"]:
        raise BenchError(f"warming the PostgreSQL master's cache failed: {fill}")
    keys = [str(settings.keys)]
    return [
        Scenario(
            "p-b",
            "p-b) redirect, PG master (cached)",
            "redirect",
            pg_port,
            "redirect.lua",
            keys,
            [pg],
            pg_port,
        ),
        Scenario(
            "p-miss",
            "p-miss) redirect, PG master, cold",
            "redirect",
            cold_port,
            "redirect.lua",
            keys,
            [cold],
            cold_port,
        ),
        Scenario("p-c", "p-c) durable add, PG master", "add", pg_port, "add.lua", [], [pg]),
        Scenario(
            "p-d2",
            "p-d2) add, slave of 2 PG masters",
            "add",
            pg_slave_port,
            "add.lua",
            [],
            [pg_slave, pg, pg2],
            pg_slave_port,
        ),
    ]


# --- start-up and memory ----------------------------------------------------------------------------


def wait_answering(child: Child, port: int, timeout: float) -> float:
    """Poll ``GET /0`` every 10 ms until it answers 302; return seconds since the child was spawned."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _, _ = fetch(port, "GET", "/0")
            if status == 302:
                return time.perf_counter() - child.spawned_at
            raise BenchError(f"{child.name}: GET /0 answered {status}")
        except (ConnectionError, http.client.HTTPException, OSError):
            pass
        if time.monotonic() > deadline:
            raise ChildError(f"{child.name} did not answer within {timeout:g}s:\n{child.output()[-2000:]}")
        time.sleep(0.01)


def startup(
    settings: Settings, python: Path, tmp: Path, stack: contextlib.ExitStack
) -> tuple[dict[str, Any], Child, int]:
    """Scenario f; returns its results and the last master and its port, left running (``--rpc``) for g."""
    big = tmp / "big.json"
    print(f"writing a {BIG_RECORDS:,}-record data file...", file=sys.stderr)
    started = time.perf_counter()
    write_data_file(big, BIG_RECORDS)
    write_seconds = time.perf_counter() - started
    rounds = []
    master: Child | None = None
    port = 0
    for number in range(settings.startup_rounds):
        if master is not None:
            master.stop()
        port = free_port()
        command = goto_command(
            twistd_of(python),
            "--rpc",
            "--file",
            str(big),
            "--host",
            HOST,
            http=f"tcp:{port}:interface=127.0.0.1",
        )
        master = stack.enter_context(Child(f"big-master-{number + 1}", command, tmp / "big", cpu=SERVER_CPU))
        seconds = wait_answering(master, port, 180)
        rss = master.rss_mib()
        rounds.append({"seconds_to_answer": seconds, "rss_mib": rss})
        print(f"start-up {number + 1}: answering after {seconds:.2f} s, RSS {rss:.0f} MiB", file=sys.stderr)
    assert master is not None
    result = {
        "records": BIG_RECORDS,
        "data_file_mib": big.stat().st_size / 2**20,
        "write_seconds": write_seconds,
        "rounds": rounds,
        "seconds_to_answer": spread([r["seconds_to_answer"] for r in rounds]),
        "rss_mib": spread([r["rss_mib"] for r in rounds]),
    }
    return result, master, port


def slave_memory(
    settings: Settings, python: Path, tmp: Path, stack: contextlib.ExitStack, master: Child, master_port: int
) -> dict[str, Any]:
    """Scenario g: a slave's RSS as its cache fills with distinct keys, toward 1,000,000.

    Filling is not a throughput figure, so the master moves to wrk's CPU (wrk needs little here) and
    the slave has CPU 0 to itself: that nearly doubles the fill rate.
    """
    if pinning():
        subprocess.run(
            ["taskset", "-a", "-p", "-c", str(CLIENT_CPU), str(master.pid)], capture_output=True, check=True
        )
    command = goto_command(
        twistd_of(python),
        "--master",
        f"127.0.0.1:{master_port}",
        "--host",
        HOST,
        "--cache-size",
        str(BIG_RECORDS),
    )
    slave = stack.enter_context(Child("big-slave", command, tmp / "big-slave", cpu=SERVER_CPU))
    port = slave.wait_port()
    check_redirect(port, BIG_RECORDS - 1, "slave of the 1M master")  # also opens its RPC connection
    print(
        f"filling the slave's cache: 1M distinct keys, or as many as {settings.fill_budget:g} s allow...",
        file=sys.stderr,
    )
    fill = fill_cache(port, 0, BIG_RECORDS, settings.fill_budget, settings.fill_chunk, tmp, slave)
    points = fill["points"]
    keys_done = fill["requested"]
    cached = held_keys(port)
    rss_now = slave.rss_mib()
    result: dict[str, Any] = {
        "cache_size": BIG_RECORDS,
        "keys_requested": keys_done,
        "keys_cached_per_health": cached,
        "fill_seconds": fill["seconds"],
        "fill_rate_per_s": keys_done / fill["seconds"] if fill["seconds"] else 0,
        "fill_errors": fill["errors"],
        "rss_points": points,
        "rss_empty_mib": points[0][1],
        "rss_filled_mib": rss_now,
        "placement": (
            f"slave on CPU {SERVER_CPU}, master moved to CPU {CLIENT_CPU} beside wrk for the fill"
            if pinning()
            else "not pinned"
        ),
    }
    if keys_done >= BIG_RECORDS:
        result["rss_at_1m_mib"] = rss_now
        result["how"] = "measured: all 1,000,000 keys requested once through the slave"
    else:
        slope, intercept = linear_fit([p[0] for p in points], [p[1] for p in points])
        result["mib_per_100k_keys"] = slope * 100_000
        result["rss_at_1m_mib"] = intercept + slope * BIG_RECORDS
        result["how"] = (
            f"EXTRAPOLATED linearly to 1,000,000 keys from {keys_done:,} keys ({len(points)} RSS readings, "
            f"least squares; --fill-budget {BIG_RECORDS / max(result['fill_rate_per_s'], 1) * 1.2:.0f} would "
            "measure it). Linear is a floor: the cache's hash tables grow in steps (each doubling of the key "
            "count adds one), and a step between the last reading and 1M keys is not in it"
        )
    return result


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope and intercept of ``ys`` against ``xs`` (at least two distinct ``xs``)."""
    if len(set(xs)) < 2:
        return 0.0, ys[-1]
    slope, intercept = statistics.linear_regression(xs, ys)
    return slope, intercept


# --- report -----------------------------------------------------------------------------------------


def summarize(scenarios: list[Scenario]) -> list[dict[str, Any]]:
    """Per scenario: medians and ranges over the rounds, ratios to the reference round by round."""
    reference = next(s for s in scenarios if s.name == "ref")
    rows = []
    for scenario in scenarios:
        rounds = scenario.rounds
        rps = [r["rps"] for r in rounds]
        row: dict[str, Any] = {
            "name": scenario.name,
            "title": scenario.title,
            "kind": scenario.kind,
            "requests_per_s": spread(rps),
            "p50_ms": statistics.median(r["latency_us"]["p50"] / 1000 for r in rounds),
            "p99_ms": statistics.median(r["latency_us"]["p99"] / 1000 for r in rounds),
            "server_cpu": statistics.median(r["server_cpu"] for r in rounds),
            "wrk_cpu": statistics.median(r["wrk_cpu"] for r in rounds),
            "other_cpu": statistics.median(r["other_cpu"] for r in rounds),
            "non_2xx_3xx": sum(r["errors"]["status"] for r in rounds),
            "timeouts": sum(r["errors"]["timeout"] for r in rounds),
            "socket_errors": sum(r["errors"][k] for r in rounds for k in ("connect", "read", "write")),
            "rounds": rounds,
            "warmup": scenario.warmup,
        }
        hit_ratios = [r["cache_hit_ratio"] for r in rounds if r.get("cache_hit_ratio") is not None]
        if hit_ratios:
            row["cache_hit_ratio"] = statistics.median(hit_ratios)
        if scenario.kind == "redirect":
            ratios = [mine["rps"] / ref["rps"] for mine, ref in zip(rounds, reference.rounds)]
            row["ratio_to_reference"] = spread(ratios)
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """The throughput table, and notes on errors and cache hit ratios."""
    columns = (
        f"{'scenario':<38} {'req/s median [min-max]':<25} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'x ref [rounds]':<17} {'server':>6} {'others':>6} {'errors':>6}"
    )
    print(columns)
    print("-" * len(columns))
    notes = []
    for row in rows:
        rps = [r["rps"] for r in row["rounds"]]
        ratio = row.get("ratio_to_reference")
        if ratio is None:
            ratio_text = "-"
        elif len(rps) == 1:
            ratio_text = f"{ratio['median']:.2f}"
        else:
            ratio_text = f"{ratio['median']:.2f} [{ratio['min']:.2f}-{ratio['max']:.2f}]"
        errors = row["non_2xx_3xx"] + row["timeouts"] + row["socket_errors"]
        print(
            f"{row['title']:<38} {format_spread(rps):<25} {row['p50_ms']:>7.2f} {row['p99_ms']:>7.1f} "
            f"{ratio_text:<17} {row['server_cpu']:>6.0%} {row['other_cpu']:>6.0%} {errors:>6}"
        )
        if errors:
            notes.append(
                f"{row['title']}: {row['non_2xx_3xx']} non-2xx/3xx responses, {row['timeouts']} timeouts, "
                f"{row['socket_errors']} socket errors"
            )
        if "cache_hit_ratio" in row:
            notes.append(
                f"{row['title']}: slave cache hit ratio {row['cache_hit_ratio']:.1%} (from /_goto/metrics)"
            )
    print(
        "server = CPU of the server processes (slave + master for a, d, e; 100% = one core); "
        "others = CPU other programs took meanwhile (noise); errors = non-2xx/3xx + timeouts + socket errors"
    )
    for note in notes:
        print(f"  {note}")


def print_report(
    rows: list[dict[str, Any]], start: dict[str, Any] | None, memory: dict[str, Any] | None, header: str
) -> None:
    """Print the tables and the notes on errors."""
    print()
    print(header)
    if rows:
        print_table(rows)
    if start:
        print(
            f"\nf) start-up, {start['records']:,}-record data file ({start['data_file_mib']:.0f} MiB): "
            f"answering after {format_spread([r['seconds_to_answer'] for r in start['rounds']], '{:.2f}')} s "
            f"from spawn, RSS then {format_spread([r['rss_mib'] for r in start['rounds']], '{:.0f}')} MiB "
            f"({len(start['rounds'])} starts)"
        )
    if memory:
        print(
            f"g) slave holding 1,000,000 cached keys: RSS {memory['rss_at_1m_mib']:.0f} MiB "
            f"(empty: {memory['rss_empty_mib']:.0f} MiB; {memory['rss_filled_mib']:.0f} MiB after "
            f"{memory['keys_requested']:,} keys, health says {memory['keys_cached_per_health']} cached)"
        )
        print(textwrap.fill(memory["how"], 110, initial_indent="   ", subsequent_indent="   "))
        print(
            f"   filled at {memory['fill_rate_per_s']:,.0f} keys/s through the RPC ({memory['placement']}); "
            f"errors during the fill: {memory['fill_errors']}"
        )


def server_interpreter(python: Path) -> str:
    """``implementation version, Twisted version`` of the interpreter that runs the servers."""
    probe = "import sys, twisted; print(sys.implementation.name, sys.version.split()[0], 'Twisted', twisted.__version__)"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.strip()


@contextlib.contextmanager
def workspace(keep: Path | None) -> Iterator[tuple[Path, contextlib.ExitStack]]:
    """A work directory and an exit stack whose children are stopped before the directory is removed.

    The directory is ``keep`` (created, and left behind) if given, else a temporary one.
    """
    with contextlib.ExitStack() as outer:
        if keep is None:
            tmp = Path(outer.enter_context(tempfile.TemporaryDirectory(prefix="goto-bench-")))
        else:
            keep.mkdir(parents=True, exist_ok=True)
            tmp = keep.resolve()
        with contextlib.ExitStack() as stack:
            yield tmp, stack


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s, short fills (under 2 minutes)")
    parser.add_argument("--json", type=Path, help="also write every figure here as JSON")
    parser.add_argument(
        "--python",
        type=Path,
        default=Path(sys.executable),
        help="interpreter of the venv whose twistd runs the servers",
    )
    parser.add_argument("--rounds", type=int, help="measured rounds per scenario")
    parser.add_argument("--seconds", type=float, help="length of one round")
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="work in DIR and keep it (server logs, wrk output, data files)",
    )
    parser.add_argument(
        "--fill-budget",
        type=float,
        help="g: seconds allowed to fill the slave's cache (default 240, quick 20)",
    )
    parser.add_argument("--skip-throughput", action="store_true", help="skip the wrk scenarios (a-e)")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="also the PostgreSQL scenarios p-* (a throwaway cluster; needs Debian's postgresql)",
    )
    parser.add_argument("--skip-memory", action="store_true", help="skip f and g (start-up and memory)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench/run.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    if not twistd_of(args.python).exists():
        print(f"no twistd beside {args.python}", file=sys.stderr)
        return 2
    exit_on_signals()
    settings = dataclasses.replace(
        QUICK if args.quick else DEFAULT,
        **{
            name: value
            for name, value in [
                ("rounds", args.rounds),
                ("seconds", args.seconds),
                ("fill_budget", args.fill_budget),
            ]
            if value
        },
    )

    if pinning():
        layout = f"servers pinned to CPU {SERVER_CPU}, wrk to CPU {CLIENT_CPU} (taskset)"
    else:
        layout = "not pinned (fewer than 2 CPUs or no taskset): servers and wrk share the CPUs"
    interpreter = server_interpreter(args.python)
    header = (
        f"servers: {interpreter} ({args.python}); {layout}; {os.cpu_count()} CPUs\n"
        f"wrk -t{WRK_THREADS} -c{CONNECTIONS} --timeout {WRK_TIMEOUT}; {settings.rounds} round(s) of "
        f"{settings.seconds:g} s per scenario after a {settings.warmup:g} s warm-up, scenarios taking turns; "
        f"{settings.keys:,} keys"
    )
    print(header, file=sys.stderr)
    started = time.perf_counter()
    start_result = memory = None
    with workspace(args.keep) as (tmp, stack):
        rows = (
            []
            if args.skip_throughput
            else summarize(throughput(settings, args.python, tmp, stack, postgres=args.postgres))
        )
        stack.close()  # stop the throughput servers before the memory scenarios
        if not args.skip_memory:
            start_result, big_master, big_port = startup(settings, args.python, tmp, stack)
            memory = slave_memory(settings, args.python, tmp, stack, big_master, big_port)
    print_report(rows, start_result, memory, header)
    print(f"\n(whole run: {time.perf_counter() - started:.0f} s)")
    if args.json:
        document = {
            "benchmark": "run",
            "servers": interpreter,
            "python": str(args.python),
            "layout": layout,
            "cpus": os.cpu_count(),
            "settings": settings.__dict__,
            "wrk": {"threads": WRK_THREADS, "connections": CONNECTIONS, "timeout": WRK_TIMEOUT},
            "scenarios": rows,
            "startup": start_result,
            "slave_memory": memory,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # every child has been stopped on the way out
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
