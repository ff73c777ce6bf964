"""A private master refuses the adds of a slave that checks no API keys (a new user's trial, stop
36: a slave started without ``--private`` forwarded anyone's adds, and the master, trusting the RPC
secret, stored them: the private service took links without a key). Everything else that slave asks
is answered: its redirects, and the change feed that brings it disables (a second read: refusing
every call left a refused slave redirecting links disabled after)."""

from __future__ import annotations

import xmlrpc.client as xmlrpclib
from pathlib import Path
from typing import Any

import pytest
from treq.testing import RequestTraversalAgent
from twisted.application.service import MultiService
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from goto_tw.errors import AddsUnchecked
from goto_tw.fastpath import UNCHECKED_ADDS, UNCHECKED_ADDS_HEADER
from goto_tw.metrics import Metrics
from goto_tw.remote import GATHER_PAUSE, AgentPoster
from goto_tw.rpc import RPCResource
from goto_tw.store import URLStore
from goto_tw.tap import Options, make_slave_store
from tests.conftest import LogCapture
from tests.helpers import failure_of, result_of
from tests.test_rpc_fastpath import Master, post
from tests.test_rpc_fastpath_property import URLS

PUT = xmlrpclib.dumps(("https://anyone.example/",), "Store.Put").encode()
UNCHECKED = b"%s: %s\r\n" % (UNCHECKED_ADDS_HEADER, UNCHECKED_ADDS)


class Slave:
    """A slave wired by ``tap.make_slave_store`` with ``args``, its master's /RPC2 in memory."""

    def __init__(self, tmp_path: Path, private_master: bool, *args: str) -> None:
        self.master_store = URLStore()
        root = Resource()
        root.putChild(b"RPC2", RPCResource(self.master_store, None, private=private_master))
        self.agent = RequestTraversalAgent(root)
        self.clock = Clock()
        options = Options()
        options.parseOptions(["--master", "127.0.0.1:8081", *args])
        self.store = make_slave_store(
            options, self.clock, MultiService(), Metrics("slave"), http=AgentPoster(self.agent)
        )
        self.remote: Any = self.store._master  # the RemoteStore the wiring made

    def put(self, url: str) -> Any:
        return self.call(self.store.put(url))

    def call(self, answer: Any) -> Any:
        """``answer`` once the calls on their way are answered."""
        for _ in range(6):
            self.clock.advance(GATHER_PAUSE)
            self.agent.flush()
        return answer


@pytest.fixture
def keys_file(tmp_path: Path) -> str:
    path = tmp_path / "keys"
    path.write_text("a-key-of-sixteen-or-more\n")
    return str(path)


def test_a_private_master_refuses_the_adds_of_a_slave_without_private(
    tmp_path: Path, keys_file: str, log_events: LogCapture
) -> None:
    """The slave's add is a 403 saying why (the master stores nothing), and the slave's log tells
    its operator what to do, once a minute; its look-ups and the change feed are answered; a slave
    with --private (which checks keys itself) adds as before."""
    unchecked = Slave(tmp_path, True)
    error = failure_of(unchecked.put("https://anyone.example/")).value
    assert isinstance(error, AddsUnchecked) and error.http_status == 403
    assert "needs an API key" in str(error)
    failure_of(unchecked.call(unchecked.store.add("https://anyone.example/b")))
    told = [m for m in log_events.messages() if "refuses the adds made through this slave" in m]
    assert len(told) == 1 and "start it with --private and --api-keys-file" in told[0]
    assert unchecked.master_store.count() == 0
    key = result_of(unchecked.master_store.put("https://by-the-master.example/"))
    assert result_of(unchecked.call(unchecked.store.get(key))) == "https://by-the-master.example/"
    changes = result_of(unchecked.call(unchecked.remote.call("Store.Changes", "", 0)))
    assert set(changes) >= {"epoch", "seq", "keys", "complete"}
    checked = Slave(tmp_path, True, "--private", "--api-keys-file", keys_file)
    assert result_of(checked.put("https://keyed.example/")) == "0"


def test_a_master_that_is_not_private_takes_every_slave(tmp_path: Path) -> None:
    assert result_of(Slave(tmp_path, False).put("https://open.example/")) == "0"


@pytest.mark.parametrize("fast", [True, False])
def test_both_paths_refuse_the_marked_adds_and_only_on_a_private_master(
    fast: bool, monkeypatch: pytest.MonkeyPatch, log_events: LogCapture
) -> None:
    """A marked add, alone or in a multicall beside a look-up, is fault 403 on a private master
    (fast path or twisted.web's alike, one log line an interval); the look-up beside it, unmarked
    adds, the mark in capitals, and every call to a master that is not private are answered."""
    private = Master(fast, private=True)
    private.send(post(PUT, b"Content-Type: text/xml\r\n" + UNCHECKED))
    refused = private.received()
    assert b"<name>faultCode</name>\n<value><int>403</int>" in refused and b"needs an API key" in refused
    batch = xmlrpclib.dumps(
        (
            [
                {"methodName": "Store.Get", "params": ["abc"]},
                {"methodName": "Store.Put", "params": ["https://b.example/"]},
            ],
        ),
        "system.multicall",
    ).encode()
    private.send(post(batch, b"Content-Type: text/xml\r\nX-GOTO-ADDS: UNCHECKED\r\n"))
    answers: Any = xmlrpclib.loads(private.received().partition(b"\r\n\r\n")[2])[0][0]
    assert answers[0] == [URLS["abc"]] and answers[1]["faultCode"] == 403
    assert private.store.count() == len(URLS), "nothing stored"
    assert len([m for m in log_events.messages() if "started without --private" in m]) == 1
    private.send(post(PUT))
    private.log.complete_all()
    answered = private.received()
    assert b"<string>" in answered and b"faultCode" not in answered
    open_master = Master(fast)
    open_master.send(post(PUT, b"Content-Type: text/xml\r\n" + UNCHECKED))
    open_master.log.complete_all()
    answered = open_master.received()
    assert b"<string>" in answered and b"faultCode" not in answered
