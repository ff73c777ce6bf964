"""The service lifecycle: listeners stop first, accepted work finishes (bounded), then the rest."""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.service import Service
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel

from goto_tw.errors import MasterUnreachable
from goto_tw.lifecycle import DrainService, StopInOrder, StopSignalsOnce
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


class ThreadCallingReactor(MemoryReactorClock):
    """A memory reactor whose ``callFromThread`` calls at once (the test is the reactor's thread)."""

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)

    def shut_down(self) -> None:
        """Run what was to run before shutdown (as the reactor's stop does)."""
        for f, args, kwargs in self.triggers.get("before", {}).get("shutdown", []):
            f(*args, **kwargs)


class SignalTable:
    """The process's signal handlers, for a test: what ``signal.getsignal`` and ``signal.signal`` see."""

    def __init__(self, **handlers: Any) -> None:
        self.handlers = {getattr(signal, name): handler for name, handler in handlers.items()}

    def get(self, number: int) -> Any:
        return self.handlers.get(number, signal.SIG_DFL)

    def set(self, number: int, handler: Any) -> None:
        self.handlers[number] = handler


def test_only_the_first_stop_signal_reaches_the_reactors_handler(log_events: LogCapture) -> None:
    """A SIGTERM or SIGINT while stopping is one line (twisted's handler would stop the stopped
    reactor: a critical traceback); the handlers are wrapped once the reactor runs (it installs its
    own as it starts); a handler that is not a function (SIG_IGN) is left alone."""
    stops: list[int] = []
    reactor = ThreadCallingReactor()
    table = SignalTable(SIGTERM=lambda number, frame: stops.append(number), SIGINT=signal.SIG_IGN)
    service = StopSignalsOnce(reactor, get_handler=table.get, set_handler=table.set)
    original = table.handlers[signal.SIGTERM]
    service.startService()
    assert table.handlers[signal.SIGTERM] is original, "wrapped before the reactor installs its own"
    reactor.run()  # runs the calls made once it runs
    assert table.handlers[signal.SIGINT] is signal.SIG_IGN
    table.handlers[signal.SIGTERM](signal.SIGTERM, None)
    table.handlers[signal.SIGTERM](signal.SIGTERM, None)
    assert stops == [signal.SIGTERM]
    assert [m for m in log_events.messages() if "again" in m] == [
        "Received SIGTERM again: already stopping (every request accepted is answered first; "
        "SIGKILL stops at once)"
    ]


def test_a_stop_begun_otherwise_makes_the_first_signal_a_line_too(log_events: LogCapture) -> None:
    """A stop that did not come from a signal (start-up failing, ``reactor.stop``) has begun once
    shutdown's 'before' triggers run: a signal then is the line, not a second ``reactor.stop``."""
    stops: list[int] = []
    reactor = ThreadCallingReactor()
    table = SignalTable(SIGINT=lambda number, frame: stops.append(number))
    StopSignalsOnce(reactor, get_handler=table.get, set_handler=table.set).startService()
    reactor.run()
    reactor.shut_down()
    table.handlers[signal.SIGINT](signal.SIGINT, None)
    assert stops == []
    assert any("Received SIGINT again" in m for m in log_events.messages())
