"""A slave's several masters seen as one store: calls spread over them, failing over when one is down.

With PostgreSQL behind them, every master answers every key and any master can add, so a slave
may ask any of them. :class:`FailoverStore` sends each call to the next master in turn (round robin)
among those believed up. When a master does not answer (:class:`MasterUnreachable`: refused, reset,
timed out), it is believed down for ``retry_interval`` seconds and the same call goes at once to the
next master: a killed master costs a refused connection, not a request. A master silent for
``failover_after`` seconds (hung, or cut off without a reset) is believed down too and the call also
goes to the next one, so a call never waits for ``--rpc-timeout`` while another master answers. Retrying an add elsewhere is
safe: a URL has one key in the database, so an add that did commit on the first master answers the
same key on the second. A master that answers but cannot serve (a 503 fault: its own way to the
database is down, or its database calls queue too long) is passed over the same way: the next master
may reach the database. Any other answer (a key, "unknown key", "invalid URL") is the answer.

Only when every master failed the call does it fail, with the last master's error, so the
:class:`~goto_tw.proxystore.ProxyStore` above it sees one master that is down and fails fast.

All that holds only if the masters share one store. With a ``check`` (the slave's wiring gives one),
a master takes no call until it passed it: a master keeping its own data file (it answers the
change feed, which a PostgreSQL master has not) would hand out the same keys as another for other
URLs, so it is refused for good, logged once as an error. A master is checked again whenever its
connection was lost, could not be made or idled out since it passed (the store's
``connection_generation`` moved): the next process at its address may be another master (restarted
without its ``--store``), and it takes no call until it passed again, a call already under way
included (one handed on to it skips it). A connection the master's answer closed
(``Connection: close``) does not count: behind a proxy that closes after every answer no
connection outlives its check, so checking again would not help (the README says to point slaves
at masters). Calls made before any master passed wait for the first answer (at most
:data:`MAX_WAITING_CALLS` of them); a master that could not be asked is asked again with the next
call after ``retry_interval``, its failure logged once (a name that does not resolve, a secret it
refuses) until it passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from goto_tw.errors import (
    GotoError,
    InvalidURL,
    MasterBusy,
    MasterFailed,
    MasterUnreachable,
    SlaveStopping,
    StoreUnavailable,
)
from goto_tw.interfaces import ILinkAdder, IURLStore
from goto_tw.remote import UNREACHABLE_MESSAGE, slave_stopping

log = Logger()

#: Seconds a master that did not answer is skipped before it is tried again.
RETRY_INTERVAL = 1.0
#: Seconds of silence after which a call also goes to the next master (a hung master, not a dead one).
FAILOVER_AFTER = 1.0
#: Most seconds a master that keeps failing is passed over before it is tried again.
MAX_RETRY_INTERVAL = 30.0
#: Calls that may wait for the masters' first check (a slave that has just started); more fail at once.
MAX_WAITING_CALLS = 10_000

#: Checks a master before it takes calls: ``None`` when it may, a reason when it must not, a
#: :class:`StoreUnavailable` failure (unreachable, busy) when it could not be asked (asked again later).
MasterCheck = Callable[[Any], "Deferred[Optional[str]]"]


class _Member:
    __slots__ = (
        "announced",
        "check_again_at",
        "check_error",
        "checked_generation",
        "checking",
        "down_until",
        "ever_passed",
        "failures",
        "name",
        "passed",
        "refused",
        "store",
        "trial_until",
    )

    def __init__(self, name: str, store: IURLStore, checked: bool) -> None:
        self.name = name
        self.store = store
        self.down_until = 0.0
        #: Retries in a row that failed (the backoff's exponent), and until when one call is retrying
        #: it (the others pass it over meanwhile, so a hung master holds up one call, not a second's).
        self.failures = 0
        self.trial_until = 0.0
        #: Whether its outage was logged (the warning once, and "answers again" once after it).
        self.announced = False
        #: Whether the check passed (no check: from the start); why it failed for good, if it did.
        self.passed = checked
        self.refused: str | None = None
        self.checking = False
        self.check_again_at = 0.0
        #: Why the last check could not be made (logged once until one passes), for the caller's 503.
        self.check_error: str | None = None
        #: The store's connection generation when the check last passed (see _start_checks), and
        #: whether one ever did (a check again after a lost connection is not announced).
        self.checked_generation: int | None = None
        self.ever_passed = checked


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
        check: MasterCheck | None = None,
    ) -> None:
        if not masters:
            raise ValueError("at least one master is needed")
        self._members = [_Member(name, store, check is None) for name, store in masters]
        self._clock = clock
        self._retry_interval = retry_interval
        self._failover_after = failover_after
        self._check = check
        self._waiting: list[Deferred[None]] = []
        self._next = 0
        #: Set by :meth:`give_up`: a call no master can take is this slave's stop, not an outage.
        self._given_up = False

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
        return self._when_checked(
            lambda: _Race(self, lambda store: store.call(method, *params), self._order(), hedge=False).result
        )

    def read(self, method: str, *params: Any) -> Deferred[Any]:
        """A call that only reads (``Store.Stats``): hedged as a look-up is, so a hung master costs
        it ``failover_after``, not ``--rpc-timeout``."""
        return self._call(lambda store: store.call(method, *params))

    def count(self) -> int:
        return 0

    def give_up(self) -> None:
        """Answer every call now (see :meth:`goto_tw.remote.RemoteStore.give_up`), every master's,
        with :class:`~goto_tw.errors.SlaveStopping` (nothing is logged of the masters for it); a
        call waiting for a master's check is answered when that check, failed the same way, ends."""
        self._given_up = True  # first: a check the masters' give_up ends releases calls at once
        for member in self._members:
            give_up = getattr(member.store, "give_up", None)
            if give_up is not None:
                give_up()

    def up(self) -> list[str]:
        """The names of the masters believed up now (and checked, with a check)."""
        now = self._clock.seconds()
        return [member.name for member in self._members if member.passed and member.down_until <= now]

    def _order(self) -> list[_Member]:
        """Every master that passed its check once, starting at the next in turn; those believed
        down last."""
        members = [member for member in self._members if member.passed]
        if not members:
            return []
        start = self._next % len(members)
        self._next = (start + 1) % len(members)
        rotated = members[start:] + members[:start]
        now = self._clock.seconds()
        return [m for m in rotated if m.down_until <= now and m.trial_until <= now] + sorted(
            (m for m in rotated if m.down_until > now or m.trial_until > now), key=lambda m: m.down_until
        )

    def _call(self, call: Callable[[Any], Deferred[Any]]) -> Deferred[Any]:
        return self._when_checked(lambda: _Race(self, call, self._order()).result)

    def _when_checked(self, race: Callable[[], Deferred[Any]]) -> Deferred[Any]:
        """``race()`` now if a master passed its check, else once one has (or every check ended)."""
        if self._check is None:
            return race()
        self._start_checks()
        if any(member.passed for member in self._members) or not any(
            member.checking for member in self._members
        ):
            return race()  # to those that passed; if none did, the race fails saying why
        checked = self._after_checks()
        if checked is None:  # busy, not unreachable: no master is marked down
            return fail(
                StoreUnavailable(UNREACHABLE_MESSAGE, detail="too many calls wait for the masters' check")
            )
        return checked.addCallback(lambda _: race())

    def _after_checks(self) -> Deferred[None] | None:
        """A Deferred that fires once a master passes its check or no check is under way; ``None``
        when :data:`MAX_WAITING_CALLS` calls wait already."""
        if len(self._waiting) >= MAX_WAITING_CALLS:
            return None
        checked: Deferred[None] = Deferred()
        self._waiting.append(checked)
        return checked

    def _start_checks(self) -> None:
        """Check every master not checked yet, nor being checked, nor asked too recently; and those
        whose connection was lost since they passed (they take no call until they pass again)."""
        assert self._check is not None
        now = None
        for member in self._members:
            if member.passed and _generation(member.store) != member.checked_generation:
                member.passed = False  # another process may answer at its address now
            if member.passed or member.refused or member.checking:
                continue
            now = self._clock.seconds() if now is None else now
            if now < member.check_again_at:
                continue
            member.checking = True
            try:
                checked = self._check(member.store)
            except Exception:
                checked = fail()
            checked.addBoth(self._checked, member)

    def _may_take_calls(self, member: _Member) -> bool:
        """Whether ``member`` passed its check and its connection has not been lost since (always,
        without a check)."""
        if self._check is None:
            return True
        return member.passed and _generation(member.store) == member.checked_generation

    def _checked(self, result: object, member: _Member) -> None:
        member.checking = False
        if isinstance(result, Failure) and result.check(SlaveStopping):
            pass  # this slave stops: no news of the master
        elif isinstance(result, Failure):
            if not result.check(StoreUnavailable):
                log.failure("Checking master {name} failed", result, name=member.name)
            elif member.check_error is None and not member.announced:  # once until it passes
                log.warn(
                    "Master {name} could not be checked ({error}); it takes no calls until it is, "
                    "asked again every {seconds:g} s",
                    name=member.name,
                    error=_log_text(result),
                    seconds=self._retry_interval,
                )
            member.check_error = _log_text(result)
            member.check_again_at = self._clock.seconds() + self._retry_interval
        elif result is None:
            member.passed = True
            member.checked_generation = _generation(member.store)
            member.check_error = None
            if not member.ever_passed:
                member.ever_passed = True
                log.info("Master {name} shares the others' store: it takes calls", name=member.name)
        else:
            member.refused = str(result)
            log.error("Master {name} takes no calls from this slave: {why}", name=member.name, why=result)
        if member.passed or not any(other.checking for other in self._members):
            waiting, self._waiting = self._waiting, []
            for checked in waiting:
                checked.callback(None)

    def _none_may_answer(self) -> MasterUnreachable:
        """Why a call has no master to go to: every one was refused, or none could be checked yet
        (or this slave stops)."""
        if self._given_up:
            return slave_stopping()
        refused = [f"{member.name}: {member.refused}" for member in self._members if member.refused]
        unchecked = [
            f"{member.name}: {member.check_error}"
            for member in self._members
            if member.check_error is not None and not member.passed and not member.refused
        ]
        detail = "; ".join(refused + unchecked) or "no master could be checked yet"
        return MasterUnreachable(UNREACHABLE_MESSAGE, detail=detail)

    def _mark_down(self, member: _Member, why: str, *, busy: bool = False, answered: bool = False) -> None:
        """Pass ``member`` over for a while: ``retry_interval``, doubled for each retry that fails in
        a row up to :data:`MAX_RETRY_INTERVAL`. A hung master is retried with a live call, which
        waits ``failover_after`` before it moves on; one call at a time (``trial_until``).
        ``answered``: it answered, with a 503 (it cannot serve), rather than not at all."""
        if member.down_until == 0.0 and not busy and not member.announced:
            # Once per outage; a busy master (its queue here full) answers, so it is not announced.
            member.announced = True
            log.warn(
                "Master {name} {what} ({error}); trying the others",
                name=member.name,
                what="cannot serve" if answered else "does not answer",
                error=why,
            )
        member.trial_until = 0.0
        now = self._clock.seconds()
        if member.down_until <= now:  # up, or retried: this failure counts (not the calls that were out)
            member.failures += 1
            backoff = self._retry_interval * 2 ** min(member.failures - 1, 16)
            member.down_until = now + min(backoff, max(MAX_RETRY_INTERVAL, self._retry_interval))

    def _mark_up(self, member: _Member) -> None:
        member.failures = 0
        member.trial_until = 0.0
        member.down_until = 0.0
        if member.announced:
            member.announced = False
            log.info("Master {name} answers again", name=member.name)


