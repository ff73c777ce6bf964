"""Stop 40's mutation audit of the code changed in stops 37-39: each test here fails on a mutation
the suite let through (named in its docstring: limits L12; failover F7, F8, F16-F20; masterhttp M3,
M7; clients C2, C4; persistence S4, S19, S22; proxystore P8; errors U1, U2), a behaviour a user or
an operator would notice."""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from goto_tw import failover as failover_module
from goto_tw.clients import normal_address
from goto_tw.errors import InvalidURL, MasterUnreachable, StoreUnavailable
from goto_tw.masterhttp import IDLE_SECONDS
from goto_tw.persistence import SPARE_BYTES, OSRecordFile
from goto_tw.store import URLStore
from tests.fakes import ManualLog
from tests.helpers import failure_of, has_fired, result_of
from tests.test_failover import Restartable, _checked_store
from tests.test_masterhttp import OK, URL, answer_to, client, post
from tests.wire import Connection, goto_site


class _Hung(Restartable):
    def __init__(self, name: str) -> None:
        super().__init__(name, feed=False)
        self.silent: list[Deferred[str]] = []

    def put(self, url: str) -> Deferred[str]:
        self.calls.append(("put", url))
        self.silent.append(Deferred())
        return self.silent[-1]


def _hedged_put_waiting_on_bs_recheck() -> tuple[Any, _Hung, Restartable, Deferred[str], Clock]:
    clock = Clock()
    a, b = _Hung("a"), Restartable("b", feed=False)
    store = _checked_store(a, b, clock=clock)
    result_of(store.get("k0"))
    put = store.put("https://example.org/")
    if has_fired(put):
        put = store.put("https://example.org/")
    assert not has_fired(put) and len(a.silent) == 1
    b.generation += 1  # b's connection idled out: checked again, slowly
    b.hold = True
    clock.advance(1.0)  # failover_after: handed on, b skipped, its check under way
    assert b.held and not has_fired(put)
    return store, a, b, put, clock


def test_a_call_that_waited_for_a_recheck_does_not_ask_again_a_master_it_asked() -> None:
    """Kills F17/F18: b's check fails; the call must fail with a's error, a asked once only."""
    _, a, b, put, _ = _hedged_put_waiting_on_bs_recheck()
    a.silent[0].errback(MasterUnreachable("the master is unreachable", detail="a reset"))
    assert not has_fired(put)
    b.held[-1].errback(MasterUnreachable("the master is unreachable", detail="b refused"))
    assert failure_of(put).check(StoreUnavailable)
    assert len([c for c in a.calls if c[0] == "put"]) == 1, "a was asked a second time"


def test_a_master_passing_its_recheck_takes_a_hedged_call_while_the_slow_one_is_still_out() -> None:
    """Kills F19: b passes its check while a is still silent: the put goes to b at once."""
    _, _slow, b, put, _ = _hedged_put_waiting_on_bs_recheck()
    b.held[-1].errback(InvalidURL("this store has no change feed"))  # b passes
    assert result_of(put) == "k", "the call waited for the slow master instead of b"


def test_a_race_with_no_room_to_wait_for_a_check_fails_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kills F16: MAX_WAITING_CALLS calls wait already; a race left with only a master being
    re-checked fails with its last master's error rather than never being answered."""
    monkeypatch.setattr(failover_module, "MAX_WAITING_CALLS", 0)
    _, a, _, put, _ = _hedged_put_waiting_on_bs_recheck()
    a.silent[0].errback(MasterUnreachable("the master is unreachable", detail="a reset"))
    assert failure_of(put).check(StoreUnavailable)


def test_an_old_idle_connection_before_a_young_one_is_ended_when_the_generation_is_read() -> None:
    """Kills M3 (only the last idle connection looked at): released in clock order, the first one
    too old, the last one young."""
    connections, endpoint, clock = client()
    first, second = post(connections), post(connections)
    answer_to(endpoint, 0, OK)  # released at 0
    clock.advance(IDLE_SECONDS - 1)
    answer_to(endpoint, 1, OK)  # released at IDLE_SECONDS - 1
    result_of(first), result_of(second)
    clock.advance(1.5)
    assert connections.generation(URL) == 1
    assert endpoint.transports[0].disconnected and not endpoint.transports[1].disconnected


