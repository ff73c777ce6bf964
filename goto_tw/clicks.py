"""Click statistics: counting redirects cheaply, sending a slave's counts to its master in batches,
and keeping a master's totals durable in a companion file.

- :class:`ClickCounter` is what the redirect path calls: one dict increment per click, nothing else
  (no allocation, no I/O, no lock). Its pending counts are taken as a whole by whoever flushes them.
- :class:`ClickForwarder` (slave) sends the pending counts to the master at most once a second as
  ``Store.Clicks({key: count})`` calls of :data:`SEND_BATCH_KEYS` keys (larger when many keys wait):
  nothing per click goes over the network. A batch the master does not acknowledge is merged back
  and sent again with the next one.
- :class:`ClickBook` (master) holds the totals (an ``array`` slot per counter key, a dict for custom
  keys) and appends each write (its own counts and the batches that came) as a JSON line per
  :data:`SNAPSHOT_KEYS` keys to ``<data file>.clicks``; a batch from a slave is acknowledged only
  once its line is written (and synced, unless ``--no-fsync``). Start-up adds the lines up and, when
  there are many, rewrites the file as one compact snapshot, so it stays fast.

Loss bounds: a slave killed with ``kill -9`` loses the clicks it has not yet sent (at most about a
second's); a master loses none it acknowledged, and at most its last second of its own redirects.
Requests from link-preview bots (:data:`PREVIEW_BOTS`) and ``HEAD`` requests are not clicks.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import re
from array import array
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, TimeoutError, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from goto_tw.errors import NotKept, StoreUnavailable
from goto_tw.interfaces import IClickCounter
from goto_tw.keys import all_valid_keys, is_valid_key
from goto_tw.throttledlog import ThrottledCondition
from goto_tw.urlmap import canonical_index

log = Logger()

#: User-agent patterns of link-preview bots (case-insensitive substrings): a chat app unfurling a
#: link is not a person following it. Short on purpose; the README lists it.
PREVIEW_BOTS = (
    "Slackbot",
    "Slack-ImgProxy",
    "Twitterbot",
    "facebookexternalhit",
    "Facebot",
    "Discordbot",
    "WhatsApp",
    "TelegramBot",
    "LinkedInBot",
    "SkypeUriPreview",
    "redditbot",
    "Mastodon",
)
_BOT_PATTERN = "|".join(re.escape(bot) for bot in PREVIEW_BOTS)
#: Finds a preview bot's name in the User-Agent line of a raw request head (the fast path).
PREVIEW_BOT_IN_HEAD = re.compile(
    rb"\r\nuser-agent:[^\r\n]*(?:" + _BOT_PATTERN.encode("ascii") + rb")", re.IGNORECASE
)
_PREVIEW_BOT_AGENT = re.compile(_BOT_PATTERN.encode("ascii"), re.IGNORECASE)


def is_preview_bot(user_agent: bytes | None) -> bool:
    """Tell whether a ``User-Agent`` value names a link-preview bot (its redirects are not clicks)."""
    return user_agent is not None and _PREVIEW_BOT_AGENT.search(user_agent) is not None


#: Distinct User-Agent values whose verdict is remembered; past it the memory starts afresh.
MAX_AGENTS_REMEMBERED = 1024


_USER_AGENT_IN_HEAD = re.compile(rb"\r\nuser-agent:([^\r\n]*)", re.IGNORECASE)


class PreviewBotFilter:
    """Whether a raw request head comes from a preview bot, at a fraction of a regex search's cost.

    Searching every redirect's head for a dozen names costs a few microseconds, a third of a fast
    redirect; the User-Agent values a service sees are few, so the verdict per value is remembered
    (in a bounded dict) and a redirect pays for a few ``find`` calls, a slice and a dict look-up.

    Of repeated ``User-Agent`` headers the last one counts, as in twisted.web's ``getHeader`` (one
    rule on both paths). A head with the name spelled otherwise (``user-agent``, ``USER-AGENT``)
    is searched in full for its last one; only an odd mixed spelling (``User-AGENT``) after a
    ``User-Agent`` would be missed, and it can only decide whether its sender's click counts.
    """

    def __init__(self, max_agents: int = MAX_AGENTS_REMEMBERED) -> None:
        self._verdicts: dict[bytes, bool] = {}
        self._max_agents = max_agents

    def __call__(self, head: bytes) -> bool:
        start = head.rfind(b"\r\nUser-Agent:")
        if start >= 0 and b"ser-agent:" not in head and b"SER-AGENT:" not in head:
            agent = head[start + 13 : head.find(b"\r", start + 13)]
        else:
            # None, or one spelled otherwise: the full search for the last one, rarely needed.
            agents = _USER_AGENT_IN_HEAD.findall(head)
            if not agents:
                return False
            agent = agents[-1]
        verdict = self._verdicts.get(agent)
        if verdict is None:
            verdict = _PREVIEW_BOT_AGENT.search(agent) is not None
            if len(self._verdicts) >= self._max_agents:
                self._verdicts.clear()
            self._verdicts[agent] = verdict
        return verdict


#: Most distinct keys waiting to be flushed; a click for a new key beyond it is dropped (and counted
#: in ``dropped``), so a master outage cannot grow a slave's memory without bound.
MAX_PENDING_KEYS = 100_000
#: Most keys one ``Store.Clicks`` call may carry; the master refuses more. About 63 bytes a key on
#: the wire, 134 for the longest keys and counts: at most about 670 KB, within the master's 1 MiB.
MAX_BATCH_KEYS = 5_000
#: Keys a slave sends in one call while a flush's keys fit in FLUSH_CALLS such calls. The master
#: handles a call in one go, and the look-ups of every slave wait meanwhile: a fifth of
#: MAX_BATCH_KEYS keeps that wait to a few milliseconds (``bench/master_clicks.py``, CPython 3.11:
#: about 4 ms of CPU for 1,000 keys, 18-23 ms for 5,000).
SEND_BATCH_KEYS = 1_000
#: Calls a flush is spread over at most while they stay within MAX_BATCH_KEYS: more keys make larger
#: calls, so a slave far from its master still forwards many distinct keys a second, and a flush
#: (a stopping slave's last one too, within STOP_FLUSH_SECONDS) takes at most 20 round trips
#: (MAX_PENDING_KEYS / MAX_BATCH_KEYS), as many as when every call carried MAX_BATCH_KEYS.
FLUSH_CALLS = 10
#: Largest count for one key in one batch (an XML-RPC int is 32 bits).
MAX_BATCH_COUNT = 2**31 - 1
#: Most clicks a key's total holds: the largest whole number a browser's JSON reader holds exactly
#: (the API serves totals as JSON numbers). Totals stop there, and a click file line above it is
#: refused, so no sum of lines can overflow a total's 8-byte slot.
MAX_CLICK_TOTAL = 2**53 - 1
#: Latest time a mark may hold (9999-12-31T23:59:59Z): what ``time.gmtime`` can show as a date.
MAX_MARK_TIME = 253_402_300_799
#: Highest counter value a mark may hold (its 8-byte slot's).
MAX_MARK_INDEX = 2**63 - 1
#: Seconds between two flushes.
FLUSH_INTERVAL = 1.0
#: Seconds a stopping slave waits for its last batch to be acknowledged.
STOP_FLUSH_SECONDS = 5.0
#: Seconds a slave waits before offering clicks again to a master that keeps none (PostgreSQL).
UNSUPPORTED_RETRY_SECONDS = 300.0
#: Most questions about counts (a slave's ``Store.Stats``) that may wait for a batch of clicks on its
#: way to the master; beyond it they fail at once (503), as calls beyond the RPC's own queue do.
MAX_ASKING_WAITERS = 1_000


@implementer(IClickCounter)
class ClickCounter:
    """Pending clicks by key, cheap to count and taken whole by the flusher."""

    def __init__(self, max_keys: int = MAX_PENDING_KEYS) -> None:
        self.pending: dict[str, int] = {}
        self.max_keys = max_keys
        #: Clicks taken out by flushes so far (``total`` adds the pending ones).
        self.taken = 0
        #: Clicks dropped because too many distinct keys were waiting.
        self.dropped = 0

    def click(self, key: str) -> None:
        """Count one click (a dict increment; a new key past the bound is dropped)."""
        pending = self.pending
        count = pending.get(key)
        if count is not None:
            pending[key] = count + 1
        elif len(pending) < self.max_keys:
            pending[key] = 1
        else:
            self.dropped += 1

    def take(self) -> dict[str, int]:
        """Remove and return every pending count."""
        taken, self.pending = self.pending, {}
        self.taken += sum(taken.values())
        return taken

    def give_back(self, counts: dict[str, int]) -> None:
        """Merge counts that could not be delivered back into the pending ones (within the bound)."""
        self.taken -= sum(counts.values())
        for key, count in counts.items():
            if key in self.pending or len(self.pending) < self.max_keys:
                self.pending[key] = self.pending.get(key, 0) + count
            else:
                self.dropped += count

    def drop(self, counts: dict[str, int]) -> None:
        """Count taken clicks that nobody will keep as dropped."""
        dropped = sum(counts.values())
        self.taken -= dropped
        self.dropped += dropped

    def total(self) -> int:
        """Every click counted here, kept or dropped (``goto_clicks_total``, a counter): each step
        moves clicks between ``taken``, ``pending`` and ``dropped``, so the sum never goes back, as
        Prometheus needs of a counter; ``dropped`` is ``goto_clicks_dropped_total``."""
        return self.taken + sum(self.pending.values()) + self.dropped


#: The one type :func:`_all_good` takes for a count (``bool`` is an ``int`` but never a count).
_INT_ONLY = frozenset({int})
#: The one type :func:`_all_good` takes for a key (a ``str`` subclass is left to the loop).
_STR_ONLY = frozenset({str})


def _all_good(counts: dict[Any, Any], most: int) -> bool:
    """Whether every key of ``counts`` is a valid key and every count an ``int`` from 1 to ``most``,
    checked in a few passes over the whole dict at once, not a Python step per
    key. ``False`` sends the caller to its key-by-key loop, which says what is wrong (or accepts
    what this is stricter about: a subclass of ``dict``, ``str`` or ``int``)."""
    if not counts:
        return True
    if type(counts) is not dict or not _STR_ONLY.issuperset(map(type, counts)):
        return False  # a subclass may override what the loop calls (items, __iter__, startswith)
    values = counts.values()
    if not _INT_ONLY.issuperset(map(type, values)):
        return False
    if min(values) <= 0 or max(values) > most:
        return False
    return all_valid_keys(counts)


def check_batch(batch: object) -> dict[str, int]:
    """Validate a ``Store.Clicks`` argument from a slave: ``{key: count}``, bounded; raise ``ValueError``."""
    if not isinstance(batch, dict):
        raise ValueError("expected one struct of key -> click count")
    if len(batch) > MAX_BATCH_KEYS:
        raise ValueError(f"at most {MAX_BATCH_KEYS} keys in one batch")
    return _counts_checked(batch, MAX_BATCH_COUNT, "a key in the batch is not a valid key")


def _counts_checked(counts: dict[Any, Any], most: int, bad_key: str) -> dict[str, int]:
    """``counts`` if every key is a valid key and every count an ``int`` from 1 to ``most``; else
    ``ValueError`` for the first item that is not (``bad_key`` for a key). The common case passes
    :func:`_all_good`'s few passes; anything else is judged key by key."""
    if _all_good(counts, most):
        return counts
    for key, count in counts.items():
        if not isinstance(key, str) or not is_valid_key(key):
            raise ValueError(bad_key)
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0 or count > most:
            raise ValueError("a click count is not a positive whole number")
    return counts


