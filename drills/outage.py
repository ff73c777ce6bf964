"""Outage drill: the master stops for a while under redirect load; slaves must degrade and recover well.

A master (``--rpc``) holds a few hundred links; two slaves (``--rpc-timeout 3``) have fetched half of
them ("cached" keys) and never the other half ("uncached" keys). A load thread per slave requests
cached keys without pause over a persistent connection. Then the master is stopped (SIGTERM, and in
a second round SIGKILL) for ``--outage`` seconds and started again on the same data file and port,
while a probe thread per slave, every few milliseconds, asks for an uncached key or adds a new URL,
each on a new connection. The drill checks that:

- every cached-key request is answered 302 with its URL, during the outage too (100 %);
- while the master is down, every uncached request and every add through a slave is answered 503
  with ``Retry-After``, fast: p99 under 1 s and none as slow as the slave's ``--rpc-timeout``;
- the slaves' health checks say 503 during the outage and 200 after it;
- once the master listens again, each slave serves uncached keys and adds again by itself (no
  restart, nothing but ordinary traffic) within 5 s; it probes the master about once a second.

A restarted master starts a new change feed, so each slave then drops its whole cache (at its next
poll of the feed, about a second later); before the next round the drill waits for that and has each
slave fetch the cached keys again.

Usage: ``python drills/outage.py [--quick] [--outage SECONDS] [--signal TERM|KILL|both] [--seed S]``
"""

from __future__ import annotations

import http.client
import random
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drills._common import (
    DEFAULT_HOST,
    DrillWorkdir,
    Fleet,
    GotoProcess,
    KeepAliveClient,
    Report,
    drill_arguments,
    exit_on_signals,
    percentile,
    summarize,
)

#: The slaves' ``--rpc-timeout``: a fail-fast answer must come well before it.
RPC_TIMEOUT = 3.0
#: p99 bound of the 503s a slave answers while its master is down.
FAIL_FAST_P99 = 1.0
#: Bound on the time from "the master listens again" to a slave's first successful add.
RECOVERY_BOUND = 5.0
#: Seconds between two requests of a probe thread.
PROBE_INTERVAL = 0.02
#: Seconds of cached load before each outage and after each recovery.
CALM_SECONDS = 0.5
#: What a slave logs when its master's change feed says the master restarted (``goto_tw.coherence``).
CACHE_DROPPED = "dropping the cache"
#: Most seconds from a recovery until each slave has seen the restart in its change feed.
REBUILD_BOUND = 10.0


