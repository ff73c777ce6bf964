"""The master's store: the key -> URL map in memory, written through the record log."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from functools import partial
from typing import Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from goto_tw.changes import ChangeFeed, Changes
from goto_tw.errors import (
    DISABLED_MESSAGE,
    GotoError,
    InvalidKey,
    InvalidURL,
    KeyDisabled,
    KeyExists,
    KeyNotFound,
)
from goto_tw.fanout import Coalescing
from goto_tw.interfaces import (
    IChangeSource,
    IKnownKeys,
    ILinkAdder,
    ILinkAdmin,
    ILocalLookup,
    IRecordLog,
    ITombstoneLog,
    IURLStore,
)
from goto_tw.keys import ALPHABET, INVALID_KEY, is_reserved, is_valid_key, key_for_index
from goto_tw.persistence import Acknowledge
from goto_tw.urlmap import URLMap, canonical_index
from goto_tw.urls import URLPolicy, accept_url, validate_url

#: How many of the latest adds are remembered by URL, so that adding one again answers its key.
RECENT_ADDS = 10_000


@implementer(IURLStore, ILocalLookup, IKnownKeys, ILinkAdder, ILinkAdmin, IChangeSource)
class URLStore:
    """Holds every pair in memory and makes each new one durable before anyone sees its key.

    A pair becomes visible to ``get`` only once the log has acknowledged it, so a key is never
    answered that a crash could take back. Keys come from a counter in base 62 (as goto's do),
    skipping reserved paths and any key already held, so they never collide.

    Adding a URL again while its first add is in flight, or while it is among the latest
    :data:`RECENT_ADDS` adds, answers the same key: a retried or double-clicked add never makes a
    second link. (Remembering every URL would double the memory a large store needs.)

    With no log (``log=None``) the store neither loads nor saves, like goto's ``NewURLStore("")``.
    ``next_index`` is where the key counter may resume at the earliest (the data file's key bound:
    keys past the loaded ones may have been acknowledged before a power loss); it never starts
    before the keys loaded.
    """

    def __init__(
        self,
        urls: URLMap | Mapping[str, str] | None = None,
        log: IRecordLog | None = None,
        *,
        next_index: int = 0,
        disabled: Mapping[str, int] | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        if urls is None:
            urls = URLMap()
        elif not isinstance(urls, URLMap):
            urls = URLMap.of(urls)
        self._urls: URLMap = urls
        self._recent: OrderedDict[str, str] = OrderedDict((url, key) for key, url in urls.newest(RECENT_ADDS))
        self._log = log
        self._next_index = max(urls.next_index(), next_index)
        #: The counter's key for ``_prefix_index * 62`` but its last digit ("" for 0): see :meth:`_key_of`.
        self._prefix_index = 0
        self._prefix = ""
        self._pending_keys: set[str] = set()
        #: The callers of each put in flight, by URL: a second add of the URL joins the first.
        self._puts: dict[str, list[Deferred[str]]] = {}
        append_counter = getattr(log, "append_counter", None)
        #: The log's Deferred-free append for counter keys (:meth:`AppendLog.append_counter`), if it has one.
        self._append_counter: Callable[[int, str, str, Acknowledge], None] | None = append_counter
        self._custom_adds: Coalescing[tuple[str, str], tuple[str, bool]] = Coalescing()
        self._disabled: dict[str, int] = dict(disabled or {})
        for key in self._disabled:
            self._forget_recent(key)
        self._clock = clock
        self.feed = ChangeFeed()
        for key in self._disabled:  # a slave's first poll learns of them too (see ChangeFeed.since)
            self.feed.record(key)
        #: Checks a URL before it is stored (blocklist, own host): raises InvalidURL to refuse it.
        self.policy: URLPolicy | None = None

    @property
    def data_file_failing(self) -> str | None:
        """Why the data file's last write failed, until one succeeds (``None`` while it works)."""
        failing: str | None = getattr(self._log, "failing", None)
        return failing

    def count(self) -> int:
        """Return how many pairs are stored (acknowledged ones only)."""
        return len(self._urls)

    def get(self, key: str) -> Deferred[str]:
        """Answer the URL stored under ``key`` at once, or fail with :meth:`refusal`'s error."""
        url = self._urls.get(key)
        error = self._refusal(key, url)
        if error is None and url is not None:
            return succeed(url)
        return fail(error)

    def refusal(self, key: str) -> GotoError | None:
        """:class:`KeyNotFound` for a key no link is stored under, :class:`KeyDisabled` for a disabled
        one, else ``None`` (:class:`~goto_tw.interfaces.IKnownKeys`: this store holds every link)."""
        return self._refusal(key, self._urls.get(key))

    def _refusal(self, key: str, url: str | None) -> GotoError | None:
        if url is None:
            return KeyNotFound.for_key(key)
        if self._disabled and key in self._disabled:
            return KeyDisabled(DISABLED_MESSAGE)
        return None

    def lookup(self, key: str) -> str | None:
        """Return the URL under ``key`` or ``None``, synchronously: for callers on a hot path.

        ``None`` for a disabled key too: the general path then answers 410."""
        url = self._urls.get(key)
        if url is not None and self._disabled and key in self._disabled:
            return None
        return url

    def put(self, url: str) -> Deferred[str]:
        """Store ``url`` under a new key (or answer its recent key) once the record is durable.

        Each caller gets its own Deferred (cancelling it only stops that caller's wait); with a log
        that has ``append_counter`` it is the only Deferred the add makes.
        """
        try:
            url = accept_url(url, self.policy)
        except GotoError:
            return fail()
        return self._put_accepted(url)

    def _put_accepted(self, url: str) -> Deferred[str]:
        """:meth:`put` of a URL already checked (and in its stored form)."""
        key = self._recent.get(url)
        if key is not None:
            return succeed(key)
        waiter: Deferred[str] = Deferred()
        waiters = self._puts.get(url)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        self._puts[url] = [waiter]
        index, key = self._allocate()
        if self._append_counter is None:
            self._store(key, url).addBoth(self._put_settled, url)
        else:
            self._pending_keys.add(key)
            self._append_counter(index, key, url, partial(self._put_written, index, key, url))
        return waiter

    def _put_written(self, index: int, key: str, url: str, failure: Failure | None) -> None:
        """The record of a put is safe (``failure`` is ``None``) or is not: hold the pair, tell the callers."""
        self._pending_keys.discard(key)
        result: str | Failure = key if failure is None else failure
        if failure is None:
            try:
                self._urls.add_at(index, key, url)
                self._remember(url, key)
            except Exception:  # pragma: no cover - the pending key keeps the slot free: a bug
                result = Failure()
        self._put_settled(result, url)

    def _put_settled(self, result: str | Failure, url: str) -> None:
        """Answer every caller waiting on the put of ``url`` (a cancelled one ignores its answer)."""
        for waiter in self._puts.pop(url):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def set(self, key: str, url: str) -> Deferred[str]:
        """Store ``url`` under exactly ``key``; fail with :class:`KeyExists` if it is taken.

        Only what the data file's loader accepts is stored, so no record can make the next start-up
        fail: a key the service could hand out (``ValueError`` otherwise) and a URL in the form
        ``put`` stores it (:class:`InvalidURL` otherwise; ``put`` converts, ``set`` does not).
        """
        if not is_valid_key(key):
            return fail(ValueError(f"not a short key the service could hand out: {key[:80]!r}"))
        try:
            if validate_url(url) != url:
                raise InvalidURL("the URL is not in its stored (ASCII) form")
        except GotoError:
            return fail()
        return self._store(key, url)

    def add(self, url: str, key: str | None = None) -> Deferred[tuple[str, bool]]:
        """``put`` that tells whether the link is new, or store under a custom ``key`` (:class:`ILinkAdder`).

        The same custom pair again answers ``(key, False)`` (a retry); a key holding another URL,
        being stored, disabled, or one the key counter has passed (it may have been handed out before
        a power loss), is :class:`KeyExists` (409): keys are never overwritten or handed out again. The URL passes the same policy (blocklist, own host) as ``put``.
        """
        if key is not None and not is_valid_key(key):
            return fail(InvalidKey(INVALID_KEY))
        try:
            url = accept_url(url, self.policy)
        except GotoError:
            return fail()
        if key is None:
            known = self._recent.get(url)
            if known is not None:
                return succeed((known, False))
            return self._put_accepted(url).addCallback(lambda stored: (stored, True))
        if key in self._disabled:
            # A disabled link is never handed out again, not even to the URL it had.
            return fail(KeyExists(f"the key {key!r} is taken (by a disabled link)"))
        if self._urls.get(key) == url:
            return succeed((key, False))
        index = canonical_index(key)
        if index is not None and index < self._next_index:
            # The counter has passed it: handed out, skipped, or perhaps acknowledged and then lost
            # in a power loss (--no-fsync). Never to another URL, so never as a custom key.
            return fail(KeyExists(f"the key {key!r} is already taken"))
        # A double-submitted form: the second add of the same pair joins the first (one record).
        return self._custom_adds.call(
            (key, url), lambda: self._store(key, url, custom=True).addCallback(lambda stored: (stored, True))
        )

    def next_index(self) -> int:
        """Where the key counter stands: every counter key below it was made (or skipped) already."""
        return self._next_index

    def created(self, key: str) -> float | None:
        """When the custom ``key`` was stored, or ``None`` (a counter key, or unknown)."""
        return self._urls.custom_created.get(key)

    def _store(self, key: str, url: str, custom: bool = False) -> Deferred[str]:
        """Store a checked pair under ``key`` once the log has it; fail with :class:`KeyExists` if taken."""
        if key in self._urls or key in self._pending_keys:
            return fail(KeyExists(f"the key {key!r} is already taken"))
        if self._log is None:
            self._insert(key, url, custom)
            return succeed(key)
        self._pending_keys.add(key)
        written = self._log.append(key, url, custom) if custom else self._log.append(key, url)

        def stored(_: None) -> str:
            self._pending_keys.discard(key)
            self._insert(key, url, custom)
            return key

        def not_stored(failure: Failure) -> Failure:
            self._pending_keys.discard(key)
            return failure

        return written.addCallbacks(stored, not_stored)

    def _insert(self, key: str, url: str, custom: bool = False) -> None:
        if custom:
            # Not remembered as the answer to plain adds of the URL: a key someone chose (perhaps to
            # mock the page) is theirs, not handed to everyone who shortens the same URL later.
            self._urls.add_custom(key, url, self._clock.seconds() if self._clock is not None else 0.0)
        else:
            self._urls.add(key, url)
            self._remember(url, key)

    def _remember(self, url: str, key: str) -> None:
        """Note ``key`` as the answer to adds of ``url`` (if it has none), among the latest adds."""
        recent = self._recent
        if url not in recent:
            recent[url] = key
            if len(recent) > RECENT_ADDS:
                recent.popitem(last=False)

    # --- ILinkAdmin, IChangeSource ----------------------------------------------------------------

    def links(self, after: str | None, limit: int) -> list[tuple[str, str, int | None]]:
        """A page of links, in the stable order of :meth:`URLMap.page`, with when each was disabled."""
        disabled = self._disabled
        return [(key, url, disabled.get(key)) for key, url in self._urls.page(after, limit)]

    def url_of(self, key: str) -> str | None:
        """The URL stored under ``key`` even if it is disabled (for the operator), or ``None``."""
        return self._urls.get(key)

    def disabled_at(self, key: str) -> int | None:
        """When ``key`` was disabled (seconds since the epoch), or ``None``."""
        return self._disabled.get(key)

    def disable(self, key: str) -> Deferred[int]:
        """Disable ``key`` once its tombstone is durable; then it answers 410 and enters the feed."""
        if key not in self._urls:
            return fail(KeyNotFound.for_key(key))
        when = self._disabled.get(key)
        if when is not None:
            return succeed(when)
        clock: IReactorTime
        if self._clock is None:
            from twisted.internet import reactor as default_reactor  # the wiring default

            clock = default_reactor
        else:
            clock = self._clock
        now = int(clock.seconds())
        tombstones = ITombstoneLog(self._log, None)
        written: Deferred[None] = (
            succeed(None) if tombstones is None else tombstones.append_tombstone(key, now)
        )

        def durable(_: None) -> int:
            first = self._disabled.setdefault(key, now)
            if first == now:
                self._forget_recent(key)
                self.feed.record(key)
            return first

        return written.addCallback(durable)

    def changes(self, epoch: str, since: int) -> Changes:
        """The keys changed (disabled) after ``since`` in ``epoch``, for a slave's cache."""
        return self.feed.since(epoch, since)

    def _forget_recent(self, key: str) -> None:
        """A disabled key is never answered to an add again: drop it from the recent adds."""
        url = self._urls.get(key)
        if url is not None and self._recent.get(url) == key:
            del self._recent[url]

    def _allocate(self) -> tuple[int, str]:
        """Return the next unused, unreserved counter value and its key; a key whose write failed
        is never reused here."""
        urls = self._urls
        while True:
            index = self._next_index
            self._next_index = index + 1
            key = self._key_of(index)
            if not is_reserved(key) and not urls.holds(index, key) and key not in self._pending_keys:
                return index, key

    def _key_of(self, index: int) -> str:
        """``key_for_index(index)``, with all but its last base-62 digit remembered: the counter moves
        by one, so they change once in 62 keys (measured on CPython 3.11: 0.6 -> 0.2 us a key)."""
        prefix_index, digit = divmod(index, len(ALPHABET))
        if prefix_index != self._prefix_index:
            self._prefix_index = prefix_index
            self._prefix = key_for_index(prefix_index) if prefix_index else ""
        return self._prefix + ALPHABET[digit]
