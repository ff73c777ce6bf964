"""Micro-benchmark: what a slave's own code costs per cache miss and per add, in process.

A :class:`~goto_tw.proxystore.ProxyStore` over an in-memory fake master (no sockets, no XML, no HTTP),
with :class:`~goto_tw.web.FastAnswers` in front as the fast path uses it and a sink that takes each
answer as the fast path's channel does (``addCallbacks`` of a ready and a failed handler). What is
measured is the slave's per-call machinery only: the store's bookkeeping, coalescing and the
Deferred chain from the master's answer to the answer the fast path writes; the RPC itself is not.

The master answers either in batches on a later reactor turn (``batched``: as ``RemoteStore``
answers a multicall; ``--batch`` calls per batch, driven by a ``Clock``) or at once (``atonce``: the
Deferred it returns has already fired).

Scenarios (``--only``, comma-separated):

- ``get``: ``ProxyStore.get`` of distinct uncached keys;
- ``miss``: ``FastAnswers.redirect_later`` of distinct uncached keys (the whole miss path);
- ``miss4``: four concurrent ``redirect_later`` of each key (one master call, four waiters);
- ``put``: ``ProxyStore.put`` of distinct URLs;
- ``add``: ``FastAnswers.add`` (``GET /add?url=``) of distinct URLs (the whole add path);
- ``apiadd``: ``ProxyStore.add`` (the API's add, ``Store.Add``) of distinct URLs.

Each round makes a fresh store and ``--n`` operations; the figure is microseconds of this
process's CPU time per operation (the best round, and the median): CPU time, not wall-clock, since
on a shared machine the time other programs take is not ours. Absolute figures only: to compare two versions of the code, run
this on each, back to back, several times. Usage::

    python bench/slave_calls.py [--n 20000] [--rounds 7] [--mode batched,atonce] [--only get,miss]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from goto_tw.interfaces import ILinkAdder, IURLStore
from goto_tw.keys import is_reserved, key_for_index
from goto_tw.proxystore import ProxyStore
from goto_tw.web import FastAnswers


def _url(index: int) -> str:
    return f"https://www.example.com/articles/{index:08d}/some-readable-slug-{index % 997}"


def _keys(count: int) -> list[str]:
    keys: list[str] = []
    index = 1
    while len(keys) < count:
        key = key_for_index(index)
        if not is_reserved(key):
            keys.append(key)
        index += 1
    return keys


@implementer(IURLStore, ILinkAdder)
class FakeMaster:
    """A master that holds ``key -> URL`` for every key of the run and answers every call."""

    def __init__(self, clock: Clock, keys: list[str], batched: bool, batch: int) -> None:
        self._clock = clock
        self._urls = {key: _url(index) for index, key in enumerate(keys)}
        self._keys = keys
        self._next = 0
        self._batched = batched
        self._batch = batch
        self._pending: list[tuple[Deferred[Any], object]] = []

    def _answer(self, value: object) -> Deferred[Any]:
        answer: Deferred[Any] = Deferred()  # a plain Deferred, as RemoteStore's call answer
        if self._batched:
            self._pending.append((answer, value))
            if len(self._pending) == 1:
                self._clock.callLater(0, self._flush)
        else:
            answer.callback(value)
        return answer

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for answer, value in pending:
            answer.callback(value)

    def get(self, key: str) -> Deferred[str]:
        return self._answer(self._urls[key])

    def _new_key(self) -> str:
        key = self._keys[self._next]
        self._next += 1
        return key

    def put(self, url: str) -> Deferred[str]:
        return self._answer(self._new_key())

    def add(self, url: str, key: str | None = None) -> Deferred[tuple[str, bool]]:
        return self._answer((key or self._new_key(), True))

    def count(self) -> int:
        return 0


class Sink:
    """Takes answers as the fast path's channel does; counts them, and the failures."""

    def __init__(self) -> None:
        self.answers = 0
        self.failures: list[Failure] = []

    def take(self, answer: Deferred[Any]) -> None:
        answer.addCallbacks(self._ready, self._failed, callbackArgs=(None,), errbackArgs=(None,))

    def _ready(self, answer: object, slot: object) -> None:
        self.answers += 1

    def _failed(self, failure: Failure, slot: object) -> None:
        self.failures.append(failure)


