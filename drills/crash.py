"""Crash drill: SIGKILL the master at random moments under add load; no acknowledged add may be lost.

A master (``--rpc``) and two slaves run on loopback. Client threads add unique URLs without pause,
directly to the master and through each slave, with ``GET /add?url=``, ``POST /add`` and
``POST /api/v1/links`` in turn, each over a persistent connection. Meanwhile the master is killed
with SIGKILL at a random moment and restarted on the same data file and port, ``--kills`` times.

A client counts an add as acknowledged only when it gets its 200 (or 201) with the short URL; a
connection error or a 503 is "not acknowledged", and the client retries the same URL shortly after
(the store answers a recently added URL with its existing key, so a retry never makes a second
link). After the last restart the load stops and the drill checks that:

- every acknowledged add redirects through the master (``GET /KEY`` -> 302 to its URL), and a
  sample of them through each slave too;
- the data file (read after a clean SIGTERM) holds each key exactly once, and every acknowledged
  ``(key, url)`` pair;
- no key was acknowledged for two different URLs, and no URL got two keys;
- every server came back (each target acknowledged adds after the last restart), and no server
  logged a traceback;
- clicks: a client sends click batches (``Store.Clicks``, as slaves do) to the master throughout;
  after the last restart the master counts at least every click it acknowledged, and no more than
  were sent (an unanswered batch may or may not have been written);
- tombstones too (issue 11): meanwhile a disabler thread disables acknowledged keys on the master
  (``DELETE /api/v1/links/KEY`` with an API key) between kills. Every disable the master
  acknowledged (200) answers 410 afterwards on the master and on both slaves (within the 2 s
  coherence bound), has its tombstone in the data file, and its key was never handed out again.

Figures: kills, acknowledged, lost (must be 0), duplicate keys (0), conflicting keys (0), and the
adds refused with 503 or lost to connection errors during outages (expected, reported).

With ``--postgres`` the drill runs two masters on one PostgreSQL database instead (see
``drills/crash_pg.py``).

Usage: ``python drills/crash.py [--quick] [--postgres] [--kills N] [--seed S] [--workdir DIR] [--keep]``
"""

from __future__ import annotations

import argparse
import bisect
import http.client
import json
import random
import sys
import threading
import time
import xmlrpc.client as xmlrpclib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drills._common import (
    DrillWorkdir,
    Fleet,
    KeepAliveClient,
    Report,
    drill_arguments,
    exit_on_signals,
    summarize,
)
from drills._load import RETRY_PAUSE, AddClient, Ledger, key_conflicts, lookup_all, wait_for_acks_after

#: Acknowledged adds looked up through each slave at the end (all of them through the master).
SLAVE_SAMPLE = 500
#: The API key the master accepts, for the disabler.
API_KEY = "crash-drill-key-7f3a"
#: Seconds between two disables, and the most a run makes (quick, full).
DISABLE_PAUSE = 0.05
MAX_DISABLES = (40, 1000)
#: Seconds a disabled key may take to answer 410 on a slave (the coherence bound), plus slack.
DISABLE_BOUND = 2.0


#: The custom key the click client counts clicks for.
CLICK_KEY = "crash-clicks"


@dataclass
class ClickLedger:
    """Clicks the click client sent, split by whether the master acknowledged them."""

    acknowledged: int = 0
    unanswered: int = 0
    refused: int = 0
    batches: int = 0


class Disabler(threading.Thread):
    """Disables acknowledged keys on the master, one every :data:`DISABLE_PAUSE` seconds, kills or not."""

    def __init__(self, port: int, ledger: Ledger, stop: threading.Event, limit: int, seed: int) -> None:
        super().__init__(name="disabler", daemon=True)
        self.ledger = ledger
        self.stop_event = stop
        self.limit = limit
        self.rng = random.Random(seed)
        self.client = KeepAliveClient(port)

    def run(self) -> None:
        ledger = self.ledger
        headers = {"Authorization": f"Bearer {API_KEY}"}
        try:
            while not self.stop_event.wait(DISABLE_PAUSE) and len(ledger.disable_tried) < self.limit:
                with ledger.lock:
                    candidates = ledger.acks[-200:]
                    ack = self.rng.choice(candidates) if candidates else None
                    if ack is None or ack.key in ledger.disable_tried:
                        continue
                    ledger.disable_tried.add(ack.key)
                try:
                    status, _, body = self.client.request("DELETE", f"/api/v1/links/{ack.key}", None, headers)
                except (OSError, http.client.HTTPException):
                    with ledger.lock:
                        ledger.disable_errors += 1
                    continue
                with ledger.lock:
                    if status == 200 and json.loads(body).get("disabled") is not None:
                        ledger.disabled[ack.key] = ack.url
                    elif status == 503:
                        ledger.disable_errors += 1
                    else:
                        ledger.unexpected.append(
                            ("master", f"DELETE /api/v1/links/{ack.key}", status, body[:200])
                        )
        except Exception as exc:  # a bug in the drill: make it fail loudly
            with ledger.lock:
                ledger.unexpected.append(("master", "disabler crashed", 0, repr(exc).encode()))
        finally:
            self.client.close()


