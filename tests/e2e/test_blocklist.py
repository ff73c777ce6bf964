"""End to end, issue 11: the block file (reloaded on SIGHUP), the own host, credentials before the host."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from .harness import GotoProcesses, add_url, poll_until


def test_blocked_domains_own_host_and_credentials_are_refused(
    goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """400 with a reason for a blocked domain and its subdomains, a link to the service's own host
    and a user before the host, on a master and through a slave; a SIGHUP reload adds a domain."""
    block = tmp_path / "blocked"
    block.write_text("# spam\nevil.example\n")
    master = goto_processes(
        "--rpc", "--block-file", str(block), data_file=tmp_path / "data.json", host="go.test"
    )
    slave = goto_processes("--master", f"127.0.0.1:{master.port}", data_file=None, host="s.test")
    for process in (master, slave):
        for url in (
            "https://evil.example/",
            "https://www.evil.example/x",
            "https://bank.example@ok.example/",
        ):
            reply = add_url(process.base_url, url)
            assert reply.status == 400 and reply.text.strip(), (process.name, url, reply)
        assert add_url(process.base_url, "https://fine.example/").status == 200
    assert add_url(master.base_url, "http://go.test/0").status == 400
    assert add_url(slave.base_url, "http://s.test/0").status == 400
    assert add_url(master.base_url, "https://later.example/").status == 200
    block.write_text("evil.example\nlater.example\n")
    os.kill(master.pid, signal.SIGHUP)
    poll_until(
        lambda: add_url(master.base_url, "https://later.example/b").status == 400 or None, 10, "reload"
    )
