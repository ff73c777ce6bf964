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
  probe call per ``retry_interval`` finds out when the master is back, and it says so once.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from goto_tw.errors import GotoError, KeyNotFound, MasterUnreachable
from goto_tw.fanout import Coalescing
from goto_tw.interfaces import ILocalLookup, IMasterHealth, IURLStore
from goto_tw.urls import validate_url

log = Logger()

#: The key a health check looks up on the master: reserved, so it can never be stored.
HEALTH_PROBE_KEY = "_goto_health"


class CacheStats:
    """Counters a metrics exporter can read: hits, misses and evictions of the cache."""

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.evictions = 0


@implementer(IURLStore, ILocalLookup, IMasterHealth)
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
        self._clock = clock
        self._cache_size = cache_size
        self._negative_ttl = negative_ttl
        self._retry_interval = retry_interval
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._unknown_until: OrderedDict[str, float] = OrderedDict()
        self._gets: Coalescing[str, str] = Coalescing()
        self._puts: Coalescing[str, str] = Coalescing()
        self._master_down_since: float | None = None
        self._next_probe_at = 0.0
        self._probing = False
        self.stats = CacheStats()

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
        unknown_until = self._unknown_until.get(key)
        if unknown_until is not None:
            if self._clock.seconds() < unknown_until:
                return fail(KeyNotFound(f"no link is stored under {key!r}"))
            del self._unknown_until[key]
        return self._gets.call(key, lambda: self._ask_master_get(key))

    def put(self, url: str) -> Deferred[str]:
        """Store ``url`` on the master and cache the pair it confirms."""
        try:
            url = validate_url(url)
        except GotoError:
            return fail()
        return self._puts.call(url, lambda: self._ask_master_put(url))

    def _ask_master_get(self, key: str) -> Deferred[str]:
        asked = self._ask_master(lambda: self._master.get(key))
        return asked.addCallbacks(self._got, self._not_got, callbackArgs=(key,), errbackArgs=(key,))

    def _ask_master_put(self, url: str) -> Deferred[str]:
        return self._ask_master(lambda: self._master.put(url)).addCallback(self._put_done, url)

    # --- the cache -------------------------------------------------------------------------------

    def _remember(self, key: str, url: str) -> None:
        self._cache[key] = url
        self._cache.move_to_end(key)
        self._unknown_until.pop(key, None)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
            self.stats.evictions += 1

    def _got(self, url: str, key: str) -> str:
        self._remember(key, url)
        return url

    def _not_got(self, failure: Failure, key: str) -> Failure:
        if failure.check(KeyNotFound) and self._negative_ttl > 0:
            self._unknown_until[key] = self._clock.seconds() + self._negative_ttl
            if len(self._unknown_until) > self._cache_size:
                self._unknown_until.popitem(last=False)
        return failure

    def _put_done(self, key: str, url: str) -> str:
        self._remember(key, url)
        return key

    # --- the master's health ---------------------------------------------------------------------

    @property
    def master_reachable(self) -> bool:
        """False from the first unanswered call until the master answers again."""
        return self._master_down_since is None

    def check_master(self) -> Deferred[bool]:
        """Ask the master now whether it serves us: True when it answers a look-up properly.

        The look-up is for a reserved key no one can store, so the proper answer is "unknown key".
        It bypasses the cache and the fail-fast window, and counts as a probe: a health check
        also notices that a master is back.
        """
        asked = self._master.get(HEALTH_PROBE_KEY)
        asked.addBoth(self._note_master_health)

        def answered_properly(result: object) -> bool:
            return isinstance(result, Failure) and bool(result.check(KeyNotFound))

        return asked.addBoth(answered_properly)

    def _ask_master(self, call: Callable[[], Deferred[str]]) -> Deferred[str]:
        """Make ``call``, unless the master is known to be down and this is not the time to probe:
        then fail at once with :class:`MasterUnreachable`."""
        if self._master_down_since is not None:
            if self._probing or self._clock.seconds() < self._next_probe_at:
                return fail(MasterUnreachable("the master is unreachable; try again shortly"))
            self._probing = True
        asked = call()
        asked.addBoth(self._note_master_health)
        return asked

    def _note_master_health(self, result: object) -> object:
        self._probing = False
        now = self._clock.seconds()
        if isinstance(result, Failure) and result.check(MasterUnreachable):
            self._next_probe_at = now + self._retry_interval
            if self._master_down_since is None:
                self._master_down_since = now
                log.error(
                    "The master is unreachable ({error}); serving cached keys only, "
                    "answering 503 for the rest until it is back",
                    error=result.value,
                )
        elif self._master_down_since is not None:
            log.info(
                "The master answers again after {seconds:.1f} s",
                seconds=now - self._master_down_since,
            )
            self._master_down_since = None
        return result
