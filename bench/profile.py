"""Profile one bench/run.py scenario: its servers under py-spy for the length of one wrk run.

Usage: .venv/bin/python bench/profile.py SCENARIO [--python VENV/bin/python] [--seconds 10] [--top 15]

SCENARIO is one of run.py's goto-tw scenarios (``a b b-nolog e m c c-nofsync d``): the same servers
(same options, same data file shape, the slave's cache warmed for ``a``, ``m`` and ``d``), the same
wrk load on the same CPUs. Every server process is sampled by ``py-spy record`` (pinned beside
wrk, so the sampler does not take the servers' core) for one run of ``--seconds``, and the top
functions per process are printed twice: by samples in the function itself ("own") and by samples
with the function anywhere on the stack ("total"), as percentages of that process's busy samples
(both profilers leave out time spent waiting in epoll), with how busy each thread was (py-spy).
``--keep DIR`` keeps the raw stacks (``NAME.txt``, collapsed: ``flamegraph.pl NAME.txt > NAME.svg``).

CPython: ``py-spy`` must be in the venv that runs this script or on PATH (``.venv/bin/pip install
py-spy``); it reads the servers' memory and needs ptrace rights over them (root, or
``kernel.yama.ptrace_scope=0``). py-spy reads the servers' memory while they run
(``--nonblocking``); ``--blocking`` stops a server for each sample instead, py-spy's own default,
which on this machine (a VM) lands the samples where the server enters or leaves the kernel: it put
90% of a cached slave's samples in ``send``/``recv`` where ``perf`` and ``/proc/PID/stat`` measure 27%
system time. A running server's stack can be read half-changed: a few samples are empty or odd. The
req/s printed is that of the profiled run, lower than bench/run.py's.

PyPy (py-spy cannot read its frames): vmprof, which PyPy has built in; the ``vmprof`` package must be
in the servers' venv (``.venv-pypy/bin/pip install vmprof``). The servers are started through
``bench/_vmprof_twistd.py``, which samples only between two signals sent around the measured wrk run.
Its timer counts CPU time in kernel ticks (250 a second here, whatever ``--rate`` asks), so it gives
shares, not how busy a process was; function names carry no class (``doRead``, not
``Connection.doRead``). ``--python`` pointing at another checkout's venv profiles that checkout's
servers (for before/after profiles).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for ``bench.*`` when run as a script
from bench._procs import (
    CLIENT_CPU,
    SERVER_CPU,
    Child,
    exit_on_signals,
    give_servers_pypy_nursery,
    goto_command,
    pinned,
    twistd_of,
)
from bench.run import (
    HOST,
    MIXED_MISSES_PER_SECOND,
    QUICK,
    FreshKeys,
    Scenario,
    check_add,
    check_redirect,
    server_interpreter,
    warm,
    workspace,
)
from bench.startup import write_data_file

SCENARIOS = ("a", "b", "b-nolog", "e", "m", "c", "c-nofsync", "d")
KEYS = QUICK.keys


def start_scenario(
    name: str,
    python: Path,
    seconds: float,
    tmp: Path,
    stack: contextlib.ExitStack,
    wrap: Callable[[str, list[str]], list[str]] | None = None,
) -> Scenario:
    """Start the servers of run.py's scenario ``name`` (warmed as run.py warms them) and return it.

    ``wrap(name, command)`` may change each server's command line (vmprof's wrapper)."""
    twistd = twistd_of(python)
    misses = math.ceil(MIXED_MISSES_PER_SECOND * seconds)  # m: fresh miss keys for every run
    data = tmp / "store.json"
    write_data_file(data, KEYS + misses)
    keys = [str(KEYS)]

    def start(child_name: str, *args: str) -> tuple[Child, int]:
        command = goto_command(twistd, *args, "--host", HOST)
        if wrap is not None:
            command = wrap(child_name, command)
        child = stack.enter_context(Child(child_name, command, tmp / child_name, cpu=SERVER_CPU))
        return child, child.wait_port()

    master_options = {"c-nofsync": ["--no-fsync"], "b-nolog": ["--access-log", "none"]}.get(name, [])
    master, master_port = start("master", "--rpc", "--file", str(data), *master_options)
    if name in ("b", "b-nolog", "c", "c-nofsync"):
        kind = "add" if name.startswith("c") else "redirect"
        script = "add.lua" if kind == "add" else "redirect.lua"
        check_redirect(master_port, KEYS - 1, "master")
        return Scenario(name, name, kind, master_port, script, [] if kind == "add" else keys, [master])
    slave_options = ["--cache-size", "1"] if name == "e" else []
    slave, slave_port = start("slave", "--master", f"127.0.0.1:{master_port}", *slave_options)
    check_redirect(slave_port, KEYS - 1, "slave")
    servers = [slave, master]
    if name == "e":
        return Scenario(name, name, "redirect", slave_port, "redirect.lua", keys, servers, slave_port)
    print(f"warming the slave's cache with all {KEYS:,} keys...", file=sys.stderr)
    warm(slave_port, KEYS, tmp, "the slave")
    if name == "d":
        check_add(slave_port, "slave")
        return Scenario(name, name, "add", slave_port, "add.lua", [], servers, slave_port)
    if name == "m":
        fresh = FreshKeys(KEYS, misses)
        return Scenario(name, name, "mixed", slave_port, "mixed.lua", keys, servers, slave_port, fresh=fresh)
    return Scenario(name, name, "redirect", slave_port, "redirect.lua", keys, servers, slave_port)


def py_spy_binary() -> str | None:
    """``py-spy`` beside this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


