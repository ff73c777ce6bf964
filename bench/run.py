"""Load benchmark of goto: real ``twistd -n goto`` processes driven by ``wrk`` over loopback.

Usage: .venv/bin/python bench/run.py [--quick] [--json out.json] [--python .venv-pypy/bin/python]
       [--go /path/to/go-goto/goto] [--only a,m,e]

``wrk`` must be installed (Debian: ``apt-get install wrk``). ``--python`` picks the virtualenv whose
``twistd`` (and interpreter, for the reference server) runs the servers; default: this one. Another
checkout's venv runs that checkout's servers (the header says where their ``goto_tw`` is): options
its goto lacks are not passed, and the scenarios needing them are left out with a note.

Throughput scenarios (``wrk -t1 -c50``, Lua scripts in ``bench/lua/``, each one a warm-up then
``--rounds`` rounds, all scenarios taking turns round by round so that machine noise hits them alike):

- ``ref``: the reference, a plain ``twisted.web`` server (``bench/reference_server.py``: one leaf
  ``Resource`` redirecting from a dict of the same keys, default ``Site`` logging each request
  through ``twisted.logger`` as it does under twistd), and ``ref-nolog``, the same without its
  access log line. Every redirect figure is also given as a ratio to ``ref`` in the same round.
- ``floor`` and ``floor-add``: the floor, a ``Protocol`` on goto-tw's reactor and poll step that answers
  every request with a fixed answer sent as goto-tw's fast path sends one (``bench/floor_server.py``),
  driven as ``b`` and ``c`` are: what a redirect and an add cost before any of goto-tw's own work.
- ``a``: cached redirect on a slave (every key requested once through the slave beforehand);
- ``b``: redirect on the master; ``b-nolog``: the same with ``--access-log none``;
- ``e``: uncached redirect through a slave with ``--cache-size 1``: nearly every GET is a cache miss
  and a ``Store.Get`` to the master (slave and master both count as the server); ``e1``: the same
  with one client (``wrk -c1``), which asks again only once answered: what a slave that held calls
  back to batch them would slow down (a pause per request);
- ``c``: durable add on the master (``POST /add``, every URL new, synced: the default);
  ``c-nofsync``: the same with ``--no-fsync``; ``d``: the same through a slave; ``d-nofsync``: through
  a slave of the ``--no-fsync`` master (the guarantee Go's master gives: ``go-d``'s peer too).

- ``m``: the slave of ``a``: of every 100 requests 98 cached keys, 1 miss (a key the master holds and
  the slave was never asked for, each used once over the run) and 1 unknown key (404; not counted as
  an error), given as a ratio to ``a`` in the same rounds (``bench/lua/mixed.lua``).

The redirect scenarios cycle through ``--keys`` keys; the master's data file holds those and, after
them, the mixed scenario's misses. Every row gives p50 and p99 latency.

With ``--go BINARY`` (Go's goto v5, built as bench/README.md says), Go runs in the same rounds:
``go-b`` (master), ``go-a`` (cached, slave), ``go-m`` (the mix), ``go-e`` (uncached through a slave:
a fresh key per request, Go's slave cache has no bound to set), ``go-c`` (add on the master, not
synced), ``go-d`` (add through a slave), and a second table gives goto-tw/Go per scenario with both
p99s. Go's master gets its keys from a gob data file written before it starts (``bench/go_goto.py``).
``--only a,m,...`` runs just those scenarios (and those their ratios need).

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
import math
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
    give_servers_pypy_nursery,
    goto_command,
    goto_options,
    machine_busy_seconds,
    pinned,
    pinning,
    spread,
    twistd_of,
)
from bench.go_goto import go_version, start_go, write_go_data_file
from bench.startup import bench_url, write_data_file
from goto_tw.keys import key_for_index

BENCH_DIR = Path(__file__).resolve().parent
LUA_DIR = BENCH_DIR / "lua"
REFERENCE_SERVER = BENCH_DIR / "reference_server.py"
FLOOR_SERVER = BENCH_DIR / "floor_server.py"

CONNECTIONS = 50
WRK_THREADS = 1
WRK_TIMEOUT = "5s"
BIG_RECORDS = 1_000_000
HOST = "bench.test"
HTTP_TIMEOUT = 10.0
#: Unknown keys of the mixed scenario: base 62 of this and up (7 characters), far beyond any counter.
UNKNOWN_BASE = 62**6
#: Fresh keys set aside per second of mixed load: 1% misses at up to 100k requests/s.
MIXED_MISSES_PER_SECOND = 1_000
#: Fresh keys set aside per second of go-e (each key once): Go did 16-20k/s here, twice that; a run
#: that runs out says so (stale).
GO_UNCACHED_PER_SECOND = 40_000


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


@dataclass
class FreshKeys:
    """Keys ``first .. first+count-1``, each to be requested at most once over the whole run.

    A miss is a miss only the first time a slave is asked for the key: every wrk run starts where the
    last one stopped (``used``), and a run that needed more than were left says so (``stale``).
    """

    first: int
    count: int
    used: int = 0

    @property
    def left(self) -> int:
        """How many have not been requested yet."""
        return self.count - self.used


def fresh_keys_needed(settings: Settings, per_second: int) -> int:
    """Keys for one scenario's warm-up and rounds at ``per_second`` fresh keys a second."""
    return math.ceil(per_second * (settings.warmup + settings.rounds * settings.seconds))


