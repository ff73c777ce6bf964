"""A slave's cache coherence: poll the master's change feed once a second, drop what changed.

The bound: a key disabled on the master is dropped from every slave's cache at most
:data:`POLL_INTERVAL` + one RPC round trip after the master acknowledged it (the poll in flight
at that moment may predate it; the next one, started at most a second later, carries it), as long
as the master answers. The call travels in the slave's existing batches (``system.multicall``). An
answer that is full (:data:`~goto_tw.changes.MAX_KEYS_PER_ANSWER` keys: more may wait) is followed
by the next poll at once, not a second later, so a slave catching up on thousands of disabled links
(a bulk disable, an outage) takes round trips, not seconds.

A slave's first poll gets every key disabled since the master started (tombstones loaded from its
data file included), so what it cached before that answer is checked, not dropped. A slave that
cannot trust an answer whole (a master restarted under a new epoch, or more than
:data:`~goto_tw.changes.MAX_CHANGES` changes behind after an outage) drops its whole cache. While the master does not answer, nothing changes: the slave serves what it holds, as it
always has, and asks once a second whether the master is back (the store's own check: one
probe at a time); the first answer after the outage brings it up to date.

A master that refuses the call itself (a PostgreSQL master has no change feed: fault 400, or an
older master without the method) is not polled every second for ever: the refusal is logged once
and the feed asked for again every :data:`NO_FEED_RETRY_SECONDS` only, and at once when the master
answers again after an outage (a restart may have brought a master with a feed: a file master in
place of a PostgreSQL one, an upgraded one).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from goto_tw.changes import MAX_KEYS_PER_ANSWER
from goto_tw.errors import GotoError, StoreUnavailable

log = Logger()

#: Seconds between two polls of the master's change feed.
POLL_INTERVAL = 1.0
#: Seconds between two asks of a master that refused to give a change feed (one small call).
NO_FEED_RETRY_SECONDS = 10.0


class Forgetting(Protocol):
    """The cache the poller keeps coherent (a :class:`~goto_tw.proxystore.ProxyStore`)."""

    def forget(self, keys: list[str]) -> None: ...

    def forget_all(self) -> None: ...


@runtime_checkable
class WatchingTheMaster(Protocol):
    """A cache that knows whether its master is reachable, and can ask it now (a
    :class:`~goto_tw.proxystore.ProxyStore`): while it is not, the poller asks that instead."""

    @property
    def master_reachable(self) -> bool: ...

    def check_master(self) -> Deferred[bool]: ...


class CacheCoherence(Service):
    """Polls ``Store.Changes`` through ``call`` (the remote store's batching ``call``) every
    :data:`POLL_INTERVAL` seconds; one poll in flight at most."""

    def __init__(
        self,
        call: Callable[..., Deferred[Any]],
        cache: Forgetting,
        clock: IReactorTime,
        interval: float = POLL_INTERVAL,
    ) -> None:
        self._call = call
        self._cache = cache
        self._clock = clock
        self._interval = interval
        self.epoch = ""
        self.seq = 0
        self._polling: Deferred[Any] | None = None
        self._loop: LoopingCall | None = None
        self._failing = False
        #: Until when a master that refused the feed is left alone (clock seconds; 0: not refused).
        self._quiet_until = 0.0
        #: Whether the last answer was full: the next poll goes at once.
        self._more = False
        #: Whether the master's refusal of the feed was logged (once, until it gives one).
        self._refusal_logged = False

    def startService(self) -> None:
        super().startService()
        loop = self._loop = LoopingCall(self.poll)
        loop.clock = self._clock
        loop.start(self._interval, now=True).addErrback(
            lambda failure: log.failure("The change-feed poller stopped", failure)
        )

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._polling is not None:
            self._polling.cancel()

    def poll(self) -> None:
        """Ask for the changes since the last answer, unless a poll is still in flight; while the
        cache holds its master for down, ask whether it is back instead (then poll at once).

        The cache's own probes find a master back only when a request reaches it (a miss, an
        add): a slave serving cached keys alone would otherwise never poll again after an outage,
        and a link disabled meanwhile would go on redirecting there.
        """
        if self._polling is not None:
            return  # one poll (or check) at a time
        if isinstance(self._cache, WatchingTheMaster) and not self._cache.master_reachable:
            checking = self._polling = self._cache.check_master()
            checking.addBoth(self._checked_master)
            return
        if self._clock.seconds() < self._quiet_until:
            return  # the master refused the feed: asked again only now and then
        polling = self._polling = self._call("Store.Changes", self.epoch, self.seq)
        polling.addCallbacks(self._answered, self._failed).addErrback(
            lambda failure: log.failure("Applying the master's changes failed", failure)
        ).addBoth(self._done)

    def _done(self, _: object) -> None:
        self._polling = None
        if self._more and self.running:
            self._more = False
            self.poll()  # a full answer: more changes wait

    def _checked_master(self, _: object) -> None:
        self._polling = None
        if self.running and getattr(self._cache, "master_reachable", False):
            self._quiet_until = 0.0  # back, perhaps another master: ask for its feed again too
            self.poll()  # back: what changed meanwhile, now rather than a second later

    def _answered(self, answer: object) -> None:
        checked = _checked(answer)
        if checked is None:
            self._failed(Failure(ValueError(f"a malformed Store.Changes answer: {answer!r:.200}")))
            return
        epoch, seq, keys, complete = checked
        if self._failing or self._refusal_logged:  # (a quiet period follows a refusal logged)
            self._failing = False
            self._quiet_until = 0.0
            self._refusal_logged = False
            log.info("The master's change feed answers again")
        if not complete:
            if self.epoch:
                log.info(
                    "Cannot tell what changed on the master (it restarted or this slave fell behind): "
                    "dropping the cache"
                )
            self._cache.forget_all()
        elif keys:
            self._cache.forget(keys)
        self.epoch, self.seq = epoch, seq
        self._more = complete and len(keys) >= MAX_KEYS_PER_ANSWER

    def _failed(self, failure: Failure) -> None:
        if not self.running:
            return  # stopped: the poll in flight was cancelled by stopService itself
        if failure.check(StoreUnavailable):
            return  # an outage: the store logs it once, with its cause
        if failure.check(GotoError):
            # The master answered, and said no to the call itself: asking every second cannot help.
            if not self._refusal_logged:  # not again after each outage of a master without a feed
                self._refusal_logged = True
                log.warn(
                    "The master gives no change feed ({reason}); asking again every {seconds:.0f} s only",
                    reason=str(failure.value),
                    seconds=NO_FEED_RETRY_SECONDS,
                )
            self._quiet_until = self._clock.seconds() + NO_FEED_RETRY_SECONDS
            return
        if not self._failing:
            self._failing = True
            error = failure.value
            detail = getattr(error, "detail", None) or str(error)
            log.warn(
                "Polling the master's change feed failed ({detail}); retrying every second", detail=detail
            )


def _checked(answer: object) -> tuple[str, int, list[str], bool] | None:
    """The answer's fields if it has the shape ``Store.Changes`` promises, else ``None``."""
    if not isinstance(answer, dict):
        return None
    epoch, seq, keys, complete = (answer.get(name) for name in ("epoch", "seq", "keys", "complete"))
    if not isinstance(epoch, str) or not 0 < len(epoch) <= 64 or type(seq) is not int or seq < 0:
        return None
    if not isinstance(complete, bool) or not isinstance(keys, list) or len(keys) > MAX_KEYS_PER_ANSWER:
        return None
    if not all(isinstance(key, str) and 0 < len(key) <= 64 and key.isprintable() for key in keys):
        return None
    return epoch, seq, keys, complete