#: Where installed and standard-library modules live: cut from a frame's file, up to the last one.
_LIBRARY = re.compile(r".*/(site-packages|lib_pypy|lib/python3[.0-9]*|lib/pypy3[.0-9]*)/")
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*)\)$")


def short_frame(frame: str) -> str:
    """``function (file)`` with the file's path cut to what follows ``site-packages/``, the standard library or the checkout's root."""
    found = _FRAME.match(frame)
    if found is None:
        return frame
    path = found.group("file")
    library = _LIBRARY.match(path)
    if library:
        path = path[library.end() :]
    else:
        for package in ("goto_tw/", "twisted/", "bench/"):
            if f"/{package}" in path:
                path = package + path.split(f"/{package}", 1)[1]
                break
    return f"{found.group('function')} ({path})"


#: Frames nearly every sample of a twistd process has under it (start-up, the reactor loop and its
#: dispatch, a thread's start): left out of the "on the stack" listing, where they would fill the
#: top lines at 40-100% and say nothing about the path measured.
_OUTER = re.compile(
    r"\((twistd|twisted/application/\S*|twisted/scripts/\S*|threading\.py|twisted/python/(log|context)\.py"
    r"|twisted/_threads/\S*|<builtin>/\S*|bench/_vmprof_twistd\.py)\)$"
    r"|^(\w*\.)?(run|mainLoop|runUntilCurrent|doPoll|doIteration|_doReadOrWrite) \(twisted/internet/\S*\)$"
)


@dataclasses.dataclass
class Profile:
    """One process's samples: per thread, per function by its own samples, and with it on the stack."""

    total: int = 0
    threads: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    own: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    inclusive: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


def top_functions(lines: Iterable[str]) -> Profile:
    """Read py-spy's collapsed stacks (``thread (TID): NAME;frame;...;frame COUNT``, outermost first,
    as ``--threads`` writes them; the thread part is optional)."""
    profile = Profile()
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[0].startswith("thread ("):
            profile.threads[frames.pop(0).partition(": ")[2] or "?"] += count
        if frames and frames[0].startswith("process "):
            frames.pop(0)
        if not frames:
            continue
        frames = [short_frame(frame) for frame in frames]
        profile.total += count
        profile.own[frames[-1]] += count
        for frame in set(frames):
            profile.inclusive[frame] += count
    return profile


def print_profile(name: str, lines: list[str], expected: float | None, top: int) -> None:
    """The top functions of one process's recorded stacks; ``expected``: samples a thread busy all
    the run would have (py-spy samples wall time; vmprof's CPU-time timer ticks too coarsely for it)."""
    profile = top_functions(lines)
    total = profile.total
    if expected:
        print(
            f"\n{name}: {total:,} samples in which a thread was not idle (~{expected:,.0f} per thread in the run)"
        )
        shares = [f"{thread} {count / expected:.0%}" for thread, count in profile.threads.most_common()]
        busy = f"  threads, share of the run each was busy: {', '.join(shares)}"
    else:
        print(f"\n{name}: {total:,} samples of CPU time")
        busy = ""
    if not total:
        return
    if busy:
        print(busy)
    print(f"  {'own':>6} {'total':>6}  function (by own samples, the top {top}; % of the samples above)")
    for function, count in profile.own.most_common(top):
        print(f"  {count / total:>6.1%} {profile.inclusive[function] / total:>6.1%}  {function}")
    print(f"  {'own':>6} {'total':>6}  function (by samples with it on the stack; the reactor loop left out)")
    inner = [(f, c) for f, c in profile.inclusive.most_common() if not _OUTER.search(f)]
    for function, count in inner[:top]:
        print(f"  {profile.own[function] / total:>6.1%} {count / total:>6.1%}  {function}")


