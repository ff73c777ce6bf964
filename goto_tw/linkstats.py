"""What the info page and the API show of a link besides its URL: its clicks and when it was made.

A master answers from its own :class:`~goto_tw.clicks.ClickBook` and store; a slave asks its master
(``Store.Stats``) and adds the clicks it has counted but not yet sent, so a person who just followed
a link through this slave sees it counted at once.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from goto_tw.clicks import ClickBook, ClickForwarder
from goto_tw.errors import KeyDisabled, KeyNotFound, NotKept, StoreUnavailable
from goto_tw.interfaces import IKnownKeys, ILinkStats, ILocalLookup
from goto_tw.urlmap import canonical_index

#: Seconds since the epoch, or ``None`` when unknown.
Created = Any


class _Created(Protocol):
    def created(self, key: str) -> float | None: ...


@implementer(ILinkStats)
class MasterLinkStats:
    """A master's stats: clicks from its click book, the creation time from its store."""

    def __init__(self, store: _Created, local: ILocalLookup, book: ClickBook) -> None:
        self._store = store
        self._local = local
        self._known = IKnownKeys(store, None)
        self._book = book

    def stats(self, key: str) -> Deferred[dict[str, object]]:
        if self._local.lookup(key) is None:
            # A disabled key is 410, as its redirect is (a slave shows what its master says).
            refused = self._known.refusal(key) if self._known is not None else None
            return fail(refused or KeyNotFound.for_key(key))
        created = self._store.created(key)  # a custom key's own time
        if created is None:
            index = canonical_index(key)
            created = None if index is None else self._book.created(index)
        return succeed({"clicks": self._book.clicks(key), "created": created})


#: Makes one call to the master: ``call("Store.Stats", key)``.
_Call = Callable[..., "Deferred[Any]"]


class _MasterWay(Protocol):
    """A slave's store as link statistics use it (:class:`~goto_tw.proxystore.ProxyStore`)."""

    def ask(self, call: _Call, *params: object) -> Deferred[Any]: ...

    def failing_fast(self) -> Deferred[Any] | None: ...

    def note_disabled(self, key: str) -> None: ...


@implementer(ILinkStats)
class RemoteLinkStats:
    """A slave's stats: the master's ``Store.Stats``, plus the clicks this slave has not sent yet."""

    def __init__(self, store: _MasterWay, call: _Call, forwarder: ClickForwarder) -> None:
        """``store.ask(call, ...)``: the slave's way to the master, which fails fast while the master
        is down, as a look-up does; ``forwarder``: the slave's clicks on their way to the master, which
        the question waits for (so none is counted twice or missed), unless the master is down."""
        self._store = store
        self._call = call
        self._forwarder = forwarder

    def stats(self, key: str) -> Deferred[dict[str, object]]:
        refused = self._store.failing_fast()  # at once, not after a batch on its way to a dead master
        if refused is not None:
            return refused

        # The pending clicks are added in the answer's own callbacks, before the next flush may go.
        def ask() -> Deferred[dict[str, object]]:
            answer: Deferred[Any] = self._store.ask(self._call, "Store.Stats", key)
            return answer.addCallbacks(self._checked, self._refused, callbackArgs=(key,), errbackArgs=(key,))

        asked: Deferred[dict[str, object]] = self._forwarder.asked(ask)
        return asked

    def _refused(self, failure: Failure, key: str) -> Failure:
        """A link the master says is disabled is gone from this slave's cache too, at once: its
        redirect here must not go on while its page says 410."""
        if isinstance(failure.value, KeyDisabled):
            self._store.note_disabled(key)
        return failure

    def _checked(self, answer: object, key: str) -> dict[str, object]:
        if not isinstance(answer, dict):
            raise StoreUnavailable("the link's statistics are not available now", detail=f"answer {answer!r}")
        clicks, created = answer.get("clicks"), answer.get("created")
        if isinstance(clicks, bool) or not isinstance(clicks, (int, float)) or clicks < 0:
            raise StoreUnavailable("the link's statistics are not available now", detail=f"clicks {clicks!r}")
        if created is not None and (isinstance(created, bool) or not isinstance(created, (int, float))):
            raise StoreUnavailable(
                "the link's statistics are not available now", detail=f"created {created!r}"
            )
        return {
            "clicks": int(clicks) + self._forwarder.pending(key),
            "created": None if created is None else float(created),
        }


def stats_struct(stats: dict[str, object]) -> dict[str, object]:
    """Stats as XML-RPC can carry them: clicks as a double (past 32 bits), no ``created`` when unknown."""
    clicks = stats["clicks"]
    assert isinstance(clicks, int)
    struct: dict[str, object] = {"clicks": float(clicks)}
    if stats.get("created") is not None:
        struct["created"] = stats["created"]
    return struct


@implementer(ILinkStats)
class NoLinkStats:
    """Stats of a store that keeps none (a master on PostgreSQL, until its schema holds clicks):
    every question is answered 501, never with made-up figures."""

    def stats(self, key: str) -> Deferred[dict[str, object]]:
        return fail(NotKept("this server does not keep click statistics (its store is PostgreSQL)"))