# --- wrk -------------------------------------------------------------------------------------------


def run_wrk(
    url: str, script: str, args: Sequence[str], seconds: float, rundir: Path, connections: int = CONNECTIONS
) -> dict[str, Any]:
    """Run wrk with one of our Lua scripts (``connections`` clients, each waiting for its answer before
    it asks again); return its JSON summary plus ``rps`` and ``wrk_cpu``.

    wrk's own text output goes to ``rundir/wrk.log`` (appended), for a look when something is odd.
    """
    command = pinned(
        [
            "wrk",
            f"-t{WRK_THREADS}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            WRK_TIMEOUT,
            "--latency",
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


def metrics_text(port: int) -> str | None:
    """A process's ``/_goto/metrics`` (Prometheus text), or ``None`` if it cannot be had."""
    try:
        status, _, body = fetch(port, "GET", "/_goto/metrics")
    except OSError:
        return None
    return body.decode("utf-8", "replace") if status == 200 else None


def cache_counts(port: int) -> tuple[int, int] | None:
    """A slave's cache (hits, misses) from ``/_goto/metrics``, or ``None`` if it does not say."""
    text = metrics_text(port)
    if text is None:
        return None
    hits = re.search(r"^goto_cache_hits(?:_total)?\s+([0-9.e+]+)$", text, re.MULTILINE)
    misses = re.search(r"^goto_cache_misses(?:_total)?\s+([0-9.e+]+)$", text, re.MULTILINE)
    if hits is None or misses is None:
        return None
    return int(float(hits.group(1))), int(float(misses.group(1)))


def rpc_requests(port: int) -> int | None:
    """How many ``POST /RPC2`` a master has answered (``/_goto/metrics``), or ``None`` if it does not
    say: each is one batch (or one call) of its slaves. Its labels in any order; another method
    (a ``GET /RPC2``, 405) is no batch."""
    text = metrics_text(port)
    if text is None:
        return None
    counts = re.findall(
        r'^goto_http_requests_total\{(?=[^}]*\broute="rpc")(?=[^}]*\bmethod="POST")[^}]*\}\s+([0-9.e+]+)$',
        text,
        re.M,
    )
    return int(sum(float(count) for count in counts)) if counts else None


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
    kind: str  # "redirect", "add", "mixed" (mixed.lua) or "fresh" (redirect.lua, each key once)
    port: int
    script: str
    args: list[str]
    servers: list[Child]
    slave_port: int | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    warmup: dict[str, Any] | None = None
    #: "mixed": the misses' keys; "fresh": the keys requested once each.
    fresh: FreshKeys | None = None
    #: "mixed": the scenario whose all-hits rate, round by round, the mix is compared with.
    all_hits: str | None = None
    #: The Go scenario this one is compared with (``--go``), and whether that is the pair the issue's
    #: table names (an add with ``--no-fsync`` is compared too, but it is not goto-tw's default).
    go_peer: str | None = None
    unknowns: int = 0
    #: wrk's connections: clients, each waiting for its answer before it asks again.
    connections: int = CONNECTIONS
    #: A slave scenario's master: its ``POST /RPC2`` a second are noted (the slaves' batches).
    master_port: int | None = None

    def wrk_args(self) -> list[str]:
        """The Lua script's arguments for the next run."""
        if self.kind == "add":
            return [uuid.uuid4().hex[:12]]
        if self.kind == "mixed":
            assert self.fresh is not None
            misses_from = self.fresh.first + self.fresh.used
            return [*self.args, str(misses_from), str(self.fresh.left), str(UNKNOWN_BASE + self.unknowns)]
        if self.kind == "fresh":
            assert self.fresh is not None
            return [str(self.fresh.left), str(self.fresh.first + self.fresh.used), "once"]
        return self.args

    def account(self, result: dict[str, Any]) -> None:
        """Move past the fresh keys and unknown keys a run used; note how many were not fresh."""
        if self.fresh is None:
            return
        if self.kind == "mixed":
            self.fresh.used += int(result["misses"])
            self.unknowns += int(result["unknowns"])
        else:
            left = self.fresh.left
            self.fresh.used += int(result["issued"])
            # once the range is used up, redirect.lua repeats its first key: a cached hit, not a miss
            result["stale"] = max(0, int(result["requests"]) - left) if result["issued"] >= left else 0

    def run(self, seconds: float, rundir: Path) -> dict[str, Any]:
        """One wrk run, with the CPU the servers, wrk and everything else used meanwhile."""
        cpu_before = [server.cpu_seconds() for server in self.servers]
        machine_before = machine_busy_seconds()
        cache_before = cache_counts(self.slave_port) if self.slave_port else None
        rpc_before = rpc_requests(self.master_port) if self.master_port else None
        args = self.wrk_args()
        started = time.perf_counter()
        result = run_wrk(
            f"http://127.0.0.1:{self.port}", self.script, args, seconds, rundir, self.connections
        )
        elapsed = time.perf_counter() - started
        self.account(result)
        cpu_used = [s.cpu_seconds() - b for s, b in zip(self.servers, cpu_before)]
        servers_cpu = sum(cpu_used)
        machine = machine_busy_seconds() - machine_before
        requests = int(result["requests"])
        result["cpu_us_per_request"] = (
            {s.name: 1e6 * used / requests for s, used in zip(self.servers, cpu_used)} if requests else {}
        )
        result["server_cpu"] = servers_cpu / elapsed
        result["other_cpu"] = max(0.0, machine - servers_cpu - result["wrk_cpu_s"]) / elapsed
        result["wrk_cpu"] = result["wrk_cpu_s"] / elapsed
        cache_after = cache_counts(self.slave_port) if self.slave_port else None
        if cache_before and cache_after:
            hits, misses = (after - before for after, before in zip(cache_after, cache_before))
            result["cache_hit_ratio"] = hits / (hits + misses) if hits + misses else None
        rpc_after = rpc_requests(self.master_port) if self.master_port else None
        if rpc_before is not None and rpc_after is not None:
            result["rpc_requests_per_second"] = (rpc_after - rpc_before) / elapsed
        return result


def check_redirect(port: int, key_index: int, what: str) -> None:
    """``GET /KEY`` must answer 302 to the URL the data file holds."""
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
    settings: Settings,
    python: Path,
    tmp: Path,
    stack: contextlib.ExitStack,
    postgres: bool = False,
    go: Path | None = None,
    only: set[str] | None = None,
) -> tuple[list[Scenario], list[str]]:
    """Start the servers of scenarios a-e and m and the references (with ``postgres`` those of p-*,
    with ``go`` Go's goto for go-*), then run every scenario's rounds (``only``: just those, with the
    scenarios their ratios need). Returns the scenarios and notes on what was left out and why."""
    twistd = twistd_of(python)
    supported = goto_options(twistd)
    notes: list[str] = []
    mixed_misses = fresh_keys_needed(settings, MIXED_MISSES_PER_SECOND)
    data = tmp / "store.json"
    # keys 0 .. keys-1 are the ones the scenarios cycle through (and the slave caches); the mixed
    # scenario's misses are the next ones, held by the master and never asked of the slave before
    write_data_file(data, settings.keys + mixed_misses)
    keys = [str(settings.keys)]

    def start(name: str, command: list[str]) -> tuple[Child, int]:
        child = stack.enter_context(Child(name, command, tmp / name, cpu=SERVER_CPU))
        return child, child.wait_port()

    def copy_of_data(name: str) -> str:
        """A master locks its data file: every other master gets a copy."""
        copy = tmp / name
        shutil.copyfile(data, copy)
        return str(copy)

    print("starting servers...", file=sys.stderr)
    master, master_port = start("master", goto_command(twistd, "--rpc", "--file", str(data), "--host", HOST))
    master_args = ["--master", f"127.0.0.1:{master_port}", "--host", HOST]
    slave, slave_port = start("slave", goto_command(twistd, *master_args))
    small, small_port = start("slave-cache1", goto_command(twistd, *master_args, "--cache-size", "1"))
    ref, ref_port = start("reference", [str(python), str(REFERENCE_SERVER), "--data", str(data)])
    ref_quiet, ref_quiet_port = start(
        "reference-nolog", [str(python), str(REFERENCE_SERVER), "--data", str(data), "--no-access-log"]
    )
    floor, floor_port = start("floor", [str(python), str(FLOOR_SERVER)])
    checks = [
        (master_port, "master"),
        (slave_port, "slave"),
        (small_port, "slave --cache-size 1"),
        (ref_port, "reference"),
        (ref_quiet_port, "reference, no access log"),
    ]
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
        Scenario(
            "floor",
            "floor: fixed answer (a redirect)",
            "redirect",
            floor_port,
            "redirect.lua",
            keys,
            [floor],
            go_peer="go-b",
        ),
        Scenario(
            "floor-add",
            "floor: fixed answer (an add)",
            "add",
            floor_port,
            "add.lua",
            [],
            [floor],
            go_peer="go-c",
        ),
        Scenario(
            "b",
            "b) redirect, master",
            "redirect",
            master_port,
            "redirect.lua",
            keys,
            [master],
            go_peer="go-b",
        ),
    ]
    if "access-log" in supported:
        quiet, quiet_port = start(
            "master-nolog",
            goto_command(
                twistd, "--file", copy_of_data("store-nolog.json"), "--host", HOST, "--access-log", "none"
            ),
        )
        checks.append((quiet_port, "master --access-log none"))
        scenarios.append(
            Scenario(
                "b-nolog",
                "b) redirect, master --access-log none",
                "redirect",
                quiet_port,
                "redirect.lua",
                keys,
                [quiet],
                go_peer="go-b",
            )
        )
    else:
        notes.append("b-nolog left out: these servers have no --access-log option")
    scenarios += [
        Scenario(
            "a",
            "a) cached redirect, slave",
            "redirect",
            slave_port,
            "redirect.lua",
            keys,
            [slave, master],
            slave_port,
            go_peer="go-a",
            master_port=master_port,
        ),
        Scenario(
            "m",
            "m) slave: hits + 1% misses + 1% unknown",
            "mixed",
            slave_port,
            "mixed.lua",
            keys,
            [slave, master],
            slave_port,
            fresh=FreshKeys(settings.keys, mixed_misses),
            all_hits="a",
            go_peer="go-m",
            master_port=master_port,
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
            go_peer="go-e",
            master_port=master_port,
        ),
        Scenario(
            "e1",
            "e1) uncached redirect, slave, one client (wrk -c1)",
            "redirect",
            small_port,
            "redirect.lua",
            keys,
            [small, master],
            small_port,
            connections=1,
            master_port=master_port,
        ),
        Scenario("c", "c) durable add, master", "add", master_port, "add.lua", [], [master], go_peer="go-c"),
    ]
    if "no-fsync" in supported:
        unsynced, unsynced_port = start(
            "master-nofsync",
            goto_command(
                twistd, "--rpc", "--file", copy_of_data("store-nofsync.json"), "--host", HOST, "--no-fsync"
            ),
        )
        scenarios.append(
            Scenario(
                "c-nofsync",
                "c) add, master --no-fsync",
                "add",
                unsynced_port,
                "add.lua",
                [],
                [unsynced],
                go_peer="go-c",
            )
        )
        check_add(unsynced_port, "master --no-fsync")
        # Adds through a slave with the guarantee Go's master gives: acknowledged before any fsync.
        unsynced_slave, unsynced_slave_port = start(
            "slave-nofsync", goto_command(twistd, "--master", f"127.0.0.1:{unsynced_port}", "--host", HOST)
        )
        check_add(unsynced_slave_port, "slave of the master --no-fsync")
        through_unsynced = Scenario(
            "d-nofsync",
            "d) add through slave, master --no-fsync",
            "add",
            unsynced_slave_port,
            "add.lua",
            [],
            [unsynced_slave, unsynced],
            unsynced_slave_port,
            go_peer="go-d",
            master_port=unsynced_port,
        )
    else:
        through_unsynced = None
        notes.append("c-nofsync and d-nofsync left out: these servers have no --no-fsync option")
    scenarios.append(
        Scenario(
            "d",
            "d) add through slave",
            "add",
            slave_port,
            "add.lua",
            [],
            [slave, master],
            slave_port,
            go_peer="go-d",
            master_port=master_port,
        )
    )
    if through_unsynced is not None:
        scenarios.append(through_unsynced)
    for port, what in checks:
        check_redirect(port, settings.keys - 1, what)
    check_redirect(master_port, settings.keys + mixed_misses - 1, "master (the mixed scenario's last miss)")
    check_add(master_port, "master")
    check_add(slave_port, "slave")

    print(f"warming the slave's cache with all {settings.keys:,} keys...", file=sys.stderr)
    warm(slave_port, settings.keys, tmp, "the slave")
    if go is not None:
        scenarios += go_scenarios(settings, go, tmp, stack, mixed_misses)
    if postgres:
        scenarios += postgres_scenarios(settings, data, tmp, stack, start, twistd)
    if only is not None:
        scenarios = chosen(scenarios, only)
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
    return scenarios, notes