class ClickForwarder(Service):
    """A slave's flusher: every second, ``Store.Clicks`` calls with everything counted since (one
    call per :data:`SEND_BATCH_KEYS` keys, larger ones beyond :data:`FLUSH_CALLS` calls).

    ``send`` is the RPC (``RemoteStore.call_alone`` bound to ``Store.Clicks``); only one call is in
    flight at a time. On stop, what is pending is sent once more (the RPC's own timeout bounds the
    wait). A master that keeps no clicks (:class:`~goto_tw.errors.NotKept`: a PostgreSQL master) is
    logged once and offered clicks again only every :data:`UNSUPPORTED_RETRY_SECONDS`; the clicks
    of the meantime are counted as dropped.

    A question whose answer holds the clicks the master has (``Store.Stats``: see :meth:`asked`) is
    never on its way while a batch is: the batch's counts would then be in neither the answer nor
    the pending counts, and the figure shown would drop back for a moment.
    """

    def __init__(
        self,
        counter: ClickCounter,
        send: Callable[[dict[str, int]], Deferred[Any]],
        clock: IReactorTime,
        interval: float = FLUSH_INTERVAL,
    ) -> None:
        self._counter = counter
        self._send = send
        self._clock = clock
        self._interval = interval
        self._timer: IDelayedCall | None = None
        self._in_flight: Deferred[None] | None = None
        self._warned = False
        #: Until when a master that keeps no clicks is left alone (clock seconds; 0: it keeps them).
        self._quiet_until = 0.0
        #: Questions (:meth:`asked`) on their way; a flush that came due meanwhile waits for them, and
        #: questions asked while a flush waits or is on its way wait for it (a flush is not starved).
        self._asking = 0
        self._flush_due = False
        self._after_flush: list[Deferred[None]] = []
        #: The flush stopService sent last (its failure is given up: nothing is sent again).
        self._last_flush: Deferred[None] | None = None
        self._final = False
        self._gave_up_logged = False

    def pending(self, key: str) -> int:
        """Clicks on ``key`` counted here and not yet sent."""
        return self._counter.pending.get(key, 0)

    def asked(self, ask: Callable[[], Deferred[Any]]) -> Deferred[Any]:
        """``ask()``'s answer, asked while no batch of this slave's clicks is on its way to the master
        and with none leaving before it is answered: every click counted here is then either in the
        answer or still :meth:`pending` (which ``ask``'s Deferred must read in its own callbacks: the next
        flush may take them as soon as it fires). Waits at most for one batch (the RPC's timeout bounds it);
        past :data:`MAX_ASKING_WAITERS` waiting, fails at once with :class:`StoreUnavailable`."""
        if self._in_flight is None and not self._flush_due:
            self._asking += 1
            try:
                answer: Deferred[Any] = ask()
            except Exception:
                answer = fail()
            return answer.addBoth(self._answered)
        if len(self._after_flush) >= MAX_ASKING_WAITERS:
            return fail(
                StoreUnavailable("the link's statistics are not available now", detail="too many waiting")
            )
        flushed: Deferred[None] = Deferred()
        self._after_flush.append(flushed)
        return flushed.addCallback(lambda _: self.asked(ask))

    def _answered(self, result: object) -> object:
        self._asking -= 1
        if not self._asking and self._flush_due:
            self._flush_due = False
            self.flush()
        return result

    def _release_askers(self) -> None:
        """Let the questions that waited for a flush go (each checks again: another may be due)."""
        waiting, self._after_flush = self._after_flush, []
        for flushed in waiting:
            flushed.callback(None)

    def startService(self) -> None:
        super().startService()
        self._last_flush = None  # a stop's, before this start
        self._gave_up_logged = False
        self._timer = self._clock.callLater(self._interval, self._tick)

    def _tick(self) -> None:
        self._timer = self._clock.callLater(self._interval, self._tick)
        if self._in_flight is not None or self._flush_due:
            return
        if self._asking and self._counter.pending:
            self._flush_due = True  # once the questions on their way are answered
            return
        self.flush()

    def flush(self) -> Deferred[None]:
        """Send what is pending now, in calls one after another: :data:`SEND_BATCH_KEYS` keys each,
        or more (up to :data:`MAX_BATCH_KEYS`) when that would take over :data:`FLUSH_CALLS` calls."""
        if self._in_flight is not None:
            return succeed(None)
        counts = self._counter.take()
        if counts and self._clock.seconds() < self._quiet_until:
            self._counter.drop(counts)  # the master keeps none: memory stays small, nothing is sent
            counts = {}
        if not counts:
            self._release_askers()
            return succeed(None)
        items = list(counts.items())
        size = min(MAX_BATCH_KEYS, max(SEND_BATCH_KEYS, -(-len(items) // FLUSH_CALLS)))
        batches = [dict(items[i : i + size]) for i in range(0, len(items), size)]
        done: Deferred[None] = Deferred()
        self._in_flight = done
        if self._final:
            self._last_flush = done

        def send_next(_: object = None) -> None:
            if not batches:
                self._finished(done, None)
                return
            batch = batches.pop(0)

            def failed(failure: Failure) -> None:
                keep = self._counter.drop if failure.check(NotKept) else self._counter.give_back
                keep(batch)
                for rest in batches:
                    keep(rest)
                self._finished(done, failure)

            self._send(batch).addCallbacks(send_next, failed)

        send_next()
        return done

    def _finished(self, done: Deferred[None], failure: Failure | None) -> None:
        self._in_flight = None
        if failure is not None and failure.check(NotKept):
            if not self._quiet_until:
                log.warn(
                    "The master keeps no clicks ({reason}): this slave's clicks are dropped, and "
                    "offered again every {seconds:.0f} s",
                    reason=str(failure.value),
                    seconds=UNSUPPORTED_RETRY_SECONDS,
                )
            self._quiet_until = self._clock.seconds() + UNSUPPORTED_RETRY_SECONDS
        elif failure is None:
            if self._quiet_until:
                log.info("The master keeps clicks again")
                self._quiet_until = 0.0
            if self._warned:
                log.info("Clicks reach the master again")
                self._warned = False
        elif done is self._last_flush:
            self._gave_up(failure)  # the last flush, on stop: nothing is sent again
        elif not self._warned:
            self._warned = True
            error = failure.value
            cause = error.log_text() if isinstance(error, StoreUnavailable) else repr(error)
            log.warn("Could not send clicks to the master (kept, sent again later): {cause}", cause=cause)
        self._release_askers()
        done.callback(None)

    def stopService(self) -> Deferred[None]:
        """Send what is pending once more, waiting at most :data:`STOP_FLUSH_SECONDS` (shutdown never hangs)."""
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._flush_due = False  # the last flush goes now, whatever is asked meanwhile
        finished: Deferred[None] = Deferred()
        if self._in_flight is not None:
            self._in_flight.addCallback(lambda _: self._flush_last()).chainDeferred(finished)
        else:
            self._flush_last().chainDeferred(finished)
        finished.addTimeout(STOP_FLUSH_SECONDS, self._clock)
        return finished.addErrback(self._gave_up)

    def _flush_last(self) -> Deferred[None]:
        self._final = True  # set before: a send that fails at once finishes inside flush()
        try:
            return self.flush()
        finally:
            self._final = False

    def _gave_up(self, failure: Failure) -> None:
        if self._gave_up_logged:
            return
        self._gave_up_logged = True
        error = failure.value
        if isinstance(error, StoreUnavailable):
            cause = error.log_text()
        elif failure.check(TimeoutError):
            cause = f"no answer within {STOP_FLUSH_SECONDS:g} s"
        else:
            cause = repr(error)
        log.warn("Gave up sending the last clicks to the master on stop: {cause}", cause=cause)


#: How far past twice its length the slot array grows at once; a key further out is counted in the
#: dict until the array comes near it (``get`` and ``items`` add the two up).
SLOTS_AHEAD = 1 << 20


class ClickTotals:
    """Total clicks per key: an 8-byte slot per counter key, a dict for the others (custom keys).

    Only a key below the store's key counter (``next_index()``) gets a slot: the counter made it,
    or skipped it, so the array never outgrows the keys the store handed out. Anything else (a
    custom key that reads as a far number, say ``4oMw``) goes to the dict: a person choosing keys
    costs one dict entry per key, never megabytes of slots. Without ``next_index``, every key does.
    The array also grows at most to twice its length plus :data:`SLOTS_AHEAD` at once: a counter
    that starts far out (a ``.next`` of 10**12) must not make the first click allocate terabytes.
    A total stops at :data:`MAX_CLICK_TOTAL`.
    """

    def __init__(self, next_index: Callable[[], int] | None = None) -> None:
        self._by_index: array[int] = array("q")
        self._others: dict[str, int] = {}
        self._next_index = next_index

    def slots(self) -> int:
        """How many counter slots the array holds (8 bytes each)."""
        return len(self._by_index)

    def add(self, key: str, count: int) -> None:
        self.add_all({key: count})

    def add_all(self, counts: dict[str, int]) -> None:
        """:meth:`add` each of ``counts`` (a write's, or a click file line's: thousands of keys), the
        key counter read once."""
        next_index = -1 if self._next_index is None else self._next_index()
        slots = self._by_index
        others = self._others
        for key, count in counts.items():
            index = canonical_index(key)
            if index is None or index >= next_index or index >= 2 * len(slots) + SLOTS_AHEAD:
                others[key] = min(others.get(key, 0) + count, MAX_CLICK_TOTAL)
                continue
            if index >= len(slots):
                slots.extend(array("q", [0]) * (index - len(slots) + 1))
            slots[index] = min(slots[index] + count, MAX_CLICK_TOTAL)

    def get(self, key: str) -> int:
        index = canonical_index(key)
        count = self._others.get(key, 0)
        if index is not None and index < len(self._by_index):
            count += self._by_index[index]
        return count

    def items(self) -> list[tuple[str, int]]:
        """Every non-zero total (for a snapshot)."""
        from goto_tw.keys import key_for_index

        found = [(key_for_index(index), count) for index, count in enumerate(self._by_index) if count]
        merged = dict(found)
        for key, count in self._others.items():
            merged[key] = min(merged.get(key, 0) + count, MAX_CLICK_TOTAL)
        return list(merged.items())


class CorruptClickFile(Exception):
    """The click file holds a line that cannot be read; the message names the file and line."""


#: Lines above which start-up rewrites the click file as a compact snapshot.
COMPACT_LINES = 1_000
#: Lines above which a running master rewrites it (in its writer thread, instead of one append), so
#: the file stays bounded however long the master runs: about a day of one line a second.
RUNTIME_COMPACT_LINES = 100_000
#: Bytes above which a running master rewrites it (one line holds up to 10,000 keys, so lines
#: alone do not bound it), or twice the size of its last snapshot if that is more: a snapshot
#: larger than this bound must not make every write a rewrite.
RUNTIME_COMPACT_BYTES = 64 * 1024 * 1024
#: Keys per line of a snapshot.
SNAPSHOT_KEYS = 10_000
#: Bytes read at a time when the click file is loaded.
LOAD_CHUNK_BYTES = 1024 * 1024
#: Longest line the click file may hold: a line carries at most :data:`SNAPSHOT_KEYS` keys of at
#: most 64 characters, each with a count of at most 19 digits (about 870 KB).
MAX_LINE_BYTES = 1024 * 1024


def clicks_path(data_path: str) -> str:
    """The click file beside a data file."""
    return data_path + ".clicks"


def _parse_click_line(path: str, number: int, line: bytes) -> dict[str, int] | tuple[int, int]:
    """A click record's counts, or a mark ``(n, t)``: every counter key below ``n`` existed at time ``t``."""
    try:
        record = json.loads(line)
        if isinstance(record, dict) and set(record) == {"c"}:
            return check_line_counts(record["c"])
        if isinstance(record, dict) and set(record) == {"n", "t"}:
            n, t = record["n"], record["t"]
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (n, t)):
                raise ValueError("a mark needs whole numbers n and t")
            if n > MAX_MARK_INDEX or t > MAX_MARK_TIME:
                raise ValueError("a mark's n or t is out of range")
            return n, t
        raise ValueError("not a click record")
    except (ValueError, RecursionError) as exc:
        raise CorruptClickFile(f"{path}, line {number}: {exc}") from None


class Marks:
    """When counter keys were made: marks ``(n, t)`` saying every key below counter value ``n`` existed
    at time ``t`` (``t`` 0: unknown, for links older than the marks). One mark a second at most while
    links are added; snapshots thin older marks (see :meth:`thinned`), so a key's time is an upper
    bound: to the second for an hour, to the minute for a day, to the hour after that."""

    def __init__(self) -> None:
        self.n: array[int] = array("q")
        self.t: array[int] = array("q")

    def add(self, n: int, t: int) -> None:
        if self.n and n <= self.n[-1]:
            return  # the counter did not move: nothing new to date
        self.n.append(n)
        self.t.append(t)

    def created(self, index: int) -> float | None:
        """When the key of counter value ``index`` was made (at the latest), or ``None`` if unknown."""
        position = bisect.bisect_right(self.n, index)
        if position == len(self.n) or self.t[position] == 0:
            return None
        return float(self.t[position])

    def thinned(self, now: float) -> list[tuple[int, int]]:
        """The marks to keep in a snapshot: a second apart for the last hour, a minute apart for the
        last day, an hour apart before that (about 14,000 marks for a year of constant adds)."""
        kept: list[tuple[int, int]] = []
        for n, t in zip(self.n, self.t):
            age = now - t
            gap = 1 if age < 3_600 else 60 if age < 86_400 else 3_600
            if kept and kept[-1][1] != 0 and t - kept[-1][1] < gap:
                kept[-1] = (n, t)  # merged: the later time still bounds when every key below n was made
                continue
            kept.append((n, t))
        return kept


def check_line_counts(counts: object) -> dict[str, int]:
    """Like :func:`check_batch` without the key bound (a snapshot line holds up to 10,000 keys), a
    count up to :data:`MAX_CLICK_TOTAL` (a snapshot's totals)."""
    if not isinstance(counts, dict):
        raise ValueError("expected an object of key -> click count")
    return _counts_checked(counts, MAX_CLICK_TOTAL, "a key is not a valid key")


def load_clicks(path: str, next_index: Callable[[], int] | None = None) -> tuple[ClickTotals, Marks, int]:
    """Add up the click file at ``path`` (missing: no clicks); return the totals, marks and lines read.

    The file is read :data:`LOAD_CHUNK_BYTES` at a time, so loading it costs the totals and at most
    a chunk and a line, however large it grew. A torn last line (a crash mid-write: never
    acknowledged) is cut off; any other bad line, or one longer than :data:`MAX_LINE_BYTES`, raises
    :class:`CorruptClickFile` naming the line. ``next_index`` is the store's key counter (see
    :class:`ClickTotals`).
    """
    totals = ClickTotals(next_index)
    marks = Marks()
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return totals, marks, 0
    number = 0
    complete = 0  # bytes of the complete lines read so far
    tail = b""
    try:
        while True:
            chunk = os.read(fd, LOAD_CHUNK_BYTES)
            if not chunk:
                break
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            if len(tail) > MAX_LINE_BYTES:
                raise CorruptClickFile(
                    f"{path}, line {number + len(lines) + 1}: longer than {MAX_LINE_BYTES} bytes"
                )
            for line in lines:
                number += 1
                if len(line) > MAX_LINE_BYTES:
                    raise CorruptClickFile(f"{path}, line {number}: longer than {MAX_LINE_BYTES} bytes")
                complete += len(line) + 1
                parsed = _parse_click_line(path, number, line)
                if isinstance(parsed, tuple):
                    marks.add(*parsed)
                    continue
                totals.add_all(parsed)
    finally:
        os.close(fd)
    if tail:
        log.warn("Click file {path} ends with a torn line (never acknowledged): cutting it off", path=path)
        with open(path, "r+b") as file:
            file.truncate(complete)
    return totals, marks, number


def encode_clicks(counts: dict[str, int]) -> bytes:
    """One click record: ``{"c":{"KEY":COUNT,...}}`` and a newline."""
    return json.dumps({"c": counts}, separators=(",", ":")).encode("ascii") + b"\n"


def encode_mark(n: int, t: int) -> bytes:
    """One mark record: ``{"n":N,"t":T}`` and a newline."""
    return b'{"n":%d,"t":%d}\n' % (n, t)


def write_snapshot(
    path: str, totals: ClickTotals, marks: Marks, now: float, extra: dict[str, int] | None = None
) -> int:
    """Replace the click file by one holding just the totals (plus ``extra``) and the (thinned) marks,
    atomically and durably; return how many lines it holds."""
    merged = dict(totals.items())
    for key, count in (extra or {}).items():
        merged[key] = min(merged.get(key, 0) + count, MAX_CLICK_TOTAL)  # what the loader takes
    items = list(merged.items())
    thinned = marks.thinned(now)
    temporary = path + ".tmp"
    try:
        with open(temporary, "wb") as file:
            file.write(b"".join(encode_mark(n, t) for n, t in thinned))
            for start in range(0, len(items), SNAPSHOT_KEYS):
                file.write(encode_clicks(dict(items[start : start + SNAPSHOT_KEYS])))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):  # no half-written snapshot left beside the file
            os.unlink(temporary)
        raise
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return len(thinned) + -(-len(items) // SNAPSHOT_KEYS)


def open_click_book(
    path: str, now: float, next_index: Callable[[], int] | None = None
) -> tuple[ClickTotals, Marks, int]:
    """Load the click file, compacting it first when it has many lines (before anything listens);
    return the totals, the marks and the lines the file holds."""
    totals, marks, lines = load_clicks(path, next_index)
    if lines > COMPACT_LINES:
        try:
            write_snapshot(path, totals, marks, now)
        except OSError as exc:  # a full disk: the file as it is serves as well, only slower to load
            log.warn(
                "Could not compact the click file {path} ({error}); using it as it is", path=path, error=exc
            )
            return totals, marks, lines
        totals, marks, lines = load_clicks(path, next_index)  # what is on disk now, thinned
    return totals, marks, lines


ThreadRunner = Callable[[Callable[[], None]], "Deferred[None]"]


#: Seconds between two log lines about failing writes of the clicks file.
WRITE_FAILURE_LOG_INTERVAL = 10.0


class ClickBook(Service):
    """A master's clicks: its own redirects' and the slaves' batches, made durable once a second.

    ``record(batch)`` (a slave's ``Store.Clicks``) fires once the batch is in the file; the master's
    own clicks (its :attr:`counter`) go into the same line. Totals shown (``clicks(key)``) include
    what is still pending.
    """

    def __init__(
        self,
        path: str,
        totals: ClickTotals,
        clock: IReactorTime,
        *,
        fsync: bool,
        run_in_thread: ThreadRunner | None,
        interval: float = FLUSH_INTERVAL,
        marks: Marks | None = None,
        next_index: Callable[[], int] | None = None,
        lines: int = 0,
        compact_lines: int = RUNTIME_COMPACT_LINES,
        compact_bytes: int = RUNTIME_COMPACT_BYTES,
        keys_written_by: float | None = None,
    ) -> None:
        """``keys_written_by``: when the data file was last written (its ``mtime`` at start-up), which
        dates keys made after the last mark of a run that crashed."""
        self._keys_written_by = keys_written_by
        self.counter = ClickCounter()
        #: Lines in the file, and the size of its last complete line (a failed write is cut back to it).
        self._lines = lines
        self._compact_lines = compact_lines
        self._compact_bytes = compact_bytes
        try:
            size = os.stat(path).st_size  # once, at start-up, before anything listens
        except FileNotFoundError:
            size = 0
        #: Bytes in the file, and the size past which it is compacted.
        self._size = size
        self._compact_at = max(compact_bytes, 2 * size)
        self._good_size: int | None = None
        self.marks = marks if marks is not None else Marks()
        self._next_index = next_index
        self._path = path
        self._totals = totals
        self._clock = clock
        self._fsync = fsync
        self._run_in_thread = run_in_thread
        self._interval = interval
        self._fd: int | None = None
        self._timer: IDelayedCall | None = None
        self._soon: IDelayedCall | None = None
        self._in_flight: Deferred[None] | None = None
        #: Failed writes, said at most once an interval (a full disk fails one a second, for as
        #: long as it is full: an operations audit, stop 41), and their end, once.
        self._write_failures = ThrottledCondition(
            log,
            clock,
            "Could not write clicks: {error} ({unlogged} more failures since the last line)",
            "Clicks are written again ({unlogged} more times since the last line)",
            WRITE_FAILURE_LOG_INTERVAL,
        )
        self._failing = False
        self._waiting: list[tuple[dict[str, int], Deferred[None]]] = []
        self._waiting_keys = 0
        #: The counts of the write in flight (the master's own and the slaves'): shown by ``clicks``
        #: until they are in the totals, so a link's figure does not go back meanwhile.
        self._writing: dict[str, int] = {}
        self.acknowledged = 0
        self._mark_line = b""

    def clicks(self, key: str) -> int:
        """Clicks counted for ``key``: the durable total plus what is waiting to be written."""
        pending = self.counter.pending.get(key, 0)
        waiting = sum(batch.get(key, 0) for batch, _ in self._waiting)
        return self._totals.get(key) + self._writing.get(key, 0) + pending + waiting

    def total(self) -> int:
        """Every click this master has made durable or counted itself, kept or dropped
        (``goto_clicks_total``, a counter, never goes back): a slave's batch counts once written,
        since a batch that fails is the slave's to send again; the master's own are given back to
        its counter."""
        return self.acknowledged + self.counter.total()

    def created(self, index: int) -> float | None:
        """When the counter key of ``index`` was made (to the second), ``None`` if unknown or not made."""
        marks = self.marks.n
        if marks and marks[-1] <= index and self._next_index is not None and index < self._next_index():
            return self._clock.seconds()  # made since the last mark: within the last second
        return self.marks.created(index)

    def startService(self) -> None:
        # The file is opened (created) at the first write, so a start that fails leaves none behind.
        super().startService()
        if not self.marks.n and self._next_index is not None:
            # The first mark: keys made before marks existed (an older data file) have no known time.
            self.marks.add(self._next_index(), 0)
            self._mark_line = encode_mark(self._next_index(), 0)
        elif self._next_index is not None and self._keys_written_by is not None:
            # Keys made after the last mark and before a crash (its mark, due within the second,
            # never written) existed when the data file was last written: date them by that.
            n = self._next_index()
            if n > self.marks.n[-1]:
                # Whole seconds as the tick's marks (so marks stay in order); never before 1970.
                t = max(0, min(int(self._keys_written_by), int(self._clock.seconds())))
                self.marks.add(n, t)
                self._mark_line = encode_mark(n, t)
        self._timer = self._clock.callLater(self._interval, self._tick)

    def record(self, batch: dict[str, int]) -> Deferred[None]:
        """Make a slave's batch durable; fire once it is (or fail with :class:`StoreUnavailable`)."""
        if not self.running or self._waiting_keys + len(batch) > MAX_PENDING_KEYS:
            return fail(
                StoreUnavailable("clicks cannot be stored now", detail="click queue full or stopping")
            )
        done: Deferred[None] = Deferred()
        self._waiting.append((batch, done))
        self._waiting_keys += len(batch)
        if self._soon is None and self._in_flight is None:
            self._soon = self._clock.callLater(0, self._write_now)
        return done

    def _write_now(self) -> None:
        self._soon = None
        self._write()

    def _tick(self) -> None:
        self._timer = self._clock.callLater(self._interval, self._tick)
        self._write()

    def _write(self) -> Deferred[None]:
        if self._in_flight is not None:
            return self._in_flight
        waiting, self._waiting, self._waiting_keys = self._waiting, [], 0
        own_counts = self.counter.take()
        own = sum(own_counts.values())
        merged = dict(own_counts)
        for batch, _ in waiting:
            for key, count in batch.items():
                merged[key] = min(merged.get(key, 0) + count, MAX_CLICK_TOTAL)
        mark = self._mark_line
        if self._next_index is not None:
            n = self._next_index()
            if not self.marks.n or n > self.marks.n[-1]:
                t = int(self._clock.seconds())
                self.marks.add(n, t)
                mark += encode_mark(n, t)
        self._mark_line = b""
        if not merged and not mark:
            for _, waiter in waiting:  # empty batches (every key unknown or disabled): nothing to write
                waiter.callback(None)
            return succeed(None)
        lines = mark + b"".join(
            encode_clicks(dict(list(merged.items())[i : i + SNAPSHOT_KEYS]))
            for i in range(0, len(merged), SNAPSHOT_KEYS)
        )
        compact = (
            self._lines + lines.count(b"\n") > self._compact_lines
            or self._size + len(lines) > self._compact_at
        )
        now = self._clock.seconds()

        def write() -> None:
            if compact:
                # Rewrite the whole file as a snapshot holding this write too; only this thread
                # touches the totals and marks meanwhile (the reactor waits for ``done``). The
                # descriptor is let go first: whatever fails below, the path names the file the next
                # write opens, never an old one the snapshot replaced.
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                self._good_size = None
                self._lines = write_snapshot(self._path, self._totals, self.marks, now, merged)
                self._size = os.stat(self._path).st_size
                self._compact_at = max(self._compact_bytes, 2 * self._size)
                return
            if self._fd is None:
                self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            fd = self._fd
            if self._good_size is None:
                self._good_size = os.fstat(fd).st_size
            try:
                os.ftruncate(fd, self._good_size)  # a no-op unless a write failed half-way before
                view = memoryview(lines)
                while view:
                    view = view[os.write(fd, view) :]
                if self._fsync:
                    os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):  # else tried again before the next write
                    os.ftruncate(fd, self._good_size)
                raise
            self._good_size += len(lines)
            self._size = self._good_size
            self._lines += lines.count(b"\n")

        if self._run_in_thread is not None and (self._fsync or compact):  # never block the reactor on a disk
            written = self._run_in_thread(write)
        else:
            try:
                write()
                written = succeed(None)
            except OSError:
                written = fail()
        self._in_flight = written
        self._writing = merged

        def done(result: object) -> None:
            self._in_flight = None
            self._writing = {}
            if isinstance(result, Failure):
                self._failing = True
                self._write_failures.holds(error=result.value)
                error = Failure(StoreUnavailable("clicks cannot be stored now", detail=str(result.value)))
                if self.running:  # kept for the next try; on stop there is none
                    self.counter.give_back(own_counts)
                for _, waiter in waiting:
                    waiter.errback(error)
                return
            if self._failing:
                self._failing = False
                self._write_failures.ended()
            try:
                self._totals.add_all(merged)
            except Exception:  # pragma: no cover - no memory, or a bug: the clicks are in the file
                log.failure("Could not add written clicks to the totals (the next start-up reads them)")
            self.acknowledged += own + sum(sum(batch.values()) for batch, _ in waiting)
            self.counter.taken -= own  # now in acknowledged
            for _, waiter in waiting:
                waiter.callback(None)
            if self._waiting and self._soon is None:
                self._soon = self._clock.callLater(0, self._write_now)

        return written.addBoth(done)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for call in (self._timer, self._soon):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._soon = None
        finished: Deferred[None] = Deferred()

        def drain(_: object = None) -> None:
            if self._in_flight is not None:
                self._in_flight.addBoth(drain)
                return
            if self._waiting or self.counter.pending:
                self._write().addBoth(drain)
                return
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._write_failures.stop()  # after the last write: what it met is said
            finished.callback(None)

        drain()
        return finished
