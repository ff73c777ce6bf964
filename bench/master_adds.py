"""Micro-benchmark: what a master's own code costs per add, in process.

The master as ``twistd goto --no-fsync`` wires it (``tap.make_root``, ``GotoSite`` with its fast
path, a ``URLStore`` over an ``AppendLog`` appending to a real data file in a temporary directory,
with its key bound, the link policy of ``--host``, an access log file), on the reactor's own timed
calls (``runUntilCurrent``, one call a turn, without ``epoll``: a ``Clock`` re-sorts its calls for
every call and would measure itself) and fed through ``StringTransport``\\ s instead of sockets:
what is measured
is the master's per-add machinery from the request's bytes to the answer's (parsing, the form,
validation and policy, the store, the record's encoding, the group ``write`` to the file, the
acknowledgement, the answer, its access-log line and metrics), not the network or ``fsync``.

Each reactor turn, every one of ``--connections`` connections sends one request (as wrk's
``-c50`` does), then the reactor turns once (the group of records is written and answered; its access-log lines
are written the next turn, as in a running master).

Scenarios (``--only``, comma-separated):

- ``post``: ``POST /add`` with the form body wrk sends (``bench/lua/add.lua``), every URL new;
- ``get``: ``GET /add?url=...``, every URL new;
- ``put``: ``URLStore.put`` alone (what ``Store.Put`` of a slave's add lands on), every URL new;
- ``parse``: ``fastpath.parse_simple_add`` of the ``post`` head alone.

Each round makes a fresh master (and data file) and ``--n`` adds; the figure is microseconds of
this process's CPU time per add (the best round, and the median): CPU time, not wall-clock, since
on a shared machine the time other programs take is not ours. Absolute figures only: to compare
two versions of the code, run this on each (a copy of the other commit: it imports the
``goto_tw`` beside it), back to back, several times. Usage::

    python bench/master_adds.py [--n 20000] [--rounds 7] [--connections 50] [--only post,get,put,parse]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from goto_tw import fastpath
from goto_tw.accesslog import make_access_log
from goto_tw.clicks import ClickBook, open_click_book
from goto_tw.linkstats import MasterLinkStats
from goto_tw.metrics import Metrics
from goto_tw.persistence import AppendLog, open_data_file
from goto_tw.rpc import RPCResource
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from goto_tw.tap import make_policy, make_root

HOST = "bench.test"


def _form_body(index: int) -> bytes:
    """A body as ``bench/lua/add.lua`` makes it: ``url=`` and a new percent-encoded URL."""
    return b"url=http%%3A%%2F%%2Fbench.example%%2Fnonce-%d-%d" % (index, (index * 7919) % 1_000_000_007)


def _post(index: int) -> bytes:
    """The request wrk sends for ``wrk.format("POST", "/add", headers, body)``."""
    body = _form_body(index)
    return (
        b"POST /add HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def _get(index: int) -> bytes:
    return b"GET /add?%s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n" % _form_body(index)


def _run_now(blocking: Callable[[], None]) -> Deferred[None]:
    """The key bound's thread runner, run at once (a thread in the real master)."""
    return maybeDeferred(blocking)


class Master:
    """A master's site, store and data file (``--no-fsync``) in ``directory``, on the reactor; with
    ``rpc``, also its ``/RPC2`` and click book (``--rpc``), as ``bench/master_clicks.py`` uses it."""

    def __init__(self, directory: str, *, rpc: bool = False) -> None:
        from twisted.internet import reactor

        self.clock: Any = reactor
        data = open_data_file(os.path.join(directory, "goto.json"))
        self.log = AppendLog(
            data.record_file,
            self.clock,
            fsync=False,
            run_in_thread=_run_now,
            key_bound=data.key_bound,
            resume_index=data.next_index,
        )
        self.log.startService()
        self.store = URLStore(data.urls, self.log, next_index=data.next_index, clock=self.clock)
        self.store.policy = make_policy({"host": HOST})
        metrics = Metrics("master")
        self.access_log: Any = make_access_log(os.path.join(directory, "access.log"), self.clock)
        self.book: ClickBook | None = None
        if rpc:
            self.book = _click_book(os.path.join(directory, "goto.json.clicks"), self.store, self.clock)
            stats = MasterLinkStats(self.store, self.store, self.book)
            resource = RPCResource(self.store, None, self.book, stats)
            root = make_root(self.store, HOST, metrics, resource, self.book.counter, stats)
        else:
            root = make_root(self.store, HOST, metrics)
        self.site = GotoSite(
            root, metrics, reactor=self.clock, store=self.store, host=HOST, access_log=self.access_log
        )

    def connect(self, port: int) -> tuple[Any, StringTransport]:
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", port))
        channel.makeConnection(transport)
        return channel, transport

    def turn(self) -> None:
        """One reactor turn's timed calls (those due now), as a running reactor makes them."""
        self.clock.runUntilCurrent()

    def close(self) -> None:
        self.turn()
        self.access_log.stopService()  # its last lines written, its file closed
        for service in (self.book, self.log):
            if service is not None:
                stopped = service.stopService()
                while not stopped.called:
                    self.turn()