def warm(port: int, keys: int, tmp: Path, what: str) -> None:
    """Request keys ``0 .. keys-1`` once each through a slave, so that all of them are cached."""
    fill = fill_cache(port, 0, keys, 120, 5, tmp)
    if fill["requested"] < keys or fill["errors"]["status"] or fill["errors"]["socket"]:
        raise BenchError(f"warming {what}'s cache failed: {fill}")


def chosen(scenarios: list[Scenario], only: set[str]) -> list[Scenario]:
    """The scenarios named in ``only``, plus those their ratios need (``ref``, a mix's all-hits
    scenario, a scenario's Go peer when Go runs), in their usual order."""
    by_name = {scenario.name: scenario for scenario in scenarios}
    unknown = only - by_name.keys()
    if unknown:
        raise BenchError(
            f"--only: no scenario {', '.join(sorted(unknown))} (there are: {', '.join(by_name)})"
        )
    wanted = set(only) | {"ref"}
    for name in list(wanted):
        scenario = by_name[name]
        for needed in (scenario.all_hits, scenario.go_peer):
            if needed in by_name:
                wanted.add(needed)
    for name in list(wanted):  # a Go mix needs Go's all-hits figure too
        needed = by_name[name].all_hits
        if needed in by_name:
            wanted.add(needed)
    return [scenario for scenario in scenarios if scenario.name in wanted]


