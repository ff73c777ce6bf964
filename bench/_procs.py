"""What the benchmarks share: server child processes pinned to a CPU, always killed, and statistics.

- :class:`Child` runs one server process with its output going to a file (never a pipe that could
  fill up and stall it), learns its port from the ``Site starting on PORT`` line twistd logs when it
  listens on ``tcp:0`` (race-free, and the readiness signal too), and reads its RSS and CPU time.
- Every child started here is killed when the benchmark exits, whether it ends normally, on an
  error, on Ctrl-C (``KeyboardInterrupt``) or on SIGTERM/SIGHUP (turned into ``SystemExit`` by
  :func:`exit_on_signals`, so ``finally`` blocks and ``atexit`` run).
- With two or more CPUs and ``taskset``, servers run on CPU 0 and the load generator on CPU 1, so
  the two do not fight over one core; :func:`pinning` says whether that is possible.
- :func:`without_gather_pause`: for the in-process RPC benchmarks, a slave client that does not
  wait to gather calls.
- :func:`give_servers_pypy_nursery`: PyPy servers get the young generation the shipped units give them.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

#: Listen on a port the OS picks, on loopback only.
LOOPBACK_ANY_PORT = "tcp:0:interface=127.0.0.1"

#: CPU for the servers under test, and CPU for the load generator (when pinning is possible).
SERVER_CPU = 0
CLIENT_CPU = 1

#: twistd logs this line (with the real port) once a ``Site`` listens.
_LISTENING = re.compile(r"Site starting on (\d+)\n")

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def pinning() -> bool:
    """Tell whether servers and load generator can run on CPUs of their own (2+ CPUs and taskset)."""
    affinity = getattr(os, "sched_getaffinity", None)  # PyPy 3.9 has none: then every CPU is ours
    cpus = affinity(0) if affinity is not None else set(range(os.cpu_count() or 1))
    return shutil.which("taskset") is not None and {SERVER_CPU, CLIENT_CPU} <= cpus


def give_servers_pypy_nursery() -> str:
    """Give every server started from here on ``PYPY_GC_NURSERY``: the size the units in
    ``contrib/systemd`` set (:data:`~goto_tw.nursery.RECOMMENDED_NURSERY`), so PyPy servers are
    measured as they are shipped. A value already in this process's environment wins, and an empty
    one (``PYPY_GC_NURSERY=``) leaves the size to PyPy. CPython, Go and wrk ignore it. Return how the
    servers run, for a benchmark's header."""
    # Imported here: this module imports no goto_tw when loaded, or ``bench/rpc_calls.py --root``
    # (which loads it first) would measure this checkout's goto_tw instead of the one named.
    from goto_tw.nursery import RECOMMENDED_NURSERY

    value = os.environ.setdefault("PYPY_GC_NURSERY", RECOMMENDED_NURSERY)
    return f"PYPY_GC_NURSERY={value} (PyPy only)" if value else "PYPY_GC_NURSERY= (PyPy picks the size)"


def pinned(command: Sequence[str], cpu: int | None) -> list[str]:
    """Prefix ``command`` with ``taskset -c CPU`` (which execs it: the pid stays the command's)."""
    if cpu is None or not pinning():
        return list(command)
    return ["taskset", "-c", str(cpu), *command]


def twistd_of(python: Path) -> Path:
    """The ``twistd`` script of the virtualenv whose interpreter is ``python`` (symlinks not resolved)."""
    return python.parent / "twistd"