@dataclass(frozen=True)
class Answer:
    """One request of the drill: when it started and ended, what it was, and what came back."""

    started: float
    ended: float
    kind: str  # "cached", "uncached" or "add"
    status: int  # 0 for a connection error or timeout
    retry_after: str | None
    ok: bool  # 302 to the right URL for a look-up, 200 with a short URL for an add

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class Recorder:
    """Answers collected by the load and probe threads of one slave."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: list[Answer] = field(default_factory=list)

    def add(self, answer: Answer) -> None:
        with self.lock:
            self.answers.append(answer)

    def snapshot(self) -> list[Answer]:
        with self.lock:
            return list(self.answers)


class CachedLoad(threading.Thread):
    """Requests cached keys of one slave without pause, over one persistent connection."""

    def __init__(
        self,
        port: int,
        links: list[tuple[str, str]],
        recorder: Recorder,
        stop: threading.Event,
        deadline: float,
    ) -> None:
        super().__init__(name=f"cached-load-{port}", daemon=True)
        self.client = KeepAliveClient(port)
        self.links = links
        self.recorder = recorder
        self.stop_event = stop
        self.deadline = deadline

    def run(self) -> None:
        index = 0
        try:
            while not self.stop_event.is_set() and time.monotonic() < self.deadline:
                key, url = self.links[index % len(self.links)]
                index += 1
                started = time.monotonic()
                try:
                    status, headers, _ = self.client.request("GET", f"/{key}")
                except (OSError, http.client.HTTPException):
                    status, location = 0, None
                else:
                    location = headers.get("Location")
                ended = time.monotonic()
                self.recorder.add(
                    Answer(started, ended, "cached", status, None, status == 302 and location == url)
                )
        finally:
            self.client.close()


class UncachedProbe(threading.Thread):
    """Every :data:`PROBE_INTERVAL`, asks one slave for an uncached key or adds a new URL, in turn."""

    def __init__(
        self,
        name: str,
        port: int,
        links: list[tuple[str, str]],
        recorder: Recorder,
        stop: threading.Event,
        deadline: float,
    ) -> None:
        super().__init__(name=f"probe-{name}", daemon=True)
        self.slave = name
        self.port = port
        self.links = links
        self.recorder = recorder
        self.stop_event = stop
        self.deadline = deadline
        self.adds = 0

    def run(self) -> None:
        count = 0
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            count += 1
            if count % 2:
                key, url = self.links[(count // 2) % len(self.links)]
                self.recorder.add(self._ask("uncached", f"/{key}", url))
            else:
                self.adds += 1
                new_url = f"https://outage.test/{self.slave}/{self.adds}"
                target = "/add?" + urllib.parse.urlencode({"url": new_url})
                self.recorder.add(self._ask("add", target, None))
            self.stop_event.wait(PROBE_INTERVAL)

    def _ask(self, kind: str, target: str, url: str | None) -> Answer:
        client = KeepAliveClient(self.port, timeout=RPC_TIMEOUT + 5)
        started = time.monotonic()
        try:
            status, headers, body = client.request("GET", target, headers={"Connection": "close"})
        except (OSError, http.client.HTTPException):
            status, retry_after, ok = 0, None, False
        else:
            retry_after = headers.get("Retry-After")
            if kind == "add":
                ok = status == 200 and body.startswith(f"http://{DEFAULT_HOST}/".encode())
            else:
                ok = status == 302 and headers.get("Location") == url
        finally:
            client.close()
        return Answer(started, time.monotonic(), kind, status, retry_after, ok)


def health(port: int) -> int:
    """The status of ``GET /_goto/health`` (0 if it could not be asked)."""
    client = KeepAliveClient(port)
    try:
        status, _, _ = client.request("GET", "/_goto/health")
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        client.close()
    return status


def run(args_list: list[str] | None = None) -> int:
    """Run the drill with command-line ``args_list``; return the exit status."""
    parser = drill_arguments("Outage drill: the master stops for a while; slaves fail fast and recover.")
    parser.add_argument(
        "--outage", type=float, default=None, help="seconds the master is down (10; quick: 2)"
    )
    parser.add_argument(
        "--signal",
        choices=("TERM", "KILL", "both"),
        default="both",
        help="how the master stops (default: both)",
    )
    args = parser.parse_args(args_list)
    outage: float = args.outage if args.outage is not None else (2.0 if args.quick else 10.0)
    signals = ["TERM", "KILL"] if args.signal == "both" else [args.signal]
    links = 50 if args.quick else 150  # cached, and again uncached for each round
    exit_on_signals()
    report = Report(
        f"outage drill ({'quick' if args.quick else 'full'}): master down {outage:g}s "
        f"by SIG{' then SIG'.join(signals)}, slaves with --rpc-timeout {RPC_TIMEOUT:g}, seed {args.seed}"
    )
    started = time.monotonic()
    with DrillWorkdir("outage", args.workdir, args.keep) as work, Fleet(work.path) as fleet:
        status = _drill(report, fleet, work.path, outage, signals, links, random.Random(args.seed))
        work.failed = status != 0
        report.figure("drill seconds", f"{time.monotonic() - started:.1f}")
    return status


def _drill(
    report: Report,
    fleet: Fleet,
    workdir: Path,
    outage: float,
    signals: list[str],
    link_count: int,
    rng: random.Random,
) -> int:
    master = fleet.start("--rpc", "--access-log", "none", name="master", data_file=workdir / "data.json")
    slave_args = (
        "--master",
        f"127.0.0.1:{master.port}",
        "--rpc-timeout",
        f"{RPC_TIMEOUT:g}",
        "--access-log",
        "none",
    )
    slaves = {
        name: fleet.start(*slave_args, name=name, data_file=None, wait=False)
        for name in ("slave-a", "slave-b")
    }
    for slave in slaves.values():
        slave.wait_ready()

    # The links, added through the master; each slave fetches the cached ones once, and only those.
    # Each round has uncached links of its own: those of a round are cached once the slaves recover.
    setup = KeepAliveClient(master.port)
    links: list[tuple[str, str]] = []
    for number in range(link_count * (1 + len(signals))):
        url = f"https://outage.test/link/{number}?r={rng.randrange(10**9)}"
        status, _, body = setup.request("GET", "/add?" + urllib.parse.urlencode({"url": url}))
        if status != 200:
            raise RuntimeError(f"setup: adding {url} answered {status} {body!r}")
        links.append((body.decode("ascii").strip().rsplit("/", 1)[1], url))
    setup.close()
    cached = links[:link_count]
    for slave in slaves.values():
        _warm(slave, cached)

    stop_load = threading.Event()
    deadline = time.monotonic() + len(signals) * (outage + 60) + 60
    recorders = {name: Recorder() for name in slaves}
    loads = [
        CachedLoad(slave.port, cached, recorders[name], stop_load, deadline) for name, slave in slaves.items()
    ]
    for load in loads:
        load.start()
    try:
        for round_number, how in enumerate(signals, start=1):
            uncached = links[link_count * round_number : link_count * (round_number + 1)]
            master = _outage_round(
                report, fleet, master, slaves, recorders, cached, uncached, how, outage, round_number
            )
    finally:
        stop_load.set()
        for load in loads:
            load.join(timeout=10)

    cached_answers = [answer for recorder in recorders.values() for answer in recorder.snapshot()]
    report.figure("cached-key requests in the whole drill", summarize([a.seconds for a in cached_answers]))
    report.check("cached keys served throughout", all(a.ok for a in cached_answers))
    problems = fleet.problems()
    report.figure("tracebacks in server logs", len(problems))
    for line in problems[:10]:
        report.note(line)
    report.check("no tracebacks in server logs", not problems)
    return report.exit_status()


def _warm(slave: GotoProcess, cached: list[tuple[str, str]]) -> None:
    """Have ``slave`` fetch (and so cache) each of the ``cached`` links, checking its answers."""
    warm = KeepAliveClient(slave.port)
    try:
        for key, url in cached:
            status, headers, _ = warm.request("GET", f"/{key}")
            if status != 302 or headers.get("Location") != url:
                raise RuntimeError(f"warming {slave.name}: it answered {status} for cached key {key}")
    finally:
        warm.close()


def _cache_drops(slave: GotoProcess) -> int:
    """How many times ``slave`` has logged dropping its whole cache (:data:`CACHE_DROPPED`)."""
    return slave.output().count(CACHE_DROPPED)


def _await_caches_rebuilt(
    slaves: dict[str, GotoProcess], drops_before: dict[str, int], cached: list[tuple[str, str]]
) -> None:
    """Wait until each slave has dropped its cache for the restarted master, then have it fetch the
    cached links again: the next round's outage must find them cached.

    A restarted master starts a new change feed, so each slave drops its whole cache at its next
    poll of the feed (``goto_tw.coherence``: about a second apart), which may come after the
    recovery the round waits for; a round that began in between met cached keys not fetched again
    yet (a drill run on a loaded machine: 94% of round 2's cached-key requests answered)."""
    deadline = time.monotonic() + REBUILD_BOUND
    for name, slave in slaves.items():
        while _cache_drops(slave) <= drops_before[name]:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} did not drop its cache within {REBUILD_BOUND:g}s of the master's restart"
                )
            time.sleep(0.05)
        _warm(slave, cached)