def go_scenarios(
    settings: Settings, binary: Path, tmp: Path, stack: contextlib.ExitStack, mixed_misses: int
) -> list[Scenario]:
    """``--go``: Go's goto v5 in the same rounds, in every scenario it can do (see bench/go_goto.py).

    Its master gets a gob data file with the same keys and URLs as goto-tw's (keys ``0 .. N-1``
    without gaps: Go's ``Put`` loops for ever if the key its counter gives is taken), plus, after
    the mixed scenario's misses, one fresh key per request of go-e: Go's slave has no cache bound
    to set to 1, it caches every key it fetches, so an uncached redirect needs a key never asked.
    """
    uncached = fresh_keys_needed(settings, GO_UNCACHED_PER_SECOND)
    total = settings.keys + mixed_misses + uncached
    data = tmp / "go-store.gob"
    print(f"writing Go's data file ({total:,} keys)...", file=sys.stderr)
    write_go_data_file(
        data,
        ((key_for_index(index), bench_url(index)) for index in range(total)),
    )

    def start(name: str, args: list[str]) -> tuple[Child, int]:
        port = free_port()
        child = stack.enter_context(start_go(name, binary, port, args, tmp / name))
        return child, port

    master, master_port = start("go-master", ["-rpc=true", f"-file={data}", f"-host={HOST}"])
    slave_args = [f"-master=127.0.0.1:{master_port}", f"-host={HOST}"]
    slave, slave_port = start("go-slave", slave_args)
    uncached_slave, uncached_port = start("go-slave-e", slave_args)
    check_redirect(master_port, 0, "Go master")
    check_redirect(master_port, total - 1, "Go master (its data file's last key)")
    check_redirect(slave_port, settings.keys - 1, "Go slave")
    check_redirect(uncached_port, settings.keys - 1, "Go slave for go-e")
    check_add(master_port, "Go master")
    check_add(slave_port, "Go slave")
    print(f"warming Go's slave's cache with all {settings.keys:,} keys...", file=sys.stderr)
    warm(slave_port, settings.keys, tmp, "Go's slave")
    keys = [str(settings.keys)]
    return [
        Scenario("go-b", "Go: redirect, master", "redirect", master_port, "redirect.lua", keys, [master]),
        Scenario(
            "go-a",
            "Go: cached redirect, slave",
            "redirect",
            slave_port,
            "redirect.lua",
            keys,
            [slave, master],
        ),
        Scenario(
            "go-m",
            "Go: slave, hits + 1% misses + 1% unknown",
            "mixed",
            slave_port,
            "mixed.lua",
            keys,
            [slave, master],
            fresh=FreshKeys(settings.keys, mixed_misses),
            all_hits="go-a",
        ),
        Scenario(
            "go-e",
            "Go: uncached redirect, slave (RPC)",
            "fresh",
            uncached_port,
            "redirect.lua",
            [],
            [uncached_slave, master],
            fresh=FreshKeys(settings.keys + mixed_misses, uncached),
        ),
        Scenario("go-c", "Go: add, master (not synced)", "add", master_port, "add.lua", [], [master]),
        Scenario("go-d", "Go: add through slave", "add", slave_port, "add.lua", [], [slave, master]),
    ]


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


