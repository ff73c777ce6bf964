"""Rate limits on adds, per client address: a token bucket each (``--add-rate``, ``--add-burst``).

A client may add ``burst`` links at once, then ``rate`` a second; past that an add is answered 429
with ``Retry-After`` (whole seconds until a token is back), on the fast path and the general path
alike, and counted in ``goto_adds_rate_limited`` (a browser, whose adds the fast path leaves to
twisted.web, gets the HTML error page with the form; the API a problem document). Redirects are never limited (nor slowed: the
check runs for adds only). The table of clients is bounded (:data:`MAX_CLIENTS`, least recently
seen dropped first); a client dropped from it starts again with a full bucket, so the bound
costs at most one burst per forgotten client.

A client is an IPv4 address, or an IPv6 /64 (:func:`rate_bucket`): one IPv6 subscriber is given a
/64 (or more) and picks any address in it, so a bucket per full IPv6 address would give each
subscriber 2^64 buckets.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import OrderedDict
from typing import Any, Callable

from twisted.internet.interfaces import IReactorTime
from twisted.web.http import datetimeToString
from twisted.web.server import NOT_DONE_YET, Request

from goto_tw.clients import ClientAddresses
from goto_tw.errors import RateLimited
from goto_tw.fastpath import FastAnswer
from goto_tw.metrics import Metrics
from goto_tw.timestamps import PerSecond
from goto_tw.web import PlainResource, RenderRefusal, text_response, write_refusal_page

#: Client addresses tracked at once.
MAX_CLIENTS = 100_000


def limited_message(wait: int) -> str:
    """What a client over its add rate is told, with its ``Retry-After`` of ``wait`` seconds in
    words (``--add-rate 1/h`` makes waits of an hour: "shortly" would be a lie)."""
    if wait < 120:
        when = "1 second" if wait == 1 else f"{max(wait, 1)} seconds"
    elif wait < 7200:
        when = f"{math.ceil(wait / 60)} minutes"
    else:
        when = f"{math.ceil(wait / 3600)} hours"
    return f"Too many links added from your address; try again in {when}."


def parse_rate(value: str) -> float:
    """``--add-rate``: ``N/s``, ``N/m`` or ``N/h`` (or a bare ``N``, per second): adds per second."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(?:/\s*([smh]))?\s*", value)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"expected N/s, N/m or N/h, not {value!r}")
    per = {"s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]
    return float(match.group(1)) / per


def rate_bucket(client: str) -> str:
    """The bucket a client address spends: an IPv4 address itself (also written IPv4-mapped,
    ``::ffff:192.0.2.1``), an IPv6 address's /64 (``2001:db8:1:2::/64``); anything else as it is."""
    if ":" not in client:
        return client  # IPv4 (or no address): the common case, no parsing
    try:
        address = ipaddress.IPv6Address(client.split("%", 1)[0])
    except ValueError:
        return client
    mapped = address.ipv4_mapped
    if mapped is not None:
        return str(mapped)
    return f"{ipaddress.IPv6Address(int(address) >> 64 << 64)}/64"


#: QR codes a client may have rendered (one not kept already: see :class:`~goto_tw.qr.QRCodes`)
#: a second, and at once, while adds are rate-limited: a PNG costs the reactor about 10 ms.
QR_RENDER_RATE = 2.0
QR_RENDER_BURST = 20
#: QR codes all clients together may have rendered a second, and at once: a fifth to a third of a
#: core at 10-16 ms a code (SVG or PNG; a 64-character key's costs the most), and a burst holds
#: redirects up 0.2-0.3 s. Without it, clients with many addresses (an IPv6 /56 is 256 buckets of
#: the per-client limit; 50 IPv4 addresses will do) kept the reactor rendering and every redirect
#: waited; with a burst of 40, one every 2 s held them up 0.3-0.4 s (review 35's second read). Each
#: result page asks for its link's code: past 20 browser adds a second some show none (a 503).
QR_TOTAL_RATE = 20.0
QR_TOTAL_BURST = 20
#: What a client asking past its own rate is told, and what anyone is told past everyone's.
QR_CLIENT_TEXT = "Too many QR codes asked for from this address; try again later."
QR_BUSY_TEXT = "Too many QR codes are being made right now; try again shortly."
#: The one bucket of all clients together.
_EVERYONE = "*"


class AddLimiter:
    """Token buckets per client: ``admit(client)`` is ``None`` (go ahead) or seconds to wait."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: IReactorTime,
        metrics: Metrics | None = None,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._metrics = metrics
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def admit(self, client: str) -> int | None:
        """Take a token for ``client`` (its :func:`rate_bucket`); ``None`` if it had one, else whole
        seconds until it will."""
        client = rate_bucket(client)
        now = self._clock.seconds()
        buckets = self._buckets
        tokens, last = buckets.get(client, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens >= 1.0:
            buckets[client] = (tokens - 1.0, now)
            waited = None
        else:
            buckets[client] = (tokens, now)
            waited = max(1, math.ceil((1.0 - tokens) / self._rate))
            if self._metrics is not None:
                self._metrics.rate_limited += 1
        buckets.move_to_end(client)
        if len(buckets) > self._max_clients:
            buckets.popitem(last=False)
        return waited

    def give_back(self, client: str) -> None:
        """Return the token :meth:`admit` just took for ``client``: what it was for did not happen."""
        client = rate_bucket(client)
        bucket = self._buckets.get(client)
        if bucket is not None:
            tokens, last = bucket
            self._buckets[client] = (min(self._burst, tokens + 1.0), last)


class LimitAdds(PlainResource):
    """Wraps a resource that adds links (``/add``, ``/api/v1/links``): each add first takes a token."""

    isLeaf = True

    def __init__(
        self,
        inner: Any,
        limiter: AddLimiter,
        clients: ClientAddresses,
        is_add: Callable[[Request], bool],
        private: bool = False,
    ) -> None:
        """``private``: a ``--private`` instance, whose pages say that adding needs a key."""
        super().__init__()
        self._inner = inner
        self._limiter = limiter
        self._clients = clients
        self._is_add = is_add
        self._private = private

    def render(self, request: Request) -> Any:
        if self._is_add(request):
            wait = self._limiter.admit(self._clients.of_request(request))
            if wait is not None:
                error = RateLimited(limited_message(wait), wait)
                write_refusal_page(request, 429, str(error), {b"retry-after": b"%d" % wait}, self._private)
                return NOT_DONE_YET
        return self._inner.render(request)


def is_api_add(request: Request) -> bool:
    """Whether a request under ``/api/v1/links`` creates a link."""
    return request.method == b"POST" and (request.postpath or []) in ([], [b""])


def fast_gate(
    limiter: AddLimiter, clients: ClientAddresses, clock: IReactorTime
) -> Callable[[str, bytes], FastAnswer | None]:
    """The check the fast path makes before an add: ``None`` to go ahead, or its 429 answer."""
    date = PerSecond(clock, datetimeToString)

    def gate(peer: str, head: bytes) -> FastAnswer | None:
        wait = limiter.admit(clients.of_head(peer, head))
        if wait is None:
            return None
        text = limited_message(wait).encode("utf-8") + b"\n"
        return 429, len(text), text_response(429, date.now(), text, wait, vary_accept=True)

    return gate


class RenderBudget:
    """Who may have a QR code rendered now (a :data:`~goto_tw.web.RenderGate`): each client within
    its own rate (else a 429), and all of them together within :data:`QR_TOTAL_RATE` (else a 503,
    the service is busy), each with ``Retry-After``. A render refused as a 503 costs its client
    nothing: it did not happen, and the client's next ask should not meet a 429 for it."""

    def __init__(
        self,
        clients: ClientAddresses,
        clock: IReactorTime,
        *,
        rate: float = QR_RENDER_RATE,
        burst: int = QR_RENDER_BURST,
        total_rate: float = QR_TOTAL_RATE,
        total_burst: int = QR_TOTAL_BURST,
    ) -> None:
        self._clients = clients
        self._each = AddLimiter(rate, burst, clock)
        self._all = AddLimiter(total_rate, total_burst, clock, max_clients=1)

    def __call__(self, request: Request) -> RenderRefusal | None:
        client = self._clients.of_request(request)
        wait = self._each.admit(client)
        if wait is not None:
            return RenderRefusal(429, QR_CLIENT_TEXT, wait)
        wait = self._all.admit(_EVERYONE)
        if wait is not None:
            self._each.give_back(client)
            return RenderRefusal(503, QR_BUSY_TEXT, wait)
        return None
