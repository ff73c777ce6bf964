"""The lean poll step (goto_tw.leanpoll): Twisted's epoll poll step, less a logging context per event."""

from __future__ import annotations

import errno
import inspect
import socket
import textwrap
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.python.failure import Failure

from goto_tw import tap
from goto_tw.leanpoll import drop_lean_poll, use_lean_poll
from tests.conftest import LogCapture

epollreactor = pytest.importorskip("twisted.internet.epollreactor")
EPollReactor = epollreactor.EPollReactor

#: Twisted's ``EPollReactor.doPoll``, which ``_lean_poll`` follows step by step (the same in
#: Twisted 25.5 and 26.10). A Twisted that changes it must be read before the lean step is kept.
TWISTED_DO_POLL = '''\
def doPoll(self, timeout):
    """
    Poll the poller for new events.
    """
    if timeout is None:
        timeout = -1  # Wait indefinitely.

    try:
        # Limit the number of events to the number of io objects we're
        # currently tracking (because that's maybe a good heuristic) and
        # the amount of time we block to the value specified by our
        # caller.
        l = self._poller.poll(timeout, len(self._selectables))
    except OSError as err:
        if err.errno == errno.EINTR:
            return
        # See epoll_wait(2) for documentation on the other conditions
        # under which this can fail.  They can only be due to a serious
        # programming error on our part, so let's just announce them
        # loudly.
        raise

    _drdw = self._doReadOrWrite
    for fd, event in l:
        try:
            selectable = self._selectables[fd]
        except KeyError:
            pass
        else:
            log.callWithLogger(selectable, _drdw, selectable, fd, event)
'''


def test_the_lean_step_follows_twisteds_poll_step_as_it_is() -> None:
    """The poll step the lean one replaces is the one it was written from (else read it again)."""
    assert textwrap.dedent(inspect.getsource(EPollReactor.doPoll)) == TWISTED_DO_POLL


@pytest.fixture
def reactor() -> Iterator[Any]:
    """A new (never run) epoll reactor with the lean poll step, closed afterwards."""
    made = EPollReactor()
    assert use_lean_poll(made)
    try:
        yield made
    finally:
        drop_lean_poll(made)
        made.removeAll()
        made.waker.connectionLost(None)
        made._poller.close()


class Reader:
    """A readable end of a socket pair, as the reactor sees a connection."""

    def __init__(self, name: str, on_read: Callable[[Reader], object] | None = None) -> None:
        self.name = name
        self.socket, self.peer = socket.socketpair()
        self.on_read = on_read
        self.reads = 0
        self.lost: list[Failure] = []

    def fileno(self) -> int:
        return self.socket.fileno()

    def logPrefix(self) -> str:
        return self.name

    def doRead(self) -> object:
        self.reads += 1
        self.socket.recv(100)
        return self.on_read(self) if self.on_read is not None else None

    def connectionLost(self, reason: Failure) -> None:
        self.lost.append(reason)

    def close(self) -> None:
        self.socket.close()
        self.peer.close()


@pytest.fixture
def readers(reactor: Any) -> Iterator[list[Reader]]:
    """The connections a test watches: no longer watched, and closed, afterwards."""
    made: list[Reader] = []
    yield made
    for reader in made:
        reactor.removeReader(reader)
        reader.close()


def ready(reactor: Any, readers: list[Reader], *new: Reader) -> None:
    """Watch ``new`` for reading, each with a byte to read."""
    for reader in new:
        readers.append(reader)
        reactor.addReader(reader)
        reader.peer.send(b"x")


def test_every_ready_descriptor_is_handled_in_one_turn(reactor: Any, readers: list[Reader]) -> None:
    first, second = Reader("first"), Reader("second")
    ready(reactor, readers, first, second)
    reactor.doIteration(0)
    assert (first.reads, second.reads) == (1, 1)


class Refusing(Reader):
    """A connection whose ``connectionLost`` raises (which ``_doReadOrWrite`` lets escape)."""

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        raise RuntimeError(f"{self.name} broke")


def lose(reader: Reader) -> object:
    return ConnectionDone()


