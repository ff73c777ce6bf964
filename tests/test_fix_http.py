"""Review 2, items 4, 12 and 15: one rate-limit token per add whichever path answers it, HTML 401
and 429 pages for browsers, and IPv6 clients limited per /64."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from goto_tw.auth import APIKeys
from goto_tw.clients import ClientAddresses
from goto_tw.metrics import Metrics
from goto_tw.ratelimit import AddLimiter, LimitAdds, fast_gate, is_api_add, rate_bucket
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from goto_tw.tap import make_root
from goto_tw.web import FastAnswers, is_form_add
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
    assert isinstance(site.responder, FastAnswers)
    if private:
        site.responder.adds = False  # adds need a key: the general path checks it
    else:
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


# Item 12 --------------------------------------------------------------------------------------


def answer_of(site: GotoSite, request: bytes) -> tuple[bytes, dict[bytes, list[bytes]], bytes]:
    """(status line, headers by lower-case name, body) of the answer to ``request``."""
    connection = Connection(site)
    connection.send(request)
    head, _, body = connection.received().partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers: dict[bytes, list[bytes]] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return status, headers, body


def spend(site: GotoSite, burst: int) -> None:
    for number in range(burst):
        connection = Connection(site)
        connection.send(b"GET /add?url=https://spent.example/%d HTTP/1.1\r\nHost: x\r\n\r\n" % number)
        assert status_of(connection.received()) == 200


@pytest.mark.parametrize("method", [b"GET", b"POST"])
def test_a_browser_over_the_rate_gets_an_html_429_page_with_the_form(method: bytes) -> None:
    """A browser's add over the limit: 429 Too Many Requests with Retry-After, as an HTML page with
    the reason and the form holding what was typed (escaped), and the HTML pages' security headers."""
    site = limited_site(1, Clock())
    spend(site, 1)
    form = b"url=https://typed.example/%3Cx%3E&key=mine"
    if method == b"GET":
        request = b"GET /add?%s HTTP/1.1\r\nHost: x\r\nAccept: %s\r\n\r\n" % (form, BROWSER_ACCEPT)
    else:
        request = (
            b"POST /add HTTP/1.1\r\nHost: x\r\nAccept: %s\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
            % (BROWSER_ACCEPT, len(form), form)
        )
    status, headers, body = answer_of(site, request)
    assert status == b"HTTP/1.1 429 Too Many Requests"
    assert headers[b"content-type"] == [b"text/html; charset=utf-8"]
    assert headers[b"content-security-policy"] and headers[b"x-content-type-options"] == [b"nosniff"]
    assert 1 <= int(headers[b"retry-after"][0]) <= 60
    assert int(headers[b"content-length"][0]) == len(body)
    assert body.startswith(b"<!DOCTYPE html>")
    assert b"<title>goto: Too Many Requests</title>" in body
    assert b"Too many links added from your address" in body
    assert b'action="/add"' in body
    assert b'value="https://typed.example/&lt;x&gt;"' in body and b'value="mine"' in body


def test_other_clients_over_the_rate_keep_the_plain_and_problem_answers() -> None:
    """curl (no Accept, or */*) keeps the plain-text 429; under /api/ even a browser gets the problem."""
    site = limited_site(1, Clock())
    spend(site, 1)
    for accept in (b"", b"Accept: */*\r\n", b"Accept: text/plain\r\n"):
        for version in (b"1.1", b"1.0"):  # the fast path's 429, and twisted.web's
            request = b"GET /add?url=https://c.example/ HTTP/%s\r\nHost: x\r\n%s\r\n" % (version, accept)
            status, headers, body = answer_of(site, request)
            assert status.split(b" ", 1)[1] == b"429 Too Many Requests"
            assert headers[b"content-type"] == [b"text/plain; charset=utf-8"]
            assert body == b"Too many links added from your address; try again in 60 seconds.\n"
            assert headers[b"retry-after"] == [b"60"]
    status, headers, body = answer_of(
        site,
        b"POST /api/v1/links HTTP/1.1\r\nHost: x\r\nAccept: %s\r\nContent-Type: application/json\r\n"
        b'Content-Length: 29\r\n\r\n{"url": "https://d.example/"}' % BROWSER_ACCEPT,
    )
    assert status == b"HTTP/1.1 429 Too Many Requests"
    assert headers[b"content-type"] == [b"application/problem+json"]
    assert headers[b"retry-after"]


