"""bench/run.py and bench/profile.py bookkeeping: fresh keys, scenario choice, ratios, options, profiles.

No server and no wrk here: the scenarios are given wrk results as run_wrk returns them.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import bench.run
import goto_tw
from bench import _procs
from bench.profile import _OUTER, short_frame, top_functions
from bench.run import (
    UNKNOWN_BASE,
    BenchError,
    FreshKeys,
    Scenario,
    chosen,
    cpu_text,
    go_comparison,
    print_table,
    rpc_requests,
    summarize,
)
from goto_tw.metrics import Metrics
from goto_tw.nursery import RECOMMENDED_NURSERY


def result(rps: float, p99_us: int = 1000, **extra: Any) -> dict[str, Any]:
    """A wrk result as run_wrk and Scenario.run return it."""
    base: dict[str, Any] = {
        "requests": int(rps),
        "duration_us": 1_000_000,
        "issued": int(rps),
        "misses": 0,
        "unknowns": 0,
        "stale": 0,
        "errors": {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0},
        "latency_us": {"mean": 1.0, "p50": 500, "p90": 800, "p99": p99_us, "max": 5000},
        "rps": rps,
        "server_cpu": 1.0,
        "wrk_cpu": 0.5,
        "other_cpu": 0.0,
    }
    base.update(extra)
    return base


def scenario(name: str, kind: str = "redirect", **fields: Any) -> Scenario:
    """A scenario with no processes behind it."""
    return Scenario(name, name, kind, 1, "redirect.lua", ["100"], [], **fields)


def test_mixed_scenario_moves_past_its_misses_and_unknown_keys() -> None:
    """Each run of the mix starts after the misses and unknown keys the previous runs requested, so
    a miss is never a key the slave has already fetched."""
    mixed = scenario("m", "mixed", fresh=FreshKeys(first=100, count=50))
    assert mixed.wrk_args() == ["100", "100", "50", str(UNKNOWN_BASE)]
    mixed.account(result(1000, misses=10, unknowns=11))
    assert mixed.wrk_args() == ["100", "110", "40", str(UNKNOWN_BASE + 11)]


def test_fresh_scenario_requests_each_key_once_and_flags_running_out() -> None:
    """go-e asks for keys never asked before (once mode), and counts the requests made after the
    range ran out (redirect.lua then repeats a key: cache hits) as stale."""
    fresh = scenario("go-e", "fresh", fresh=FreshKeys(first=500, count=100))
    assert fresh.wrk_args() == ["100", "500", "once"]
    first = result(60, issued=60)
    fresh.account(first)
    assert first["stale"] == 0 and fresh.wrk_args() == ["40", "560", "once"]
    second = result(70, issued=40)
    fresh.account(second)
    assert second["stale"] == 30 and fresh.fresh is not None and fresh.fresh.left == 0


def test_chosen_keeps_what_ratios_need() -> None:
    """--only m brings in ref, m's all-hits scenario a, the Go peer go-m and go-m's all-hits go-a."""
    scenarios = [
        scenario("ref"),
        scenario("b", go_peer="go-b"),
        scenario("a", go_peer="go-a"),
        scenario("m", "mixed", all_hits="a", go_peer="go-m"),
        scenario("go-b"),
        scenario("go-a"),
        scenario("go-m", "mixed", all_hits="go-a"),
    ]
    assert [s.name for s in chosen(scenarios, {"m"})] == ["ref", "a", "m", "go-a", "go-m"]
    assert [s.name for s in chosen(scenarios[:4], {"m"})] == ["ref", "a", "m"]
    with pytest.raises(BenchError, match="no scenario x"):
        chosen(scenarios, {"x"})


def test_summary_ratios_and_expected_refusals() -> None:
    """A mix is given as a ratio to its all-hits scenario round by round, and its unknown keys'
    refusals are not errors; the Go table divides round by round and puts the p99s side by side."""
    ref = scenario("ref")
    hits = scenario("a", go_peer="go-a")
    mix = scenario("m", "mixed", all_hits="a", go_peer="go-m")
    go_hits = scenario("go-a")
    go_mix = scenario("go-m", "mixed", all_hits="go-a")
    refused = {"connect": 0, "read": 0, "write": 0, "status": 9, "timeout": 0}
    for number, (r, a, m, ga, gm) in enumerate([(10, 20, 18, 40, 40), (10, 10, 5, 20, 10)]):
        ref.rounds.append(result(r))
        hits.rounds.append(result(a, p99_us=4000))
        mix.rounds.append(
            result(
                m,
                unknowns=10 if number == 0 else 8,
                errors=refused,
                cpu_us_per_request={"master": 4.0 + number, "slave": 30.0 + 2 * number},
            )
        )
        go_hits.rounds.append(result(ga, p99_us=2000))
        go_mix.rounds.append(result(gm, cpu_us_per_request={"go-master": 2.0, "go-slave": 10.0}))
    rows = {row["name"]: row for row in summarize([ref, hits, mix, go_hits, go_mix])}
    assert rows["m"]["ratio_to_all_hits"] == {"median": 0.7, "min": 0.5, "max": 0.9}
    assert rows["m"]["non_2xx_3xx"] == 18 and rows["m"]["unexpected_non_2xx_3xx"] == 0
    assert rows["a"]["ratio_to_reference"]["median"] == 1.5
    go_rows = {row["name"]: row for row in go_comparison([ref, hits, mix, go_hits, go_mix])}
    assert set(go_rows) == {"a", "m"}
    assert go_rows["a"]["ratio_to_go"] == {"median": 0.5, "min": 0.5, "max": 0.5}
    assert go_rows["a"]["p99_x_go"] == 2.0
    # CPU per request, process by process: the median of the rounds (absent where not measured)
    assert rows["m"]["cpu_us_per_request"] == {"master": 4.5, "slave": 31.0}
    assert rows["a"]["cpu_us_per_request"] == {}
    assert go_rows["m"]["go_cpu_us_per_request"] == {"go-master": 2.0, "go-slave": 10.0}


METRICS = b"""# HELP goto_http_requests_total Requests answered
goto_http_requests_total{method="GET",route="redirect",status="302"} 5000.0
goto_http_requests_total{method="POST",route="rpc",status="200"} 1200.0
goto_http_requests_total{method="POST",route="rpc",status="401"} 3.0
goto_http_requests_created{method="POST",route="rpc",status="200"} 1.7e+09
"""


def test_rpc_requests_sums_every_rpc_status_of_the_master(monkeypatch: pytest.MonkeyPatch) -> None:
    """The master's ``POST /RPC2`` answered, whatever their status (not its other routes, not the
    ``_created`` timestamps); ``None`` when the metrics cannot be had or do not say."""
    answers: list[Any] = [(200, {}, METRICS)]
    monkeypatch.setattr(bench.run, "fetch", lambda port, method, path: answers[0])
    assert rpc_requests(1) == 1203
    answers[0] = (200, {}, b'goto_http_requests_total{route="redirect"} 1.0\n')
    assert rpc_requests(1) is None
    answers[0] = (503, {}, METRICS)
    assert rpc_requests(1) is None

    def refused(port: int, method: str, path: str) -> Any:
        raise ConnectionRefusedError()

    monkeypatch.setattr(bench.run, "fetch", refused)
    assert rpc_requests(1) is None


def test_rpc_requests_reads_a_masters_own_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a goto-tw master's ``/_goto/metrics`` really says, not a hand-written sample: its label
    order, its counts of a million or more (written ``1.234567e+06``), its ``POST /RPC2`` of every
    status counted; a ``GET /RPC2`` (405: no batch of a slave) and its other routes not."""
    metrics = Metrics("master")
    metrics.requests[("rpc", "POST", 200)] += 1_234_567
    metrics.count_request("rpc", "POST", 401)
    metrics.count_request("rpc", "GET", 405)
    metrics.count_request("redirect", "GET", 302)
    monkeypatch.setattr(bench.run, "fetch", lambda port, method, path: (200, {}, metrics.render()))
    assert rpc_requests(1) == 1_234_568
    reordered = b'goto_http_requests_total{status="200",route="rpc",method="POST"} 7.0\n'
    monkeypatch.setattr(bench.run, "fetch", lambda port, method, path: (200, {}, reordered))
    assert rpc_requests(1) == 7, "labels in another order"


