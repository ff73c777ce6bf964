"""A slave's several masters seen as one store: calls spread over them, failing over when one is down.

With PostgreSQL behind them, every master answers every key and any master can add, so a slave
may ask any of them. :class:`FailoverStore` sends each call to the next master in turn (round robin)
among those believed up. When a master does not answer (:class:`MasterUnreachable`: refused, reset,
timed out), it is believed down for ``retry_interval`` seconds and the same call goes at once to the
next master: a killed master costs a refused connection, not a request. Retrying an add elsewhere is
safe: a URL has one key in the database, so an add that did commit on the first master answers the
same key on the second. Any other answer (a key, "unknown key", "invalid URL") is the answer.

Only when every master failed the call does it fail, with the last master's error, so the
:class:`~goto_tw.proxystore.ProxyStore` above it sees one master that is down and fails fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from goto_tw.errors import GotoError, MasterUnreachable
from goto_tw.interfaces import IURLStore

log = Logger()

#: Seconds a master that did not answer is skipped before it is tried again.
RETRY_INTERVAL = 1.0


class _Member:
    __slots__ = ("down_until", "name", "store")

    def __init__(self, name: str, store: IURLStore) -> None:
        self.name = name
        self.store = store
        self.down_until = 0.0


@implementer(IURLStore)
class FailoverStore:
    """An :class:`IURLStore` over several masters' stores (``(name, store)`` pairs, names for logs)."""

    def __init__(
        self,
        masters: Sequence[tuple[str, IURLStore]],
        clock: IReactorTime,
        *,
        retry_interval: float = RETRY_INTERVAL,
    ) -> None:
        if not masters:
            raise ValueError("at least one master is needed")
        self._members = [_Member(name, store) for name, store in masters]
        self._clock = clock
        self._retry_interval = retry_interval
        self._next = 0

    def get(self, key: str) -> Deferred[str]:
        return self._call(lambda store: store.get(key))

    def put(self, url: str) -> Deferred[str]:
        return self._call(lambda store: store.put(url))

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

    def _call(self, call: Callable[[IURLStore], Deferred[str]]) -> Deferred[str]:
        return self._try(call, self._order(), None)

    def _try(
        self, call: Callable[[IURLStore], Deferred[str]], members: list[_Member], last: Failure | None
    ) -> Deferred[str]:
        if not members:
            assert last is not None
            return fail(last)
        member, rest = members[0], members[1:]
        try:
            asked = call(member.store)
        except Exception:
            return fail()

        def answered(result: str) -> str:
            if member.down_until:
                log.info("Master {name} answers again", name=member.name)
                member.down_until = 0.0
            return result

        def failed(failure: Failure) -> Deferred[str] | Failure:
            if not failure.check(MasterUnreachable):
                if member.down_until:
                    member.down_until = 0.0  # it answered, if only with "no"
                return failure
            if member.down_until == 0.0:
                log.warn(
                    "Master {name} does not answer ({error}); trying the others",
                    name=member.name,
                    error=_log_text(failure),
                )
            member.down_until = self._clock.seconds() + self._retry_interval
            return self._try(call, rest, failure)

        return asked.addCallbacks(answered, failed)


def _log_text(failure: Failure) -> str:
    error = failure.value
    return error.log_text() if isinstance(error, GotoError) else failure.getErrorMessage()
