"""bench/sync_cost.py: both ways of a synced write run, take turns each round, and leave the directory
they were given as they found it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SYNC_COST = Path(__file__).resolve().parent.parent / "bench" / "sync_cost.py"


def test_sync_cost_prints_both_ways_per_round_and_their_medians(tmp_path: Path) -> None:
    root = str(SYNC_COST.parent.parent)
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    ran = subprocess.run(
        [sys.executable, str(SYNC_COST), "--dir", str(tmp_path), "--rounds", "2", "--seconds", "0.05"],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=True,
    )
    lines = ran.stdout.splitlines()
    way = r"(append \+ fsync|zeros ahead \+ fdatasync) +\d+ us wall +[\d.]+ us system"
    assert [re.fullmatch(rf"round (\d): {way}", line) is not None for line in lines[:4]] == [True] * 4
    assert [line.split(":")[0] for line in lines[:4]] == ["round 1", "round 1", "round 2", "round 2"]
    assert [re.fullmatch(rf"median: {way}", line) is not None for line in lines[4:]] == [True, True]
    assert list(tmp_path.iterdir()) == []
