"""Review 2, items 4, 12 and 15: one rate-limit token per add whichever path answers it, HTML 401
and 429 pages for browsers, and IPv6 clients limited per /64."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from goto_tw.auth import APIKeys
from goto_tw.clients import ClientAddresses
from goto_tw.metrics import Metrics
from goto_tw.ratelimit import AddLimiter, LimitAdds, fast_gate, is_api_add, is_form_add, rate_bucket
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from goto_tw.tap import make_root
from tests.wire import Connection

HOST = "go.example"
BROWSER_ACCEPT = b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def limited_site(burst: int, clock: Clock, *, private: bool = False) -> GotoSite:
    """The site as ``makeService`` wires it with ``--add-rate 1/m --add-burst BURST``."""
    store = URLStore()
    metrics = Metrics("master")
    clients = ClientAddresses()
    keys = APIKeys(None, clock, (b"sesame",)) if private else None
    root = make_root(store, HOST, metrics, keys=keys, private=private, clients=clients)
    limiter = AddLimiter(1 / 60, burst, clock, metrics)
    root.putChild(b"add", LimitAdds(root.children[b"add"], limiter, clients, is_form_add))
    links = root.children[b"api"].children[b"v1"].children[b"links"]
    root.children[b"api"].children[b"v1"].putChild(b"links", LimitAdds(links, limiter, clients, is_api_add))
    site = GotoSite(root, metrics, reactor=clock, store=store, host=HOST)
    if not private:
        site.add_gate = fast_gate(limiter, clients, clock)
    return site


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# Item 4 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /add?url=https://a.example/%d&key=custom%d HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /add?url=https://a.example/%d&key=k%d HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
    ],
)
def test_a_custom_key_add_on_the_fast_path_costs_one_token(request_bytes: bytes) -> None:
    """With a burst of 4, four custom-key adds (which the fast path leaves to twisted.web) all pass
    and the fifth is 429: each took one token, not two."""
    site = limited_site(4, Clock())
    statuses = []
    for number in range(5):
        connection = Connection(site)
        connection.send(request_bytes % (number, number))
        statuses.append(status_of(connection.received()))
    assert statuses == [200, 200, 200, 200, 429]


def test_the_form_page_and_plain_adds_still_take_their_tokens() -> None:
    """``GET /add?url=`` (the form) takes none; plain adds one each, on one keep-alive connection."""
    site = limited_site(2, Clock())
    connection = Connection(site)
    connection.send(b"GET /add?url= HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(connection.received()) == 200
    for number, expected in ((1, 200), (2, 200), (3, 429)):
        connection = Connection(site)
        connection.send(b"GET /add?url=https://b.example/%d HTTP/1.1\r\nHost: x\r\n\r\n" % number)
        assert status_of(connection.received()) == expected


# Item 15 --------------------------------------------------------------------------------------


def test_ipv6_clients_share_a_bucket_per_64() -> None:
    """Addresses in one /64 (what one IPv6 subscriber gets) share a bucket; another /64 has its own;
    IPv4 clients (and IPv4-mapped IPv6 ones) are limited per address as before."""
    limiter = AddLimiter(1 / 60, 2, Clock())
    assert limiter.admit("2001:db8:1:2::1") is None
    assert limiter.admit("2001:db8:1:2:ffff:ffff:ffff:fffe") is None
    assert limiter.admit("2001:db8:1:2:abcd::7") is not None  # the same /64: its two tokens are gone
    assert limiter.admit("2001:db8:1:3::1") is None  # the next /64
    assert limiter.admit("192.0.2.1") is None
    assert limiter.admit("::ffff:192.0.2.1") is None  # the same client as 192.0.2.1
    assert limiter.admit("192.0.2.1") is not None
    assert limiter.admit("192.0.2.2") is None
    assert limiter.admit("-") is None  # no address (a UNIX socket): one bucket, as before


def test_ipv6_clients_on_the_fast_and_general_paths_share_the_64_bucket() -> None:
    """Both paths bucket by /64: a fast add from one address and a general (HTTP/1.0) add from
    another in the same /64 spend the same bucket."""
    from twisted.internet.address import IPv6Address
    from twisted.internet.testing import StringTransport

    site = limited_site(1, Clock())

    def add(host: str, version: bytes) -> int:
        address = IPv6Address("TCP", host, 40000)
        protocol = site.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET /add?url=https://v6.example/ HTTP/%s\r\nHost: x\r\n\r\n" % version)
        return status_of(transport.value())

    assert add("2001:db8::1", b"1.1") == 200
    assert add("2001:db8::2", b"1.0") == 429
    assert add("2001:db8::3", b"1.1") == 429
    assert add("2001:db8:0:1::1", b"1.1") == 200


@pytest.mark.parametrize(
    ("client", "bucket"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("-", "-"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::1", "::/64"),
        ("not:an:address", "not:an:address"),
    ],
)
def test_rate_bucket(client: str, bucket: str) -> None:
    assert rate_bucket(client) == bucket
