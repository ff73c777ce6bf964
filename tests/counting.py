"""A Deferred that counts the callbacks hung on it: how tests hold a hot path to its few callbacks.

Each callback costs its caller CPU when the Deferred fires (about 0.6 us on CPython 3.11: see
:mod:`goto_tw.fanout`), and a slave pays that on every miss and add; a count is how a test can hold
a path to its budget without timing anything.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred


class CountingDeferred(Deferred[Any]):
    """A Deferred whose ``added`` counts the callbacks (pairs, or both-ways ones) added to it."""

    added = 0

    def addCallbacks(self, *args: Any, **kwargs: Any) -> Any:
        self.added += 1
        return super().addCallbacks(*args, **kwargs)

    def addBoth(self, *args: Any, **kwargs: Any) -> Any:
        self.added += 1
        return super().addBoth(*args, **kwargs)

    def addCallback(self, *args: Any, **kwargs: Any) -> Any:
        self.added += 1
        return super().addCallback(*args, **kwargs)

    def addErrback(self, *args: Any, **kwargs: Any) -> Any:
        self.added += 1
        return super().addErrback(*args, **kwargs)