#: Run by the servers' interpreter: vmprof's profile of one process as collapsed stacks, the format
#: py-spy writes (``thread (TID): TID;function (file);... COUNT``, outermost first).
_VMPROF_READER = r"""
import collections, sys, vmprof
stats = vmprof.read_profile(sys.argv[1])
names = stats.adr_dict or {}
stacks = collections.Counter()
for profile in stats.profiles:
    frames = []
    for address in profile[0]:
        name = names.get(address) if isinstance(address, int) and address > 0 else None
        if name is None:
            continue
        parts = name.split(":", 3)
        frames.append("%s (%s)" % (parts[1], parts[3]) if len(parts) == 4 else name)
    if frames:
        thread = profile[2] if len(profile) > 2 else 0
        stacks["thread (%s): %s;%s" % (thread, thread, ";".join(frames))] += profile[1]
for stack, count in stacks.items():
    print(stack, count)
"""
VMPROF_WRAPPER = Path(__file__).resolve().parent / "_vmprof_twistd.py"


def has_vmprof(python: Path) -> bool:
    """Tell whether the servers' venv can import vmprof."""
    done = subprocess.run([str(python), "-c", "import vmprof"], capture_output=True, timeout=60, check=False)
    return done.returncode == 0


def sample_with_py_spy(
    py_spy: str, scenario: Scenario, args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack
) -> tuple[dict[str, Any], list[tuple[str, list[str]]]]:
    """One wrk run with every server sampled by ``py-spy record``; the result and each one's stacks."""
    samplers: list[tuple[str, Path, subprocess.Popen[bytes]]] = []

    def stop_samplers() -> None:
        for _, _, sampler in samplers:
            if sampler.poll() is None:
                sampler.kill()
                sampler.wait()

    stack.callback(stop_samplers)
    for child in scenario.servers:
        out = tmp / f"{child.name}.txt"
        command = [
            py_spy,
            "record",
            "--pid",
            str(child.pid),
            "--duration",
            str(max(1, round(args.seconds))),
            "--rate",
            str(args.rate),
            "--format",
            "raw",
            "--nolineno",
            "--threads",
            *(["--gil"] if args.gil else []),
            *([] if args.blocking else ["--nonblocking"]),
            "--output",
            str(out),
        ]
        with open(tmp / f"{child.name}.py-spy.log", "wb") as log:
            samplers.append(
                (child.name, out, subprocess.Popen(pinned(command, CLIENT_CPU), stdout=log, stderr=log))
            )
    time.sleep(0.3)  # py-spy attaches before the load starts
    result = scenario.run(args.seconds, tmp)
    profiles = []
    for name, out, sampler in samplers:
        try:
            sampler.wait(30)
        except subprocess.TimeoutExpired:
            print(f"py-spy for {name} did not finish: killed", file=sys.stderr)
        if not out.exists():
            log_text = (tmp / f"{name}.py-spy.log").read_text(errors="replace").strip()
            print(f"{name}: py-spy wrote nothing ({sampler.returncode}): {log_text[-500:]}", file=sys.stderr)
        profiles.append((name, out.read_text(errors="replace").splitlines() if out.exists() else []))
    return result, profiles


