"""The master's store on PostgreSQL: any number of masters share one database.

Redirects are answered from a bounded LRU cache (``--cache-size``); a miss asks the database once,
however many requests want that key at the same moment. Adds that arrive together are written in
one transaction (group commit): one thread hop, one ``INSERT``, one commit, and each is acknowledged
only once that commit succeeded. Keys are base 62 of values of a database sequence, so they are short
and unique across every master; a URL is unique in the table (through its hash), so the same URL
added through two masters at once gets one key.

When the database cannot be used, the store logs it once, keeps answering the keys it has cached,
answers everything else with :class:`StoreUnavailable` at once (no pile-up of waiting requests), lets
one call through a second as a probe, and logs again when the database answers.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from goto_tw.errors import NO_CUSTOM_KEYS, GotoError, InvalidKey, KeyNotFound, LinkUnusable, StoreUnavailable
from goto_tw.fanout import Coalescing
from goto_tw.interfaces import IDatabaseHealth, ILinkAdder, ILocalLookup, IURLStore
from goto_tw.keys import is_reserved, is_valid_key, key_for_index
from goto_tw.pgdb import Database, DatabaseBusy, DatabaseDown, TransactionConflict
from goto_tw.throttledlog import ThrottledError
from goto_tw.urls import URLPolicy, accept_url, as_stored

log = Logger()

#: Most adds written in one transaction.
MAX_BATCH = 500
#: Most adds waiting for their transaction; beyond it an add is answered 503 "too busy" at once.
MAX_PENDING_PUTS = 10_000
#: Most look-ups waiting for the database at once; beyond it a cache miss is answered 503 at once.
MAX_PENDING_GETS = 10_000
#: Seconds between probes while the database is down.
RETRY_INTERVAL = 1.0
#: Attempts at a batch whose fresh keys were taken meanwhile (custom or imported keys).
KEY_ATTEMPTS = 5
#: What a person is told for a key whose row holds something that is not a URL the service stores.
BAD_ROW_MESSAGE = "this link cannot be followed now"
#: Seconds between two log lines about such rows (a hot key would flood the log).
BAD_ROW_LOG_INTERVAL = 10.0

#: Keys a master fetches from the sequence beyond what a batch needs, so that most batches need none.
#: A crash loses the spare ones (gaps in the keys, never a key twice).
SPARE_KEYS = 64

_INSERT_OR_FIND = """
WITH input AS (SELECT * FROM unnest(%s::text[], %s::text[]) AS t(key, url)),
inserted AS (
    INSERT INTO goto_links (key, url) SELECT key, url FROM input ON CONFLICT DO NOTHING RETURNING key, url
)
SELECT key, url, true FROM inserted
UNION ALL
SELECT key, url, false FROM goto_links
WHERE canonical AND url_hash IN (SELECT goto_url_hash(url) FROM input)
"""
_FIND_URLS = """
SELECT key, url, false FROM goto_links
WHERE canonical AND url_hash IN (SELECT goto_url_hash(u) FROM unnest(%s::text[]) AS u)
"""


class KeyReserve:
    """Fresh keys from the shared sequence, fetched ahead in blocks; used by one writer at a time.

    Values of the sequence are never reused (a batch that failed leaves its keys unused), reserved
    keys are skipped, and a key taken meanwhile (custom or imported) makes the batch try others.
    """

    def __init__(self, spare: int = SPARE_KEYS) -> None:
        self._spare = spare
        self._keys: list[str] = []

    def take(self, connection: Any, count: int) -> list[str]:
        while len(self._keys) < count:
            wanted = count - len(self._keys) + self._spare
            rows = connection.execute(
                "SELECT nextval('goto_key_index') FROM generate_series(1, %s)", (wanted,)
            ).fetchall()
            self._keys.extend(key for key in (key_for_index(row[0]) for row in rows) if not is_reserved(key))
        taken, self._keys = self._keys[:count], self._keys[count:]
        return taken


def write_batch(
    connection: Any, urls: list[str], reserve: KeyReserve | None = None
) -> dict[str, tuple[str, bool]]:
    """Store each of ``urls`` (distinct, valid) under a fresh key, or find the key it already has.

    Runs in a pool thread; returns url -> (key, whether this batch inserted it) for every URL, once
    committed. The usual batch is one
    round trip: ``BEGIN``, one statement that inserts the new URLs and finds the known ones, and
    ``COMMIT``, sent together (pipeline mode). A URL another master is adding at this very moment,
    or a fresh key taken meanwhile, is settled by a second transaction.
    """
    if reserve is None:
        reserve = KeyReserve(spare=0)
    urls = sorted(urls)  # every master locks new URLs in one order: no deadlock between two batches
    keys = reserve.take(connection, len(urls))
    with connection.pipeline():
        with connection.transaction():
            cursor = connection.execute(_INSERT_OR_FIND, (keys, urls))
        rows = cursor.fetchall()
    found = {url: (key, new) for key, url, new in rows}
    missing = [url for url in urls if url not in found]
    for _ in range(KEY_ATTEMPTS):
        if not missing:
            return found
        with connection.transaction():
            rows = connection.execute(_FIND_URLS, (missing,)).fetchall()
            found.update((url, (key, new)) for key, url, new in rows)
            missing = [url for url in missing if url not in found]
            if missing:
                keys = reserve.take(connection, len(missing))
                rows = connection.execute(_INSERT_OR_FIND, (keys, missing)).fetchall()
                found.update((url, (key, new)) for key, url, new in rows)
                missing = [url for url in missing if url not in found]
    if missing:
        raise RuntimeError(f"could not find free keys for {len(missing)} URLs in {KEY_ATTEMPTS} attempts")
    return found


def allocate_keys(connection: Any, count: int) -> list[str]:
    """``count`` fresh keys from the shared sequence, reserved ones skipped (values are never reused)."""
    return KeyReserve(spare=0).take(connection, count)


def _key_of(added: tuple[str, bool]) -> str:
    return added[0]


def read_url(connection: Any, key: str) -> str | None:
    row = connection.execute("SELECT url FROM goto_links WHERE key = %s", (key,)).fetchone()
    return None if row is None else str(row[0])


def count_links(connection: Any) -> int:
    """The number of links: exact for small tables, the planner's estimate past a million."""
    row = connection.execute(
        "SELECT CASE WHEN c.reltuples > 1000000 THEN c.reltuples::bigint "
        "ELSE (SELECT count(*) FROM goto_links) END FROM pg_class c WHERE c.oid = 'goto_links'::regclass"
    ).fetchone()
    return int(row[0]) if row is not None else 0