def test_a_slave_scenario_notes_its_masters_rpc_rate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Scenario.run reads the master's ``POST /RPC2`` count (its port, not the slave's) before and
    after wrk's run: the difference over the run's time; no master port, no figure."""
    counts = {2: [100.0, 1100.0]}  # the master's, read before and after the run
    asked: list[int] = []

    def fetch(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        asked.append(port)
        rpc = counts[port].pop(0) if port in counts else 0.0
        return 200, {}, f'goto_http_requests_total{{method="POST",route="rpc",status="200"}} {rpc}\n'.encode()

    clock = iter([10.0, 12.0])
    monkeypatch.setattr(bench.run, "fetch", fetch)
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(bench.run, "run_wrk", lambda *args: result(10, wrk_cpu_s=0.0))
    monkeypatch.setattr(bench.run, "machine_busy_seconds", lambda: 0.0)
    slave = scenario("m", slave_port=1, master_port=2)
    assert slave.run(1.0, tmp_path)["rpc_requests_per_second"] == 500.0
    assert 2 in asked and not counts[2]
    clock = iter([10.0, 12.0])
    assert "rpc_requests_per_second" not in scenario("c", kind="add").run(1.0, tmp_path)


def test_the_rpc_rate_is_the_median_of_the_rounds_and_printed(capsys: pytest.CaptureFixture[str]) -> None:
    """A slave scenario's ``POST /RPC2`` a second: the median of the rounds that measured it."""
    ref, mix, bare = scenario("ref"), scenario("m"), scenario("a")
    for rate in (100.0, 300.0, 200.0):
        ref.rounds.append(result(10))
        mix.rounds.append(result(10, rpc_requests_per_second=rate))
        bare.rounds.append(result(10))
    rows = summarize([ref, mix, bare])
    assert rows[1]["rpc_requests_per_second"] == 200.0
    assert "rpc_requests_per_second" not in rows[2]
    print_table(rows)
    assert "m: 200 POST /RPC2 a second on the master" in capsys.readouterr().out