def test_an_exception_out_of_a_handler_is_logged_as_twisted_logs_it_and_the_turn_goes_on(
    reactor: Any, readers: list[Reader], log_events: LogCapture
) -> None:
    """Both connections' ``connectionLost`` raise in one turn: both are logged, each with its own
    prefix as the system, as ``callWithLogger`` logs them (checked against Twisted's own step)."""
    ready(reactor, readers, Refusing("one", lose), Refusing("two", lose))
    reactor.doIteration(0)
    lean = sorted((event["log_system"], str(event["failure"].value)) for event in log_events.events)
    assert lean == [("one", "one broke"), ("two", "two broke")]
    assert [len(reader.lost) for reader in readers] == [1, 1]

    del log_events.events[:]
    drop_lean_poll(reactor)
    ready(reactor, readers, Refusing("one", lose), Refusing("two", lose))
    reactor.doIteration(0)
    twisteds = sorted((event["log_system"], str(event["failure"].value)) for event in log_events.events)
    assert twisteds == lean


def test_a_descriptor_dropped_by_an_earlier_event_of_the_turn_is_not_handled(
    reactor: Any, readers: list[Reader]
) -> None:
    """Each of two ready connections drops the other when read: whichever comes first, only it is read."""

    def drop_the_other(reader: Reader) -> None:
        reactor.removeReader(readers[1] if reader is readers[0] else readers[0])

    ready(reactor, readers, Reader("one", drop_the_other), Reader("two", drop_the_other))
    reactor.doIteration(0)
    assert sorted(reader.reads for reader in readers) == [0, 1]


class FailingPoller:
    def __init__(self, error: int) -> None:
        self.error = error

    def poll(self, timeout: float, most: int) -> list[tuple[int, int]]:
        raise OSError(self.error, "poll failed")


def test_an_interrupted_poll_is_a_turn_with_no_events_and_other_poll_errors_are_raised(reactor: Any) -> None:
    real = reactor._poller
    try:
        reactor._poller = FailingPoller(errno.EINTR)
        assert reactor.doIteration(0) is None
        reactor._poller = FailingPoller(errno.EBADF)
        with pytest.raises(OSError) as raised:
            reactor.doIteration(0)
        assert raised.value.errno == errno.EBADF
    finally:
        reactor._poller = real


def test_only_twisteds_own_epoll_reactor_gets_the_lean_step() -> None:
    """Another reactor, or a subclass of the epoll one (it may have its own poll step), is left alone;
    asking twice changes nothing; dropping it gives back Twisted's own step."""

    class Subclass(EPollReactor):  # type: ignore[misc,valid-type]
        pass

    assert not use_lean_poll(MemoryReactor())
    sub = Subclass()
    epoll = EPollReactor()
    try:
        assert not use_lean_poll(sub)
        assert sub.doIteration.__func__ is EPollReactor.doPoll
        assert use_lean_poll(epoll)
        first = epoll.doIteration
        assert use_lean_poll(epoll) and epoll.doIteration is first
        assert epoll.doIteration.__func__ is not EPollReactor.doPoll
        drop_lean_poll(epoll)
        assert epoll.doIteration.__func__ is EPollReactor.doPoll
    finally:
        for made in (sub, epoll):
            made.waker.connectionLost(None)
            made._poller.close()