def sample_with_vmprof(
    python: Path, scenario: Scenario, args: argparse.Namespace, tmp: Path
) -> tuple[dict[str, Any], list[tuple[str, list[str]]]]:
    """One wrk run between SIGUSR1 and SIGUSR2 to servers started under bench/_vmprof_twistd.py."""
    for child in scenario.servers:
        os.kill(child.pid, signal.SIGUSR1)
    time.sleep(0.3)
    result = scenario.run(args.seconds, tmp)
    for child in scenario.servers:
        os.kill(child.pid, signal.SIGUSR2)
    profiles = []
    for child in scenario.servers:
        out = tmp / f"{child.name}.prof"
        deadline = time.monotonic() + 30
        while not Path(f"{out}.done").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        read = subprocess.run(
            [str(python), "-c", _VMPROF_READER, str(out)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if read.returncode != 0:
            print(f"{child.name}: reading {out} failed: {read.stderr.strip()[-800:]}", file=sys.stderr)
        (tmp / f"{child.name}.txt").write_text(read.stdout)
        profiles.append((child.name, read.stdout.splitlines()))
    return result, profiles


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument(
        "--python",
        type=Path,
        default=Path(sys.executable),
        help="interpreter of the venv whose twistd runs the servers",
    )
    parser.add_argument(
        "--seconds", type=float, default=10, help="length of the profiled wrk run (default 10)"
    )
    parser.add_argument("--warmup", type=float, default=3, help="unprofiled wrk run first (default 3 s)")
    parser.add_argument(
        "--rate",
        type=int,
        help="samples per second of CPU (py-spy: of wall time; default py-spy 100, vmprof 1000)",
    )
    parser.add_argument(
        "--gil",
        action="store_true",
        help="py-spy: only samples holding the GIL: Python's CPU time (leaves out waits: fsync, a thread's queue)",
    )
    parser.add_argument(
        "--blocking",
        action="store_true",
        help="py-spy: stop each server for every sample (its default; see the module doc: biased here)",
    )
    parser.add_argument("--top", type=int, default=15, help="functions listed per process (default 15)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR and keep it (logs, raw stacks)")
    args = parser.parse_args()
    # the servers run in their own directories: a relative path must not be read from there (and a
    # venv's python is a symlink, so make it absolute without resolving it)
    args.python = Path(os.path.abspath(args.python))
    if shutil.which("wrk") is None:
        print("bench/profile.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    if not twistd_of(args.python).exists():
        print(f"no twistd beside {args.python}", file=sys.stderr)
        return 2
    interpreter = server_interpreter(args.python)
    use_vmprof = not interpreter.startswith("cpython")
    py_spy = None
    if use_vmprof:
        if not has_vmprof(args.python):
            print(
                f"servers: {interpreter}: py-spy cannot read PyPy's frames; bench/profile.py uses vmprof there: "
                f"{args.python.parent / 'pip'} install vmprof",
                file=sys.stderr,
            )
            return 2
        args.rate = args.rate or 1000
    else:
        py_spy = py_spy_binary()
        if py_spy is None:
            print("bench/profile.py needs py-spy: .venv/bin/pip install py-spy", file=sys.stderr)
            return 2
        args.rate = args.rate or 100
    exit_on_signals()
    tool = "vmprof" if use_vmprof else "py-spy"
    nursery = give_servers_pypy_nursery()
    print(
        f"servers: {interpreter} ({args.python}, {nursery}); scenario {args.scenario}; {tool}",
        file=sys.stderr,
    )
    with workspace(args.keep) as (tmp, stack):

        def under_vmprof(name: str, command: list[str]) -> list[str]:
            out = tmp / f"{name}.prof"
            return [str(args.python), str(VMPROF_WRAPPER), str(out), str(1 / args.rate), *command[1:]]

        scenario = start_scenario(
            args.scenario,
            args.python,
            args.warmup + args.seconds,
            tmp,
            stack,
            under_vmprof if use_vmprof else None,
        )
        if args.warmup:
            print(f"warm-up: {args.warmup:g} s", file=sys.stderr)
            scenario.run(args.warmup, tmp)
        if py_spy is not None:
            result, profiles = sample_with_py_spy(py_spy, scenario, args, tmp, stack)
        else:
            result, profiles = sample_with_vmprof(args.python, scenario, args, tmp)
        print(
            f"scenario {args.scenario} under {tool} ({args.rate} Hz): {result['rps']:,.0f} req/s, "
            f"p99 {result['latency_us']['p99'] / 1000:.1f} ms, servers' CPU {result['server_cpu']:.0%} "
            f"(100% = one core); {interpreter}"
        )
        for name, lines in profiles:
            print_profile(name, lines, None if use_vmprof else args.seconds * args.rate, args.top)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # every child has been stopped on the way out
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