def test_cpu_per_request_reads_process_by_process() -> None:
    """One process: its figure; several: the total, then each (what the notes print)."""
    assert cpu_text({}) == "-"
    assert cpu_text({"master": 21.04}) == "21.0"
    assert cpu_text({"master": 4.5, "slave": 31.0}) == "35.5 (master 4.5 + slave 31.0)"


def fake_twistd(tmp_path: Path, help_text: str) -> Path:
    """A ``twistd`` that prints ``help_text`` for ``goto --help``, as an older checkout's would."""
    twistd = tmp_path / "twistd"
    twistd.write_text(f"#!/bin/sh\ncat <<'EOF'\n{help_text}\nEOF\n")
    twistd.chmod(twistd.stat().st_mode | stat.S_IXUSR)
    return twistd


def test_add_rate_only_for_servers_that_have_it(tmp_path: Path) -> None:
    """An older checkout's goto has no --add-rate: its command line must not carry the option
    (twistd would refuse to start); a goto that has it gets --add-rate off."""
    old = fake_twistd(tmp_path, "  --http=  where to listen\n  --rpc  serve RPC")
    assert "--add-rate" not in _procs.goto_command(old, "--rpc")
    (tmp_path / "new").mkdir()
    new = fake_twistd(tmp_path / "new", "  --http=\n  --add-rate=  adds per second")
    assert _procs.goto_command(new, "--rpc")[-2:] == ["--add-rate", "off"]


def test_profile_reads_collapsed_stacks() -> None:
    """py-spy's --threads collapsed stacks become per-thread counts, own and on-the-stack counts."""
    lines = [
        "thread (1): MainThread;<module> (twistd);ReactorBase.mainLoop (/v/site-packages/twisted/internet/base.py);"
        "render (/w/goto_tw/web.py);quote (/usr/lib/python3.11/urllib/parse.py) 3",
        "thread (1): MainThread;<module> (twistd);render (/w/goto_tw/web.py) 1",
        "thread (2): PoolThread;sync (/w/goto_tw/persistence.py) 2",
        "garbage line",
    ]
    profile = top_functions(lines)
    assert profile.total == 6
    assert profile.threads == {"MainThread": 4, "PoolThread": 2}
    assert profile.own["quote (urllib/parse.py)"] == 3
    assert profile.inclusive["render (goto_tw/web.py)"] == 4 and profile.own["render (goto_tw/web.py)"] == 1
    assert (
        short_frame("doRead (/v/site-packages/twisted/internet/tcp.py)") == "doRead (twisted/internet/tcp.py)"
    )
    assert _OUTER.search("ReactorBase.mainLoop (twisted/internet/base.py)")
    assert not _OUTER.search("render (goto_tw/web.py)")
    # vmprof on PyPy names functions without their class
    assert _OUTER.search("mainLoop (twisted/internet/base.py)") and _OUTER.search(
        "entry_point (<builtin>/app_main.py)"
    )
    assert not _OUTER.search("doRead (twisted/internet/tcp.py)")


def test_servers_get_the_nursery_the_units_set_unless_the_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PyPy servers are measured with the units' ``PYPY_GC_NURSERY``; a value already set (even an
    empty one, which leaves the size to PyPy) is kept, and the header says which."""
    monkeypatch.setenv("PYPY_GC_NURSERY", "")  # records how it was, so every change below is undone
    monkeypatch.delenv("PYPY_GC_NURSERY")
    assert _procs.give_servers_pypy_nursery() == f"PYPY_GC_NURSERY={RECOMMENDED_NURSERY} (PyPy only)"
    assert os.environ["PYPY_GC_NURSERY"] == RECOMMENDED_NURSERY
    monkeypatch.setenv("PYPY_GC_NURSERY", "16M")
    assert _procs.give_servers_pypy_nursery() == "PYPY_GC_NURSERY=16M (PyPy only)"
    assert os.environ["PYPY_GC_NURSERY"] == "16M"
    monkeypatch.setenv("PYPY_GC_NURSERY", "")
    assert _procs.give_servers_pypy_nursery() == "PYPY_GC_NURSERY= (PyPy picks the size)"
    assert os.environ["PYPY_GC_NURSERY"] == ""


def test_rpc_calls_measures_the_checkout_its_root_names(tmp_path: Path) -> None:
    """``bench/rpc_calls.py --root DIR`` measures DIR's ``goto_tw``: nothing it loads before reading
    ``--root`` imports this checkout's (``bench._procs`` once did, and every comparison of two
    versions then measured the same code twice)."""
    (tmp_path / "goto_tw").symlink_to(Path(goto_tw.__file__).parent)
    script = Path(bench.run.__file__).with_name("rpc_calls.py")
    ran = subprocess.run(
        [sys.executable, str(script), "--root", str(tmp_path), "--n", "20", "--rounds", "1", "--only", "seq"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert ran.stdout.splitlines()[0] == f"goto_tw from {tmp_path / 'goto_tw'}"