def per_round(mine: Scenario, other: Scenario) -> dict[str, float]:
    """``mine``'s rate over ``other``'s, round by round (they ran in the same rounds): the spread."""
    return spread([a["rps"] / b["rps"] for a, b in zip(mine.rounds, other.rounds)])


def summarize(scenarios: list[Scenario]) -> list[dict[str, Any]]:
    """Per scenario: medians and ranges over the rounds, ratios to the reference round by round (and
    for a mix, to its all-hits scenario)."""
    by_name = {scenario.name: scenario for scenario in scenarios}
    reference = by_name["ref"]
    rows = []
    for scenario in scenarios:
        rounds = scenario.rounds
        rps = [r["rps"] for r in rounds]
        status = sum(r["errors"]["status"] for r in rounds)
        unknowns = sum(int(r.get("unknowns", 0)) for r in rounds) if scenario.kind == "mixed" else 0
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
            "non_2xx_3xx": status,
            # a mix's unknown keys are meant to be refused (404, Go 500); requests still in flight
            # when wrk stops were issued but not answered, so this is approximate by a few
            "unexpected_non_2xx_3xx": max(0, status - unknowns),
            "unknown_keys_requested": unknowns,
            "stale": sum(int(r.get("stale", 0)) for r in rounds),
            "timeouts": sum(r["errors"]["timeout"] for r in rounds),
            "socket_errors": sum(r["errors"][k] for r in rounds for k in ("connect", "read", "write")),
            "go_peer": scenario.go_peer,
            "rounds": rounds,
            "warmup": scenario.warmup,
        }
        row["cpu_us_per_request"] = cpu_per_request(rounds)
        hit_ratios = [r["cache_hit_ratio"] for r in rounds if r.get("cache_hit_ratio") is not None]
        if hit_ratios:
            row["cache_hit_ratio"] = statistics.median(hit_ratios)
        rpc_rates = [r["rpc_requests_per_second"] for r in rounds if "rpc_requests_per_second" in r]
        if rpc_rates:
            row["rpc_requests_per_second"] = statistics.median(rpc_rates)
        if scenario.kind != "add":
            row["ratio_to_reference"] = per_round(scenario, reference)
        if scenario.all_hits in by_name:
            row["all_hits"] = scenario.all_hits
            row["ratio_to_all_hits"] = per_round(scenario, by_name[scenario.all_hits])
        rows.append(row)
    return rows