def test_every_old_idle_connection_is_ended_when_the_generation_is_read() -> None:
    """Kills M7 (only the first old one ended): two too old, one young."""
    connections, endpoint, clock = client()
    posts = [post(connections) for _ in range(3)]
    answer_to(endpoint, 0, OK)
    answer_to(endpoint, 1, OK)
    clock.advance(IDLE_SECONDS - 1)
    answer_to(endpoint, 2, OK)
    for p in posts:
        result_of(p)
    clock.advance(1.5)
    connections.generation(URL)
    assert endpoint.transports[0].disconnected and endpoint.transports[1].disconnected
    assert not endpoint.transports[2].disconnected


def _form(host: str) -> bytes:
    form = b"url=https%3A%2F%2F" + host.encode() + b"%2F"
    return (
        b"POST /add HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(form), form)
    )


@pytest.mark.parametrize("fast", [True, False])
def test_a_pipelined_request_behind_a_late_answer_gets_its_own_answer_deadline(fast: bool) -> None:
    """Kills L12 (the answer clock stopped after twisted.web replays the next request) on the general
    path: the second of two pipelined adds, whose sync never returns, still has its connection closed
    at the deadline; the fast path (``fast``), with a deadline of its own, the same."""
    log = ManualLog()
    clock = Clock()
    site, _ = goto_site(URLStore({}, log), fast=fast, clock=clock, answer_deadline=30)
    connection = Connection(site)
    connection.send(_form("one.example") + _form("two.example"))
    clock.advance(10)
    log.complete_all()  # the first answered at 10 s; the second now waits for its sync
    assert connection.received().startswith(b"HTTP/1.1 ")
    assert not connection.transport.disconnecting
    assert len(log.appended) == 1, "the second add reached the store"
    clock.advance(30.1)
    assert connection.transport.disconnecting, "the second request has no answer deadline"


@pytest.mark.parametrize("zone", ["eth0.100", "br-lan", "wlp3s0_1", "abcdefghijklmno"])
def test_zone_ids_an_interface_can_have_are_kept(zone: str) -> None:
    """Kills C2 (15 characters refused) and C4 (only letters and digits)."""
    assert normal_address(f"fe80::1%{zone}") == f"fe80::1%{zone}"


