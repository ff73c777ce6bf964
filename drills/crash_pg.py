"""The crash drill's PostgreSQL mode (``drills/crash.py --postgres``): masters share one database.

Two masters (``--store postgresql://...``) on one throwaway PostgreSQL cluster, two slaves each given
both masters (``--master A,B``). Client threads add unique URLs without pause through all four.
Meanwhile a random master is killed with SIGKILL and restarted on its port, ``--kills`` times, and
PostgreSQL itself is restarted (``pg_ctl restart -m immediate``: a crash of the server) three times
at random moments among the kills.

Checks: every acknowledged add redirects through both masters (their caches are cold after their
restarts, so this reads the database) and a sample through each slave; the database holds every
acknowledged pair; no key was acknowledged for two URLs and no URL got two keys; adds kept being
acknowledged through the surviving master (directly or through the slaves) while the other was down;
every server acknowledged adds after the last restart; no traceback in any log.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

from drills._common import Fleet, Report, summarize
from drills._load import AddClient, Ledger, key_conflicts, lookup_all, wait_for_acks_after
from tests.pgcluster import Cluster, find_bin_dir

#: PostgreSQL restarts in a full run (and in a quick one).
PG_RESTARTS = 3


def drill_postgres(
    report: Report,
    fleet: Fleet,
    kills: int,
    rng: random.Random,
    clients_per_server: int,
    quick: bool,
) -> int:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        report.check("PostgreSQL server programs found", False, "install Debian's postgresql package")
        return report.exit_status()
    cluster = Cluster(bin_dir, fsync=not quick)
    cluster.start()
    try:
        return _drill(report, fleet, cluster, kills, rng, clients_per_server, quick)
    finally:
        fleet.close()
        cluster.destroy()


def _drill(
    report: Report,
    fleet: Fleet,
    cluster: Cluster,
    kills: int,
    rng: random.Random,
    clients_per_server: int,
    quick: bool,
) -> int:
    uri = cluster.new_database("crash")
    quiet = ("--access-log", "none")
    masters = [
        fleet.start("--rpc", "--store", uri, *quiet, name=name, data_file=None, wait=False)
        for name in ("master-a", "master-b")
    ]
    for master in masters:
        master.wait_ready()
    master_list = ",".join(f"127.0.0.1:{master.port}" for master in masters)
    slaves = [
        fleet.start(
            "--master", master_list, "--rpc-timeout", "2", *quiet, name=name, data_file=None, wait=False
        )
        for name in ("slave-a", "slave-b")
    ]
    for slave in slaves:
        slave.wait_ready()
    targets = {process.name: process.port for process in masters + slaves}

    ledger = Ledger()
    stop = threading.Event()
    uptime = (0.3, 0.8) if quick else (0.3, 1.5)
    downtime = (0.3, 0.8)
    deadline = time.monotonic() + kills * (uptime[1] + downtime[1] + 15) + 120
    clients = [
        AddClient(number, target, port, ledger, stop, deadline)
        for number, (target, port) in enumerate(
            (target, port) for target, port in targets.items() for _ in range(clients_per_server)
        )
    ]
    pg_restart_at = set(rng.sample(range(kills), min(PG_RESTARTS, kills)))
    restart_seconds: list[float] = []
    pg_restart_seconds: list[float] = []
    #: (killed master's name, down from, down until) for every kill.
    windows: list[tuple[str, float, float]] = []
    load_started = time.monotonic()
    for client in clients:
        client.start()
    try:
        for number in range(kills):
            time.sleep(rng.uniform(*uptime))
            index = rng.randrange(len(masters))
            victim = masters[index]
            victim.kill()
            down_from = time.monotonic()
            time.sleep(rng.uniform(*downtime))
            down_until = time.monotonic()
            windows.append((victim.name, down_from, down_until))
            spawned = time.monotonic()
            masters[index] = fleet.restart(victim)
            restart_seconds.append(time.monotonic() - spawned)
            if number in pg_restart_at:
                time.sleep(rng.uniform(*uptime))
                began = time.monotonic()
                cluster.restart("immediate")
                pg_restart_seconds.append(time.monotonic() - began)
        last_restart = time.monotonic()
        wait_for_acks_after(ledger, last_restart, set(targets), timeout=15.0)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=15)
    load_seconds = time.monotonic() - load_started

    acks = ledger.acks
    report.figure("kills", kills)
    report.figure("PostgreSQL restarts", len(pg_restart_seconds))
    report.figure("master restart (spawn to listening)", summarize(restart_seconds))
    report.figure("PostgreSQL restart (immediate)", summarize(pg_restart_seconds))
    report.figure("load seconds", f"{load_seconds:.1f}")
    report.figure("add attempts", sum(ledger.attempts.values()))
    report.figure("acknowledged", len(acks))
    report.figure("acknowledged per second", f"{len(acks) / load_seconds:.0f}")
    report.figure("acknowledged by server", dict(sorted(Counter(ack.target for ack in acks).items())))
    report.figure("refused with 503", dict(sorted(ledger.unavailable.items())))
    report.figure("connection errors", dict(sorted(ledger.connection_errors.items())))
    report.figure("abandoned URLs", ledger.abandoned)
    report.figure("unexpected answers", len(ledger.unexpected))
    for target, method, code, body in ledger.unexpected[:10]:
        report.note(f"{target} {method}: {code} {body!r}")

    # While a master was down, did adds go on being acknowledged by the others (or the slaves)?
    flowing = 0
    for victim_name, down_from, down_until in windows:
        if any(down_from < ack.at <= down_until and ack.target != victim_name for ack in acks):
            flowing += 1
    report.figure("kill windows with adds acknowledged meanwhile", f"{flowing} of {len(windows)}")

    conflicting, two_keys = key_conflicts(acks)

    unique_acks = list({ack.key: ack for ack in acks}.values())
    looked_up = time.monotonic()
    wrong_masters = [item for master in masters for item in lookup_all(master.port, unique_acks)]
    lookup_seconds = time.monotonic() - looked_up
    sample = rng.sample(unique_acks, min(500, len(unique_acks)))
    wrong_slave = [item for slave in slaves for item in lookup_all(slave.port, sample, threads=1)]

    import psycopg

    with psycopg.connect(uri) as connection:
        rows = connection.execute("SELECT key, url FROM goto_links").fetchall()
    stored = {(key, url) for key, url in rows}
    lost_db = [ack for ack in unique_acks if (ack.key, ack.url) not in stored]
    acked_urls = {ack.url for ack in acks}
    lost = {ack.key for ack in lost_db} | {ack.key for ack, _ in wrong_masters}

    report.figure("lookups through both masters", f"{2 * len(unique_acks)} in {lookup_seconds:.1f}s")
    report.figure("rows in the database", len(rows))
    report.figure("stored but never acknowledged", sum(1 for _, url in rows if url not in acked_urls))
    report.figure("lost", len(lost))
    report.figure("lost (not in the database)", len(lost_db))
    duplicate_keys = [key for key, n in Counter(key for key, _ in rows).items() if n > 1]
    report.figure("duplicate keys", len(duplicate_keys))
    report.figure("conflicting keys", len(conflicting))
    report.figure("URLs with two keys", len(two_keys))
    report.figure("slave lookups wrong", f"{len(wrong_slave)} of {len(sample) * len(slaves)}")
    for ack, outcome in (wrong_masters + wrong_slave)[:10]:
        report.note(f"{ack.key} -> {ack.url} (acknowledged by {ack.target}, {ack.method}): {outcome}")
    problems = fleet.problems()
    report.figure("tracebacks in server logs", len(problems))
    for line in problems[:10]:
        report.note(line)

    report.check("adds acknowledged", len(acks) > 0)
    report.check("lost == 0", not lost)
    report.check("keys handed out twice == 0", not conflicting and not duplicate_keys)
    report.check("URLs with two keys == 0", not two_keys)
    report.check("slaves redirect acknowledged adds", not wrong_slave)
    report.check("unexpected answers == 0", not ledger.unexpected)
    report.check(
        "adds flowed while a master was down",
        flowing * 2 >= len(windows),
        f"{flowing} of {len(windows)} kill windows",
    )
    back = {
        target for target in targets if any(ack.at > last_restart and ack.target == target for ack in acks)
    }
    report.check("every server acknowledges after the last restart", back == set(targets), f"{sorted(back)}")
    report.check("no tracebacks in server logs", not problems)
    return report.exit_status()