def test_a_browser_adding_on_a_private_instance_gets_an_html_401_page_with_the_form() -> None:
    """--private: a browser's add without a key is 401 with WWW-Authenticate, as an HTML page with the
    reason and the form; curl keeps the plain 401, the API its problem; a key still adds."""
    site = limited_site(5, Clock(), private=True)
    status, headers, body = answer_of(
        site, b"GET /add?url=https://p.example/ HTTP/1.1\r\nHost: x\r\nAccept: %s\r\n\r\n" % BROWSER_ACCEPT
    )
    assert status == b"HTTP/1.1 401 Unauthorized"
    assert headers[b"www-authenticate"] == [b'Bearer realm="goto"']
    assert headers[b"content-type"] == [b"text/html; charset=utf-8"]
    assert headers[b"content-security-policy"]
    assert b"<title>goto: Unauthorized</title>" in body
    assert b"this needs an API key" in body
    assert b'action="/add"' in body and b'value="https://p.example/"' in body
    status, headers, body = answer_of(site, b"GET /add?url=https://p.example/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == b"HTTP/1.1 401 Unauthorized"
    assert headers[b"content-type"] == [b"text/plain; charset=utf-8"]
    assert body == b"this needs an API key: Authorization: Bearer KEY\n"
    status, headers, _ = answer_of(
        site,
        b"POST /api/v1/links HTTP/1.1\r\nHost: x\r\nAccept: %s\r\nContent-Type: application/json\r\n"
        b'Content-Length: 29\r\n\r\n{"url": "https://d.example/"}' % BROWSER_ACCEPT,
    )
    assert status == b"HTTP/1.1 401 Unauthorized"
    assert headers[b"content-type"] == [b"application/problem+json"]
    status, _, _ = answer_of(
        site, b"GET /add?url=https://p.example/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sesame\r\n\r\n"
    )
    assert status == b"HTTP/1.1 200 OK"


@pytest.mark.parametrize("path", [b"/%61pi/v1/links", b"/%61%70%69/v1/links", b"/ap%69"])
def test_an_api_path_written_with_escapes_is_refused_with_a_problem_document(path: bytes) -> None:
    """twisted.web finds ``/%61pi/v1/links`` at ``/api/v1/links`` (it decodes each segment), so its
    refusals (the 401 of a private instance here) are problem documents too, as under ``/api/``."""
    site = limited_site(5, Clock(), private=True)
    status, headers, _ = answer_of(
        site,
        b"POST %s HTTP/1.1\r\nHost: x\r\nAccept: %s\r\nContent-Type: application/json\r\n"
        b'Content-Length: 29\r\n\r\n{"url": "https://d.example/"}' % (path, BROWSER_ACCEPT),
    )
    assert status.split(b" ")[1] in (b"401", b"404", b"405"), status
    assert headers[b"content-type"] == [b"application/problem+json"]


@pytest.mark.parametrize("path", [b"/%61dd", b"/x%2Fapi/", b"/apix", b"/%2Fapi"])
def test_paths_that_are_not_the_api_are_not_answered_as_the_api(path: bytes) -> None:
    site = limited_site(5, Clock(), private=True)
    _, headers, _ = answer_of(site, b"GET %s?url=https://p.example/ HTTP/1.1\r\nHost: x\r\n\r\n" % path)
    assert headers[b"content-type"] != [b"application/problem+json"]
