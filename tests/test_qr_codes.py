"""QR codes are rendered once and kept, a bounded number of them; rendering more than a client's
share a second is a 429 (review 33: every request rendered anew, about 10 ms of the reactor each)."""

from __future__ import annotations

from typing import Callable

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from goto_tw import qr
from goto_tw.clients import ClientAddresses
from goto_tw.metrics import Metrics
from goto_tw.qr import QRCodes, qr_png, qr_svg
from goto_tw.ratelimit import RenderBudget
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from goto_tw.tap import make_root
from goto_tw.web import GotoRoot
from tests.wire import exchange


def test_codes_are_kept_up_to_their_bound_the_oldest_dropped() -> None:
    codes = QRCodes(max_codes=3)
    made = [codes.make(f"http://go.example/{number}", "svg") for number in range(5)]
    assert made[4] == qr_svg("http://go.example/4")
    assert len(codes) == 3
    assert (
        codes.kept("http://go.example/0", "svg") is None and codes.kept("http://go.example/1", "svg") is None
    )
    assert codes.kept("http://go.example/4", "svg") == made[4]
    assert codes.kept("http://go.example/4", "png") is None
    assert codes.make("http://go.example/4", "png") == qr_png("http://go.example/4")


def _site(
    renders: list[str],
    monkeypatch: pytest.MonkeyPatch,
    rate: float = 1.0,
    burst: int = 2,
    total_rate: float = 100.0,
    total_burst: int = 100,
) -> tuple[GotoSite, Clock]:
    store = URLStore()
    for number in range(5):
        store.put(f"https://qr.example/{number}")
    clock = Clock()
    root = make_root(store, "http://go.example", Metrics("master"))
    assert isinstance(root, GotoRoot)
    root.may_render = RenderBudget(
        ClientAddresses(), clock, rate=rate, burst=burst, total_rate=total_rate, total_burst=total_burst
    )

    def counted(render: Callable[[str], bytes]) -> Callable[[str], bytes]:
        def render_counted(text: str) -> bytes:
            renders.append(text)
            return render(text)

        return render_counted

    monkeypatch.setattr(qr, "qr_png", counted(qr.qr_png))
    monkeypatch.setattr(qr, "qr_svg", counted(qr.qr_svg))
    return GotoSite(root, Metrics("master"), reactor=clock), clock


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_a_code_asked_for_again_is_not_rendered_again(monkeypatch: pytest.MonkeyPatch) -> None:
    renders: list[str] = []
    site, _ = _site(renders, monkeypatch)
    first = exchange(site, b"GET /1.qr?format=png HTTP/1.0\r\n\r\n")
    again = exchange(site, b"GET /1.qr?format=png HTTP/1.0\r\n\r\n")
    assert _status(first) == _status(again) == 200
    assert first.partition(b"\r\n\r\n")[2] == again.partition(b"\r\n\r\n")[2] == qr_png("http://go.example/1")
    assert renders == ["http://go.example/1"]


def test_renders_past_a_clients_share_are_429_but_kept_codes_are_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    renders: list[str] = []
    site, clock = _site(renders, monkeypatch)
    assert [_status(exchange(site, b"GET /%d.qr HTTP/1.0\r\n\r\n" % number)) for number in range(2)] == [
        200,
        200,
    ]
    refused = exchange(site, b"GET /2.qr HTTP/1.0\r\n\r\n")
    assert _status(refused) == 429 and b"\r\nRetry-After: 1\r\n" in refused
    assert _status(exchange(site, b"GET /0.qr HTTP/1.0\r\n\r\n")) == 200, "kept: no render, no limit"
    assert _status(exchange(site, b"GET /zz.qr HTTP/1.0\r\n\r\n")) == 404, "an unknown key renders nothing"
    clock.advance(1)
    assert _status(exchange(site, b"GET /2.qr HTTP/1.0\r\n\r\n")) == 200
    assert len(renders) == 3


def test_renders_past_everyones_share_are_503_whoever_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review 35: the limit was per client only, so clients with many addresses (an IPv6 /56 is 256
    buckets) had 5,120 PNGs rendered in a burst and kept the reactor busy: another client's redirect
    took 1.8 s. Past everyone's share a render is a 503 with Retry-After; kept codes are still served."""
    renders: list[str] = []
    site, clock = _site(renders, monkeypatch, total_rate=1.0, total_burst=3)
    clients = [IPv4Address("TCP", f"198.51.100.{n}", 1) for n in range(5)]
    answers = [exchange(site, b"GET /%d.qr?format=png HTTP/1.0\r\n\r\n" % n, clients[n]) for n in range(5)]
    assert [_status(answer) for answer in answers] == [200, 200, 200, 503, 503]
    assert b"Retry-After: 1" in answers[3] and b"being made right now" in answers[3]
    assert len(renders) == 3
    assert _status(exchange(site, b"GET /0.qr?format=png HTTP/1.0\r\n\r\n", clients[4])) == 200, "kept"
    clock.advance(1)
    assert _status(exchange(site, b"GET /3.qr?format=png HTTP/1.0\r\n\r\n", clients[3])) == 200


def test_a_render_refused_as_busy_costs_its_client_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review 35 left this: a 503 (everyone's share spent) still took the client's own token, so a
    client that met only 503s was then told 429 for renders it never had."""
    renders: list[str] = []
    site, clock = _site(renders, monkeypatch, rate=0.1, burst=1, total_rate=1.0, total_burst=1)
    other, client = IPv4Address("TCP", "198.51.100.1", 1), IPv4Address("TCP", "198.51.100.2", 1)
    assert _status(exchange(site, b"GET /0.qr HTTP/1.0\r\n\r\n", other)) == 200
    assert _status(exchange(site, b"GET /1.qr HTTP/1.0\r\n\r\n", client)) == 503
    clock.advance(1)  # everyone's share is back; the client's own (one in 10 s) never went
    assert _status(exchange(site, b"GET /1.qr HTTP/1.0\r\n\r\n", client)) == 200
    assert renders == ["http://go.example/0", "http://go.example/1"]
