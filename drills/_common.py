"""What the drills share: their processes (always ended), their report, their HTTP client, statistics.

- :class:`Fleet` starts ``twistd -n --pidfile= goto`` children through the end-to-end harness
  (:class:`tests.e2e.harness.GotoProcess`) and ends every one of them when the drill ends, whether it
  passes, fails, raises, is interrupted with Ctrl-C, or gets SIGTERM/SIGHUP (turned into
  ``SystemExit`` by :func:`exit_on_signals`, so ``finally`` blocks run).
- :class:`Report` prints the figures as ``name: value`` lines and each checked property as
  ``check NAME: ok`` or ``check NAME: FAILED``, then ``result: PASS`` or ``result: FAIL``; its
  :meth:`Report.exit_status` is the drill's exit status.
- :class:`KeepAliveClient` is a blocking HTTP/1.1 client on one persistent connection that never
  follows redirects and always has a timeout; any error closes the connection (the next request
  opens a new one) and propagates.

Everything talks to ``127.0.0.1`` only, and every loop in a drill is bounded in count and in time.
"""

from __future__ import annotations

import argparse
import http.client
import math
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script: the harness lives in the repository's tests/
    sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.harness import (  # noqa: E402 - needs the path set above when run as a script
    DEFAULT_HOST,
    LOOPBACK_ANY_PORT,
    GotoProcess,
    GotoProcessError,
    GotoProcesses,
)

__all__ = [
    "DEFAULT_HOST",
    "LOOPBACK_ANY_PORT",
    "REPO_ROOT",
    "DrillWorkdir",
    "Fleet",
    "GotoProcess",
    "GotoProcessError",
    "KeepAliveClient",
    "Report",
    "drill_arguments",
    "exit_on_signals",
    "percentile",
    "rss_mib",
    "summarize",
]

#: Seconds one HTTP request of a drill may take before it counts as failed.
HTTP_TIMEOUT = 5.0


def exit_on_signals() -> None:
    """Turn SIGTERM and SIGHUP into ``SystemExit``, so cleanup runs as it does for Ctrl-C."""

    def leave(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, leave)


def drill_arguments(description: str) -> argparse.ArgumentParser:
    """The options every drill takes: ``--quick``, ``--seed``, ``--workdir`` and ``--keep``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a run of a few seconds (for the tests)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="directory for data files and server logs (default: a new temporary directory)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory even when the drill passes"
    )
    return parser


class DrillWorkdir:
    """The directory of a drill's data files and server logs, as a context manager.

    Without a ``workdir`` it makes a temporary one, and removes it at the end if the drill passed
    (set :attr:`failed` otherwise) and ``keep`` is false. A kept directory is printed, since the
    servers' logs are there.
    """

    def __init__(self, name: str, workdir: Path | None, keep: bool) -> None:
        self._made = workdir is None
        self.path = Path(tempfile.mkdtemp(prefix=f"goto-drill-{name}-")) if workdir is None else workdir
        self.path.mkdir(parents=True, exist_ok=True)
        self._keep = keep
        #: Set by the drill when a check failed: the directory is then kept.
        self.failed = False

    def __enter__(self) -> DrillWorkdir:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if self._made and not self._keep and not self.failed and exc_type is None:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            print(f"work directory (data files, server logs): {self.path}", flush=True)


class Fleet(GotoProcesses):
    """The harness's :class:`GotoProcesses`, as a context manager that ends every process it started
    on :meth:`close`, and that can list the tracebacks in their logs.
    """

    def restart(self, process: GotoProcess, *, keep_port: bool = True, wait: bool = True) -> GotoProcess:
        """Start a new process with ``process``'s command, data file and port (it must have exited)."""
        if process.returncode is None:
            raise RuntimeError(f"{process.name} is still running")
        return self._run(process.respawn(keep_port=keep_port), wait)

    def problems(self) -> list[str]:
        """Every traceback in any process's output, as ``name: log line before it ... exception``."""
        found = []
        for process in self.processes:
            if process.output_path is None:
                continue
            lines = process.output().splitlines()
            for number, line in enumerate(lines):
                if "Traceback (most recent call last)" not in line:
                    continue
                context = lines[number - 1].strip() if number else ""
                end = number + 1
                while end < len(lines) and lines[end][:1] in ("\t", " "):
                    end += 1
                exception = next((text.strip() for text in reversed(lines[number:end]) if text.strip()), "")
                found.append(f"{process.name}: {context} ... {exception}")
        return found

    def close(self) -> None:
        """Stop every running process, newest first: SIGTERM, then SIGKILL after a few seconds."""
        for process in reversed(self.processes):
            try:
                process.stop(timeout=5.0)
            except Exception:  # never let one process keep the others running
                process.kill()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Report:
    """Prints a drill's figures and checks as it goes, and tells its exit status at the end."""

    def __init__(self, title: str) -> None:
        self.failed: list[str] = []
        print(title, flush=True)

    def figure(self, name: str, value: object) -> None:
        """Print ``name: value``."""
        print(f"{name}: {value}", flush=True)

    def note(self, text: str) -> None:
        """Print a line of explanation (indented, so it never reads as a figure)."""
        print(f"  {text}", flush=True)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        """Record and print whether the property ``name`` holds; return ``ok``."""
        if not ok:
            self.failed.append(name)
        suffix = f" ({detail})" if detail else ""
        print(f"check {name}: {'ok' if ok else 'FAILED'}{suffix}", flush=True)
        return ok

    def exit_status(self) -> int:
        """Print the verdict; 0 if every check held, 1 otherwise."""
        if self.failed:
            print(f"result: FAIL ({', '.join(self.failed)})", flush=True)
            return 1
        print("result: PASS", flush=True)
        return 0


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` 0.99 for p99) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarize(seconds: Sequence[float]) -> str:
    """``n=N p50=..ms p99=..ms max=..ms`` for a list of latencies in seconds."""
    if not seconds:
        return "n=0"
    return (
        f"n={len(seconds)} p50={percentile(seconds, 0.5) * 1000:.1f}ms "
        f"p99={percentile(seconds, 0.99) * 1000:.1f}ms max={max(seconds) * 1000:.1f}ms"
    )


def rss_mib(pid: int) -> float:
    """The resident set size of process ``pid`` now (``VmRSS`` of ``/proc/PID/status``), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no VmRSS in /proc/{pid}/status")
    return int(found.group(1)) / 1024


class KeepAliveClient:
    """Blocking HTTP/1.1 requests to ``127.0.0.1:port`` over one persistent connection.

    Redirects are never followed. Any error (connection refused or reset, timeout, a malformed
    answer) closes the connection and propagates as ``OSError`` or ``http.client.HTTPException``;
    the next request opens a new connection.
    """

    def __init__(self, port: int, timeout: float = HTTP_TIMEOUT) -> None:
        self.port = port
        self.timeout = timeout
        self._connection: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """Send one request and return ``(status, headers, body)``."""
        if self._connection is None:
            self._connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self._connection.request(method, target, body=body, headers=dict(headers or {}))
            response = self._connection.getresponse()
            data = response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, response.msg, data

    def close(self) -> None:
        """Close the connection, if one is open."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None
