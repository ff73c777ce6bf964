"""Metric labels: a fixed set whatever clients send (item 8 of issue 9)."""

from __future__ import annotations

from twisted.internet.task import Clock

from goto_tw.metrics import Metrics
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from goto_tw.tap import make_root
from tests.wire import Connection


def test_invented_methods_make_a_bounded_scrape() -> None:
    """5,000 requests with invented methods add one series ("other"), not 5,000."""
    store = URLStore({"abc": "https://a.example/"})
    metrics = Metrics("master")
    site = GotoSite(make_root(store, "go.example", metrics), metrics, reactor=Clock(), store=store)
    baseline = len(metrics.render())
    connection = Connection(site)
    for number in range(5000):
        connection.send(b"M%d /abc HTTP/1.1\r\nHost: x\r\n\r\n" % number)
    assert connection.received().count(b"HTTP/1.1 405 ") == 5000
    scrape = metrics.render()
    assert len(scrape) < baseline + 500, len(scrape)
    assert {method for _, method, _ in metrics.requests} == {"other"}
    assert metrics.requests[("redirect", "other", 405)] == 5000


def test_served_methods_keep_their_labels() -> None:
    """GET, HEAD and POST are labelled as sent."""
    metrics = Metrics("master")
    for method in ("GET", "HEAD", "POST", "get", "DELETE"):
        metrics.count_request("redirect", method, 200)
    assert {method for _, method, _ in metrics.requests} == {"GET", "HEAD", "POST", "other"}
