"""End-to-end tests of the operational drills: each drill's ``--quick`` mode, run as the real script.

Each test runs ``python drills/NAME.py --quick`` in a subprocess (so what is tested is exactly what
an operator runs), with its own process group, so that a drill that overruns its time limit is
stopped together with every server it started. A drill prints ``check NAME: ok|FAILED`` lines and
``result: PASS|FAIL`` and exits non-zero when a property fails; the tests assert the exit status and
the key figures, and show the whole output when something is wrong.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

DRILLS = Path(__file__).resolve().parents[2] / "drills"

#: Seconds one quick drill may take before it is stopped (they take about 10-20 s on 2 cores).
DRILL_TIMEOUT = 50.0


def run_drill(name: str, workdir: Path, *args: str) -> str:
    """Run ``drills/NAME.py --quick ARGS`` in ``workdir``; return its output once it exited 0.

    Fails the test with the drill's whole output if it exits non-zero or overruns
    :data:`DRILL_TIMEOUT` (then it and its servers are stopped: SIGTERM to its process group,
    SIGKILL if that is not enough).
    """
    command = [sys.executable, str(DRILLS / f"{name}.py"), "--quick", "--workdir", str(workdir), *args]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the drill and every server it started
    )
    try:
        output, _ = process.communicate(timeout=DRILL_TIMEOUT)
    except subprocess.TimeoutExpired:
        _stop_group(process)
        output, _ = process.communicate()
        pytest.fail(
            f"{name} drill overran {DRILL_TIMEOUT:g}s:\n{output.decode(errors='replace')}", pytrace=False
        )
    text = output.decode(errors="replace")
    if process.returncode != 0:
        pytest.fail(f"{name} drill exited with status {process.returncode}:\n{text}", pytrace=False)
    return text


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the drill's process group (the drill then stops its servers), SIGKILL after 10 s."""
    os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)
    with contextlib.suppress(ProcessLookupError):  # the group is gone once all its processes are
        os.killpg(process.pid, signal.SIGKILL)


def figure(output: str, name: str) -> str:
    """The value of the figure line ``NAME: VALUE`` in a drill's output."""
    match = re.search(rf"^{re.escape(name)}: (.*)$", output, re.MULTILINE)
    assert match is not None, f"no {name!r} figure in:\n{output}"
    return match.group(1)


def assert_passed(output: str) -> None:
    """Every check held and the verdict is PASS."""
    assert "check " in output, output
    assert ": FAILED" not in output, output
    assert re.search(r"^result: PASS$", output, re.MULTILINE), output


def test_crash_drill(tmp_path: Path) -> None:
    """Five SIGKILLs of a master under add load lose no acknowledged add and reuse no key; keys
    disabled meanwhile answer 410 everywhere afterwards."""
    output = run_drill("crash", tmp_path)
    assert_passed(output)
    assert figure(output, "kills") == "5"
    assert int(figure(output, "acknowledged")) > 0
    assert figure(output, "lost") == "0"
    assert figure(output, "duplicate keys") == "0"
    assert figure(output, "conflicting keys") == "0"
    assert figure(output, "URLs with two keys") == "0"
    assert figure(output, "tracebacks in server logs") == "0"
    # Tombstones (issue 11): keys disabled between kills are gone everywhere and never reused.
    assert int(figure(output, "disables acknowledged")) > 0
    assert figure(output, "disabled keys not answering 410 on the master") == "0"
    assert figure(output, "disabled keys not answering 410 on a slave") == "0"
    assert figure(output, "disabled keys without a tombstone") == "0"
    assert figure(output, "disabled keys handed out again") == "0"


def test_crash_drill_postgres(tmp_path: Path) -> None:
    """Two masters on one PostgreSQL: kills of a random master and PostgreSQL restarts under add load
    through both masters and two slaves lose no acknowledged add and hand out no key twice."""
    from tests.pgcluster import MISSING_REASON, driver_available, find_bin_dir, required

    if find_bin_dir() is None or not driver_available():
        if required():
            pytest.fail(f"GOTO_REQUIRE_POSTGRES=1: {MISSING_REASON}")
        pytest.skip(MISSING_REASON)
    output = run_drill("crash", tmp_path, "--postgres")
    assert_passed(output)
    assert figure(output, "kills") == "4"
    assert figure(output, "PostgreSQL restarts") == "3"
    assert int(figure(output, "acknowledged")) > 0
    assert figure(output, "lost") == "0"
    assert figure(output, "duplicate keys") == "0"
    assert figure(output, "conflicting keys") == "0"
    assert figure(output, "URLs with two keys") == "0"
    assert figure(output, "tracebacks in server logs") == "0"


def test_outage_drill(tmp_path: Path) -> None:
    """During a master outage (SIGTERM, then SIGKILL) slaves serve cached keys, fail the rest fast
    with 503, and recover by themselves once the master is back."""
    output = run_drill("outage", tmp_path)
    assert_passed(output)
    for round_name in ("round 1 (SIGTERM)", "round 2 (SIGKILL)"):
        assert figure(output, f"{round_name} cached-key success rate during the outage").startswith(
            "100.00% "
        )
        assert re.match(r"\{503: \d+\} ", figure(output, f"{round_name} uncached answers during the outage"))
        assert re.match(r"\{503: \d+\} ", figure(output, f"{round_name} add answers during the outage"))
        for slave in ("slave-a", "slave-b"):
            assert figure(output, f"{round_name} {slave} recovery").startswith("first add ")


def test_fuzz_drill(tmp_path: Path) -> None:
    """Malformed HTTP and XML-RPC get no 500, no stall, no crash, and memory stays bounded."""
    output = run_drill("fuzz_http", tmp_path)
    assert_passed(output)
    assert int(figure(output, "inputs tried")) > 1000
    assert figure(output, "answers with status 500") == "0"
    assert figure(output, "XML-RPC faults 8002 'error'") == "0"
    assert figure(output, "pipelined exchanges answered out of order or incompletely") == "0"
    assert figure(output, "tracebacks in server logs") == "0"
    # Issue 11's inputs reached what they aim at: keys refused and accepted, preflights, disabled links.
    operators = figure(output, "operators")
    for status in ("201", "204", "401", "410"):
        assert f"{status}: " in operators, operators
