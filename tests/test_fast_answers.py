"""FastAnswers' answers that wait for the store (a slave's miss, an add): every outcome of the
store's Deferred, driven by hand. The byte equality with twisted.web is the property tests' job
(tests/test_fastpath_property.py); these pin what the one callback on the store's answer does."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from zope.interface import implementer

from goto_tw.errors import KeyNotFound, StoreUnavailable
from goto_tw.interfaces import ILocalLookup, IURLStore
from goto_tw.web import FastAnswers
from tests.conftest import LogCapture
from tests.helpers import failure_of, result_of


@implementer(IURLStore, ILocalLookup)
class HandStore:
    """A store holding nothing locally, whose calls wait until the test answers them."""

    def __init__(self) -> None:
        self.calls: list[Deferred[Any]] = []

    def _call(self) -> Deferred[Any]:
        self.calls.append(Deferred())
        return self.calls[-1]

    def get(self, key: str) -> Deferred[str]:
        return self._call()

    def put(self, url: str) -> Deferred[str]:
        return self._call()

    def lookup(self, key: str) -> str | None:
        return None

    def count(self) -> int:
        return 0


def answers(clock: Clock | None = None) -> tuple[FastAnswers, HandStore, list[str]]:
    store, clicks = HandStore(), []
    clock = clock or Clock()
    clock.advance(1_700_000_000)

    class Clicks:
        def click(self, key: str) -> None:
            clicks.append(key)

    fast = FastAnswers(store, store, "go.example", clock, Clicks())  # type: ignore[arg-type]
    return fast, store, clicks


def test_a_miss_answered_is_the_redirect_and_its_click() -> None:
    """The master's URL becomes the redirect, and a GET (not a HEAD) counts its click."""
    fast, store, clicks = answers()
    get, head = fast.redirect_later("GET", "k"), fast.redirect_later("HEAD", "k")
    for call in store.calls:
        call.callback("https://a.example/x")
    for answer in (result_of(get), result_of(head)):
        assert answer[0] == 302 and b"\r\nLocation: https://a.example/x\r\n" in answer[2]
    assert clicks == ["k"]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_refused_miss_is_the_errors_text_and_a_cancelled_one_passes_on(method: str) -> None:
    """A store error is its status and message (HEAD: headers only); a cancel passes through,
    answered with nothing."""
    fast, store, clicks = answers()
    refused, cancelled = fast.redirect_later(method, "k"), fast.redirect_later(method, "j")
    store.calls[0].errback(KeyNotFound("no link is stored under 'k'"))
    store.calls[1].errback(CancelledError())
    status, length, data = result_of(refused)
    assert status == 404 and data.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert length == ("-" if method == "HEAD" else len(b"no link is stored under 'k'\n"))
    assert data.endswith(b"\r\n\r\n") if method == "HEAD" else data.endswith(b"no link is stored under 'k'\n")
    assert failure_of(cancelled).check(CancelledError)
    assert clicks == []


def test_an_add_answered_is_the_short_url_dated_when_it_was_asked() -> None:
    """The key the store gives becomes the short URL; the Date is the one of the request."""
    clock = Clock()
    fast, store, _ = answers(clock)
    added = fast.add("GET", b"/add?url=https%3A%2F%2Fa.example%2F", b"")
    assert isinstance(added, Deferred)
    clock.advance(5)
    store.calls[0].callback("7")
    status, length, data = result_of(added)
    assert status == 200 and data.endswith(b"\r\n\r\nhttp://go.example/7\n") and length == 20
    assert b"\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\n" in data


def test_an_add_refused_a_bug_and_a_cancel(log_events: LogCapture) -> None:
    """A store error is its status, message and Retry-After; anything else a 500 with one log line
    naming the request; a cancel passes through, logged nowhere."""
    fast, store, _ = answers()
    adds = [fast.add("POST", b"/add", b"url=https%3A%2F%2Fa.example%2F") for _ in range(3)]
    store.calls[0].errback(StoreUnavailable("the link could not be stored now", detail="disk full"))
    store.calls[1].errback(RuntimeError("a bug"))
    store.calls[2].errback(CancelledError())
    refused, bug, cancelled = adds
    assert isinstance(refused, Deferred) and isinstance(bug, Deferred) and isinstance(cancelled, Deferred)
    status, _, data = result_of(refused)
    assert status == 503 and b"\r\nRetry-After: " in data and data.endswith(b"stored now\n")
    assert b"disk full" not in data
    assert result_of(bug)[0] == 500
    assert failure_of(cancelled).check(CancelledError)
    failures = [e for e in log_events.events if e.get("log_failure") is not None]
    assert len(failures) == 1 and "Failed to answer b'POST' b'/add'" in log_events.messages()[0]
