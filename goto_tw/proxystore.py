"""The slave's store: a bounded LRU cache in front of the master's store (goto's ``ProxyStore``).

``get`` answers from the cache, else asks the master once (however many requests want the same key
at the same moment) and caches the answer; ``put`` goes to the master and caches the pair it
confirms. Nothing enters the cache that the master did not confirm.

Production behaviour beyond the seed:

- The cache holds at most ``cache_size`` pairs, dropping the least recently used.
- "No such key" is remembered for ``negative_ttl`` seconds only: a key added through another slave
  becomes visible soon, yet a flood of lookups for one unknown key costs the master one call per
  ``negative_ttl``, not one per request.
- When the master does not answer, the slave says so once in its log, answers what it has cached,
  and fails everything else at once (503) instead of making each request wait for a timeout; one
  probe call per ``retry_interval`` finds out when the master is back, and it says so once. Only a
  real answer from the master (a value, or a definite "no" such as an unknown key) marks it back
  up: a caller that gives up, or a failure of our own, says nothing about the master.
- What the master answers is checked before it is cached or handed on: a URL must be one the slave
  itself would accept, unchanged; a key must be a valid key (both end up in response headers).
- :meth:`drain` lets the calls in flight finish when the process stops, and a master that stops
  answering during our own shutdown is no outage worth an error line.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred, TimeoutError, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from goto_tw.errors import (
    DISABLED_MESSAGE,
    NO_CUSTOM_KEYS,
    AddsUnchecked,
    GotoError,
    InvalidKey,
    KeyDisabled,
    KeyNotFound,
    MasterUnreachable,
    SlaveStopping,
    StoreUnavailable,
)
from goto_tw.fanout import Coalescing, SharedResult
from goto_tw.interfaces import ILinkAdder, ILocalLookup, IMasterHealth, IURLStore
from goto_tw.keys import HEALTH_PROBE_KEY, INVALID_KEY, is_valid_key
from goto_tw.throttledlog import ThrottledCondition, ThrottledError
from goto_tw.urls import URLPolicy, accept_url, as_stored

log = Logger()
T = TypeVar("T")

#: What a user is told when the master's answer cannot be used (the cause goes to the log).
BAD_ANSWER_MESSAGE = "the service got a bad answer from its store; try again shortly"


class CacheStats:
    """Counters a metrics exporter can read: hits, misses and evictions of the cache."""

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.evictions = 0


@implementer(IURLStore, ILocalLookup, IMasterHealth, ILinkAdder)
class ProxyStore:
    """A caching, coalescing, master-outage-aware :class:`IURLStore` over a remote one."""

    def __init__(
        self,
        master: IURLStore,
        clock: IReactorTime,
        *,
        cache_size: int = 100_000,
        negative_ttl: float = 1.0,
        retry_interval: float = 1.0,
    ) -> None:
        if cache_size < 1:
            raise ValueError("the cache must hold at least one pair")
        self._master = master
        #: The master's ``Store.Add``, adapted once (0.7 us an add otherwise), or ``None``.
        self._adder = ILinkAdder(master, None)
        self._clock = clock
        self._cache_size = cache_size
        self._negative_ttl = negative_ttl
        self._retry_interval = retry_interval
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._unknown_until: OrderedDict[str, float] = OrderedDict()
        self._gets: Coalescing[str, str] = Coalescing()
        self._puts: Coalescing[str, str] = Coalescing()
        self._adds: Coalescing[tuple[str, str], tuple[str, bool]] = Coalescing()
        self._master_down_since: float | None = None
        self._down_error: MasterUnreachable | None = None
        self._next_probe_at = 0.0
        self._probing = False
        self._health_checks: Coalescing[None, bool] = Coalescing()
        #: Why the master said, at the last check, that it cannot serve (see IMasterHealth).
        self.cannot_serve: str | None = None
        self._in_flight = 0
        self._idle_waiters: list[Deferred[None]] = []
        self._stopping = False
        self._bad_answers = ThrottledError(
            log,
            clock,
            "Bad answer from the master, not cached: {detail} ({unlogged} more since the last line)",
            BAD_ANSWER_LOG_INTERVAL,
        )
        #: The master refuses this slave's adds (it is private, this slave checks no keys): the one
        #: who can fix it runs this slave, so it is told here (its health and redirects are fine).
        self._adds_refused = ThrottledError(
            log,
            clock,
            "The master is private (--private) and refuses the adds made through this slave, which "
            "checks no API keys: start it with --private and --api-keys-file ({unlogged} more refused "
            "since the last line)",
            ADDS_REFUSED_LOG_INTERVAL,
            level=LogLevel.warn,
        )
        #: A master's outages and their ends, each kind said at most once an interval: one whose
        #: new connections are closed at once (out of descriptors) while a pooled one still answers
        #: was down and back 14 times a second, each a pair of lines (an operations audit, stop 41).
        self._outages = ThrottledCondition(
            log,
            clock,
            "The master is unreachable ({error}); serving cached keys only, answering 503 for the "
            "rest until it is back ({unlogged} more outages since the last line)",
            "The master answers again after {seconds:.1f} s ({unlogged} more times since the last line)",
            OUTAGE_LOG_INTERVAL,
        )
        #: While a probe of a down master is in flight: its outcome (answered or not), shared with
        #: the health checks that come meanwhile, so they cost the master no call of their own.
        self._probe_outcome: SharedResult[bool] | None = None
        self.stats = CacheStats()
        #: Keys the master answered as disabled: that never changes, so they are kept (bounded).
        self._gone: OrderedDict[str, None] = OrderedDict()
        #: Counts the forgets (see :meth:`forget`): an answer asked for before one is not cached.
        self._generation = 0
        #: Checks a URL before it is sent to the master (blocklist, own host): raises InvalidURL.
        self.policy: URLPolicy | None = None

    # --- IURLStore -------------------------------------------------------------------------------

    def count(self) -> int:
        """Return how many pairs are cached."""
        return len(self._cache)

    def lookup(self, key: str) -> str | None:
        """Return the cached URL for ``key`` or ``None``, synchronously (for the hot path)."""
        url = self._cache.get(key)
        if url is not None:
            self._cache.move_to_end(key)
            self.stats.hits += 1
        return url

    def get(self, key: str) -> Deferred[str]:
        """Answer from the cache, else from the master (one call for concurrent misses of a key)."""
        url = self.lookup(key)
        if url is not None:
            return succeed(url)
        self.stats.misses += 1
        if key in self._gone:
            return fail(KeyDisabled(DISABLED_MESSAGE))
        unknown_until = self._unknown_until.get(key)
        if unknown_until is not None:
            if self._clock.seconds() < unknown_until:
                return fail(KeyNotFound.for_key(key))
            del self._unknown_until[key]
        failed = self._failed_fast()
        if failed is not None:
            return failed
        return self._gets.call(key, self._ask_master_get, key)

    def put(self, url: str) -> Deferred[str]:
        """Store ``url`` on the master and cache the pair it confirms."""
        try:
            url = accept_url(url, self.policy)
        except GotoError:
            return fail()
        failed = self._failed_fast()
        if failed is not None:
            return failed
        return self._puts.call(url, self._ask_master_put, url)

    def add(self, url: str, key: str | None = None) -> Deferred[tuple[str, bool]]:
        """Add through the master's ``Store.Add`` (409 there if a custom key is taken); cache the pair."""
        if key is not None and not is_valid_key(key):
            return fail(InvalidKey(INVALID_KEY))
        try:
            url = accept_url(url, self.policy)
        except GotoError:
            return fail()
        master = self._adder
        if master is None:
            return fail(InvalidKey(NO_CUSTOM_KEYS))
        failed = self._failed_fast()
        if failed is not None:
            return failed
        return self._adds.call((key or "", url), self._ask_master_add, master, url, key)

    def _add_done(self, answered: object, url: str, key: str | None, generation: int) -> tuple[str, bool]:
        if (
            not isinstance(answered, tuple)
            or len(answered) != 2
            or not isinstance(answered[0], str)
            or not is_valid_key(answered[0])
            or (key is not None and answered[0] != key)
            or not isinstance(answered[1], bool)
        ):
            raise self._bad_answer(f"the master answered {_shown(answered)} to an add of {url!r}")
        if generation == self._generation and answered[0] not in self._gone:
            # An answer to a call made before a change (a disabling) may predate it: passed on, not cached.
            self._remember(answered[0], url)
        return answered[0], answered[1]

    # Each call is made by _ask_master, its answer checked (and cached) once per call, before the
    # waiters hear of it: so a waiter that joins a call made before a forget caches nothing either.

    def _ask_master_get(self, key: str) -> Deferred[str]:
        return self._ask_master(self._master.get, (key,), self._get_answered, key, self._generation)

    def _get_answered(self, result: object, key: str, generation: int) -> object:
        if isinstance(result, Failure):
            return self._not_got(result, key)
        return self._got(result, key, generation)

    def _ask_master_put(self, url: str) -> Deferred[str]:
        return self._ask_master(self._master.put, (url,), self._put_answered, url, self._generation)

    def _put_answered(self, result: object, url: str, generation: int) -> object:
        if isinstance(result, Failure):
            return self._refused_add(result)
        return self._put_done(result, url, generation)

    def _ask_master_add(self, master: ILinkAdder, url: str, key: str | None) -> Deferred[tuple[str, bool]]:
        return self._ask_master(master.add, (url, key), self._add_answered, url, key, self._generation)

    def _add_answered(self, result: object, url: str, key: str | None, generation: int) -> object:
        if isinstance(result, Failure):
            return self._refused_add(result)
        return self._add_done(result, url, key, generation)

    def _refused_add(self, failure: Failure) -> Failure:
        """An add that failed, passed on; one the master refused as unchecked is told in the log."""
        if failure.check(AddsUnchecked):
            self._adds_refused.error()
        return failure

    # --- coherence with the master (goto_tw.coherence) -------------------------------------------

    def forget(self, keys: list[str]) -> None:
        """Drop ``keys`` from the cache (the master changed them): the next look-up asks the master.

        An answer to a call made before this one is passed on but not cached: it may predate the
        change.
        """
        self._generation += 1
        for key in keys:
            self._cache.pop(key, None)
            self._unknown_until.pop(key, None)

    def note_disabled(self, key: str) -> None:
        """The master said ``key`` is disabled (a look-up's answer, or another call's, such as
        ``Store.Stats``): drop it from the cache and answer 410 for it from now on, without waiting
        for the change feed. A look-up's answer already on its way is not cached (as after
        :meth:`forget`): it may predate the disabling."""
        self._generation += 1
        self._gone[key] = None
        self._cache.pop(key, None)
        if len(self._gone) > self._cache_size:
            self._gone.popitem(last=False)

    def forget_all(self) -> None:
        """Drop every cached pair (the slave cannot tell what changed: it fell behind, or the master
        restarted). Disabled keys stay known: disabling is for ever."""
        self._generation += 1
        self._cache.clear()
        self._unknown_until.clear()

    # --- the cache -------------------------------------------------------------------------------

    def _remember(self, key: str, url: str) -> None:
        self._cache[key] = url
        self._cache.move_to_end(key)
        self._unknown_until.pop(key, None)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
            self.stats.evictions += 1

    def _got(self, url: object, key: str, generation: int) -> str:
        checked = as_stored(url)
        if checked is None:
            raise self._bad_answer(
                f"the master answered {_shown(url)} for key {key!r}, which is not a valid URL"
            )
        if generation == self._generation:
            self._remember(key, checked)
        return checked

    def _not_got(self, failure: Failure, key: str) -> Failure:
        # isinstance, not Failure.check: see RemoteStore._translate (every unknown key comes here).
        if isinstance(failure.value, KeyDisabled):
            self.note_disabled(key)
        if self._negative_ttl > 0 and isinstance(failure.value, KeyNotFound):
            self._unknown_until[key] = self._clock.seconds() + self._negative_ttl
            if len(self._unknown_until) > self._cache_size:
                self._unknown_until.popitem(last=False)
        return failure

    def _put_done(self, key: object, url: str, generation: int) -> str:
        if not isinstance(key, str) or not is_valid_key(key):
            raise self._bad_answer(
                f"the master answered {_shown(key)} as the key of {url!r}, which is not a valid key"
            )
        if generation == self._generation:
            self._remember(key, url)
        return key

    def _bad_answer(self, detail: str) -> StoreUnavailable:
        """Log a bad answer from the master (at most one line per :data:`BAD_ANSWER_LOG_INTERVAL`,
        with how many were not logged) and return the error its callers get."""
        self._bad_answers.error(detail=detail)
        return StoreUnavailable(BAD_ANSWER_MESSAGE, detail=detail)

    # --- the master's health ---------------------------------------------------------------------

    @property
    def master_reachable(self) -> bool:
        """False from the first unanswered call until the master answers again."""
        return self._master_down_since is None

    def check_master(self) -> Deferred[bool]:
        """Ask the master now whether it serves us: True when it answers a look-up properly.

        The look-up is for a reserved key no one can store, so the proper answer is "unknown key".
        It bypasses the cache and the fail-fast window, and counts as a probe: a health check
        also notices that a master is back. Concurrent checks share one call; a check whose
        caller gives up leaves that call running for the others and changes nothing.
        """
        probe = self._probe_outcome
        if probe is not None:
            return probe.wait()  # a probe of the down master is in flight: its answer is ours
        return self._health_checks.call(None, self._probe_health)

    def _probe_health(self) -> Deferred[bool]:
        if self._master_down_since is not None:
            asked = self._probe(lambda: self._master.get(HEALTH_PROBE_KEY))
        else:
            asked = self._tracked(self._master.get(HEALTH_PROBE_KEY))
            asked.addBoth(self._note_master_health)

        def answered_properly(result: object) -> bool:
            error = result.value if isinstance(result, Failure) else None
            # It answered, and said it cannot serve (its database): not "unreachable", for health.
            serving = isinstance(error, StoreUnavailable) and not isinstance(error, MasterUnreachable)
            self.cannot_serve = str(error) if serving else None
            return isinstance(error, KeyNotFound)

        return asked.addBoth(answered_properly)

    def _ask_master(
        self,
        call: Callable[..., Deferred[Any]],
        params: tuple[object, ...],
        answered: Callable[..., object],
        *args: object,
    ) -> Deferred[Any]:
        """Make ``call(*params)``, as the one probe if the master is down (the callers, :meth:`get`,
        :meth:`put` and :meth:`add`, have failed fast already when it is not the time to probe: see
        :meth:`_failed_fast`). Its result, a value or a Failure, goes to ``answered(result, *args)``,
        which makes the result of the Deferred returned.

        While the master is up (nearly always) that is one callback on the master's Deferred,
        :meth:`_master_answered`, not one per step: each costs about 0.6 us on CPython 3.11, and
        every miss and put through a slave paid for five (see :mod:`goto_tw.fanout`).
        """
        if self._master_down_since is not None:
            return self._probe(lambda: call(*params)).addBoth(answered, *args)
        asked = call(*params)
        self._in_flight += 1  # as _tracked does
        return asked.addBoth(self._master_answered, answered, args)

    def ask(self, call: Callable[..., Deferred[Any]], *params: object) -> Deferred[Any]:
        """``call(*params)`` to the master, for what the store itself does not ask (``Store.Stats``):
        failing fast while the master is down, or made as the probe when it is time, as a miss is."""
        failed = self._failed_fast()
        if failed is not None:
            return failed
        return self._ask_master(call, params, _as_answered)

    def failing_fast(self) -> Deferred[Any] | None:
        """A Deferred failed with :class:`MasterUnreachable` while the master is down and a call now
        would not be the probe; else ``None`` (for callers that wait before they :meth:`ask`)."""
        return self._failed_fast()

    def _failed_fast(self) -> Deferred[Any] | None:
        """A Deferred failed with :class:`MasterUnreachable` while the master is down and this is not
        the time to probe it (a probe is in flight, or the retry interval has not passed); else ``None``.

        :meth:`get`, :meth:`put` and :meth:`add` ask before a call may join one in flight for the same
        key or URL: a request for the key the probe is asking for would otherwise wait on the probe,
        up to ``--rpc-timeout`` against a master that accepts connections and never answers, where
        every other request is answered 503 at once."""
        if self._master_down_since is None or (
            not self._probing and self._clock.seconds() >= self._next_probe_at
        ):
            return None
        message = str(self._down_error) if self._down_error else "the master is unreachable"
        return fail(MasterUnreachable(message, detail="failing fast while the master is down"))

    def _master_answered(
        self, result: object, answered: Callable[..., object], args: tuple[object, ...]
    ) -> object:
        """:meth:`_call_done`, :meth:`_note_master_health`, then ``answered``: in this order, what
        the callbacks of :meth:`_tracked`, :meth:`_note_master_health` and the caller would do."""
        self._call_done(result)
        self._note_master_health(result)
        return answered(result, *args)

    def _probe(self, call: Callable[[], Deferred[T]]) -> Deferred[T]:
        """Make ``call`` as the one probe of a down master: other calls fail fast meanwhile, and
        health checks wait for its outcome instead of asking the master themselves."""
        self._probing = True
        outcome: Deferred[bool] = Deferred()
        self._probe_outcome = SharedResult(outcome)
        asked = self._tracked(call())
        asked.addBoth(self._note_master_health)

        def probe_done(result: object) -> object:
            self._probing = False
            self._probe_outcome = None
            outcome.callback(_answered(result))
            return result

        return asked.addBoth(probe_done)

    def _note_master_health(self, result: object) -> object:
        error = result.value if isinstance(result, Failure) else None
        if isinstance(error, SlaveStopping):
            return result  # this slave gave up on the master: no news of it
        if isinstance(error, MasterUnreachable):
            # What the master said when it last answered a check is not how it stands now: a
            # health check that times out waiting for the probe reports it unreachable.
            self.cannot_serve = None
            now = self._clock.seconds()
            self._next_probe_at = now + self._retry_interval
            if self._master_down_since is None:
                self._master_down_since = now
                self._down_error = error
                if self._stopping:
                    log.info(
                        "A call to the master ended unanswered while this slave stops ({error})",
                        error=_cause(error),
                    )
                else:
                    self._outages.holds(error=_cause(error))
        elif self._master_down_since is not None and _answered(result):
            self._outages.ended(seconds=self._clock.seconds() - self._master_down_since)
            self._master_down_since = None
            self._down_error = None
        if self._stopping and self._in_flight == 0:
            # The last call a drain waits for (counted done just before): what it met is said.
            self._outages.stop()
        return result

    # --- stopping --------------------------------------------------------------------------------

    def _tracked(self, asked: Deferred[T]) -> Deferred[T]:
        """Count ``asked`` as in flight until it has its result (for :meth:`drain`)."""
        self._in_flight += 1
        asked.addBoth(self._call_done)
        return asked

    def _call_done(self, result: object) -> object:
        self._in_flight -= 1
        if self._in_flight == 0:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)
        return result

    def drain(self, timeout: float) -> Deferred[None]:
        """Fire once no call to the master is in flight, or after ``timeout`` seconds (never fails).

        For a graceful stop: the listener has stopped taking connections; what was accepted gets
        its answer. From now on a master that does not answer is logged as part of stopping. If the
        time runs out, every call still unanswered is answered 503 then, as is every later one,
        before the reactor drops the clients' connections. (A drain that ends in time leaves the
        master to be called: the slave's last click batch goes to it after the drain.)
        """
        self._stopping = True
        if self._in_flight == 0:
            self._outages.stop()
            return succeed(None)
        # The outage lines stop once the last call in flight has been noted (_note_master_health).
        idle: Deferred[None] = Deferred(lambda d: self._idle_waiters.remove(d))
        self._idle_waiters.append(idle)

        def gave_up(failure: Failure) -> None:
            failure.trap(TimeoutError)
            log.warn(
                "Stopping with {calls} calls to the master still unanswered after {timeout:g} s: "
                "answering them 503",
                calls=self._in_flight,
                timeout=timeout,
            )
            give_up = getattr(self._master, "give_up", None)
            if give_up is not None:
                give_up()
            self._outages.stop()  # the calls given up on say nothing of the master

        return idle.addTimeout(timeout, self._clock).addErrback(gave_up)


def _cause(error: GotoError) -> str:
    """What went wrong, for the log: the detail where there is one (the user's message, which
    ``log_text`` would put first, is the same for every outage and says nothing of the cause)."""
    return error.detail or str(error)


def _answered(result: object) -> bool:
    """Whether ``result`` of a call came from the master itself: a value or a definite "no"."""
    if not isinstance(result, Failure):
        return True
    error = result.value
    return isinstance(error, GotoError) and error.http_status < 500


def _shown(value: object) -> str:
    """A bounded repr of a value from the master, for a log line."""
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


#: Seconds between two log lines about bad answers from the master (a hot key would flood the log).
BAD_ANSWER_LOG_INTERVAL = 10.0
#: Seconds between two log lines about the master's outages (and two about their ends).
OUTAGE_LOG_INTERVAL = 10.0
#: Seconds between two log lines about adds a private master refused (one per add would flood it).
ADDS_REFUSED_LOG_INTERVAL = 60.0


def _as_answered(result: object) -> object:
    """What :meth:`ProxyStore.ask` makes of the master's answer: the answer, as it came."""
    return result
