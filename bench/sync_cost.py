"""What one synced write of the data file costs: appended and ``fsync``ed (the file grows, so the file
system journals a new size each time: goto-tw before its zeros written ahead) against the data file as
a master syncing its adds writes it now (goto_tw.persistence.OSRecordFile with SPARE_BYTES of zeros
written ahead, ``fdatasync``: the size stays but once every SPARE_BYTES).

Usage: python bench/sync_cost.py [--dir DIR] [--bytes 1500] [--rounds 6] [--seconds 1.5]

Each round runs both ways for ``--seconds`` each, taking turns; prints per round and the medians of the
wall time and the system CPU per synced write. DIR must be on the disk the data file will live on
(default: the current directory). Run it alone: a second program's I/O moves the figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from typing import Callable

from goto_tw.persistence import SPARE_BYTES, OSRecordFile


def _measure(step: Callable[[int], None], seconds: float) -> tuple[float, float]:
    """Run ``step(n)`` for ``seconds``; return wall and system-CPU microseconds per step."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    started = time.perf_counter()
    count = 0
    while time.perf_counter() < started + seconds:
        step(count)
        count += 1
    elapsed = time.perf_counter() - started
    system = resource.getrusage(resource.RUSAGE_SELF).ru_stime - before
    return elapsed / count * 1e6, system / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=".", help="a directory on the data file's disk")
    parser.add_argument("--bytes", type=int, default=1500, help="bytes per write (a group of adds)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=1.5, help="per way and round")
    args = parser.parse_args()
    record = b"x" * (args.bytes - 1) + b"\n"
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        appended = os.open(os.path.join(directory, "appended"), os.O_RDWR | os.O_APPEND | os.O_CREAT)
        data_file = OSRecordFile(os.path.join(directory, "data"))
        data_file.open(spare=SPARE_BYTES)

        def append(_: int) -> None:
            os.write(appended, record)
            os.fsync(appended)

        def into_zeros(_: int) -> None:
            data_file.write_all(record)
            data_file.sync()

        ways = (("append + fsync", append), ("zeros ahead + fdatasync", into_zeros))
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in ways}
        for round_number in range(1, args.rounds + 1):
            for name, step in ways:
                wall, system = _measure(step, args.seconds)
                figures[name].append((wall, system))
                print(
                    f"round {round_number}: {name:24s} {wall:7.0f} us wall {system:6.1f} us system",
                    flush=True,
                )
        for name, rows in figures.items():
            wall = statistics.median(row[0] for row in rows)
            system = statistics.median(row[1] for row in rows)
            print(f"median: {name:24s} {wall:7.0f} us wall {system:6.1f} us system")
        os.close(appended)
        data_file.close()


if __name__ == "__main__":
    main()
