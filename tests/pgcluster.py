"""A throwaway PostgreSQL cluster for tests, drills and benchmarks: ``initdb`` + ``pg_ctl`` in a temp dir.

The server listens on a unix socket in its own directory only (``listen_addresses=''``), never on the
network. ``initdb`` and ``pg_ctl`` refuse to run as root, so as root they run as Debian's ``postgres``
user (``runuser -u postgres --``), with the directory handed to that user; as anyone else they run
as that user directly.

:func:`find_bin_dir` says where the server programs are, or ``None``; tests that need a server skip
with :data:`MISSING_REASON` when there is none, unless ``GOTO_REQUIRE_POSTGRES=1`` (CI) makes that
a failure.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from goto_tw import pypyctypes

pypyctypes.apply()  # before any psycopg connection (tests connect directly too)

#: Set to 1 (CI does) to make a missing PostgreSQL a test failure instead of a skip.
REQUIRE_ENV = "GOTO_REQUIRE_POSTGRES"

MISSING_REASON = (
    "PostgreSQL server programs (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or on PATH, "
    "or psycopg/libpq missing (Debian: apt-get install postgresql libpq5; CI requires them)"
)

#: The superuser the throwaway cluster is created with (trust authentication over its socket).
SUPERUSER = "goto"


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres`` (the newest version), or ``None``."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for candidate in candidates:
        if all(os.access(os.path.join(candidate, p), os.X_OK) for p in ("initdb", "pg_ctl", "postgres")):
            return Path(candidate)
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl and shutil.which("initdb"):
        return Path(os.path.realpath(pg_ctl)).parent
    return None


def _version_key(path: str) -> int:
    version = Path(path).parent.name
    return int(version) if version.isdigit() else 0


def driver_available() -> bool:
    """Whether psycopg imports (it needs libpq at run time in its pure-Python build)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return True


def required() -> bool:
    """Whether a missing PostgreSQL must fail the tests (CI) rather than skip them."""
    return os.environ.get(REQUIRE_ENV) == "1"


class Cluster:
    """One throwaway cluster; :meth:`start` creates and starts it, :meth:`destroy` stops and removes it.

    ``fsync`` is off by default (a test cluster never survives a power loss anyway, and its
    speed is the suite's); a ``kill -9`` or a ``pg_ctl restart -m immediate`` of the server still
    loses nothing committed.
    """

    def __init__(self, bin_dir: Path, *, fsync: bool = False) -> None:
        self.bin_dir = bin_dir
        self.fsync = fsync
        self.root = Path(tempfile.mkdtemp(prefix="goto-pg-"))
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sock"
        self._as_postgres = os.geteuid() == 0
        self._databases = 0

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        full = [str(self.bin_dir / command[0]), *command[1:]]
        if self._as_postgres:
            full = ["runuser", "-u", "postgres", "--", *full]
        return subprocess.run(full, check=check, capture_output=True, stdin=subprocess.DEVNULL, timeout=120)

    def start(self) -> Cluster:
        """Create the cluster (first time) and start the server; return once it accepts connections."""
        if not self.data_dir.exists():
            self.socket_dir.mkdir(parents=True)
            if self._as_postgres:
                shutil.chown(self.root, "postgres", "postgres")
                shutil.chown(self.socket_dir, "postgres", "postgres")
            self._run(
                "initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync"
            )
        self._pg_ctl("start")
        return self

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = (
            f"-k {self.socket_dir} -c listen_addresses='' -c fsync={'on' if self.fsync else 'off'} "
            "-c max_connections=200 -c shared_buffers=32MB"
        )
        result = self._run(
            "pg_ctl",
            action,
            "-D",
            str(self.data_dir),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            *extra,
            check=False,
        )
        if result.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl {action} failed: {result.stderr.decode(errors='replace')}\n{log}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` is a crash of the server: nothing committed is lost)."""
        self._pg_ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        """Stop and start the server again, the way an operator or a failover does."""
        self.stop(mode)
        self.start()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The server stopped dead (``SIGSTOP`` to the postmaster and every backend) while inside:
        its sockets stay open and nothing answers, as with a paused VM or a frozen host; thawed
        (``SIGCONT``) on the way out, whatever happens."""
        postmaster = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        stopped: list[int] = []
        try:
            for pid in [postmaster, *_children(postmaster)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
            yield
        finally:
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def destroy(self) -> None:
        """Stop the server if it runs and remove every file of the cluster."""
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate", "-w", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def uri(self, database: str = "postgres") -> str:
        """A libpq URI for ``database`` over the cluster's socket."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def new_database(self, prefix: str = "goto") -> str:
        """Create an empty database of its own for one test; return its URI."""
        import psycopg

        self._databases += 1
        name = f"{prefix}_{os.getpid()}_{self._databases}_{int(time.monotonic() * 1000) % 100000}"
        with psycopg.connect(self.uri(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)


def _children(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (from ``/proc``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == parent:
                    found.append(int(entry.name))
    return found
