"""The seams between the parts: a store the front end talks to, and the log a master writes through.

A store plays several roles, each its own interface so each caller depends on just the one it
uses: :class:`IURLStore` (asynchronous get/put: the web pages, the JSON API, the RPC resource),
:class:`ILocalLookup` (a synchronous look-up of what is held in this process: the fast path),
:class:`IKnownKeys` (why a store that holds every link has none under a key, at once: the master's
``Store.Get``), and :class:`IMasterHealth` (whether the master behind a slave answers:
``/_goto/health``). A master's :class:`~goto_tw.store.URLStore` and a slave's
:class:`~goto_tw.proxystore.ProxyStore` are interchangeable behind the first two; only a master's
file store provides the third, only a slave's store the fourth.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from goto_tw.changes import Changes
from goto_tw.errors import GotoError


class IURLStore(Interface):
    """A key -> long URL map that hands out short keys."""

    def get(key: str) -> Deferred[str]:
        """Return a Deferred firing with the long URL stored under ``key``.

        It fails with :class:`~goto_tw.errors.KeyNotFound` for an unknown key and with
        :class:`~goto_tw.errors.StoreUnavailable` when the answer cannot be had now.
        """

    def put(url: str) -> Deferred[str]:
        """Return a Deferred firing with the key under which ``url`` is stored, once it is durable.

        Putting a URL that was added recently (or is being added) answers its existing key, so a
        retried add never creates a second link. It fails with :class:`~goto_tw.errors.InvalidURL` for a refused URL
        and :class:`~goto_tw.errors.StoreUnavailable` when the pair cannot be stored now.
        """

    def count() -> int:
        """Return how many pairs this store holds (for a slave: how many it has cached)."""


class ILocalLookup(Interface):
    """What this process holds itself, answered at once (no Deferred, no I/O)."""

    def lookup(key: str) -> str | None:
        """Return the URL under ``key`` if this store holds it locally, else ``None``, at once.

        A synchronous look-up for the redirect fast path; ``None`` means "ask ``get``", not
        "unknown".
        """


class IKnownKeys(Interface):
    """A store that holds every link itself (a master's file store), so it knows at once why it
    has none under a key: no Deferred, no failure, no I/O."""

    def refusal(key: str) -> GotoError | None:
        """The error ``get(key)`` fails with (:class:`~goto_tw.errors.KeyNotFound`,
        :class:`~goto_tw.errors.KeyDisabled`), at once; ``None`` when ``get`` answers a URL.

        For the master's ``Store.Get`` of keys it has no link under (a typo, a scanner, a key a
        slave was asked for that was never handed out), which would otherwise make a failure, a
        Deferred and its chain per call only to write a fault."""


class IMasterHealth(Interface):
    """A slave's view of its master, for health checks and load balancers."""

    master_reachable = Attribute("False from the first unanswered call until the master answers again.")
    cannot_serve = Attribute(
        "Why the master, answering the last check, said it cannot serve (its database is down), "
        "or None: it answered properly, or did not answer at all."
    )

    def check_master() -> Deferred[bool]:
        """Ask the master now; fire with True only once it has really answered (and can serve).

        Concurrent checks share one call in flight; a check whose caller gives up (cancels) never
        changes what the slave believes about its master.
        """


class IRecordLog(Interface):
    """Where a master makes its pairs durable: an append-only record log."""

    def append(key: str, url: str, custom: bool = False) -> Deferred[None]:
        """Return a Deferred firing with ``None`` once the record is as safe as the log promises.

        ``custom`` marks a key a person chose (not the counter's): it is recorded as such, so it
        never moves where the counter resumes, however much it looks like a counter value.

        It fails with :class:`~goto_tw.errors.StoreUnavailable` when the record could not be written;
        such a record is never acknowledged and never left half-written before a later good one.
        """


class ILinkAdder(Interface):
    """A store that says whether an add made a new link, and takes keys a person chose."""

    def add(url: str, key: str | None = None) -> Deferred[tuple[str, bool]]:
        """Store ``url`` (under exactly ``key`` if given) once durable; fire with ``(key, new)``.

        ``new`` is False when the answer is an existing link: a recent add of the same URL, or
        the same custom pair stored again (a retried add). It fails with
        :class:`~goto_tw.errors.KeyExists` when ``key`` holds another URL,
        :class:`~goto_tw.errors.InvalidKey` for a key the service could not serve,
        :class:`~goto_tw.errors.InvalidURL` and :class:`~goto_tw.errors.StoreUnavailable` as ``put``.
        """


class IClickCounter(Interface):
    """Where a process counts the redirects it answers, one click per redirect."""

    def click(key: str) -> None:
        """Count one click for ``key``: a dict increment, nothing more (it is on the redirect path)."""


class ILinkStats(Interface):
    """What the info page and the API show of a link besides its URL."""

    def stats(key: str) -> Deferred[dict[str, object]]:
        """Fire with ``{"clicks": int, "created": float | None}`` for a stored key.

        ``created`` is ``None`` when unknown (links stored before it was recorded). Fails with
        :class:`~goto_tw.errors.KeyNotFound` or :class:`~goto_tw.errors.StoreUnavailable`.
        """


class IDatabaseHealth(Interface):
    """A master's view of the database behind it (PostgreSQL), for ``/_goto/health``."""

    database_reachable = Attribute("False from the first failed database call until it answers again.")

    def check_database() -> Deferred[bool]:
        """Ask the database now (concurrent checks share one call); fire with whether it answered."""


class ITombstoneLog(Interface):
    """A record log that can also make a key's disabling durable (a tombstone record)."""

    def append_tombstone(key: str, when: int) -> Deferred[None]:
        """Return a Deferred firing once the tombstone of ``key`` is as safe as the log promises."""


class ILinkAdmin(Interface):
    """An operator's view of a master's links: list them, disable one (``/api/v1/links``)."""

    def links(after: str | None, limit: int) -> list[tuple[str, str, int | None]]:
        """Up to ``limit`` ``(key, url, disabled_at)`` in a stable order, starting past ``after``.

        ``disabled_at`` is ``None`` for a live link. An ``after`` that is not a stored key starts at
        the first key that sorts after it in the same order.
        """

    def disable(key: str) -> Deferred[int]:
        """Disable ``key`` for ever; fire with when (seconds since the epoch) once it is durable.

        Fails with :class:`~goto_tw.errors.KeyNotFound` for an unknown key; disabling a disabled
        key answers the first time.
        """

    def disabled_at(key: str) -> int | None:
        """When ``key`` was disabled, or ``None``."""

    def url_of(key: str) -> str | None:
        """The URL stored under ``key``, disabled or not, or ``None``."""


class IChangeSource(Interface):
    """Where slaves learn which keys changed (``Store.Changes``): see :mod:`goto_tw.changes`."""

    def changes(epoch: str, since: int) -> Changes:
        """A :class:`~goto_tw.changes.Changes` after ``since`` in ``epoch``."""