def _scenario(
    name: str, n: int, batch: int, keys: list[str]
) -> Callable[[ProxyStore, FastAnswers, Sink, Clock], None]:
    """The body of one round of scenario ``name``: ``n`` operations, ``batch`` per reactor turn."""
    keys = keys[:n]
    urls = [_url(index) for index in range(n)]
    targets = [b"/add?url=" + url.encode() for url in urls]

    def get(store: ProxyStore, fast: FastAnswers, sink: Sink, clock: Clock) -> None:
        for start in range(0, n, batch):
            for key in keys[start : start + batch]:
                sink.take(store.get(key))
            clock.advance(0)

    def miss(store: ProxyStore, fast: FastAnswers, sink: Sink, clock: Clock) -> None:
        for start in range(0, n, batch):
            for key in keys[start : start + batch]:
                sink.take(fast.redirect_later("GET", key))
            clock.advance(0)

    def miss4(store: ProxyStore, fast: FastAnswers, sink: Sink, clock: Clock) -> None:
        quarter, per_turn = keys[: n // 4], batch // 4
        for start in range(0, len(quarter), per_turn):
            for key in quarter[start : start + per_turn]:
                for _ in range(4):
                    sink.take(fast.redirect_later("GET", key))
            clock.advance(0)

    def put(store: ProxyStore, fast: FastAnswers, sink: Sink, clock: Clock) -> None:
        for start in range(0, n, batch):
            for url in urls[start : start + batch]:
                sink.take(store.put(url))
            clock.advance(0)

    def add(store: ProxyStore, fast: FastAnswers, sink: Sink, clock: Clock) -> None:
        for start in range(0, n, batch):
            for target in targets[start : start + batch]:
                answer = fast.add("GET", target, b"")
                assert isinstance(answer, Deferred)
                sink.take(answer)
            clock.advance(0)

    def apiadd(store: ProxyStore, fast: FastAnswers, sink: Sink, clock: Clock) -> None:
        for start in range(0, n, batch):
            for url in urls[start : start + batch]:
                sink.take(store.add(url))
            clock.advance(0)

    return {"get": get, "miss": miss, "miss4": miss4, "put": put, "add": add, "apiadd": apiadd}[name]


SCENARIOS = ("get", "miss", "miss4", "put", "add", "apiadd")


def run(name: str, mode: str, n: int, rounds: int, batch: int) -> list[float]:
    """Microseconds per operation of each round of scenario ``name``."""
    keys = _keys(2 * n + 10)
    body = _scenario(name, n, batch, keys)
    figures = []
    for _ in range(rounds):
        clock = Clock()
        master = FakeMaster(clock, keys, mode == "batched", batch)
        store = ProxyStore(master, clock, cache_size=100_000)
        fast = FastAnswers(store, store, "go.example", clock)
        sink = Sink()
        gc.collect()
        started = time.process_time()
        body(store, fast, sink, clock)
        elapsed = time.process_time() - started
        operations = n if name != "miss4" else 4 * (n // 4)
        if sink.failures:
            sink.failures[0].raiseException()
        assert sink.answers == operations, (name, sink.answers, operations)
        figures.append(elapsed / operations * 1e6)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="operations per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per scenario (default 7)")
    parser.add_argument("--batch", type=int, default=48, help="calls per batch in batched mode (default 48)")
    parser.add_argument("--mode", default="batched,atonce", help="batched, atonce or both (default)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="scenarios, comma-separated")
    options = parser.parse_args()
    if not 1 <= options.n <= 1_000_000 or not 1 <= options.rounds <= 100 or not 4 <= options.batch <= 10_000:
        parser.error("--n 1..1000000, --rounds 1..100, --batch 4..10000")
    import platform

    print(
        f"{platform.python_implementation()} {platform.python_version()}, n={options.n}, batch={options.batch}"
    )
    print(f"{'scenario':<8} {'mode':<8} {'best CPU us/op':>14} {'median':>8}")
    for mode in options.mode.split(","):
        for name in options.only.split(","):
            figures = run(name, mode, options.n, options.rounds, options.batch)
            print(f"{name:<8} {mode:<8} {min(figures):>14.2f} {statistics.median(figures):>8.2f}", flush=True)


if __name__ == "__main__":
    main()