def _outage_round(
    report: Report,
    fleet: Fleet,
    master: GotoProcess,
    slaves: dict[str, GotoProcess],
    recorders: dict[str, Recorder],
    cached: list[tuple[str, str]],
    uncached: list[tuple[str, str]],
    how: str,
    outage: float,
    round_number: int,
) -> GotoProcess:
    """Stop the master with SIG``how`` for ``outage`` seconds, start it again, report; return it."""
    prefix = f"round {round_number} (SIG{how})"
    drops_before = {name: _cache_drops(slave) for name, slave in slaves.items()}
    time.sleep(CALM_SECONDS)
    stop_probes = threading.Event()
    probe_deadline = time.monotonic() + outage + 60
    probe_recorders = {name: Recorder() for name in slaves}
    probes = {
        name: UncachedProbe(
            f"{name}-r{round_number}",
            slave.port,
            uncached,
            probe_recorders[name],
            stop_probes,
            probe_deadline,
        )
        for name, slave in slaves.items()
    }
    signalled = time.monotonic()
    if how == "TERM":
        master.stop()  # SIGTERM, and waits for the exit
    else:
        master.kill()
    down = time.monotonic()
    exit_status = master.returncode
    for probe in probes.values():
        probe.start()
    try:
        time.sleep(outage / 2)
        health_during = {name: health(slave.port) for name, slave in slaves.items()}
        time.sleep(max(0.0, down + outage - time.monotonic()))
        restarted = time.monotonic()
        master = fleet.restart(master)
        ready = time.monotonic()
        recovered = _wait_recovered(probe_recorders, ready, RECOVERY_BOUND + 5)
        time.sleep(CALM_SECONDS)
    finally:
        stop_probes.set()
        for probe in probes.values():
            probe.join(timeout=RPC_TIMEOUT + 10)
    health_after = {name: health(slave.port) for name, slave in slaves.items()}

    report.figure(f"{prefix} master exit status", exit_status)
    report.figure(f"{prefix} master down (exit to restart)", f"{restarted - down:.2f}s")
    report.figure(f"{prefix} master restart (spawn to listening)", f"{ready - restarted:.2f}s")
    in_outage = (signalled, ready)
    cached_during = [
        a
        for r in recorders.values()
        for a in r.snapshot()
        if a.started >= in_outage[0] and a.ended <= in_outage[1]
    ]
    cached_ok = sum(1 for a in cached_during if a.ok)
    rate = 100.0 * cached_ok / len(cached_during) if cached_during else 0.0
    report.figure(
        f"{prefix} cached-key requests during the outage", summarize([a.seconds for a in cached_during])
    )
    report.figure(
        f"{prefix} cached-key success rate during the outage",
        f"{rate:.2f}% ({cached_ok}/{len(cached_during)})",
    )
    report.check(
        f"{prefix} cached keys 100% during the outage",
        bool(cached_during) and cached_ok == len(cached_during),
    )

    all_probed = [a for r in probe_recorders.values() for a in r.snapshot()]
    # Strictly inside the outage: sent after the master had exited, answered before it was restarted.
    failing = [a for a in all_probed if a.started >= down and a.ended <= restarted]
    for kind in ("uncached", "add"):
        answers = [a for a in failing if a.kind == kind]
        statuses = _status_counts(answers)
        report.figure(
            f"{prefix} {kind} answers during the outage",
            f"{statuses} {summarize([a.seconds for a in answers])}",
        )
    not_503 = [a for a in failing if a.status != 503 or a.retry_after is None]
    seconds = [a.seconds for a in failing]
    report.check(
        f"{prefix} uncached requests and adds answered 503 + Retry-After",
        bool(failing) and not not_503,
        f"{len(not_503)} of {len(failing)} were not" if not_503 else f"{len(failing)} answers",
    )
    p99 = percentile(seconds, 0.99)
    report.check(
        f"{prefix} fail-fast p99 < {FAIL_FAST_P99:g}s",
        bool(seconds) and p99 < FAIL_FAST_P99,
        f"{p99 * 1000:.1f}ms",
    )
    slowest = max(seconds, default=0.0)
    report.check(
        f"{prefix} no answer waits for --rpc-timeout", slowest < RPC_TIMEOUT, f"max {slowest * 1000:.1f}ms"
    )
    report.figure(f"{prefix} slave health during the outage", health_during)
    report.figure(f"{prefix} slave health after recovery", health_after)
    report.check(
        f"{prefix} health 503 during, 200 after",
        all(status == 503 for status in health_during.values())
        and all(s == 200 for s in health_after.values()),
    )
    for name in slaves:
        first_add = recovered.get(name)
        first_get = _first_ok(probe_recorders[name].snapshot(), "uncached", ready)
        get_text = "never" if first_get is None else f"{first_get - ready:.2f}s"
        if first_add is None:
            report.figure(f"{prefix} {name} recovery", f"no successful add within {RECOVERY_BOUND + 5:g}s")
        else:
            report.figure(
                f"{prefix} {name} recovery",
                f"first add {first_add - ready:.2f}s, first uncached look-up {get_text}",
            )
        report.check(
            f"{prefix} {name} recovers by itself within {RECOVERY_BOUND:g}s",
            first_add is not None and first_add - ready < RECOVERY_BOUND,
        )
    _await_caches_rebuilt(slaves, drops_before, cached)
    return master


def _status_counts(answers: list[Answer]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for answer in answers:
        counts[answer.status] = counts.get(answer.status, 0) + 1
    return dict(sorted(counts.items()))


def _first_ok(answers: list[Answer], kind: str, since: float) -> float | None:
    """When the first successful answer of ``kind`` sent after ``since`` ended, or ``None``."""
    ends = [a.ended for a in answers if a.kind == kind and a.ok and a.started >= since]
    return min(ends, default=None)


def _wait_recovered(recorders: dict[str, Recorder], since: float, timeout: float) -> dict[str, float]:
    """Wait until each slave's probe has a successful add sent after ``since``; return when each ended."""
    deadline = time.monotonic() + timeout
    found: dict[str, float] = {}
    while len(found) < len(recorders) and time.monotonic() < deadline:
        for name, recorder in recorders.items():
            first = _first_ok(recorder.snapshot(), "add", since)
            if first is not None:
                found[name] = first
        time.sleep(0.05)
    return found


def main() -> None:
    """Entry point: run the drill with the command line's arguments and exit with its status."""
    raise SystemExit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