class _Race:
    """One call: asked of the masters in ``order`` until one gives a real answer.

    A master that fails with :class:`StoreUnavailable` (unreachable, busy, or its own 503) hands
    the call to the next at once (but :class:`~goto_tw.errors.SlaveStopping`, this slave's own
    stop, which is the answer); one
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
        #: The masters asked so far, and whether the call waits for a master's check to end.
        self._asked: list[_Member] = []
        self._awaiting_check = False
        self._outstanding = 0
        self._last: Failure | None = None
        self.result: Deferred[Any] = Deferred()
        self._ask_next()

    def _ask_next(self) -> None:
        skipped = False
        while self._waiting and not self._store._may_take_calls(self._waiting[0]):
            # Its connection was lost (or ended idle) since the call began: another process may
            # answer at its address now, and it takes no call until it passed its check again.
            self._waiting = self._waiting[1:]
            skipped = True
        if skipped:
            self._store._start_checks()
        if not self._waiting:
            if not self.result.called and not self._wait_for_checks() and self._outstanding == 0:
                if self._store._given_up:  # ended by this slave's stop, not by its masters
                    self.result.errback(slave_stopping())
                else:
                    self.result.errback(self._last or Failure(self._store._none_may_answer()))
            return
        member, self._waiting = self._waiting[0], self._waiting[1:]
        self._asked.append(member)
        if member.failures:
            # Its retry: the calls after this one pass it over until it ends, or for as long as a
            # hedged call would wait for it (a trial whose caller went elsewhere may never end).
            member.trial_until = self._store._clock.seconds() + self._store._failover_after
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

    def _wait_for_checks(self) -> bool:
        """No master is left to ask: if one not asked yet is being checked (checked again after its
        connection idled out, say), go on once the checks end, and tell whether the call waits."""
        if self._awaiting_check:
            return True
        store = self._store
        if not any(m.checking and m not in self._asked for m in store._members):
            return False
        checked = store._after_checks()
        if checked is None:
            return False
        self._awaiting_check = True
        checked.addCallback(self._checks_ended)
        return True

    def _checks_ended(self, _: object) -> None:
        self._awaiting_check = False
        if self.result.called:
            return  # a master asked before answered meanwhile
        self._waiting = [m for m in self._store._order() if m not in self._asked]
        self._ask_next()

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
        if isinstance(result, Failure) and result.check(SlaveStopping):
            if not self.result.called:  # this slave stops: the answer, and no news of the master
                self.result.errback(result)
            return
        if isinstance(result, Failure) and result.check(StoreUnavailable) and not result.check(MasterFailed):
            # Unreachable, this slave's queue to it full (too slow for the load), or its own 503 (it
            # cannot reach the database, which the next one may): the next one. Not a fault this
            # slave has no meaning for (a bug there): asking every master the same would not help.
            busy = bool(result.check(MasterBusy))
            answered = not result.check(MasterUnreachable, MasterBusy)
            self._store._mark_down(member, _log_text(result), busy=busy, answered=answered)
            if busy or self._last is None or not self._last.check(MasterBusy):
                self._last = result  # if all fail, a busy one's 503 says it best (no master is down)
            if self.result.called:
                return  # answered already, or its caller gave up: no other master is asked
            if not moved_on[0]:
                self._ask_next()
            elif self._outstanding == 0 and not self._waiting and not self._awaiting_check:
                self._ask_next()  # none left: it fails, or waits for a check under way
            return
        self._store._mark_up(member)  # a value, or a definite "no" (unknown key, invalid URL)
        if self.result.called:
            return  # a faster master answered already (or the caller gave up)
        if isinstance(result, Failure):
            self.result.errback(result)
        else:
            self.result.callback(result)


def _generation(store: Any) -> int | None:
    """The store's connection generation (:meth:`~goto_tw.remote.RemoteStore.connection_generation`),
    ``None`` for one that keeps none."""
    generation = getattr(store, "connection_generation", None)
    return None if generation is None else int(generation())


def _log_text(failure: Failure) -> str:
    error = failure.value
    return error.log_text() if isinstance(error, GotoError) else failure.getErrorMessage()


#: Why a master answering the change feed is refused as one of several.
OWN_FILE = (
    "it keeps a data file of its own (it answers the change feed): several --master values must be "
    "PostgreSQL masters on one database, or a key could point to two URLs"
)


#: Why a master that answers the change feed neither way is refused as one of several.
UNTOLD = (
    "it does not say whether it keeps a data file of its own (Store.Changes answered neither a feed "
    "nor 'no change feed': an older goto?)"
)


def shares_a_database(master: Any) -> Deferred[Optional[str]]:
    """The check a slave with several masters makes of each (see :class:`FailoverStore`): a master
    with a data file of its own has a change feed (``Store.Changes`` answers), a PostgreSQL master has
    none (it refuses the call). Masters on two different databases cannot be told apart this way."""

    def judged(result: object) -> object:
        if not isinstance(result, Failure):
            return OWN_FILE
        if result.check(InvalidURL):  # fault 400, "this store has no change feed": PostgreSQL
            return None
        if result.check(StoreUnavailable):  # unreachable, or busy: asked again later
            return result
        return UNTOLD

    asked: Deferred[Any] = master.call("Store.Changes", "", 0)
    return asked.addBoth(judged)
