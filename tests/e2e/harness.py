"""Start real ``twistd -n goto`` processes on loopback and talk HTTP to them, synchronously.

End-to-end tests use this module from plain (non-reactor) pytest functions:

- :class:`GotoProcess` runs one ``twistd -n --pidfile= goto ...`` child in a directory of its own,
  with its output (stdout and stderr together) going to a file there, never to a pipe that could
  fill up and stall the child. It listens on ``tcp:0`` unless told otherwise, and learns its port
  from the ``Site starting on PORT`` line twistd logs: race-free, and the readiness signal too,
  since the product listens only once its data file is loaded.
- :func:`request` and its shortcuts are a tiny blocking HTTP client on :mod:`http.client` that never
  follows redirects (a test must see the 302 and its ``Location``) and always has a timeout.

Every wait here polls with short sleeps until a deadline; nothing sleeps a fixed time and hopes.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import weakref
import xmlrpc.client as xmlrpclib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

from tests.helpers import live_records

#: The twistd of the interpreter running the tests, so the children run the code under test.
TWISTD = Path(sys.executable).parent / "twistd"

#: Listen on a port the OS picks, on loopback only.
LOOPBACK_ANY_PORT = "tcp:0:interface=127.0.0.1"

#: The ``HOST[:PORT]`` written into short URLs unless a test asks for another.
DEFAULT_HOST = "short.test"

#: Added to every child's arguments unless a test gives ``--add-rate`` or ``rate_limit_off=False``:
#: tests and drills add in bulk from 127.0.0.1, far past the default limit (10 adds a second).
NO_RATE_LIMIT = ("--add-rate", "off")

#: Seconds a process gets to start listening, to stop after SIGTERM, or to exit on its own.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
#: Seconds a single HTTP request may take.
HTTP_TIMEOUT = 5.0

#: Seconds between two looks at a child's output while waiting: short, so waits end promptly.
_POLL_INTERVAL = 0.01

#: twistd logs this line (with the real port) once a ``Site`` listens; one per listening site.
LISTENING = re.compile(r"Site starting on (\d+)\n")

T = TypeVar("T")


class GotoProcessError(AssertionError):
    """A child did not do what the test waited for (start, exit); the message holds its output.

    An ``AssertionError``, so pytest reports it as a test failure with the output in full.
    """


def poll_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Call ``check`` every few milliseconds until it returns something other than ``None``.

    Returns that value, or raises :class:`TimeoutError` naming ``what`` once ``timeout`` seconds
    have passed (``check`` is always called at least once, and once more at the deadline).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(min(_POLL_INTERVAL, remaining))


# Every started process, so that one a test forgot is still killed when the interpreter exits.
_live: weakref.WeakSet[GotoProcess] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for process in list(_live):
        process.kill()


class GotoProcess:
    """One ``twistd -n --pidfile= goto`` child process listening on loopback.

    Construction only records the command; :meth:`start` (or ``with``) runs it. The child runs
    with its current directory set to a fresh directory under ``workdir`` (so ``twistd.pid`` or
    ``dropin.cache`` never land in the repository, and several processes can share ``workdir``),
    and its output goes to ``output.log`` in that directory.

    The command is ``twistd -n --pidfile= goto --http HTTP --file DATA_FILE --host HOST ARGS...``,
    leaving out ``--http``, ``--file`` or ``--host`` when the argument is ``None``; ``args`` are any
    further plugin options (``"--rpc"``, ``"--master", "127.0.0.1:8080"``...). ``env`` adds to (or
    overrides) the test process's environment, which the child otherwise inherits unchanged.

    Used as a context manager it starts on entry (unless already started) and stops on exit,
    killing the child if it does not stop in time, so a failing test never leaves a process behind.
    A process runs once; :meth:`respawn` makes a new one with the same command, for restarts.
    """

    def __init__(
        self,
        workdir: Path,
        *args: str,
        data_file: Path | None,
        http: str | None = LOOPBACK_ANY_PORT,
        host: str | None = DEFAULT_HOST,
        name: str = "goto",
        env: Mapping[str, str] | None = None,
        rate_limit_off: bool = True,
    ) -> None:
        self.workdir = Path(workdir)
        if rate_limit_off and "--add-rate" not in args:
            args = (*args, *NO_RATE_LIMIT)
        self.args: tuple[str, ...] = args
        self.rate_limit_off = rate_limit_off
        self.data_file = None if data_file is None else Path(data_file).absolute()
        self.http = http
        self.host = host
        self.name = name
        self.env = env
        #: The child's own directory (its cwd) and output file; set by :meth:`start`.
        self.rundir: Path | None = None
        self.output_path: Path | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        #: Set by :meth:`stop` when SIGTERM was not enough and the child had to be killed.
        self.stop_timed_out = False

    @property
    def command(self) -> list[str]:
        """The full command line the child runs (or will run)."""
        command = [str(TWISTD), "-n", "--pidfile=", "goto"]
        if self.http is not None:
            command += ["--http", self.http]
        if self.data_file is not None:
            command += ["--file", str(self.data_file)]
        if self.host is not None:
            command += ["--host", self.host]
        return command + list(self.args)

    def start(self) -> GotoProcess:
        """Start the child and return ``self`` at once, without waiting for it to listen."""
        if self._popen is not None:
            raise RuntimeError(f"{self.name} was already started; respawn() makes a new process")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rundir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=self.workdir))
        self.output_path = self.rundir / "output.log"
        env = None if self.env is None else {**os.environ, **self.env}
        with open(self.output_path, "wb") as output:
            # The child holds its own copy of the descriptor; ours is closed on leaving the block.
            self._popen = subprocess.Popen(
                self.command,
                cwd=self.rundir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        _live.add(self)
        return self

    def respawn(self, *, keep_port: bool = False) -> GotoProcess:
        """Return a new, unstarted process with the same command, data file and options.

        Meant for restarts once this one has stopped. With ``keep_port=True`` it listens on the
        port this one had (which must be known, see :attr:`port`) rather than a new one, for tests
        where other processes must find it at the same address again.
        """
        http = self.http
        if keep_port:
            http = f"tcp:{self.port}:interface=127.0.0.1"
        return GotoProcess(
            self.workdir,
            *self.args,
            data_file=self.data_file,
            http=http,
            host=self.host,
            name=self.name,
            env=self.env,
            rate_limit_off=self.rate_limit_off,
        )

    def __enter__(self) -> GotoProcess:
        if self._popen is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._started().pid

    @property
    def returncode(self) -> int | None:
        """The exit status if the child has exited (``-N`` for signal N, as ``subprocess`` says)."""
        return self._started().poll()

    def output(self) -> str:
        """Everything the child has written so far (stdout and stderr), for assertions and messages."""
        self._started()
        assert self.output_path is not None
        return self.output_path.read_bytes().decode("utf-8", errors="replace")

    def ports(self) -> list[int]:
        """The ports of every site the child has logged as listening so far, in order."""
        return [int(port) for port in LISTENING.findall(self.output())]

    @property
    def port(self) -> int:
        """The port of the first site the child listens on; call :meth:`wait_ready` first."""
        ports = self.ports()
        if not ports:
            raise GotoProcessError(f"{self.name} is not listening (yet):\n{self.output()}")
        return ports[0]

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the first listening site (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = START_TIMEOUT, *, listeners: int = 1) -> int:
        """Wait until ``listeners`` sites listen and return the first one's port.

        Raises :class:`GotoProcessError` with the child's output if it exits first or does not get
        there within ``timeout`` seconds.
        """

        def check() -> int | None:
            ports = self.ports()
            if len(ports) >= listeners:
                return ports[0]
            if self.returncode is not None:
                raise GotoProcessError(
                    f"{self.name} exited with status {self.returncode} before listening:\n{self.output()}"
                )
            return None

        try:
            return poll_until(check, timeout, f"{self.name} to listen")
        except TimeoutError as exc:
            raise GotoProcessError(f"{exc}; its output:\n{self.output()}") from None

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait until the child exits of its own accord and return its exit status.

        Raises :class:`GotoProcessError` with its output if it is still running after ``timeout``
        seconds (the child is left running: the fixture or ``with`` block stops it).
        """
        try:
            return self._started().wait(timeout)
        except subprocess.TimeoutExpired:
            raise GotoProcessError(
                f"{self.name} still running after {timeout:g}s; its output:\n{self.output()}"
            ) from None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """Stop the child with SIGTERM, SIGKILL it if it has not exited after ``timeout`` seconds.

        Returns the exit status (``-SIGTERM`` for a clean twistd shutdown, ``-SIGKILL`` if it had
        to be killed). Harmless on a process that has already exited or was never started.
        """
        if self._popen is None:
            return 0
        if self._popen.poll() is None:
            self._popen.send_signal(signal.SIGTERM)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.stop_timed_out = True
                self.kill()
        return self._popen.wait()

    def kill(self) -> int:
        """SIGKILL the child at once (a crash: no shutdown code runs) and return its exit status."""
        if self._popen is None:
            return 0
        if self._popen.poll() is None:
            self._popen.kill()
        return self._popen.wait()

    def _started(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self._popen

    def __repr__(self) -> str:
        state = "not started" if self._popen is None else f"pid {self._popen.pid}"
        return f"<GotoProcess {self.name} ({state})>"


class GotoProcesses:
    """Starts :class:`GotoProcess` children in one ``workdir`` and stops every one of them at the end.

    The ``goto_processes`` fixture is one of these: ``start = goto_processes`` then
    ``master = start("--rpc", data_file=path)``. Calling it (or :meth:`start`) starts a process and,
    by default, waits until it listens; :meth:`restart` replaces one with a fresh process on the
    same command and data file. :meth:`stop_all` stops them all, newest first.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        #: Every process started here, oldest first.
        self.processes: list[GotoProcess] = []

    def start(
        self,
        *args: str,
        data_file: Path | None,
        http: str | None = LOOPBACK_ANY_PORT,
        host: str | None = DEFAULT_HOST,
        name: str = "goto",
        env: Mapping[str, str] | None = None,
        wait: bool = True,
        rate_limit_off: bool = True,
    ) -> GotoProcess:
        """Start ``twistd goto ARGS...`` (see :class:`GotoProcess`); with ``wait``, return once it listens."""
        process = GotoProcess(
            self.workdir,
            *args,
            data_file=data_file,
            http=http,
            host=host,
            name=name,
            env=env,
            rate_limit_off=rate_limit_off,
        )
        return self._run(process, wait)

    __call__ = start

    def restart(self, process: GotoProcess, *, keep_port: bool = False, wait: bool = True) -> GotoProcess:
        """Stop ``process`` (SIGTERM) unless it has exited, then start and return its respawn."""
        process.stop()
        return self._run(process.respawn(keep_port=keep_port), wait)

    def _run(self, process: GotoProcess, wait: bool) -> GotoProcess:
        self.processes.append(process)
        process.start()
        if wait:
            process.wait_ready()
        return process

    def stop_all(self) -> list[GotoProcess]:
        """Stop every process, newest first; return those that ignored SIGTERM and had to be killed."""
        for process in reversed(self.processes):
            process.stop()
        return [process for process in self.processes if process.stop_timed_out]


class Reply(NamedTuple):
    """An HTTP answer: status, headers (case-insensitive ``get``) and the whole body."""

    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8")


def request(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = HTTP_TIMEOUT,
) -> Reply:
    """Send one request on a new connection and return the answer; redirects are not followed.

    ``url`` is absolute (``http://127.0.0.1:PORT/path?query``). Connection errors and timeouts
    propagate as ``OSError`` / ``http.client.HTTPException``.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"not an absolute http:// URL: {url!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, target, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        return Reply(response.status, response.msg, response.read())
    finally:
        connection.close()


def get(url: str, *, timeout: float = HTTP_TIMEOUT) -> Reply:
    """``GET url`` without following redirects."""
    return request("GET", url, timeout=timeout)


def post_form(
    url: str, fields: Mapping[str, str] | Sequence[tuple[str, str]], *, timeout: float = HTTP_TIMEOUT
) -> Reply:
    """``POST`` ``fields`` to ``url`` as ``application/x-www-form-urlencoded`` (UTF-8)."""
    body = urllib.parse.urlencode(fields).encode("ascii")
    return request(
        "POST",
        url,
        body=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=timeout,
    )


def add_url(base_url: str, long_url: str, *, method: str = "GET", timeout: float = HTTP_TIMEOUT) -> Reply:
    """Ask the service at ``base_url`` to shorten ``long_url`` with ``GET /add?url=`` or ``POST /add``."""
    if method == "GET":
        return get(f"{base_url}/add?{urllib.parse.urlencode({'url': long_url})}", timeout=timeout)
    if method == "POST":
        return post_form(f"{base_url}/add", {"url": long_url}, timeout=timeout)
    raise ValueError(f"/add takes GET or POST, not {method!r}")


def key_of(short_url: str, host: str = DEFAULT_HOST) -> str:
    """Return the key of a short URL ``http://HOST/KEY`` (trailing newline allowed).

    Raises ``AssertionError`` if ``short_url`` does not have exactly that form for ``host``.
    """
    match = re.fullmatch(rf"http://{re.escape(host)}/([0-9A-Za-z]+)\n?", short_url)
    assert match is not None, f"not a short URL for host {host!r}: {short_url!r}"
    return match.group(1)


def read_records(path: Path) -> list[tuple[str, str]]:
    """Every ``(key, url)`` record of a data file, in file order, duplicates included.

    Parses the documented format (one ``{"key", "url"}`` JSON object per line, each line ended by a
    newline, and while a master runs zeros after the last) and fails the test on anything else; a
    missing file has no records.
    """
    if not path.exists():
        return []
    data = live_records(path)
    if not data:
        return []
    assert data.endswith(b"\n"), f"{path} does not end with a newline: {data[-80:]!r}"
    records = []
    for line_number, line in enumerate(data.decode("ascii").splitlines(), start=1):
        record = json.loads(line)
        if isinstance(record, dict) and set(record) == {"key", "disabled"}:
            continue  # a tombstone (read_tombstones)
        assert isinstance(record, dict) and set(record) == {"key", "url"}, f"{path}:{line_number}: {line!r}"
        records.append((record["key"], record["url"]))
    return records


def read_tombstones(path: Path) -> dict[str, int]:
    """The disabled keys of a data file (its ``{"key", "disabled"}`` records), with when."""
    if not path.exists():
        return {}
    found: dict[str, int] = {}
    for line in live_records(path).decode("ascii").splitlines():
        record = json.loads(line)
        if set(record) == {"key", "disabled"}:
            found.setdefault(record["key"], record["disabled"])
    return found


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed).

    Racy by nature (another process may take it before the caller binds it): only for programs
    that must be told a port number and cannot report the one the OS picked.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether a listening socket can bind ``127.0.0.1:port`` right now (``SO_REUSEADDR``, as Twisted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class _TimeoutTransport(xmlrpclib.Transport):
    """The standard XML-RPC transport, with a socket timeout so a test can never hang on it."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: tuple[str, dict[str, str]] | str) -> http.client.HTTPConnection:
        connection = super().make_connection(host)
        connection.timeout = self._timeout
        return connection


def rpc_proxy(base_url: str, *, timeout: float = HTTP_TIMEOUT) -> xmlrpclib.ServerProxy:
    """A plain standard-library ``ServerProxy`` for ``BASE_URL/RPC2`` (close it, or use ``with``)."""
    return xmlrpclib.ServerProxy(f"{base_url}/RPC2", transport=_TimeoutTransport(timeout))


class SilentServer:
    """A TCP listener on loopback that accepts connections and never answers: a hung master.

    The kernel completes every handshake and the request is sent, but no byte ever comes back, so
    a client waits for its own timeout. A thread accepts connections promptly (and holds them
    open) so that :attr:`connections` counts every attempt to reach it; what they send is kept
    (:meth:`received`).
    """

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(_POLL_INTERVAL)
        self.port: int = self._listener.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._received: list[bytes] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_forever, name="silent-server", daemon=True)
        self._thread.start()

    @property
    def connections(self) -> int:
        """How many connections it has accepted so far."""
        with self._lock:
            return len(self._accepted)

    def _accept_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except socket.timeout:  # TimeoutError from Python 3.10 on; spelled so for 3.9
                continue
            except OSError:
                return  # closed under us
            with self._lock:
                self._accepted.append(connection)
            reader = threading.Thread(
                target=self._read, args=(connection,), name="silent-reader", daemon=True
            )
            reader.start()

    def _read(self, connection: socket.socket) -> None:
        """Keep what a connection sends (:meth:`received`), answering nothing."""
        while True:
            try:
                data = connection.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self._received.append(data)

    def received(self) -> bytes:
        """Every byte sent to it so far, all connections together (requests may interleave)."""
        with self._lock:
            return b"".join(self._received)

    def close(self) -> None:
        """Stop accepting and close the listener and every connection it holds."""
        self._stopping.set()
        self._thread.join(STOP_TIMEOUT)
        self._listener.close()
        self._close_accepted()

    def _close_accepted(self) -> None:
        """Close every connection it holds, shut down first: that wakes its reader, blocked in
        ``recv`` (a bare close from another thread leaves the connection open until that returns,
        and the client waiting on it is never told)."""
        with self._lock:
            for connection in self._accepted:
                with contextlib.suppress(OSError):  # the client closed it already
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ClosedThenSilentServer(SilentServer):
    """A loopback port that first refuses connections (bound, not listening: a stopped master) and,
    after :meth:`silence`, accepts them and never answers (a hung master), counting them."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.settimeout(_POLL_INTERVAL)
        self.port = self._listener.getsockname()[1]
        self._accepted = []
        self._received = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_forever, name="silent-server", daemon=True)

    def __enter__(self) -> ClosedThenSilentServer:
        return self

    def silence(self) -> None:
        """Start accepting connections (and never answering them)."""
        self._listener.listen(128)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting and close the listener and every connection it holds."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT)
        self._listener.close()
        self._close_accepted()


class GatedMaster:
    """A goto master's ``/RPC2`` served from the test process, whose answers wait for :meth:`release`.

    It answers ``Store.Put`` with keys 0, 1, 2... (the same key for the same URL) and ``Store.Get``
    from those, or fault 404, over HTTP/1.1 (``system.multicall`` too), as a real master does; but
    every request holding a ``Store.Put`` waits (at most ``hold`` seconds) until the test releases
    the gate (other calls are answered at once, a fault for any other method): a slow master
    whose pace the test sets, so calls can be known to be in flight. :attr:`puts` counts the
    ``Store.Put`` calls received so far.
    """

    def __init__(self, hold: float = 30.0) -> None:
        import http.server

        from goto_tw.keys import key_for_index

        self.puts = 0
        self._keys: dict[str, str] = {}
        self._lock = threading.Lock()
        self._gate = threading.Event()
        master = self

        def answer(method: str, params: list[object]) -> object:
            if method == "Store.Put" and len(params) == 1 and isinstance(params[0], str):
                with master._lock:
                    master.puts += 1
                    key = master._keys.setdefault(params[0], key_for_index(len(master._keys)))
                return [key]
            if method == "Store.Get" and len(params) == 1:
                for url, key in master._keys.items():
                    if key == params[0]:
                        return [url]
                return {"faultCode": 404, "faultString": "no link is stored under this key"}
            return {"faultCode": 400, "faultString": "bad call"}

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                loaded: Any
                loaded, method = xmlrpclib.loads(body)
                params: list[Any] = list(loaded)
                names = [method]
                if method == "system.multicall":
                    calls = params[0]
                    names = [c["methodName"] for c in calls]
                    result: Any = [answer(c["methodName"], list(c["params"])) for c in calls]
                    response = xmlrpclib.dumps((result,), methodresponse=True)
                else:
                    single: Any = answer(method or "", params)
                    if isinstance(single, dict):
                        fault = xmlrpclib.Fault(single["faultCode"], single["faultString"])
                        response = xmlrpclib.dumps(fault, methodresponse=True)
                    else:
                        assert isinstance(single, list)
                        response = xmlrpclib.dumps((single[0],), methodresponse=True)
                if "Store.Put" in names:
                    # Only adds wait: the slave's other calls (its change-feed polls, its clicks)
                    # must not fill its requests in flight before the adds the test counts.
                    master._gate.wait(hold)
                data = response.encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="gated-master", daemon=True)
        self._thread.start()

    def wait_for_puts(self, count: int, timeout: float = START_TIMEOUT) -> None:
        """Wait until at least ``count`` ``Store.Put`` calls have arrived (their answers still held)."""
        poll_until(lambda: True if self.puts >= count else None, timeout, f"{count} Store.Put calls")

    def release(self) -> None:
        """Let every held answer, and every later one, go."""
        self._gate.set()

    def close(self) -> None:
        """Release everything and stop serving."""
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> GatedMaster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def refuses_connections(port: int) -> bool:
    """Whether a connection to ``127.0.0.1:port`` is refused right now (nothing listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(HTTP_TIMEOUT)
        try:
            probe.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        return False


#: The hosts a cluster's master and slaves write into their short URLs.
MASTER_HOST = "master.test"
A_HOST = "a.test"
B_HOST = "b.test"


@dataclass
class Cluster:
    """A master serving /RPC2 and two slaves of it, each writing its own host into short URLs."""

    master: GotoProcess
    a: GotoProcess
    b: GotoProcess
    data_file: Path


def start_cluster(start: GotoProcesses, data_file: Path, *slave_args: str) -> Cluster:
    """Start a master on ``data_file``, then slaves A and B of it (with ``slave_args``) side by side."""
    master = start("--rpc", data_file=data_file, host=MASTER_HOST, name="master")
    slave_options = ("--master", f"127.0.0.1:{master.port}", *slave_args)
    a = start(*slave_options, data_file=None, host=A_HOST, name="slave-a", wait=False)
    b = start(*slave_options, data_file=None, host=B_HOST, name="slave-b", wait=False)
    a.wait_ready()
    b.wait_ready()
    return Cluster(master, a, b, data_file)


@contextlib.contextmanager
def running_cluster(workdir: Path) -> Iterator[Cluster]:
    """A :func:`start_cluster` in ``workdir`` for a block of tests; every process stopped (and
    checked to have stopped) when it ends."""
    processes = GotoProcesses(workdir)
    try:
        yield start_cluster(processes, workdir / "data.json")
    finally:
        hung = processes.stop_all()
    assert not hung, [process.output() for process in hung]
