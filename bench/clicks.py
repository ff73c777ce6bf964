"""Clicks benchmark: N redirects through two slaves become exactly N clicks on the master, and what
counting costs a redirect.

Two parts (each can be skipped):

- ``flow``: a master (``--rpc``, data file in a temporary directory) and two slaves on 127.0.0.1.
  A link is added; client threads send N ``GET /KEY`` over keep-alive connections, half to each slave
  (plus some HEADs and preview-bot requests, which must not count). The master's count
  (``GET /api/v1/links/KEY``) is then polled until it reaches N or a deadline passes: the figures are
  the redirect rate, the time until the master had them all (the flush lag), and whether the count
  is exactly N.
- ``micro``: in-process, no sockets: a ``GotoSite`` over a ``StringTransport`` answering pipelined
  redirects on the fast path and on twisted.web's general path, with a click counter and without, in
  alternating rounds; the figure is the best round's cost per redirect and the ratio. (In process:
  no socket writes, no access log, no kernel, so the ratio is an upper bound of the real one.)

Usage: ``python bench/clicks.py [--redirects N] [--skip-flow] [--skip-micro] [--json PATH]``.
Bounded: at most ``--redirects`` requests (default 20,000) and a 60 s deadline for the flow.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._procs import Child, exit_on_signals, give_servers_pypy_nursery, goto_command, twistd_of

#: Seconds the whole flow may take, and how long the master may take to have every click.
FLOW_DEADLINE = 60.0
FLUSH_DEADLINE = 15.0
#: Client threads per slave.
THREADS_PER_SLAVE = 2


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _hammer(port: int, key: str, count: int, deadline: float, errors: list[str]) -> None:
    """``count`` keep-alive ``GET /KEY`` on ``port``, each answered 302."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(count):
            if time.monotonic() > deadline:
                errors.append("deadline passed")
                return
            connection.request("GET", f"/{key}")
            response = connection.getresponse()
            response.read()
            if response.status != 302:
                errors.append(f"status {response.status}")
                return
    except (OSError, http.client.HTTPException) as exc:
        errors.append(repr(exc))
    finally:
        connection.close()


