"""A slave whose master is down still shows the info page (``/KEY+``) of a link it redirects from
its cache, its clicks and creation time "not available right now", rather than a 503 for the page;
a link it does not hold is still the 503 with ``Retry-After``."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from zope.interface import implementer

from goto_tw.errors import MasterUnreachable, NotKept, SlaveStopping, StoreUnavailable
from goto_tw.interfaces import ILinkStats
from goto_tw.metrics import Metrics
from goto_tw.pages import STATS_UNAVAILABLE
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from goto_tw.tap import make_root
from tests.test_fix_http import BROWSER_ACCEPT
from tests.wire import exchange


@implementer(ILinkStats)
class FailingStats:
    """A slave's link statistics while asking its master fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def stats(self, key: str) -> Deferred[dict[str, Any]]:
        return fail(self.error)


def info_of(store: URLStore, error: Exception, key: str) -> bytes:
    metrics = Metrics("slave")
    site = GotoSite(
        make_root(store, "go.example", metrics, stats=FailingStats(error)),
        metrics,
        reactor=Clock(),
        store=store,
        host="go.example",
    )
    return exchange(
        site, b"GET /%s+ HTTP/1.1\r\nHost: go.example\r\nAccept: %s\r\n\r\n" % (key.encode(), BROWSER_ACCEPT)
    )


@pytest.mark.parametrize(
    "error",
    [StoreUnavailable("down"), MasterUnreachable("down"), SlaveStopping("stopping")],
    ids=["unavailable", "unreachable", "stopping"],
)
def test_the_page_of_a_held_link_shows_the_link_without_its_statistics(error: Exception) -> None:
    answer = info_of(URLStore({"abc": "https://a.example/"}), error, "abc")
    assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:200]
    assert b"https://a.example/" in answer and b"http://go.example/abc" in answer
    assert answer.count(STATS_UNAVAILABLE.encode()) == 2


def test_statistics_not_kept_still_say_so() -> None:
    answer = info_of(URLStore({"abc": "https://a.example/"}), NotKept("not kept"), "abc")
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert b"not counted by this server" in answer and STATS_UNAVAILABLE.encode() not in answer


def test_another_failure_of_the_statistics_is_still_an_error() -> None:
    answer = info_of(URLStore({"abc": "https://a.example/"}), RuntimeError("a bug"), "abc")
    assert answer.startswith(b"HTTP/1.1 500")
