"""A slave's several masters seen as one store: calls spread over them, failing over when one is down.

With PostgreSQL behind them, every master answers every key and any master can add, so a slave
may ask any of them. :class:`FailoverStore` sends each call to the next master in turn (round robin)
among those believed up. When a master does not answer (:class:`MasterUnreachable`: refused, reset,
timed out), it is believed down for ``retry_interval`` seconds and the same call goes at once to the
next master: a killed master costs a refused connection, not a request. A master silent for
``failover_after`` seconds (hung, or cut off without a reset) is believed down too and the call also
goes to the next one, so a call never waits for ``--rpc-timeout`` while another master answers. Retrying an add elsewhere is
safe: a URL has one key in the database, so an add that did commit on the first master answers the
same key on the second. Any other answer (a key, "unknown key", "invalid URL") is the answer.

Only when every master failed the call does it fail, with the last master's error, so the
:class:`~goto_tw.proxystore.ProxyStore` above it sees one master that is down and fails fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from goto_tw.errors import GotoError, MasterUnreachable
from goto_tw.interfaces import ILinkAdder, IURLStore

log = Logger()

#: Seconds a master that did not answer is skipped before it is tried again.
RETRY_INTERVAL = 1.0
#: Seconds of silence after which a call also goes to the next master (a hung master, not a dead one).
FAILOVER_AFTER = 1.0


class _Member:
    __slots__ = ("down_until", "name", "store")

    def __init__(self, name: str, store: IURLStore) -> None:
        self.name = name
        self.store = store
        self.down_until = 0.0


@implementer(IURLStore, ILinkAdder)
class FailoverStore:
    """An :class:`IURLStore` over several masters' stores (``(name, store)`` pairs, names for logs)."""

    def __init__(
        self,
        masters: Sequence[tuple[str, IURLStore]],
        clock: IReactorTime,
        *,
        retry_interval: float = RETRY_INTERVAL,
        failover_after: float = FAILOVER_AFTER,
    ) -> None:
        if not masters:
            raise ValueError("at least one master is needed")
        self._members = [_Member(name, store) for name, store in masters]
        self._clock = clock
        self._retry_interval = retry_interval
        self._failover_after = failover_after
        self._next = 0

    def get(self, key: str) -> Deferred[str]:
        return self._call(lambda store: store.get(key))

    def put(self, url: str) -> Deferred[str]:
        return self._call(lambda store: store.put(url))

    def add(self, url: str, key: str | None = None) -> Deferred[tuple[str, bool]]:
        """``add`` on the masters, as ``put`` (a URL, or a custom pair, has one key in the database
        they share, so the same add reaching two of them answers the same key)."""
        return self._call(lambda store: store.add(url, key))

    def call(self, method: str, *params: Any) -> Deferred[Any]:
        """Any other call, made of one master at a time: it moves on only when a master refused
        it (unreachable), never because one is slow, so a call that must not be made twice (a
        batch of clicks) is not hedged onto a second master."""
        return _Race(self, lambda store: store.call(method, *params), self._order(), hedge=False).result

    def count(self) -> int:
        return 0

    def up(self) -> list[str]:
        """The names of the masters believed up now."""
        now = self._clock.seconds()
        return [member.name for member in self._members if member.down_until <= now]

    def _order(self) -> list[_Member]:
        """Every master once, starting at the next in turn; those believed down last."""
        members = self._members
        start = self._next
        self._next = (start + 1) % len(members)
        rotated = members[start:] + members[:start]
        now = self._clock.seconds()
        return [m for m in rotated if m.down_until <= now] + sorted(
            (m for m in rotated if m.down_until > now), key=lambda m: m.down_until
        )

    def _call(self, call: Callable[[Any], Deferred[Any]]) -> Deferred[Any]:
        return _Race(self, call, self._order()).result

    def _mark_down(self, member: _Member, why: str) -> None:
        if member.down_until == 0.0:
            log.warn(
                "Master {name} does not answer ({error}); trying the others", name=member.name, error=why
            )
        member.down_until = self._clock.seconds() + self._retry_interval

    def _mark_up(self, member: _Member) -> None:
        if member.down_until:
            log.info("Master {name} answers again", name=member.name)
            member.down_until = 0.0


class _Race:
    """One call: asked of the masters in ``order`` until one gives a real answer.

    A master that fails with :class:`MasterUnreachable` hands the call to the next at once; one
    that is silent for ``failover_after`` seconds is believed down and the call also goes to the
    next, the slow one still counting if it answers first. The first real answer wins; the later
    ones are dropped. The call fails only when every master failed it.
    """

    def __init__(
        self,
        store: FailoverStore,
        call: Callable[[Any], Deferred[Any]],
        order: list[_Member],
        *,
        hedge: bool = True,
    ) -> None:
        self._store = store
        self._hedge = hedge
        self._call = call
        self._waiting = order
        self._outstanding = 0
        self._last: Failure | None = None
        self.result: Deferred[Any] = Deferred()
        self._ask_next()

    def _ask_next(self) -> None:
        if not self._waiting:
            if self._outstanding == 0 and not self.result.called:
                assert self._last is not None
                self.result.errback(self._last)
            return
        member, self._waiting = self._waiting[0], self._waiting[1:]
        self._outstanding += 1
        moved_on = [False]
        timer = None
        if self._waiting and self._hedge:
            timer = self._store._clock.callLater(self._store._failover_after, self._slow, member, moved_on)
        try:
            asked = self._call(member.store)
        except Exception:
            asked = fail()
        asked.addBoth(self._answered, member, timer, moved_on)

    def _slow(self, member: _Member, moved_on: list[bool]) -> None:
        if self.result.called:
            return
        moved_on[0] = True
        self._store._mark_down(member, f"no answer within {self._store._failover_after:g} s")
        self._ask_next()

    def _answered(self, result: object, member: _Member, timer: Any, moved_on: list[bool]) -> None:
        self._outstanding -= 1
        if timer is not None and timer.active():
            timer.cancel()
        if isinstance(result, Failure) and result.check(MasterUnreachable):
            self._store._mark_down(member, _log_text(result))
            self._last = result
            if not moved_on[0]:
                self._ask_next()
            elif self._outstanding == 0 and not self._waiting and not self.result.called:
                self.result.errback(result)
            return
        self._store._mark_up(member)  # a value, or a definite "no" (unknown key, invalid URL)
        if self.result.called:
            return  # a faster master answered already (or the caller gave up)
        if isinstance(result, Failure):
            self.result.errback(result)
        else:
            self.result.callback(result)


def _log_text(failure: Failure) -> str:
    error = failure.value
    return error.log_text() if isinstance(error, GotoError) else failure.getErrorMessage()
