"""Start-up benchmark: how long a master takes to load an N-record data file, and its memory.

Usage: python bench/startup.py [--records 1000000] [--rounds 3]

It writes a data file in a temporary directory, then, in a fresh interpreter per round (so one round's
memory does not flatter the next), times ``open_data_file`` (lock, load, key bound) plus building the ``URLStore``, and reports
the process's peak RSS. Prints one line per round and a median.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from goto_tw.keys import is_reserved, key_for_index
from goto_tw.persistence import encode_record

_ROUND = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from goto_tw.persistence import open_data_file
from goto_tw.store import URLStore
t1 = time.perf_counter()
data = open_data_file(sys.argv[1])
store = URLStore(data.urls, next_index=data.next_index)
t2 = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"records": store.count(), "import_s": t1 - t0, "load_s": t2 - t1, "peak_rss_mib": rss}))
"""


def bench_url(index: int) -> str:
    """The URL the benchmarks store under the key of ``index``: realistic, 80-90 characters."""
    return f"https://www.example.com/articles/{index:08d}/some-readable-slug-{index % 997}?ref=bench"


def counter_keys(records: int) -> Iterator[tuple[int, str]]:
    """The first ``records`` keys a master's counter hands out, with their indexes: the reserved
    keys (``add``, ``api``...) skipped."""
    keys = ((index, key_for_index(index)) for index in itertools.count())
    return itertools.islice(((index, key) for index, key in keys if not is_reserved(key)), records)


def write_data_file(path: Path, records: int) -> None:
    """Write ``records`` realistic-looking records (URLs of 60-90 characters), keyed as a master
    would key them (:func:`counter_keys`), and sync them to disk."""
    with path.open("wb") as out:
        for index, key in counter_keys(records):
            out.write(encode_record(key, bench_url(index)))
        # On disk, as a master's data file is when it starts: a master's start-up syncs its data file
        # (a crash may have left records unsynced), and would otherwise also write this whole file out.
        out.flush()
        os.fsync(out.fileno())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.json"
        write_data_file(path, args.records)
        size_mib = path.stat().st_size / 2**20
        print(
            f"{sys.implementation.name} {sys.version.split()[0]}: {args.records} records, {size_mib:.0f} MiB"
        )
        rounds = []
        for number in range(args.rounds):
            out = subprocess.run(
                [sys.executable, "-c", _ROUND, str(path)], check=True, capture_output=True, text=True
            )
            result = json.loads(out.stdout)
            rounds.append(result)
            print(
                f"round {number + 1}: load {result['load_s']:.2f} s, peak RSS {result['peak_rss_mib']:.0f} MiB"
            )
        print(
            f"median: load {statistics.median(r['load_s'] for r in rounds):.2f} s, "
            f"peak RSS {statistics.median(r['peak_rss_mib'] for r in rounds):.0f} MiB"
        )


if __name__ == "__main__":
    main()
