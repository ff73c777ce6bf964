"""End to end (issue 13): a real slave's calls to its real master (look-ups of keys it does not
hold, adds, with a shared secret) are answered by the master's fast path, and Python's stock
``xmlrpc.client.ServerProxy`` still works against that master, on one keep-alive connection,
single calls and multicalls alike.

Which path answered is invisible on the wire by design (the same bytes, log lines and counts);
the master's ``goto_http_general_path_requests_total`` counts what twisted.web answered.
"""

from __future__ import annotations

import http.client
import re
import xmlrpc.client as xmlrpclib
from pathlib import Path
from typing import Any

from .harness import HTTP_TIMEOUT, GotoProcess, GotoProcesses, add_url, get, key_of, poll_until

SECRET = "e2e-rpc-fast-path-secret"


def metric(process: GotoProcess, name: str, labels: str) -> float:
    """The value of one series of ``process``'s metrics (0 when it has none)."""
    text = get(f"{process.base_url}/_goto/metrics").text
    assert f"# HELP {name} " in text, f"{process} has no metric {name}"
    series = re.escape(f"{name}{{{labels}}}")
    match = re.search(rf"^{series} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def rpc_answered(process: GotoProcess) -> float:
    return metric(process, "goto_http_requests_total", 'method="POST",route="rpc",status="200"')


def rpc_answered_by_twisted_web(process: GotoProcess) -> float:
    return metric(process, "goto_http_general_path_requests_total", 'route="rpc"')


class _Transport(xmlrpclib.Transport):
    """The standard transport, with a socket timeout, keeping count of the connections it makes."""

    def __init__(self, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(headers=headers or [])
        self.connections = 0

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        connection = super().make_connection(host)
        connection.timeout = HTTP_TIMEOUT
        if connection.sock is None:
            self.connections += 1
        return connection


def test_a_slaves_rpc_and_a_standard_client_take_the_masters_fast_path(
    goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """The slave's misses and adds reach the master as RPC calls that the fast path answers; a
    stock ServerProxy (with the secret as a header) gets right answers over one connection, also
    from the fast path; a call without the secret is still refused (by twisted.web)."""
    secret_file = tmp_path / "rpc.secret"
    secret_file.write_text(SECRET + "\n")
    secret = ("--rpc-secret-file", str(secret_file))
    master = goto_processes("--rpc", *secret, data_file=tmp_path / "data.json", name="master")
    slave = goto_processes("--master", f"127.0.0.1:{master.port}", *secret, data_file=None, name="slave")

    on_master = {key_of(add_url(master.base_url, f"https://example.org/m{n}").text): n for n in range(5)}
    for short, n in on_master.items():  # not in the slave's cache: each asks the master
        assert get(f"{slave.base_url}/{short}").headers["Location"] == f"https://example.org/m{n}"
    for n in range(5):  # adds through the slave: Store.Put on the master
        assert add_url(slave.base_url, f"https://example.org/s{n}").status == 200
    assert get(f"{slave.base_url}/unknownkey").status == 404
    poll_until(lambda: rpc_answered(master) >= 5 or None, HTTP_TIMEOUT, "the slave's calls answered")
    assert rpc_answered_by_twisted_web(master) == 0

    transport = _Transport([("Authorization", f"Bearer {SECRET}")])
    with xmlrpclib.ServerProxy(f"{master.base_url}/RPC2", transport=transport) as proxy:
        key: Any = proxy.Store.Put("https://example.org/stock-client")
        assert proxy.Store.Get(key) == "https://example.org/stock-client"
        batch = xmlrpclib.MultiCall(proxy)
        batch.Store.Get(key)
        batch.Store.Get("zzzzzz")
        batch.Store.Put("https://example.org/stock-batch")
        results: Any = batch()
        assert results[0] == "https://example.org/stock-client"
        try:
            results[1]
        except xmlrpclib.Fault as fault:
            assert fault.faultCode == 404
        else:
            raise AssertionError("an unknown key is fault 404")
        assert proxy.Store.Get(results[2]) == "https://example.org/stock-batch"
    assert transport.connections == 1  # keep-alive: every call on one connection
    assert rpc_answered_by_twisted_web(master) == 0

    with xmlrpclib.ServerProxy(f"{master.base_url}/RPC2", transport=_Transport()) as stranger:
        try:
            stranger.Store.Get(key)
        except xmlrpclib.Fault as fault:
            assert fault.faultCode == 401
        else:
            raise AssertionError("a call without the secret is fault 401")
    assert rpc_answered_by_twisted_web(master) == 1
