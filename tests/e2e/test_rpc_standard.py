"""End-to-end: a real master's /RPC2 answers standard XML-RPC clients (its fast paths included).

The master reads bodies in the canonical form goto's slaves write with a codec of its own
(goto_tw.rpcwire) and answers multicalls without a Deferred per call; Python's ``xmlrpc.client``,
single calls and ``MultiCall`` alike, and hand-written bodies in other forms must see no difference.
"""

from __future__ import annotations

import urllib.request
import xmlrpc.client as xmlrpclib
from pathlib import Path
from typing import Any

from .harness import GotoProcesses, rpc_proxy


def test_standard_client_calls_and_multicalls_against_a_real_master(
    goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """``ServerProxy`` and ``MultiCall``: values, faults per call, hostile strings round-trip."""
    master = goto_processes("--rpc", data_file=tmp_path / "data.json", name="master")
    odd_url = "http://example.com/a?b=1&c=<d>&e=\u00e9\u20ac\U0001f600"
    with rpc_proxy(master.base_url) as proxy:
        key = proxy.Store.Put(odd_url)
        stored = proxy.Store.Get(key)  # the URL as the store keeps it (non-ASCII percent-encoded)
        assert isinstance(stored, str) and stored.startswith("http://example.com/a?b=1&c=")
        batch = xmlrpclib.MultiCall(proxy)
        batch.Store.Get(key)
        batch.Store.Get("zzzzzz")
        batch.Store.Put("ftp://example.com/")
        batch.Store.Add("http://example.com/new", "")
        batch.Store.Nope()
        results: Any = batch()
        assert results[0] == stored
        for index, code in ((1, 404), (2, 400), (4, 8001)):
            try:
                results[index]
            except xmlrpclib.Fault as fault:
                assert fault.faultCode == code
            else:
                raise AssertionError(f"call {index} should be fault {code}")
        added = results[3]
        assert set(added) == {"key", "new"} and added["new"] is True
        assert proxy.Store.Get(added["key"]) == "http://example.com/new"


def test_a_body_in_another_form_gets_the_same_answer(goto_processes: GotoProcesses, tmp_path: Path) -> None:
    """The same call written by another client (white space, an encoding declaration, untyped
    string values): the same answer as the canonical body."""
    master = goto_processes("--rpc", data_file=tmp_path / "data.json", name="master")
    with rpc_proxy(master.base_url) as proxy:
        key: Any = proxy.Store.Put("http://example.com/other-form")
    canonical = xmlrpclib.dumps((key,), "Store.Get").encode("utf-8")
    other = (
        b'<?xml version="1.0" encoding="UTF-8"?>\r\n<methodCall>  <methodName>Store.Get</methodName>'
        b"<params><param><value>" + key.encode() + b"</value></param></params></methodCall>"
    )
    answers = []
    for body in (canonical, other):
        request = urllib.request.Request(
            f"{master.base_url}/RPC2", data=body, headers={"Content-Type": "text/xml"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answers.append(response.read())
    assert answers[0] == answers[1]
    assert xmlrpclib.loads(answers[0]) == (("http://example.com/other-form",), None)