def _click_book(path: str, store: URLStore, clock: Any) -> ClickBook:
    """The master's click book at ``path`` (``--no-fsync``; its writes made at once, not in a thread)."""
    totals, marks, lines = open_click_book(path, clock.seconds(), store.next_index)
    book = ClickBook(
        path,
        totals,
        clock,
        fsync=False,
        run_in_thread=_run_now,
        marks=marks,
        next_index=store.next_index,
        lines=lines,
    )
    book.startService()
    return book


def _through_channels(requests: list[bytes], connections: int) -> Callable[[Master], int]:
    """Feed ``requests`` over ``connections`` channels, one each per turn; return the 200s answered."""

    def body(master: Master) -> int:
        links = [master.connect(40_000 + number) for number in range(connections)]
        answered = 0
        for start in range(0, len(requests), connections):
            for (channel, _), request in zip(links, requests[start : start + connections]):
                channel.dataReceived(request)
            master.turn()
            for _, transport in links:
                answered += transport.value().count(b"HTTP/1.1 200 ")
                transport.clear()
        for channel, _ in links:
            channel.connectionLost(Failure(ConnectionDone()))  # its timeouts leave the reactor
        return answered

    return body


def _puts(urls: list[str], connections: int) -> Callable[[Master], int]:
    """``URLStore.put`` of ``urls``, ``connections`` per turn; return how many answered a key."""

    def body(master: Master) -> int:
        answered = [0]

        def got(key: str) -> None:
            answered[0] += 1

        for start in range(0, len(urls), connections):
            for url in urls[start : start + connections]:
                master.store.put(url).addCallback(got)
            master.turn()
        return answered[0]

    return body


def _parses(heads: list[bytes]) -> Callable[[Master], int]:
    def body(master: Master) -> int:
        parse = fastpath.parse_simple_add
        return sum(1 for head in heads if parse(head) is not None)

    return body


SCENARIOS = ("post", "get", "put", "parse")


def run(name: str, n: int, rounds: int, connections: int) -> list[float]:
    """Microseconds of CPU per add of each round of scenario ``name``."""
    if name == "post":
        body = _through_channels([_post(index) for index in range(n)], connections)
    elif name == "get":
        body = _through_channels([_get(index) for index in range(n)], connections)
    elif name == "put":
        body = _puts(
            [f"http://bench.example/nonce-{index}-{index * 7919}" for index in range(n)], connections
        )
    else:
        body = _parses([_post(index).split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" for index in range(n)])
    figures = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="goto-master-adds-") as directory:
            master = Master(directory)
            gc.collect()
            started = time.process_time()
            answered = body(master)
            elapsed = time.process_time() - started
            master.close()
            if name != "parse":
                assert master.store.count() == n, (name, master.store.count(), n)
        assert answered == n, (name, answered, n)
        figures.append(elapsed / n * 1e6)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="adds per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per scenario (default 7)")
    parser.add_argument("--connections", type=int, default=50, help="requests per turn (default 50)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="scenarios, comma-separated")
    options = parser.parse_args()
    if (
        not 1 <= options.n <= 1_000_000
        or not 1 <= options.rounds <= 100
        or not 1 <= options.connections <= 1000
    ):
        parser.error("--n 1..1000000, --rounds 1..100, --connections 1..1000")
    import platform

    print(
        f"{platform.python_implementation()} {platform.python_version()}, n={options.n}, "
        f"connections={options.connections}, goto_tw from {Path(fastpath.__file__).parent}"
    )
    print(f"{'scenario':<8} {'best CPU us/add':>15} {'median':>8}")
    for name in options.only.split(","):
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
        figures = run(name, options.n, options.rounds, options.connections)
        print(f"{name:<8} {min(figures):>15.2f} {statistics.median(figures):>8.2f}", flush=True)


if __name__ == "__main__":
    main()