class ClickClient(threading.Thread):
    """Sends ``Store.Clicks({CLICK_KEY: n})`` to the master without pause, as a slave's flusher does."""

    def __init__(
        self, port: int, ledger: ClickLedger, stop: threading.Event, deadline: float, seed: int
    ) -> None:
        super().__init__(name="click-client", daemon=True)
        self.port = port
        self.ledger = ledger
        self.stop_event = stop
        self.deadline = deadline
        self.rng = random.Random(seed)

    def run(self) -> None:
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            count = self.rng.randint(1, 20)
            self.ledger.batches += 1
            proxy = xmlrpclib.ServerProxy(f"http://127.0.0.1:{self.port}/RPC2", transport=_ShortTransport())
            try:
                answer = proxy.Store.Clicks({CLICK_KEY: count})
            except xmlrpclib.Fault:
                self.ledger.refused += count  # answered "not stored": certainly not written
                self.stop_event.wait(RETRY_PAUSE)
            except (OSError, http.client.HTTPException, xmlrpclib.ProtocolError):
                self.ledger.unanswered += count
                self.stop_event.wait(RETRY_PAUSE)
            else:
                if answer is True:
                    self.ledger.acknowledged += count
                else:
                    self.ledger.unanswered += count
            finally:
                proxy("close")()


class _ShortTransport(xmlrpclib.Transport):
    """An XML-RPC transport with a 2-second timeout (a killed master must not stall the client)."""

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        connection = super().make_connection(host)
        connection.timeout = 2.0
        return connection


@dataclass
class Records:
    """The data file as parsed: records in order, and whatever could not be parsed."""

    pairs: list[tuple[str, str]]
    bad_lines: list[str]
    torn_tail: bytes
    #: Tombstones: disabled key -> when.
    tombstones: dict[str, int] = field(default_factory=dict)


def read_data_file(path: Path) -> Records:
    """Parse the data file line by line, keeping (not raising on) anything malformed."""
    data = path.read_bytes() if path.exists() else b""
    end = data.rfind(b"\n") + 1
    torn_tail = data[end:]
    pairs: list[tuple[str, str]] = []
    bad: list[str] = []
    tombstones: dict[str, int] = {}
    for number, line in enumerate(data[:end].splitlines(), start=1):
        try:
            record = json.loads(line)
        except ValueError:
            bad.append(f"line {number}: {line[:200]!r}")
            continue
        if isinstance(record, dict) and set(record) == {"key", "disabled"}:
            tombstones.setdefault(record["key"], record["disabled"])
            continue
        if not isinstance(record, dict) or set(record) not in (
            {"key", "url"},
            {"key", "url", "custom", "created"},
        ):
            bad.append(f"line {number}: {line[:200]!r}")
            continue
        pairs.append((record["key"], record["url"]))
    return Records(pairs, bad, torn_tail, tombstones)


def run(args_list: list[str] | None = None) -> int:
    """Run the drill with command-line ``args_list``; return the exit status."""
    parser = drill_arguments(__doc__.split("\n\n", 1)[0] if __doc__ else "crash drill")
    parser.add_argument("--kills", type=int, default=None, help="SIGKILLs of the master (100; quick: 5)")
    parser.add_argument(
        "--clients-per-server", type=int, default=2, help="add clients per server (default: 2)"
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="two masters on one throwaway PostgreSQL, two slaves of both; kills of a random master "
        "(20; quick: 4) and 3 PostgreSQL restarts (see drills/crash_pg.py)",
    )
    args = parser.parse_args(args_list)
    if args.postgres:
        return _run_postgres(args)
    kills: int = args.kills if args.kills is not None else (5 if args.quick else 100)
    # The master lives this long between restarts, then stays dead this long, in seconds.
    uptime = (0.2, 0.8) if args.quick else (0.3, 1.8)
    downtime = (0.0, 0.2)
    rng = random.Random(args.seed)
    exit_on_signals()
    report = Report(
        f"crash drill ({'quick' if args.quick else 'full'}): {kills} SIGKILLs of the master, seed {args.seed}"
    )
    started = time.monotonic()
    with DrillWorkdir("crash", args.workdir, args.keep) as work, Fleet(work.path) as fleet:
        status = _drill(
            report, fleet, work.path, kills, uptime, downtime, rng, args.clients_per_server, bool(args.quick)
        )
        work.failed = status != 0
        report.figure("drill seconds", f"{time.monotonic() - started:.1f}")
    return status