def test_twistds_reactor_gets_the_lean_step_the_nursery_check_and_the_jit_counters_and_an_injected_one_none(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All three run for the reactor twistd runs, not for a test's (the nursery check itself:
    tests/test_nursery.py; the JIT counters: tests/test_jitcounters.py)."""
    from twisted.internet import reactor as global_reactor

    def options(name: str) -> tap.Options:
        parsed = tap.Options()
        parsed.parseOptions(["--file", str(tmp_path / name)])
        return parsed

    given: list[object] = []
    checked: list[None] = []
    monkeypatch.setattr(tap, "use_lean_poll", given.append)
    monkeypatch.setattr(tap, "warn_if_small_nursery", lambda: checked.append(None))
    kept: list[None] = []
    monkeypatch.setattr(tap, "keep_counters", lambda: kept.append(None))
    prepared: list[None] = []  # SIGHUP and sys.excepthook are the test process's: left alone
    monkeypatch.setattr(tap, "prepare_process", lambda: prepared.append(None))
    tap.makeService(options("a.json"), reactor=MemoryReactorClock())
    assert given == []
    assert checked == []
    assert kept == []
    assert prepared == []
    tap.makeService(options("b.json"))
    assert given == [global_reactor]
    assert checked == [None]
    assert kept == [None]
    assert prepared == [None]


class RecordingPoller:
    """A poller that records what it is asked and reports no event."""

    def __init__(self) -> None:
        self.asked: list[tuple[float, int]] = []

    def poll(self, timeout: float, most: int) -> list[tuple[int, int]]:
        self.asked.append((timeout, most))
        return []


def test_the_poller_is_asked_as_twisteds_step_asks_it(reactor: Any, readers: list[Reader]) -> None:
    """Review: no timeout (``None``: nothing scheduled) waits indefinitely (-1), not 0 (a busy loop
    of an idle reactor), and a timeout and the number of events are passed as Twisted passes them."""
    ready(reactor, readers, Reader("one"), Reader("two"))
    real, recording = reactor._poller, RecordingPoller()
    try:
        reactor._poller = recording
        for timeout in (None, 0, 2.5):
            reactor.doIteration(timeout)
        lean = recording.asked[:]
        assert lean[0][0] == -1
        del recording.asked[:]
        drop_lean_poll(reactor)
        for timeout in (None, 0, 2.5):
            reactor.doIteration(timeout)
        assert recording.asked == lean
    finally:
        reactor._poller = real


def test_a_descriptor_dropped_mid_turn_does_not_stop_the_turn(reactor: Any, readers: list[Reader]) -> None:
    """Review: of three ready connections, the one read first drops the one read second (in epoll's
    order); the third is still read in the same turn."""

    def drop_the_next(reader: Reader) -> None:
        if sum(each.reads for each in readers) == 1:  # the first read of the turn
            order = [each for each in readers if each is not reader]
            reactor.removeReader(order[0])
            dropped.append(order[0])

    dropped: list[Reader] = []
    ready(reactor, readers, *(Reader(name, drop_the_next) for name in ("one", "two", "three")))
    real = reactor._poller

    class Ordered:
        """epoll's events, the first reader's first and the one it drops next."""

        def poll(self, timeout: float, most: int) -> list[tuple[int, int]]:
            return sorted(real.poll(timeout, most), key=lambda event: event[0])

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)  # (un)registering goes to the real poller

    try:
        reactor._poller = Ordered()
        reactor.doIteration(0)
    finally:
        reactor._poller = real
    assert [reader.reads for reader in readers] == [1, 0, 1]
    assert dropped == [readers[1]]


class Interrupting(Reader):
    """A connection whose ``connectionLost`` raises what it is given (not an ``Exception``)."""

    def __init__(self, name: str, error: type[BaseException]) -> None:
        super().__init__(name, lose)
        self.error = error

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        raise self.error()


def test_keyboard_interrupt_escapes_the_turn_as_from_twisteds_step(
    reactor: Any, readers: list[Reader]
) -> None:
    """Review: ``callWithLogger`` lets ``KeyboardInterrupt`` through (the reactor's top handler
    then stops it); the lean step must not log it away."""
    ready(reactor, readers, Interrupting("one", KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        reactor.doIteration(0)


def test_system_exit_out_of_a_handler_is_logged_and_the_turn_goes_on(
    reactor: Any, readers: list[Reader], log_events: LogCapture
) -> None:
    """Review: ``callWithLogger`` logs any other ``BaseException`` (``SystemExit`` too) and the
    turn goes on; so does the lean step."""
    ready(reactor, readers, Interrupting("one", SystemExit), Interrupting("two", SystemExit))
    reactor.doIteration(0)
    assert sorted((event["log_system"], type(event["failure"].value)) for event in log_events.events) == [
        ("one", SystemExit),
        ("two", SystemExit),
    ]


class BuggyPrefix(Refusing):
    """A connection whose ``logPrefix`` raises too."""

    def logPrefix(self) -> str:
        raise ValueError("no prefix")


def test_an_escaping_exception_of_a_connection_with_a_buggy_log_prefix_is_still_logged(
    reactor: Any, readers: list[Reader], log_events: LogCapture
) -> None:
    """Review: as ``callWithLogger``, a ``logPrefix`` that raises gives the system
    ``(buggy logPrefix method)``; the exception logged is the handler's."""
    ready(reactor, readers, BuggyPrefix("one", lose))
    reactor.doIteration(0)
    logged = [(event["log_system"], str(event["failure"].value)) for event in log_events.events]
    assert ("(buggy logPrefix method)", "one broke") in logged


class InterruptedPrefix(Refusing):
    """A connection whose ``connectionLost`` raises, and whose ``logPrefix`` is interrupted (Ctrl-C)."""

    def logPrefix(self) -> str:
        raise KeyboardInterrupt()


def test_keyboard_interrupt_while_naming_a_connection_escapes_the_turn(
    reactor: Any, readers: list[Reader]
) -> None:
    """Review: ``callWithLogger`` lets a ``KeyboardInterrupt`` out of ``logPrefix`` through too; the
    lean step asks for the prefix only to log an escaped exception, and lets it through there."""
    ready(reactor, readers, InterruptedPrefix("one", lose))
    with pytest.raises(KeyboardInterrupt):
        reactor.doIteration(0)
