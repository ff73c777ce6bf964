"""Micro-benchmark: what a master's reactor spends on one ``Store.Clicks`` call from a slave, in process.

A slave sends its click counts once a second, one call per :data:`~goto_tw.clicks.SEND_BATCH_KEYS`
keys. The master handles each call in one go (the body's XML, the checks, the look-ups that drop
unknown keys, the file's JSON line, the totals), and every look-up its slaves ask for meanwhile waits:
this is that wait, in CPU time.

The master as ``twistd goto --rpc --no-fsync`` wires it (``tap.make_root`` with ``/RPC2``, a
``GotoSite`` with its fast path, a ``URLStore`` over an ``AppendLog`` of ``--links`` links in a
temporary directory, a ``ClickBook`` beside it), fed ``POST /RPC2`` through a ``StringTransport``
(the body is longer than the fast path takes, so twisted.web's general path reads it, as in a
running master), on the reactor's own timed calls. The book's write runs at once instead of in a
thread, so the figure includes the line's ``write`` (no ``fsync``: a real master does both in a
thread, off the reactor).

Scenarios (``--only``, comma-separated): ``call``, the whole call as above; ``parse``, only
``parse_call`` of its body. Each batch holds ``--keys`` distinct links' keys with a count each
(keys taken in turn from the store, as a slave's busiest keys would be). The figure is milliseconds
of this process's CPU time per call (the best round, and the median of ``--rounds``); absolute
figures only: to compare two versions of the code, run this on each, back to back, several times::

    python bench/master_clicks.py [--keys 1000] [--calls 20] [--rounds 5] [--links 20000] [--only call,parse]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
import xmlrpc.client as xmlrpclib
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from bench import master_adds
from bench.startup import counter_keys, write_data_file
from goto_tw.xmlrpcbody import parse_call

SCENARIOS = ("call", "parse")


class Master(master_adds.Master):
    """A master with ``/RPC2`` and a click book over ``links`` links in ``directory``, and one
    connection to its site."""

    def __init__(self, directory: str, links: int) -> None:
        write_data_file(Path(directory) / "goto.json", links)
        super().__init__(directory, rpc=True)
        self.channel, self.transport = self.connect(40_000)

    def call(self, request: bytes) -> None:
        """One ``POST /RPC2``, answered (the book's write made) before this returns."""
        self.channel.dataReceived(request)
        while b"</methodResponse>" not in self.transport.value():
            self.turn()
        assert b"<boolean>1</boolean>" in self.transport.value(), self.transport.value()[-300:]
        self.transport.clear()

    def close(self) -> None:
        self.channel.connectionLost(Failure(ConnectionDone()))
        super().close()


def _bodies(keys: int, calls: int, links: int) -> list[bytes]:
    """``calls`` click batches of ``keys`` keys each, taken in turn from the keys of the ``links``
    links ``write_data_file`` writes (:func:`~bench.startup.counter_keys`)."""
    stored = [key for _, key in counter_keys(links)]
    bodies = []
    for number in range(calls):
        first = number * keys
        batch = {stored[(first + offset) % links]: 1 + offset % 7 for offset in range(keys)}
        bodies.append(xmlrpclib.dumps((batch,), "Store.Clicks").encode("utf-8"))
    return bodies


def _request(body: bytes) -> bytes:
    return (
        b"POST /RPC2 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    )


def run(name: str, keys: int, calls: int, rounds: int, links: int) -> list[float]:
    """Milliseconds of CPU per call of each round of scenario ``name``."""
    bodies = _bodies(keys, calls, links)
    requests = [_request(body) for body in bodies]
    figures = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="goto-master-clicks-") as directory:
            master = Master(directory, links)
            master.call(requests[0])  # the first write opens the file
            gc.collect()
            started = time.process_time()
            if name == "call":
                for request in requests:
                    master.call(request)
            else:
                for body in bodies:
                    parse_call(body)
            elapsed = time.process_time() - started
            master.close()
        figures.append(elapsed / calls * 1e3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1000, help="keys per call (default 1000)")
    parser.add_argument("--calls", type=int, default=20, help="calls per round (default 20)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per scenario (default 5)")
    parser.add_argument("--links", type=int, default=20_000, help="links the master holds (default 20000)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="scenarios, comma-separated")
    options = parser.parse_args()
    if not (
        1 <= options.keys <= 5000
        and 1 <= options.calls <= 1000
        and 1 <= options.rounds <= 100
        and options.keys <= options.links <= 1_000_000
    ):
        parser.error("--keys 1..5000, --calls 1..1000, --rounds 1..100, --links --keys..1000000")
    import platform

    from goto_tw import clicks

    print(
        f"{platform.python_implementation()} {platform.python_version()}, {options.keys} keys a call, "
        f"{options.links} links, goto_tw from {Path(clicks.__file__).parent}"
    )
    print(f"{'scenario':<8} {'best CPU ms/call':>16} {'median':>8}")
    for name in options.only.split(","):
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
        figures = run(name, options.keys, options.calls, options.rounds, options.links)
        print(f"{name:<8} {min(figures):>16.2f} {statistics.median(figures):>8.2f}", flush=True)


if __name__ == "__main__":
    main()
