"""End-to-end tests of ``demo.sh``: it starts a master and a slave, serves, and leaves nothing behind.

``demo.sh`` runs with ``GOTO_VENV`` set to the virtualenv running the tests (so it installs
nothing), on free loopback ports, with its data and logs in the test's own directory. It runs in
a session of its own, so the test can tell whether any process it started is left over.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import xmlrpc.client as xmlrpclib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import (
    add_url,
    free_tcp_port,
    get,
    key_of,
    poll_until,
    port_is_free,
    read_records,
    rpc_proxy,
)

DEMO = Path(__file__).resolve().parents[2] / "demo.sh"
#: The virtualenv running the tests: it has goto installed, so demo.sh can use it as is.
VENV = Path(sys.executable).parent.parent

#: Seconds for demo.sh to start both processes, and to stop both once its input ends.
START_DEADLINE = 30.0
STOP_DEADLINE = 20.0


class Demo:
    """A running ``demo.sh`` with its input on a pipe and its output in a file."""

    def __init__(self, tmp_path: Path, master_port: int, slave_port: int) -> None:
        self.master_port = master_port
        self.slave_port = slave_port
        self.data_dir = tmp_path / "demo-data"
        self.output_path = tmp_path / "demo.out"
        env = {
            **os.environ,
            "GOTO_VENV": str(VENV),
            "GOTO_MASTER_PORT": str(master_port),
            "GOTO_SLAVE_PORT": str(slave_port),
            "GOTO_DEMO_DIR": str(self.data_dir),
        }
        with open(self.output_path, "wb") as output:
            self.popen = subprocess.Popen(
                [str(DEMO)],
                stdin=subprocess.PIPE,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: see group_alive()
            )

    def output(self) -> str:
        """Everything demo.sh (not its children, which log to files) has printed so far."""
        return self.output_path.read_text(errors="replace")

    def group_alive(self) -> bool:
        """Whether any process of demo.sh's process group (itself, twistd children...) still exists."""
        try:
            os.killpg(self.popen.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill_group(self) -> None:
        """SIGKILL whatever is left of demo.sh's process group, reap demo.sh, close its input."""
        if self.group_alive():
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()
        if self.popen.stdin is not None:
            self.popen.stdin.close()


@pytest.fixture
def free_ports() -> tuple[int, int]:
    """Two distinct ports on 127.0.0.1 that were free a moment ago (a race accepted in tests)."""
    master_port = free_tcp_port()
    slave_port = poll_until(
        lambda: port if (port := free_tcp_port()) != master_port else None, 5, "a second free port"
    )
    return master_port, slave_port


@pytest.fixture
def demo(tmp_path: Path, free_ports: tuple[int, int]) -> Iterator[Demo]:
    """A ``demo.sh`` started on free ports; whatever the test does, nothing of it outlives the test.
    Its directory holds a secret an earlier run left, readable by all (an older demo.sh's)."""
    leftover = tmp_path / "demo-data" / "rpc-secret"
    leftover.parent.mkdir()
    leftover.write_text("an old secret\n")
    leftover.chmod(0o644)
    running = Demo(tmp_path, *free_ports)
    try:
        yield running
    finally:
        running.kill_group()


def test_demo_serves_then_stops_both_at_end_of_input(demo: Demo) -> None:
    """``demo.sh`` starts a master and a slave of it, says where, and stops both when its input ends.

    Once it prints that it is running, the slave on ``GOTO_SLAVE_PORT`` adds a URL (answering a
    short URL naming ``localhost:PORT``) and redirects it, and the short URL demo.sh printed
    redirects to its own example. Closing its input makes demo.sh exit 0 within 20 s, after both
    children shut down cleanly on SIGTERM: each logged ``Server Shut Down.``, both ports are free,
    and no process of demo.sh's process group is left. The pairs are in the data file it names.
    """

    def running() -> str | None:
        output = demo.output()
        if demo.popen.poll() is not None:
            raise AssertionError(f"demo.sh exited with {demo.popen.returncode}:\n{output}")
        return output if "stopping both at end of input" in output else None

    output = poll_until(running, START_DEADLINE, "demo.sh to start the master and the slave")
    assert f"http://localhost:{demo.slave_port}/" in output, output

    slave = f"http://127.0.0.1:{demo.slave_port}"
    slave_host = f"localhost:{demo.slave_port}"
    long_url = "https://example.com/demo?a=1"
    reply = add_url(slave, long_url)
    assert reply.status == 200, (reply, output)
    key = key_of(reply.text, slave_host)
    reply = get(f"{slave}/{key}")
    assert (reply.status, reply.headers["Location"]) == (302, long_url), reply

    printed = re.search(rf"curl -i http://{re.escape(slave_host)}/([0-9A-Za-z]+)\s", output)
    assert printed is not None, output
    reply = get(f"{slave}/{printed.group(1)}")
    assert (reply.status, reply.headers["Location"]) == (302, "https://twisted.org/"), reply
    # Its master's /RPC2 wants the secret demo.sh made (stop 41): a stranger's client adds nothing.
    # The secret is new, and readable by this user alone, whatever file was there (review, stop 42).
    secret = demo.data_dir / "rpc-secret"
    assert secret.stat().st_mode & 0o777 == 0o600 and "an old secret" not in secret.read_text()
    master = f"http://127.0.0.1:{demo.master_port}"
    with rpc_proxy(master) as stranger, pytest.raises(xmlrpclib.Fault, match="401"):
        stranger.Store.Put("https://stranger.example/")

    assert demo.popen.stdin is not None
    demo.popen.stdin.close()
    try:
        status = demo.popen.wait(STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"demo.sh still running {STOP_DEADLINE:g}s after its input ended") from None
    output = demo.output()
    assert status == 0, output
    assert "did not stop" not in output, output
    for name in ("master", "slave"):
        log = (demo.data_dir / f"{name}.log").read_text(errors="replace")
        assert "Server Shut Down." in log, (name, log)
        assert "without a secret" not in log, (name, log)
    assert port_is_free(demo.master_port) and port_is_free(demo.slave_port)
    assert not demo.group_alive(), "a process started by demo.sh is still running"
    assert set(read_records(demo.data_dir / "store.json")) == {
        (printed.group(1), "https://twisted.org/"),
        (key, long_url),
    }


def test_demo_refuses_a_port_in_use(tmp_path: Path, free_ports: tuple[int, int]) -> None:
    """With ``GOTO_SLAVE_PORT`` taken, demo.sh exits non-zero at once, names the variable, starts nothing."""
    master_port, slave_port = free_ports
    with socket_listening_on(slave_port):
        demo = Demo(tmp_path, master_port, slave_port)
        try:
            status = demo.popen.wait(STOP_DEADLINE)
        finally:
            demo.kill_group()
    assert status != 0, demo.output()
    assert "GOTO_SLAVE_PORT" in demo.output(), demo.output()
    assert not (demo.data_dir / "master.log").exists(), "demo.sh started the master anyway"
    assert port_is_free(master_port)


@contextlib.contextmanager
def socket_listening_on(port: int) -> Iterator[None]:
    """Hold a listening socket on ``127.0.0.1:port`` for the duration of a ``with`` block."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        yield


@pytest.mark.parametrize(
    ("ports", "said"),
    [
        ((99999, None), "not a port number (1 to 65535): 99999"),
        ((None, 0), "not a port number (1 to 65535): 0"),
        ("same", "GOTO_MASTER_PORT and GOTO_SLAVE_PORT are both"),
    ],
)
def test_demo_refuses_ports_it_cannot_use_in_one_line(
    tmp_path: Path, free_ports: tuple[int, int], ports: Any, said: str
) -> None:
    """Review 34: a port out of range gave a Python traceback, and one port for both a traceback or,
    by a race, a banner for a service that was not running."""
    master_port, slave_port = free_ports
    if ports == "same":
        slave_port = master_port
    else:
        master_port = ports[0] if ports[0] is not None else master_port
        slave_port = ports[1] if ports[1] is not None else slave_port
    demo = Demo(tmp_path, master_port, slave_port)
    try:
        status = demo.popen.wait(STOP_DEADLINE)
    finally:
        demo.kill_group()
    assert status == 2, demo.output()
    assert said in demo.output() and "Traceback" not in demo.output(), demo.output()
    assert not (demo.data_dir / "master.log").exists(), "demo.sh started the master anyway"
