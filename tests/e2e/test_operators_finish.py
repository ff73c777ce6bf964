"""End to end, issue 11 (the rest): --redirect-status on a master and a slave, both paths."""

from __future__ import annotations

from pathlib import Path

from .harness import GotoProcesses, add_url, key_of, request


def test_redirect_status_308_on_master_and_slave_both_paths(
    goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """A master and a slave started with --redirect-status 308 answer 308 with Cache-Control on the
    fast path (keep-alive HTTP/1.1) and on twisted.web's (HTTP/1.0 goes there)."""
    master = goto_processes("--rpc", "--redirect-status", "308", data_file=tmp_path / "d.json", name="master")
    slave = goto_processes(
        "--master", f"127.0.0.1:{master.port}", "--redirect-status", "308", data_file=None, name="slave"
    )
    key = key_of(add_url(master.base_url, "https://perm.example/").text)
    for process in (master, slave, slave):
        for headers in ({}, {"Connection": "close"}):
            reply = request("GET", f"{process.base_url}/{key}", headers=headers)
            assert reply.status == 308, reply
            assert reply.headers["Location"] == "https://perm.example/"
            assert reply.headers["Cache-Control"] == "private, max-age=90"
