"""Fixtures for the end-to-end tests: real ``twistd goto`` processes that are always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import GotoProcesses


@pytest.fixture
def goto_processes(tmp_path: Path) -> Iterator[GotoProcesses]:
    """Yield a :class:`GotoProcesses` working in ``tmp_path``; call it to start a process.

    ``start = goto_processes; proc = start("--rpc", data_file=tmp_path / "data.json")`` returns
    once the process listens (or fails the test with its output). At teardown every process it
    started is stopped (SIGTERM, then SIGKILL after a timeout), so a failing test leaves nothing
    running; one that had to be killed fails the test, since a clean shutdown is part of the contract.
    """
    processes = GotoProcesses(tmp_path)
    yield processes
    hung = processes.stop_all()
    if hung:
        pytest.fail(
            "did not stop on SIGTERM in time: "
            + "; ".join(f"{process.name}:\n{process.output()}" for process in hung),
            pytrace=False,
        )