def flow(redirects: int, python: Path) -> dict[str, Any]:
    """Run the master and two slaves; return the figures of N redirects becoming N clicks."""
    twistd = twistd_of(python)
    with tempfile.TemporaryDirectory(prefix="goto-bench-clicks-") as tmp:
        work = Path(tmp)
        quiet = ("--access-log", "none")
        master = Child(
            "master", goto_command(twistd, "--rpc", "--file", str(work / "data.json"), *quiet), work
        )
        master.start()
        master_port = master.wait_port()
        slaves = [
            Child(
                name,
                goto_command(twistd, "--master", f"127.0.0.1:{master_port}", *quiet),
                work / name,
                cpu=None,
            )
            for name in ("slave-a", "slave-b")
        ]
        ports = []
        for slave in slaves:
            slave.start()
        for slave in slaves:
            ports.append(slave.wait_port())
        try:
            query = urllib.parse.urlencode({"url": "https://bench.example/clicks", "key": "bench-clicks"})
            status, body = _get(ports[0], f"/add?{query}")
            if status != 200:
                raise SystemExit(f"could not add the link: {status} {body!r}")
            for port in ports:  # not clicks: HEAD and a preview bot
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                connection.request("HEAD", "/bench-clicks")
                connection.getresponse().read()
                connection.close()
                _get(port, "/bench-clicks", {"User-Agent": "Slackbot-LinkExpanding 1.0"})
            deadline = time.monotonic() + FLOW_DEADLINE
            errors: list[str] = []
            shares = [redirects // (2 * THREADS_PER_SLAVE)] * (2 * THREADS_PER_SLAVE)
            shares[0] += redirects - sum(shares)
            threads = [
                threading.Thread(target=_hammer, args=(ports[n % 2], "bench-clicks", share, deadline, errors))
                for n, share in enumerate(shares)
            ]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            sent_seconds = time.perf_counter() - started
            if errors:
                raise SystemExit(f"redirects failed: {errors[:3]}")
            counted = -1
            flush_deadline = time.monotonic() + FLUSH_DEADLINE
            while time.monotonic() < flush_deadline:
                status, body = _get(master_port, "/api/v1/links/bench-clicks")
                counted = json.loads(body)["clicks"] if status == 200 else -1
                if counted >= redirects:
                    break
                time.sleep(0.05)
            all_counted = time.perf_counter() - started
            time.sleep(1.5)  # a late double count would show now
            _, body = _get(master_port, "/api/v1/links/bench-clicks")
            final = json.loads(body)["clicks"]
        finally:
            for child in (*slaves, master):
                child.stop()
    return {
        "redirects": redirects,
        "redirects per second (2 slaves, 4 keep-alive clients)": round(redirects / sent_seconds),
        "seconds until the master counted them all": round(all_counted, 2),
        "flush lag after the last redirect (s)": round(all_counted - sent_seconds, 2),
        "clicks on the master": final,
        "exactly N": final == redirects,
    }


def micro(rounds: int = 15, requests: int = 10_000) -> dict[str, Any]:
    """Per-redirect cost in process, with and without a click counter, fast and general path."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from goto_tw.clicks import ClickCounter
    from goto_tw.metrics import Metrics
    from goto_tw.site import GotoSite
    from goto_tw.store import URLStore
    from goto_tw.tap import make_root

    client = IPv4Address("TCP", "192.0.2.7", 40000)
    request = b"GET /abc HTTP/1.1\r\nHost: go.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n\r\n"

    def build(fast: bool, counting: bool) -> tuple[Any, StringTransport, ClickCounter | None]:
        store = URLStore({"abc": "https://a.example/x?y=1"})
        metrics = Metrics("master")
        counter = ClickCounter() if counting else None
        site = GotoSite(
            make_root(store, "go.example", metrics, clicks=counter),
            metrics,
            reactor=Clock(),
            store=store if fast else None,
            host="go.example",
            clicks=counter,
        )
        site.access_log = _NoLog()
        protocol = site.buildProtocol(client)
        transport = StringTransport(peerAddress=client)
        protocol.makeConnection(transport)
        return protocol, transport, counter

    batch = request * 50
    figures: dict[str, Any] = {}
    for path, fast in (("fast path", True), ("general path", False)):
        # Both sites are built once and take turns, round by round: the machine is shared, and the
        # best round of each is the figure (noise only ever adds time).
        sites = {counting: build(fast, counting) for counting in (False, True)}
        batches = (requests if fast else requests // 10) // 50
        best = {False: float("inf"), True: float("inf")}
        for _ in range(rounds):
            for counting, (protocol, transport, _) in sites.items():
                started = time.perf_counter()
                for _ in range(batches):
                    protocol.dataReceived(batch)
                    transport.clear()
                best[counting] = min(best[counting], (time.perf_counter() - started) / (batches * 50))
        counter = sites[True][2]
        assert counter is not None
        assert counter.pending == {"abc": rounds * batches * 50}, counter.pending  # every redirect counted
        figures[f"{path}: µs per redirect without clicks"] = round(best[False] * 1e6, 2)
        figures[f"{path}: µs per redirect with clicks"] = round(best[True] * 1e6, 2)
        figures[f"{path}: ratio"] = round(best[True] / best[False], 3)
    return figures


class _NoLog:
    """An access log that writes nothing (the benchmark measures the redirect, not the log)."""

    def log_line(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument(
        "--redirects", type=int, default=20_000, help="redirects in the flow (default 20,000)"
    )
    parser.add_argument("--python", type=Path, default=Path(sys.executable), help="the servers' interpreter")
    parser.add_argument("--skip-flow", action="store_true")
    parser.add_argument("--skip-micro", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not 0 < args.redirects <= 1_000_000:
        parser.error("--redirects must be between 1 and 1,000,000")
    exit_on_signals()
    print(f"servers: {args.python}, {give_servers_pypy_nursery()}", file=sys.stderr)
    figures: dict[str, Any] = {}
    if not args.skip_micro:
        figures["micro"] = micro()
    if not args.skip_flow:
        figures["flow"] = flow(args.redirects, args.python)
    for part, values in figures.items():
        print(f"== {part}")
        for name, value in values.items():
            print(f"{name}: {value}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    flow_figures = figures.get("flow")
    return 0 if flow_figures is None or flow_figures["exactly N"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