class _PendingPut:
    __slots__ = ("done", "url")

    def __init__(self, url: str) -> None:
        self.url = url
        #: Fires with (key, whether the link is new).
        self.done: Deferred[tuple[str, bool]] = Deferred()


@implementer(IURLStore, ILocalLookup, IDatabaseHealth, ILinkAdder)
class PGStore:
    """A caching, group-committing, outage-aware :class:`IURLStore` over a PostgreSQL database."""

    def __init__(
        self,
        database: Database,
        clock: IReactorTime,
        *,
        cache_size: int = 100_000,
        retry_interval: float = RETRY_INTERVAL,
        max_batch: int = MAX_BATCH,
        max_pending_puts: int = MAX_PENDING_PUTS,
        max_pending_gets: int = MAX_PENDING_GETS,
    ) -> None:
        if cache_size < 1:
            raise ValueError("the cache must hold at least one pair")
        self._db = database
        self._clock = clock
        #: Checks a URL before it is stored (blocklist, own host): raises InvalidURL to refuse it.
        self.policy: URLPolicy | None = None
        self._cache_size = cache_size
        self._retry_interval = retry_interval
        self._max_batch = max_batch
        self._max_pending_puts = max_pending_puts
        self._max_pending_gets = max_pending_gets
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._gets: Coalescing[str, str] = Coalescing()
        self._puts: Coalescing[str, tuple[str, bool]] = Coalescing()
        self._pending: list[_PendingPut] = []
        self._keys = KeyReserve()  # used by the one batch being written at a time
        self._writing = False
        self._flush_scheduled = False
        self._gets_waiting = 0
        self._down_since: float | None = None
        self._down_detail = ""
        self._next_probe_at = 0.0
        self._probing = False
        self._count = 0
        self._checks: Coalescing[None, bool] = Coalescing()
        self._bad_rows = ThrottledError(
            log,
            clock,
            "The database holds {url} under {key!r}, not a URL this service would store: answered 503, "
            "not cached ({unlogged} more since the last line)",
            BAD_ROW_LOG_INTERVAL,
        )
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    # --- IURLStore / ILocalLookup ----------------------------------------------------------------

    def count(self) -> int:
        """Links in the database as last counted (see :meth:`refresh_count`)."""
        return self._count

    def lookup(self, key: str) -> str | None:
        url = self._cache.get(key)
        if url is not None:
            self._cache.move_to_end(key)
            self.hits += 1
        return url

    def get(self, key: str) -> Deferred[str]:
        url = self.lookup(key)
        if url is not None:
            return succeed(url)
        if not is_valid_key(key):
            return fail(KeyNotFound.for_key(key))
        self.misses += 1
        return self._gets.call(key, lambda: self._read(key))

    def put(self, url: str) -> Deferred[str]:
        return self.add(url).addCallback(_key_of)

    def add(self, url: str, key: str | None = None) -> Deferred[tuple[str, bool]]:
        """:class:`~goto_tw.interfaces.ILinkAdder`: the link's key, and whether this add made it
        (the API answers 201 or 200 by it). Custom keys are refused: not kept on PostgreSQL yet."""
        if key is not None:
            return fail(InvalidKey(NO_CUSTOM_KEYS))
        try:
            url = accept_url(url, self.policy)
        except GotoError:
            return fail()
        return self._puts.call(url, self._enqueue, url)

    # --- health ----------------------------------------------------------------------------------

    @property
    def database_reachable(self) -> bool:
        """False from the first failed call until the database answers again."""
        return self._down_since is None

    def check_database(self) -> Deferred[bool]:
        """Ask the database now (one call for concurrent checks); fire with whether it answered."""

        def check() -> Deferred[bool]:
            # While the database is down this is refused at once (False), but for the one probe a
            # ``retry_interval``, as every other call.
            asked = self._call(count_links, transaction=False)

            def counted(result: object) -> bool:
                if isinstance(result, int):
                    self._count = result
                    return True
                return False

            return asked.addBoth(counted)

        return self._checks.call(None, check)

    def refresh_count(self) -> Deferred[None]:
        """Count the links again (for health and metrics); never fails."""
        return self.check_database().addCallback(lambda _: None)

    # --- reading ---------------------------------------------------------------------------------

    def _read(self, key: str) -> Deferred[str]:
        if self._gets_waiting >= self._max_pending_gets:
            return fail(
                StoreUnavailable("the service is too busy now", detail="too many database look-ups waiting")
            )
        self._gets_waiting += 1

        def read(connection: Any) -> str | None:
            return read_url(connection, key)

        def answered(url: str | None) -> str:
            if url is None:
                raise KeyNotFound.for_key(key)
            if as_stored(url) is None:  # a row written by hand or another program: never redirected to
                self._bad_rows.error(key=key, url=repr(url)[:200])
                raise LinkUnusable(BAD_ROW_MESSAGE, detail=f"the stored URL of {key!r} is not valid")
            self._remember(key, url)
            return url

        def finished(result: object) -> object:
            self._gets_waiting -= 1
            return result

        asked: Deferred[str | None] = self._call(read, transaction=False)
        got = asked.addCallback(answered)
        got.addBoth(finished)
        return got

    def _remember(self, key: str, url: str) -> None:
        cache = self._cache
        cache[key] = url
        cache.move_to_end(key)
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
            self.evictions += 1

    # --- writing (group commit) ------------------------------------------------------------------

    def _enqueue(self, url: str) -> Deferred[tuple[str, bool]]:
        if len(self._pending) >= self._max_pending_puts:
            return fail(StoreUnavailable("the service is too busy now", detail="too many adds waiting"))
        refused = self._refuse_while_down(probe_allowed=not self._writing)
        if refused is not None:
            return refused
        pending = _PendingPut(url)
        self._pending.append(pending)
        self._schedule_flush()
        return pending.done

    def _schedule_flush(self) -> None:
        if not self._writing and not self._flush_scheduled and self._pending:
            self._flush_scheduled = True
            self._clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._writing or not self._pending:
            return
        batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
        self._writing = True
        urls = [pending.url for pending in batch]

        def write(connection: Any) -> dict[str, tuple[str, bool]]:
            return write_batch(connection, urls, self._keys)

        def written(keys: dict[str, tuple[str, bool]]) -> None:
            for pending in batch:
                key, new = keys[pending.url]
                self._remember(key, pending.url)
                self._count += new  # links this batch made; a URL found is counted already
                pending.done.callback((key, new))

        def not_written(failure: Failure) -> None:
            if failure.check(TransactionConflict):
                log.warn(
                    "Writing {count} links was rolled back ({error}); answering 503",
                    count=len(batch),
                    error=failure.value,
                )
                failure = Failure(
                    StoreUnavailable("the link could not be stored now", detail=str(failure.value))
                )
            elif not failure.check(GotoError):
                log.failure("Writing {count} links to the database failed", failure, count=len(batch))
                failure = Failure(
                    StoreUnavailable("the link could not be stored now", detail=str(failure.value))
                )
            for pending in batch:
                pending.done.errback(failure)

        def next_batch(_: object) -> None:
            self._writing = False
            if self._down_since is not None:  # every add still waiting gets its answer now
                waiting, self._pending = self._pending, []
                for pending in waiting:
                    pending.done.errback(self._unavailable())
            self._schedule_flush()

        self._call(write, probe=True, transaction=False).addCallbacks(written, not_written).addBoth(
            next_batch
        )

    # --- the database's health -------------------------------------------------------------------

    def _refuse_while_down(self, probe_allowed: bool = True) -> Deferred[Any] | None:
        """Fail at once while the database is down, except for one probe a ``retry_interval``."""
        if self._down_since is None:
            return None
        if probe_allowed and not self._probing and self._clock.seconds() >= self._next_probe_at:
            return None
        return fail(self._unavailable())

    def _unavailable(self) -> StoreUnavailable:
        return StoreUnavailable(
            "the database is unavailable now", detail=self._down_detail or "database down"
        )

    def _call(
        self, function: Callable[[Any], Any], *, probe: bool = False, transaction: bool = True
    ) -> Deferred[Any]:
        """Run ``function`` on the database, failing fast while it is down (one probe at a time);
        ``probe``: a call already let through (a batch of adds admitted as the probe)."""
        if not probe:
            refused = self._refuse_while_down()
            if refused is not None:
                return refused
        is_probe = self._down_since is not None
        if is_probe:
            self._probing = True
        asked = self._db.run(function, transaction=transaction)

        def note(result: object) -> object:
            if is_probe:
                self._probing = False
            now = self._clock.seconds()
            if isinstance(result, Failure) and result.check(DatabaseBusy):  # the database may be fine
                return Failure(StoreUnavailable("the service is too busy now", detail=str(result.value)))
            if isinstance(result, Failure) and result.check(DatabaseDown):
                self._next_probe_at = now + self._retry_interval
                if self._down_since is None:
                    self._down_since = now
                    self._down_detail = str(result.value)
                    log.error(
                        "The database is unavailable ({detail}); answering cached keys only, 503 for "
                        "the rest, until it is back",
                        detail=self._down_detail,
                    )
                return Failure(self._unavailable())
            if self._down_since is not None:
                log.info("The database answers again after {seconds:.1f} s", seconds=now - self._down_since)
                self._down_since = None
                self._down_detail = ""
            return result

        return asked.addBoth(note)