def cpu_per_request(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """Microseconds of CPU each server process used per request answered (its median over the
    rounds): where a scenario with a slave and a master spends its time, process by process."""
    names = {name for r in rounds for name in r.get("cpu_us_per_request", {})}
    return {
        name: statistics.median(
            r["cpu_us_per_request"][name] for r in rounds if name in r.get("cpu_us_per_request", {})
        )
        for name in sorted(names)
    }


def cpu_total_text(per_process: dict[str, float]) -> str:
    """The servers' CPU per request, all processes together (``-`` when not measured)."""
    return f"{sum(per_process.values()):.1f}" if per_process else "-"


def cpu_text(per_process: dict[str, float]) -> str:
    """``12.3 (master 2.2 + slave 10.1)``, or ``12.3`` for one process; ``-`` when not measured."""
    total = cpu_total_text(per_process)
    if len(per_process) < 2:
        return total
    return total + " (" + " + ".join(f"{name} {us:.1f}" for name, us in per_process.items()) + ")"


def go_comparison(scenarios: list[Scenario]) -> list[dict[str, Any]]:
    """``--go``: every goto-tw scenario over its Go peer, round by round, with both p99s."""
    by_name = {scenario.name: scenario for scenario in scenarios}
    rows = []
    for scenario in scenarios:
        peer = by_name.get(scenario.go_peer or "")
        if peer is None:
            continue
        p99 = statistics.median(r["latency_us"]["p99"] / 1000 for r in scenario.rounds)
        go_p99 = statistics.median(r["latency_us"]["p99"] / 1000 for r in peer.rounds)
        rows.append(
            {
                "name": scenario.name,
                "go": peer.name,
                "title": scenario.title,
                "requests_per_s": statistics.median(r["rps"] for r in scenario.rounds),
                "go_requests_per_s": statistics.median(r["rps"] for r in peer.rounds),
                "ratio_to_go": per_round(scenario, peer),
                "p99_ms": p99,
                "go_p99_ms": go_p99,
                "p99_x_go": p99 / go_p99 if go_p99 else None,
                "cpu_us_per_request": cpu_per_request(scenario.rounds),
                "go_cpu_us_per_request": cpu_per_request(peer.rounds),
            }
        )
    return rows


def ratio_text(ratio: dict[str, float] | None, rounds: int) -> str:
    """``median [min-max]`` of a per-round ratio, ``-`` if there is none."""
    if ratio is None:
        return "-"
    if rounds == 1:
        return f"{ratio['median']:.2f}"
    return f"{ratio['median']:.2f} [{ratio['min']:.2f}-{ratio['max']:.2f}]"


def print_table(rows: list[dict[str, Any]]) -> None:
    """The throughput table, and notes on errors and cache hit ratios."""
    columns = (
        f"{'scenario':<42} {'req/s median [min-max]':<25} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'x ref [rounds]':<17} {'server':>6} {'others':>6} {'errors':>6} {'us/req':>6}"
    )
    print(columns)
    print("-" * len(columns))
    notes = []
    for row in rows:
        rps = [r["rps"] for r in row["rounds"]]
        errors = row["unexpected_non_2xx_3xx"] + row["timeouts"] + row["socket_errors"]
        print(
            f"{row['title']:<42} {format_spread(rps):<25} {row['p50_ms']:>7.2f} {row['p99_ms']:>7.1f} "
            f"{ratio_text(row.get('ratio_to_reference'), len(rps)):<17} {row['server_cpu']:>6.0%} "
            f"{row['other_cpu']:>6.0%} {errors:>6} {cpu_total_text(row['cpu_us_per_request']):>6}"
        )
        if len(row["cpu_us_per_request"]) > 1:
            notes.append(f"{row['title']}: CPU per request, us: {cpu_text(row['cpu_us_per_request'])}")
        if "ratio_to_all_hits" in row:
            notes.append(
                f"{row['title']}: {ratio_text(row['ratio_to_all_hits'], len(rps))} x the all-hits rate "
                f"({row['all_hits']}) in the same rounds; {row['unknown_keys_requested']} unknown keys requested "
                f"and {row['non_2xx_3xx']} refused (404 or Go's 500): not counted as errors"
            )
        if errors:
            notes.append(
                f"{row['title']}: {row['unexpected_non_2xx_3xx']} unexpected non-2xx/3xx responses, "
                f"{row['timeouts']} timeouts, {row['socket_errors']} socket errors"
            )
        if row["stale"]:
            notes.append(
                f"{row['title']}: about {row['stale']} requests were meant to be misses but their fresh keys "
                "had run out (they were cache hits): the figure flatters it"
            )
        if "cache_hit_ratio" in row:
            notes.append(
                f"{row['title']}: slave cache hit ratio {row['cache_hit_ratio']:.1%} (from /_goto/metrics)"
            )
        if "rpc_requests_per_second" in row:
            notes.append(
                f"{row['title']}: {row['rpc_requests_per_second']:,.0f} POST /RPC2 a second on the master "
                "(batches of its slaves, click and change calls among them; from its /_goto/metrics)"
            )
    print(
        "server = CPU of the server processes (slave + master for a, m, d, e and Go's; 100% = one core); "
        "others = CPU other programs took meanwhile (noise); errors = non-2xx/3xx + timeouts + socket errors; "
        "us/req = microseconds of the servers' CPU per request answered"
    )
    for note in notes:
        print(f"  {note}")


def print_go_table(rows: list[dict[str, Any]], rounds: int) -> None:
    """goto-tw over Go, scenario by scenario (same rounds), with the p99s side by side."""
    columns = (
        f"{'goto-tw scenario (Go peer)':<50} {'goto-tw/s':>10} {'Go/s':>10} {'x Go [rounds]':<17} "
        f"{'p99 ms':>7} {'Go p99':>7} {'p99 x Go':>8} {'us/req':>7} {'Go us/req':>9}"
    )
    print()
    print(columns)
    print("-" * len(columns))
    for row in rows:
        p99_x = "-" if row["p99_x_go"] is None else f"{row['p99_x_go']:.1f}"
        print(
            f"{row['title'] + ' (' + row['go'] + ')':<50} {row['requests_per_s']:>10,.0f} "
            f"{row['go_requests_per_s']:>10,.0f} {ratio_text(row['ratio_to_go'], rounds):<17} "
            f"{row['p99_ms']:>7.1f} {row['go_p99_ms']:>7.1f} {p99_x:>8} "
            f"{cpu_total_text(row['cpu_us_per_request']):>7} "
            f"{cpu_total_text(row['go_cpu_us_per_request']):>9}"
        )
    print(
        "Go's goto v5 has no access log, answers an unknown key with 500, and acknowledges an add before "
        "writing it (no fsync): see bench/go_goto.py; us/req = the servers' CPU per request answered"
    )
    for row in rows:
        if len(row["cpu_us_per_request"]) > 1 or len(row["go_cpu_us_per_request"]) > 1:
            print(
                f"  {row['title']}: CPU per request, us: goto-tw {cpu_text(row['cpu_us_per_request'])}, "
                f"Go {cpu_text(row['go_cpu_us_per_request'])}"
            )


def print_report(
    rows: list[dict[str, Any]],
    start: dict[str, Any] | None,
    memory: dict[str, Any] | None,
    header: str,
    go_rows: list[dict[str, Any]] | None = None,
    notes: Sequence[str] = (),
) -> None:
    """Print the tables and the notes on errors."""
    print()
    print(header)
    for note in notes:
        print(f"note: {note}")
    if rows:
        print_table(rows)
    if go_rows:
        print_go_table(go_rows, len(rows[0]["rounds"]))
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
    """``implementation version, Twisted version, goto_tw from DIR`` of the interpreter that runs the
    servers: with ``--python`` of another checkout's venv, the servers run that checkout's code."""
    probe = (
        "import os, sys, twisted, goto_tw; print(sys.implementation.name, sys.version.split()[0], "
        "'Twisted', twisted.__version__ + ', goto_tw from', os.path.dirname(os.path.dirname(goto_tw.__file__)))"
    )
    # ``-c`` puts the working directory first on sys.path: probe from an empty one, as the servers
    # run in their own directories, or this checkout's goto_tw would answer for the other venv's
    with tempfile.TemporaryDirectory(prefix="goto-probe-") as empty:
        done = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, check=True, timeout=60, cwd=empty
        )
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
        "--warmup",
        type=float,
        help="seconds of load per scenario before its rounds (default 2; PyPy's JIT needs 15-25 s "
        "before its latency settles, so give it --warmup 20 when reading p99s)",
    )
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
    parser.add_argument(
        "--go",
        type=Path,
        metavar="BINARY",
        help="also run Go's goto v5 (built from the book's sources, see bench/README.md) in the same rounds",
    )
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help="run only these throughput scenarios (comma-separated: a,m,go-a...), plus those their ratios need",
    )
    args = parser.parse_args()
    # the servers run in their own directories: a relative path must not be read from there (and a
    # venv's python is a symlink, so make it absolute without resolving it)
    args.python = Path(os.path.abspath(args.python))
    if args.go is not None:
        args.go = Path(os.path.abspath(args.go))
    if args.go is not None and not os.access(args.go, os.X_OK):
        print(f"--go {args.go}: not an executable (build it as bench/README.md says)", file=sys.stderr)
        return 2
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
                ("warmup", args.warmup),
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
    nursery = give_servers_pypy_nursery()
    go_text = f"; Go peer: {args.go} ({go_version(args.go)}, GOMAXPROCS=1)" if args.go else ""
    header = (
        f"servers: {interpreter} ({args.python}, {nursery}){go_text}; {layout}; {os.cpu_count()} CPUs\n"
        f"wrk -t{WRK_THREADS} -c{CONNECTIONS} --timeout {WRK_TIMEOUT}; {settings.rounds} round(s) of "
        f"{settings.seconds:g} s per scenario after a {settings.warmup:g} s warm-up, scenarios taking turns; "
        f"{settings.keys:,} keys"
    )
    print(header, file=sys.stderr)
    started = time.perf_counter()
    start_result = memory = None
    rows: list[dict[str, Any]] = []
    go_rows: list[dict[str, Any]] = []
    notes: list[str] = []
    only = {name.strip() for name in args.only.split(",") if name.strip()} if args.only else None
    with workspace(args.keep) as (tmp, stack):
        if not args.skip_throughput:
            scenarios, notes = throughput(
                settings, args.python, tmp, stack, postgres=args.postgres, go=args.go, only=only
            )
            rows = summarize(scenarios)
            go_rows = go_comparison(scenarios)
        stack.close()  # stop the throughput servers before the memory scenarios
        if not args.skip_memory:
            start_result, big_master, big_port = startup(settings, args.python, tmp, stack)
            memory = slave_memory(settings, args.python, tmp, stack, big_master, big_port)
    print_report(rows, start_result, memory, header, go_rows, notes)
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
            "go": {"binary": str(args.go), "version": go_version(args.go)} if args.go else None,
            "notes": notes,
            "scenarios": rows,
            "go_comparison": go_rows,
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