@functools.cache
def goto_options(twistd: Path) -> frozenset[str]:
    """The long options (``--add-rate``...) the ``goto`` plugin of ``twistd``'s virtualenv accepts.

    The benchmarks run other checkouts' servers too (``--python`` of an older checkout's venv, for
    "before" figures): what they may pass depends on the servers' code, not on this checkout's.
    """
    with tempfile.TemporaryDirectory(prefix="goto-probe-") as empty:  # as the servers: no checkout in cwd
        done = subprocess.run(
            [str(twistd), "goto", "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=empty,
        )
    if done.returncode != 0:
        raise ChildError(f"{twistd} goto --help failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return frozenset(re.findall(r"--([a-z][a-z0-9-]*)", done.stdout))


def goto_command(twistd: Path, *args: str, http: str = LOOPBACK_ANY_PORT) -> list[str]:
    """``twistd -n --pidfile= goto --http HTTP ARGS... --add-rate off``: a foreground goto server
    (the benchmark adds thousands a second from one address: no rate limit; servers older than
    ``--add-rate`` have none and do not get the option)."""
    command = [str(twistd), "-n", "--pidfile=", "goto", "--http", http, *args]
    if "add-rate" in goto_options(twistd):
        command += ["--add-rate", "off"]
    return command


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (for children that must not use ``tcp:0``)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ChildError(RuntimeError):
    """A child did not start or listen as expected; the message holds the end of its output."""


_live: list[Child] = []


@atexit.register
def kill_all() -> None:
    """Kill every child still running (newest first); called at exit and by :func:`exit_on_signals`."""
    for child in reversed(_live):
        child.kill()


def exit_on_signals() -> None:
    """Turn SIGTERM and SIGHUP into ``SystemExit``, so cleanup runs as it does for Ctrl-C."""

    def leave(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, leave)


class Child:
    """One server process, run in ``rundir`` with stdout and stderr going to ``rundir/NAME.log``.

    ``start`` returns at once; :meth:`wait_port` waits until it logs that it listens. Use it as a
    context manager (or call :meth:`stop`) so it is stopped even when the benchmark fails.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        rundir: Path,
        *,
        cpu: int | None = SERVER_CPU,
        env: dict[str, str] | None = None,
    ):
        self.name = name
        #: Variables set for the child on top of this process's environment.
        self.env = env
        self.command = pinned(command, cpu)
        self.rundir = rundir
        self.log_path = rundir / f"{name}.log"
        self._popen: subprocess.Popen[bytes] | None = None
        #: ``time.perf_counter()`` when the process was spawned.
        self.spawned_at = 0.0

    def start(self) -> Child:
        """Spawn the process and return ``self`` without waiting."""
        self.rundir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as output:
            self.spawned_at = time.perf_counter()
            self._popen = subprocess.Popen(
                self.command,
                cwd=self.rundir,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env} if self.env else None,
            )
        _live.append(self)
        return self

    def __enter__(self) -> Child:
        if self._popen is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The process id (``taskset`` execs the server, so this is the server's own)."""
        assert self._popen is not None, "not started"
        return self._popen.pid

    def exited(self) -> bool:
        """Tell whether the process has been started and has exited since."""
        return self._popen is not None and self._popen.poll() is not None

    def output(self) -> str:
        """Everything the child has logged so far."""
        try:
            return self.log_path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def wait_port(self, timeout: float = 60.0) -> int:
        """Wait until the child logs ``Site starting on PORT``; return PORT.

        Raises :class:`ChildError` with the end of its output if it exits first or takes longer.
        """
        assert self._popen is not None, "not started"
        deadline = time.monotonic() + timeout
        while True:
            found = _LISTENING.search(self.output())
            if found:
                return int(found.group(1))
            if self._popen.poll() is not None:
                raise ChildError(
                    f"{self.name} exited ({self._popen.returncode}) before listening:\n{self._tail()}"
                )
            if time.monotonic() > deadline:
                raise ChildError(f"{self.name} did not listen within {timeout:g}s:\n{self._tail()}")
            time.sleep(0.01)

    def rss_mib(self) -> float:
        """The resident set size now (``VmRSS`` of ``/proc/PID/status``), in MiB."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if found is None:
            raise ChildError(f"{self.name}: no VmRSS in /proc/{self.pid}/status")
        return int(found.group(1)) / 1024

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far (``/proc/PID/stat``)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process, SIGKILL it if it has not exited within ``timeout`` seconds."""
        if self._popen is None:
            return
        if self._popen.poll() is None:
            self._popen.terminate()
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._popen.kill()
        self._popen.wait()
        if self in _live:
            _live.remove(self)

    def kill(self) -> None:
        """SIGKILL the process at once if it is still running."""
        if self._popen is not None and self._popen.poll() is None:
            self._popen.kill()
            self._popen.wait()


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, minimum and maximum of a non-empty sequence, as a JSON-friendly dict."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def format_spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """``median [min-max]`` (just the value when there is one)."""
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs together have spent busy since boot (``/proc/stat``: all but idle and iowait).

    The difference over a round, minus what our own processes used, is what other programs on the
    machine took meanwhile: the noise figure the benchmarks report.
    """
    with open("/proc/stat") as stat:
        fields = [int(field) for field in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / _CLOCK_TICKS


def without_gather_pause(remote_store: Any) -> dict[str, Any]:
    """Keyword arguments that turn ``remote_store``'s gather pause off (``goto_tw.remote.RemoteStore``).

    A benchmark that measures what calls cost must not time a wait: the benchmark process is busy, so
    each of its sequential calls would wait one pause out. Empty for a ``RemoteStore`` from a checkout
    older than the pause (``--root``/``--python`` of another checkout), which has no such parameter.
    """
    if "gather_pause" in inspect.signature(remote_store).parameters:
        return {"gather_pause": 0.0}
    return {}
