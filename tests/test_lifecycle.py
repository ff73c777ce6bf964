"""The service lifecycle: listeners stop first, accepted work finishes (bounded), then the rest."""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.task import Clock
from twisted.logger import LogLevel

from goto_tw.errors import MasterUnreachable
from goto_tw.lifecycle import DrainService, StopInOrder
from goto_tw.proxystore import ProxyStore
from tests.conftest import LogCapture
from tests.fakes import FakeMaster
from tests.helpers import has_fired, result_of


def test_stopping_a_slave_stops_listening_then_waits_for_calls_in_flight() -> None:
    """On stop the listener goes first; the store's calls in flight then finish (bounded) before the
    services added earlier (access log, connection pool) stop."""
    clock = Clock()
    master = FakeMaster()
    store = ProxyStore(master, clock)
    order: list[str] = []

    class Recording(Service):
        def __init__(self, name: str) -> None:
            self.label = name

        def stopService(self) -> None:
            order.append(self.label)

    top = StopInOrder()
    Recording("pool").setServiceParent(top)
    DrainService(store, clock, timeout=5.0).setServiceParent(top)
    Recording("listener").setServiceParent(top)
    top.startService()
    add = store.put("http://a.example/")
    stopped = top.stopService()
    assert order == ["listener"]
    clock.advance(1)
    assert order == ["listener"], "the pool stays open while an accepted add waits for the master"
    master.answer("7")
    assert result_of(add) == "7"
    clock.advance(0)
    clock.advance(0)
    assert order == ["listener", "pool"]
    assert has_fired(stopped)


def test_stopping_a_slave_waits_a_bounded_time(log_events: LogCapture) -> None:
    """A master that never answers holds the stop for the drain timeout only; no error is logged."""
    clock = Clock()
    master = FakeMaster()
    store = ProxyStore(master, clock)
    drain = DrainService(store, clock, timeout=3.0)
    drain.startService()
    store.get("k").addErrback(lambda _: None)
    stopped = drain.stopService()
    clock.advance(2.9)
    assert not has_fired(stopped)
    clock.advance(0.1)
    clock.advance(0)
    clock.advance(0)
    assert has_fired(stopped)
    master.fail(MasterUnreachable("x", detail="connection lost at shutdown"))
    assert not [e for e in log_events.events if e.get("log_level") in (LogLevel.error, LogLevel.critical)]