def test_zeros_ahead_that_do_not_fit_on_the_disk_do_not_fail_the_write(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kills S19: the record is written; the zeros after it hit ENOSPC: write_all still succeeds."""
    path = str(tmp_path / "data")
    record_file = OSRecordFile(path)
    record_file.open(spare=SPARE_BYTES)
    real = os.pwrite

    def full(fd: int, data: Any, offset: int) -> int:
        if len(data) == SPARE_BYTES and not any(bytes(data)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full)
    record_file.write_all(b'{"key":"a","url":"https://a/"}\n')
    assert record_file.size() == 31
    record_file.close()
    with open(path, "rb") as f:
        assert f.read() == b'{"key":"a","url":"https://a/"}\n'


def test_a_call_answered_while_it_waits_for_a_recheck_asks_no_master_once_the_check_ends() -> None:
    """Kills F8: the slow master answers while the call waits for b's check; b passing must not be
    sent the put as well (a put made twice)."""
    _, a, b, put, _ = _hedged_put_waiting_on_bs_recheck()
    before = len([c for c in b.calls if c[0] == "put"])  # the round robin's first put, maybe
    a.silent[0].callback("k")
    assert result_of(put) == "k"
    b.held[-1].errback(InvalidURL("this store has no change feed"))  # b passes
    assert len([c for c in b.calls if c[0] == "put"]) == before, "b was sent the put after it was answered"


def test_a_stop_failing_the_slow_master_of_an_answered_call_logs_no_failure(log_events: Any) -> None:
    """Kills F20: a hedged put answered by b; the stop then fails a's call (SlaveStopping): nothing
    is raised into a's Deferred (an 'Unhandled error in Deferred' at collection)."""
    import gc

    from goto_tw.failover import FailoverStore
    from goto_tw.remote import slave_stopping
    from tests.test_failover import HeldMaster

    held: dict[str, Deferred[str]] = {}
    clock = Clock()
    store = FailoverStore([("a", HeldMaster("a", held)), ("b", HeldMaster("b", held))], clock)
    put = store.put("https://x/")
    clock.advance(1.0)  # handed on to b
    first, second = sorted(held)  # whichever went first
    held[second].callback("k")
    assert result_of(put) == "k"
    held[first].errback(slave_stopping())
    held.clear()
    gc.collect()
    assert not [e for e in log_events.events if e.get("log_failure") is not None]


def test_a_call_whose_only_master_failed_does_not_wait_for_that_masters_recheck() -> None:
    """Kills F7: a's connection was lost and another call started its re-check; the call that asked
    a fails with a's error as soon as a fails, not once a's check ends."""
    clock = Clock()
    a = _Hung("a")
    store = _checked_store(a, clock=clock)
    result_of(store.get("k0"))
    first = store.put("https://example.org/")
    assert not has_fired(first)
    a.generation += 1
    a.hold = True
    second = store.get("k1")  # starts a's re-check, and waits for it
    assert a.held and not has_fired(second)
    a.silent[0].errback(MasterUnreachable("the master is unreachable", detail="a reset"))
    assert has_fired(first), "the call waits for the re-check of the master it already asked"
    failure_of(first)


def test_zeros_after_a_sector_of_a_torn_record_are_bounded_counting_that_sector(tmp_path: Any) -> None:
    """Kills S4: the bound on the tail counts the torn record's bytes before the zeros."""
    from goto_tw.persistence import MAX_UNSYNCED_BYTES, CorruptDataFile, open_data_file

    partial = 512
    path = tmp_path / "data"
    path.write_bytes(b"a" * partial + bytes(MAX_UNSYNCED_BYTES + SPARE_BYTES - partial + 1))
    with pytest.raises(CorruptDataFile):
        open_data_file(str(path))


def test_a_drain_whose_calls_end_in_time_does_not_give_up_on_the_master() -> None:
    """Kills P8: a call in flight answered within the drain's time; the master is not given up
    (the slave's last click batch still goes to it after the drain)."""
    from goto_tw.proxystore import ProxyStore
    from tests.fakes import FakeMaster as ProxyFakeMaster

    master, clock = ProxyFakeMaster(), Clock()
    store = ProxyStore(master, clock)
    gave_up: list[bool] = []
    master.give_up = lambda: gave_up.append(True)  # type: ignore[attr-defined]
    lookup = store.get("k")
    drained = store.drain(5.0)
    clock.advance(1.0)
    master.answer("https://k.example/")
    assert result_of(lookup) == "https://k.example/"
    assert has_fired(drained)
    clock.advance(10.0)
    assert gave_up == []


def test_the_data_files_sync_is_the_os_sync() -> None:
    """Kills S22 (``_sync_data`` a no-op: every other test replaces the sync): ``fdatasync`` where
    the OS has it, else ``fsync``."""
    from goto_tw import persistence

    assert persistence._sync_data is getattr(os, "fdatasync", os.fsync)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError("first line\nsecond\r\nthird"), "first line second third"),
        (ValueError(""), "ValueError"),
        (RuntimeError("x" * 400), "x" * 300),
    ],
)
def test_one_line_makes_an_exceptions_text_one_bounded_line(error: Exception, expected: str) -> None:
    """Kills U1/U2: a refusal or log line made from an exception is one line (no forged lines), of
    at most 300 characters, and names the exception's type when it has no text."""
    from goto_tw.errors import one_line

    assert one_line(error) == expected