def _run_postgres(args: argparse.Namespace) -> int:
    """``--postgres``: the drill of :mod:`drills.crash_pg`."""
    from drills.crash_pg import drill_postgres

    kills: int = args.kills if args.kills is not None else (4 if args.quick else 20)
    exit_on_signals()
    mode = "quick" if args.quick else "full"
    report = Report(f"crash drill, PostgreSQL ({mode}): {kills} SIGKILLs of a master, seed {args.seed}")
    started = time.monotonic()
    with DrillWorkdir("crash-pg", args.workdir, args.keep) as work, Fleet(work.path) as fleet:
        rng = random.Random(args.seed)
        status = drill_postgres(report, fleet, kills, rng, args.clients_per_server, args.quick)
        work.failed = status != 0
        report.figure("drill seconds", f"{time.monotonic() - started:.1f}")
    return status


def _drill(
    report: Report,
    fleet: Fleet,
    workdir: Path,
    kills: int,
    uptime: tuple[float, float],
    downtime: tuple[float, float],
    rng: random.Random,
    clients_per_server: int,
    quick: bool = True,
) -> int:
    data_file = workdir / "data.json"
    keys_file = workdir / "api-keys"
    keys_file.write_text(API_KEY + "\n")
    quiet = ("--access-log", "none")
    master = fleet.start(
        "--rpc", "--api-keys-file", str(keys_file), *quiet, name="master", data_file=data_file
    )
    slaves = [
        fleet.start(
            "--master",
            f"127.0.0.1:{master.port}",
            "--rpc-timeout",
            "2",
            *quiet,
            name=name,
            data_file=None,
            wait=False,
        )
        for name in ("slave-a", "slave-b")
    ]
    for slave in slaves:
        slave.wait_ready()
    targets = {"master": master.port, "slave-a": slaves[0].port, "slave-b": slaves[1].port}
    made = KeepAliveClient(master.port)
    try:
        status, _, _ = made.request("GET", f"/add?url=https%3A%2F%2Fcrash.test%2Fclicks&key={CLICK_KEY}")
    finally:
        made.close()
    if status != 200:
        report.check("the click key is stored", False, f"status {status}")
        return report.exit_status()

    ledger = Ledger()
    click_ledger = ClickLedger()
    stop = threading.Event()
    # The clients' own deadline bounds the load even if the main thread never reaches its stop.
    deadline = time.monotonic() + kills * (uptime[1] + downtime[1] + 15) + 60
    clients = [
        AddClient(number, target, port, ledger, stop, deadline)
        for number, (target, port) in enumerate(
            (target, port) for target, port in targets.items() for _ in range(clients_per_server)
        )
    ]
    disabler = Disabler(master.port, ledger, stop, MAX_DISABLES[0 if quick else 1], rng.randrange(1 << 30))
    restart_seconds: list[float] = []
    #: When each kill happened, and how many records the data file held right after it.
    kill_log: list[tuple[float, int]] = []
    kills_leaving_zeros = 0
    load_started = time.monotonic()
    click_client = ClickClient(master.port, click_ledger, stop, deadline, rng.randint(0, 2**31))
    click_client.start()
    for client in clients:
        client.start()
    disabler.start()
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(*uptime))
            master.kill()
            left = data_file.read_bytes()
            kill_log.append((time.monotonic(), left.count(b"\n")))
            kills_leaving_zeros += left.endswith(b"\0")  # zeros written ahead, for the restart to trim
            time.sleep(rng.uniform(*downtime))
            spawned = time.monotonic()
            master = fleet.restart(master)
            restart_seconds.append(time.monotonic() - spawned)
        last_restart = time.monotonic()
        # Let the slaves notice the master is back (they probe once a second) and add through it.
        wait_for_acks_after(ledger, last_restart, set(targets), timeout=10.0)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=15)
        click_client.join(timeout=15)
        disabler.join(timeout=15)
    load_seconds = time.monotonic() - load_started

    acks = ledger.acks
    report.figure("kills", kills)
    report.figure("master restart (spawn to listening)", summarize(restart_seconds))
    report.figure("load seconds", f"{load_seconds:.1f}")
    report.figure("add attempts", sum(ledger.attempts.values()))
    report.figure("acknowledged", len(acks))
    report.figure("acknowledged per second", f"{len(acks) / load_seconds:.0f}")
    by_target = Counter(ack.target for ack in acks)
    by_method = Counter(ack.method for ack in acks)
    report.figure("acknowledged by server", dict(sorted(by_target.items())))
    report.figure("acknowledged by method", dict(sorted(by_method.items())))
    report.figure("refused with 503 during outages", dict(sorted(ledger.unavailable.items())))
    report.figure("connection errors during outages", dict(sorted(ledger.connection_errors.items())))
    report.figure("abandoned URLs", ledger.abandoned)
    report.figure("unexpected answers", len(ledger.unexpected))
    for target, method, code, body in ledger.unexpected[:10]:
        report.note(f"{target} {method}: {code} {body!r}")

    # Keys handed out: one URL per key and one key per URL, across every acknowledgement.
    conflicting, two_keys = key_conflicts(acks)

    # Every acknowledged add through the running master, and a sample through each slave.
    unique_acks = list({ack.key: ack for ack in acks}.values())
    # Keys a DELETE was sent for may be disabled (410) even if its answer was lost: not looked up for 302.
    live_acks = [ack for ack in unique_acks if ack.key not in ledger.disable_tried]
    disabled_acks = [ack for ack in unique_acks if ack.key in ledger.disabled]
    looked_up = time.monotonic()
    wrong_http = lookup_all(master.port, live_acks)
    lookup_seconds = time.monotonic() - looked_up
    sample = rng.sample(live_acks, min(SLAVE_SAMPLE, len(live_acks)))
    wrong_slave = [item for slave in slaves for item in lookup_all(slave.port, sample, threads=1)]
    # Every acknowledged disable: 410 on the master at once, and on each slave within the bound
    # (a slave that cached the key drops it at its next poll of the change feed).
    not_gone_master = lookup_all(master.port, disabled_acks, expect=410)
    bound_deadline = time.monotonic() + DISABLE_BOUND + 1.0
    not_gone_slaves = [
        item for slave in slaves for item in lookup_all(slave.port, disabled_acks, 1, expect=410)
    ]
    while not_gone_slaves and time.monotonic() < bound_deadline:
        time.sleep(0.1)
        not_gone_slaves = [
            item for slave in slaves for item in lookup_all(slave.port, disabled_acks, 1, expect=410)
        ]
    # A disabled key is never handed out again: no acknowledgement gives it to another URL.
    reused = [ack for ack in acks if ack.key in ledger.disabled and ack.url != ledger.disabled[ack.key]]

    # Clicks: every acknowledged one is counted, and nothing beyond what was sent.
    reader = KeepAliveClient(master.port)
    try:
        status, _, body = reader.request("GET", f"/api/v1/links/{CLICK_KEY}")
    finally:
        reader.close()
    clicks_counted = json.loads(body).get("clicks") if status == 200 else None
    report.figure("click batches sent", click_ledger.batches)
    report.figure("clicks acknowledged by the master", click_ledger.acknowledged)
    report.figure("clicks unanswered (kills)", click_ledger.unanswered)
    report.figure("clicks counted by the master at the end", clicks_counted)
    clicks_ok = (
        isinstance(clicks_counted, int)
        and click_ledger.acknowledged <= clicks_counted <= click_ledger.acknowledged + click_ledger.unanswered
    )
    report.check("clicks acknowledged were batches > 0", click_ledger.acknowledged > 0)
    report.check(
        "acknowledged clicks lost == 0 (and none invented)",
        clicks_ok,
        f"acknowledged {click_ledger.acknowledged}, counted {clicks_counted}",
    )

    # Then the data file, after a clean stop (SIGTERM writes every accepted record).
    stopped = master.stop()
    records = read_data_file(data_file)
    key_count = Counter(key for key, _ in records.pairs)
    duplicate_keys = {key: n for key, n in key_count.items() if n > 1}
    url_count = Counter(url for _, url in records.pairs)
    duplicate_urls = {url: n for url, n in url_count.items() if n > 1}
    stored = set(records.pairs)
    lost_file = [ack for ack in unique_acks if (ack.key, ack.url) not in stored]
    no_tombstone = sorted(key for key in ledger.disabled if key not in records.tombstones)
    acked_urls = {ack.url for ack in acks}
    unacknowledged_stored = sum(1 for _, url in records.pairs if url not in acked_urls)
    lost = {ack.key for ack in lost_file} | {ack.key for ack, _ in wrong_http}
    # Adds whose record reached the file before a kill but whose answer did not reach the client:
    # tried before the kill, answered after it, with a key the file already held at the kill.
    line_of = {key: number for number, (key, _) in enumerate(records.pairs)}
    kill_times = [at for at, _ in kill_log]
    answered_after_kill = 0
    for ack in acks:
        last_kill = bisect.bisect_left(kill_times, ack.at) - 1
        if ack.tries > 1 and last_kill >= 0:
            killed_at, lines_then = kill_log[last_kill]
            if ack.first_try_at < killed_at and line_of.get(ack.key, lines_then) < lines_then:
                answered_after_kill += 1
    retried = sum(1 for ack in acks if ack.tries > 1)

    report.figure("lookups through the master", f"{len(unique_acks)} in {lookup_seconds:.1f}s")
    report.figure("records in the data file", len(records.pairs))
    report.figure("kills that left zeros written ahead (trimmed by the restart)", kills_leaving_zeros)
    report.figure("stored but never acknowledged", unacknowledged_stored)
    report.figure("acknowledged after retries", retried)
    report.figure("stored before a kill, answered with that key on a retry after it", answered_after_kill)
    report.figure("lost", len(lost))
    report.figure("lost (not redirected by the master)", len(wrong_http))
    report.figure("lost (not in the data file)", len(lost_file))
    report.figure("duplicate keys", len(duplicate_keys))
    report.figure("conflicting keys", len(conflicting))
    report.figure("URLs with two keys", len(two_keys))
    report.figure("URLs stored twice in the data file", len(duplicate_urls))
    report.figure("slave lookups wrong", f"{len(wrong_slave)} of {len(sample) * len(slaves)}")
    report.figure("disables sent", len(ledger.disable_tried))
    report.figure("disables acknowledged", len(ledger.disabled))
    report.figure("disables refused with 503 or lost to connection errors", ledger.disable_errors)
    report.figure("tombstones in the data file", len(records.tombstones))
    report.figure("disabled keys not answering 410 on the master", len(not_gone_master))
    report.figure("disabled keys not answering 410 on a slave", len(not_gone_slaves))
    report.figure("disabled keys without a tombstone", len(no_tombstone))
    report.figure("disabled keys handed out again", len(reused))
    for ack, outcome in (not_gone_master + not_gone_slaves)[:10]:
        report.note(f"disabled {ack.key} -> {ack.url}: {outcome}")
    for ack, outcome in (wrong_http + wrong_slave)[:10]:
        report.note(f"{ack.key} -> {ack.url} (acknowledged by {ack.target}, {ack.method}): {outcome}")
    for ack in lost_file[:10]:
        report.note(f"not in the data file: {ack.key} -> {ack.url} ({ack.target}, {ack.method})")
    for key, urls in list(conflicting.items())[:10]:
        report.note(f"key {key} acknowledged for {sorted(urls)}")
    for url, keys in list(two_keys.items())[:10]:
        report.note(f"URL {url} acknowledged with keys {sorted(keys)}")
    problems = fleet.problems()
    report.figure("tracebacks in server logs", len(problems))
    for line in problems[:10]:
        report.note(line)

    report.check("adds acknowledged", len(acks) > 0)
    report.check("lost == 0", not lost)
    report.check("duplicate keys == 0", not duplicate_keys)
    report.check("conflicting keys == 0", not conflicting)
    report.check("URLs with two keys == 0", not two_keys and not duplicate_urls)
    report.check("slaves redirect acknowledged adds", not wrong_slave)
    report.check(
        "data file well formed",
        not records.bad_lines and not records.torn_tail,
        "; ".join(records.bad_lines[:3]),
    )
    report.check("unexpected answers == 0", not ledger.unexpected)
    report.check("disables acknowledged", len(ledger.disabled) > 0)
    report.check("disabled keys answer 410 everywhere", not not_gone_master and not not_gone_slaves)
    report.check("disabled keys have their tombstone", not no_tombstone, ", ".join(no_tombstone[:5]))
    report.check("disabled keys never handed out again", not reused)
    back = {
        target for target in targets if any(ack.at > last_restart and ack.target == target for ack in acks)
    }
    report.check("every server acknowledges after the last restart", back == set(targets), f"{sorted(back)}")
    report.check("master stops cleanly on SIGTERM", stopped == -15, f"exit status {stopped}")
    report.check("no tracebacks in server logs", not problems)
    return report.exit_status()


def main() -> None:
    """Entry point: run the drill with the command line's arguments and exit with its status."""
    raise SystemExit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
