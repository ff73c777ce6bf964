"""Micro-benchmark: CPU per RPC call of a slave and its master together, in one process.

A slave's :class:`~goto_tw.remote.RemoteStore` over its own HTTP client
(:class:`~goto_tw.masterhttp.MasterConnections`) calls ``Store.Get`` on a master's
:class:`~goto_tw.site.GotoSite` (``/RPC2`` on its fast path, an access log written to
``/dev/null``, a store of ``--keys`` links held in memory) over loopback TCP, both in this process,
on the real reactor. What is measured is everything a cache miss costs the two processes (the
slave's queueing and batching, the request and answer on both sides, XML-RPC, HTTP, the reactor,
the system calls) except a second process's wake-ups: the figure is microseconds of this process's
CPU time (user + system, ``time.process_time``) per call.

Scenarios (``--only``, comma-separated):

- ``seq``: one call at a time (the next made when the last is answered): per call *and* per batch,
  as a lone miss costs;
- ``batch``: ``--batch`` calls made in one reactor turn, again when all are answered: one
  ``system.multicall`` each, the per-call share of a batch;
- ``unknown``: ``seq`` of keys the master does not hold (a typo, a scanner): each answered with
  the master's "no link" fault, which the slave turns into its 404's error;
- ``mixed``: ``batch`` where every other key is unknown: a multicall answer with faults in it.

Each round makes ``--n`` calls (``seq``) or ``--n`` calls in batches (``batch``); the figure is the
best round and the median of ``--rounds``. CPU time, not wall-clock: on a shared machine the time
other programs take is not ours. Compare two versions of the code by running this on each, back to
back, several times (``--root`` runs another checkout's ``goto_tw``)::

    python bench/rpc_calls.py [--n 5000] [--rounds 5] [--batch 16] [--only seq,batch,unknown,mixed]
                              [--root DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT))  # for ``bench._procs`` when run as a script (it imports no goto_tw)
from bench._procs import without_gather_pause  # noqa: E402


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=5000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16, help="calls per batch in the batch scenario")
    parser.add_argument("--keys", type=int, default=1000, help="links the master holds")
    parser.add_argument("--only", default="seq,batch,unknown,mixed")
    parser.add_argument("--root", default=str(_ROOT), help="the checkout whose goto_tw is measured")
    return parser.parse_args()


def main() -> None:
    args = _parse()
    sys.path.insert(0, args.root)
    with open(os.devnull, "w", encoding="ascii") as sink:  # the master's access log
        _run(args, sink)


def _run(args: argparse.Namespace, sink: Any) -> None:
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

    import goto_tw
    from goto_tw.accesslog import LineAccessLog
    from goto_tw.errors import KeyNotFound
    from goto_tw.keys import key_for_index
    from goto_tw.masterhttp import MasterConnections
    from goto_tw.metrics import Metrics
    from goto_tw.remote import MAX_ANSWER_BYTES, RemoteStore
    from goto_tw.rpc import RPCResource
    from goto_tw.site import GotoSite
    from goto_tw.store import URLStore
    from goto_tw.tap import make_root

    print(f"goto_tw from {Path(goto_tw.__file__).parent}", flush=True)
    keys = [key_for_index(index) for index in range(1, args.keys + 1)]
    store = URLStore({key: f"https://www.example.com/articles/{key}/some-readable-slug" for key in keys})
    metrics = Metrics("master")
    site = GotoSite(
        make_root(store, "go.example", metrics, RPCResource(store)),
        metrics,
        reactor=reactor,
        store=store,
        host="go.example",
        access_log=LineAccessLog(sink, reactor),
    )
    port: Any = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[arg-type]
    client = MasterConnections(reactor, 10, max_answer_bytes=MAX_ANSWER_BYTES)
    remote = RemoteStore(
        client,
        f"http://127.0.0.1:{port.getHost().port}/RPC2",
        reactor,
        timeout=10,
        metrics=Metrics("slave"),
        **without_gather_pause(RemoteStore),
    )
    results: dict[str, list[float]] = {}

    # Keys past the store's: the master holds none of them (every call of `unknown` is a new one).
    unknown = [key_for_index(index) for index in range(args.keys + 1, args.keys + 1 + args.n)]

    def is_unknown(index: int, unknown_every: int) -> bool:
        return bool(unknown_every) and index % unknown_every == 0

    def key_of(index: int, unknown_every: int) -> str:
        if is_unknown(index, unknown_every):
            return unknown[index % len(unknown)]
        return keys[index % len(keys)]

    def check(value: object, index: int, unknown_every: int) -> None:
        if is_unknown(index, unknown_every):
            assert isinstance(value, Failure) and isinstance(value.value, KeyNotFound), value
        else:
            assert isinstance(value, str), value

    def one_at_a_time(unknown_every: int) -> Callable[[Deferred[None]], None]:
        def scenario(done: Deferred[None]) -> None:
            left = [args.n]

            def one(value: object, index: int) -> None:
                check(value, index, unknown_every)
                left[0] -= 1
                if left[0]:
                    remote.get(key_of(left[0], unknown_every)).addBoth(one, left[0]).addErrback(done.errback)
                else:
                    done.callback(None)

            remote.get(key_of(args.n, unknown_every)).addBoth(one, args.n).addErrback(done.errback)

        return scenario

    def batches(unknown_every: int) -> Callable[[Deferred[None]], None]:
        def scenario(done: Deferred[None]) -> None:
            left = [args.n]
            waiting = [0]

            def answered(value: object, index: int) -> None:
                check(value, index, unknown_every)
                waiting[0] -= 1
                if not waiting[0]:
                    some()

            def some() -> None:
                if left[0] <= 0:
                    done.callback(None)
                    return
                count = min(args.batch, left[0])
                left[0] -= count
                waiting[0] = count
                for index in range(left[0], left[0] + count):
                    remote.get(key_of(index, unknown_every)).addBoth(answered, index).addErrback(done.errback)

            some()

        return scenario

    scenarios: dict[str, Callable[[Deferred[None]], None]] = {
        "seq": one_at_a_time(0),
        "batch": batches(0),
        "unknown": one_at_a_time(1),
        "mixed": batches(2),
    }
    plan = [name for name in args.only.split(",") if name]
    for name in plan:
        if name not in scenarios:
            raise SystemExit(f"unknown scenario {name!r} ({', '.join(scenarios)})")

    def run(rounds_left: list[tuple[str, int]]) -> None:
        if not rounds_left:
            reactor.stop()
            return
        name, _ = rounds_left[0]
        done: Deferred[None] = Deferred()
        start = time.process_time()

        def finished(_: object) -> None:
            cpu = time.process_time() - start
            results.setdefault(name, []).append(1e6 * cpu / args.n)
            reactor.callLater(0, run, rounds_left[1:])

        def failed(failure: Any) -> None:
            print(failure.getTraceback(), file=sys.stderr)
            reactor.stop()

        done.addCallbacks(finished, failed)
        scenarios[name](done)

    # One warm-up round each (connections made, code paths taken), then the rounds interleaved.
    order = [(name, -1) for name in plan] + [(name, r) for r in range(args.rounds) for name in plan]

    reactor.callWhenRunning(run, order)
    reactor.run()
    print(
        f"{'scenario':<10}{'best us/call':>14}{'median':>10}   (CPU of slave + master, {args.n} calls a round)"
    )
    for name in plan:
        figures = results.get(name, [])[1:]  # the first is the warm-up
        if not figures:
            continue
        label = f"{name}{args.batch}" if name in ("batch", "mixed") else name
        print(f"{label:<10}{min(figures):>14.1f}{statistics.median(figures):>10.1f}")


if __name__ == "__main__":
    main()
