"""The seams between the parts: a store the front end talks to, and the log a master writes through.

The web front end and the RPC resource depend only on :class:`IURLStore`, so a master's
:class:`~goto_tw.store.URLStore` and a slave's :class:`~goto_tw.proxystore.ProxyStore` are
interchangeable behind them. Both return Deferreds, so callers never care which one they hold.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Interface


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

    def lookup(key: str) -> str | None:
        """Return the URL under ``key`` if this store holds it locally, else ``None``, at once.

        A synchronous look-up for the redirect fast path; ``None`` means "ask ``get``", not
        "unknown".
        """

    def count() -> int:
        """Return how many pairs this store holds (for a slave: how many it has cached)."""


class IRecordLog(Interface):
    """Where a master makes its pairs durable: an append-only record log."""

    def append(key: str, url: str) -> Deferred[None]:
        """Return a Deferred firing with ``None`` once the record is as safe as the log promises.

        It fails with :class:`~goto_tw.errors.StoreUnavailable` when the record could not be written;
        such a record is never acknowledged and never left half-written before a later good one.
        """
