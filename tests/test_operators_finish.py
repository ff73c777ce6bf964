"""Issue 11, the rest: --redirect-status, --cors-origin, the OpenAPI document, the default rate limit,
and the form's note on a private instance."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.python import usage

from goto_tw.metrics import Metrics
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from goto_tw.tap import Options, make_root
from goto_tw.web import GotoRoot
from tests.helpers import result_of
from tests.stub_client import Client
from tests.wire import Connection

HOST = "go.example"


@pytest.mark.parametrize(
    ("status", "cache_control"),
    [(301, ["private, max-age=90"]), (302, None), (307, None), (308, ["private, max-age=90"])],
)
def test_redirect_status_and_cache_control_on_the_general_path(status: int, cache_control: object) -> None:
    """--redirect-status sets the redirect's status; permanent ones carry a short private Cache-Control."""
    store = URLStore()
    key = result_of(store.put("https://example.org/x"))
    for method in ("GET", "HEAD"):
        code, headers, _ = Client(GotoRoot(store, HOST, redirect_status=status)).request(method, f"/{key}")
        assert code == status
        assert headers.getRawHeaders("location") == ["https://example.org/x"]
        assert headers.getRawHeaders("cache-control") == cache_control


@pytest.mark.parametrize("status", [301, 308])
def test_fast_path_redirects_with_the_status_and_counts_them(status: int) -> None:
    """The fast path answers the chosen status with Cache-Control, and goto_redirects counts it."""
    store = URLStore({"abc": "https://a.example/"})
    metrics = Metrics("master")
    site = GotoSite(
        make_root(store, HOST, metrics, redirect_status=status),
        metrics,
        reactor=Clock(),
        store=store,
        redirect_status=status,
    )
    connection = Connection(site)
    connection.send(b"GET /abc HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = connection.received()
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer
    assert b"\r\nCache-Control: private, max-age=90\r\n" in answer
    assert metrics.redirects == 1


def test_redirect_status_option() -> None:
    """302 by default; 301, 307, 308 accepted; anything else refused at start-up."""
    options = Options()
    options.parseOptions([])
    assert options["redirect-status"] == 302
    for status in ("301", "307", "308"):
        options = Options()
        options.parseOptions(["--redirect-status", status])
        assert options["redirect-status"] == int(status)
    for bad in ("303", "200", "x"):
        with pytest.raises(usage.UsageError, match="--redirect-status"):
            Options().parseOptions(["--redirect-status", bad])


def test_adds_are_rate_limited_by_default() -> None:
    """The default is 10 adds a second with a burst of 50 per client; ``--add-rate off`` disables it."""
    options = Options()
    options.parseOptions([])
    assert (options["add-rate"], options["add-burst"]) == (10.0, 50)
    options = Options()
    options.parseOptions(["--add-rate", "off"])
    assert options["add-rate"] is None
    options = Options()
    options.parseOptions(["--add-rate", "2/m"])
    assert options["add-rate"] == pytest.approx(2 / 60)


def test_the_form_says_when_adding_needs_a_key() -> None:
    """On a private instance (--private) the form at / and /add says adding needs an API key; on an
    open one it says nothing of keys."""
    from goto_tw.auth import APIKeys

    store = URLStore()
    keys = APIKeys(None, Clock(), (b"k",))
    private = Client(make_root(store, HOST, Metrics("master"), keys=keys, private=True))
    public = Client(make_root(store, HOST, Metrics("master"), keys=keys))
    for path in ("/", "/add"):
        status, _, body = private.request("GET", path)
        assert status == 200 and b"needs an API key" in body, body
        status, _, body = public.request("GET", path)
        assert status == 200 and b"API key" not in body


def cors_client(origins: tuple[str, ...] = ("https://app.example",)) -> tuple[Client, URLStore]:
    from goto_tw.auth import APIKeys
    from goto_tw.cors import add_cors

    store = URLStore()
    root = make_root(store, HOST, Metrics("master"), keys=APIKeys(None, Clock(), (b"k",)))
    add_cors(root, frozenset(origins))
    return Client(root), store


def test_cors_headers_on_the_api_for_a_listed_origin_only() -> None:
    """A listed origin gets Access-Control-Allow-Origin (and Vary: Origin) on API answers, errors
    included; another origin, or a page outside the API, gets no CORS header."""
    client, store = cors_client()
    key = result_of(store.put("https://a.example/"))
    listed = {"Origin": "https://app.example"}
    for method, path in (
        ("GET", f"/api/v1/links/{key}"),
        ("GET", "/api/v1/links/nope"),
        ("GET", "/api/v1/links"),
    ):
        _, headers, _ = client.request(method, path, headers=listed)
        assert headers.getRawHeaders("access-control-allow-origin") == ["https://app.example"], path
        assert "Origin" in headers.getRawHeaders("vary")
    status, headers, _ = client.request(
        "POST",
        "/api/v1/links",
        headers={**listed, "Content-Type": "application/json"},
        data=b'{"url":"https://b.example/"}',
    )
    assert status == 201 and "Location" in headers.getRawHeaders("access-control-expose-headers")[0]
    _, headers, _ = client.request("GET", f"/api/v1/links/{key}", headers={"Origin": "https://evil.example"})
    assert not any(name.lower().startswith(b"access-control") for name, _ in headers.getAllRawHeaders())
    assert headers.getRawHeaders("vary") == ["Origin"]  # for caches: the answer depends on Origin
    _, headers, _ = client.request("GET", f"/{key}", headers=listed)
    assert headers.getRawHeaders("access-control-allow-origin") is None


def test_cors_preflight_is_204_with_methods_and_authorization() -> None:
    """OPTIONS with a listed Origin is a 204 preflight allowing the API's methods and the
    Authorization header; from another origin it is what it is without CORS (405)."""
    client, _ = cors_client()
    preflight = {"Access-Control-Request-Method": "DELETE", "Access-Control-Request-Headers": "authorization"}
    status, headers, body = client.request(
        "OPTIONS", "/api/v1/links/abc", headers={"Origin": "https://app.example", **preflight}
    )
    assert (status, body) == (204, b"")
    assert headers.getRawHeaders("access-control-allow-origin") == ["https://app.example"]
    assert "DELETE" in headers.getRawHeaders("access-control-allow-methods")[0]
    assert "Authorization" in headers.getRawHeaders("access-control-allow-headers")[0]
    status, headers, _ = client.request(
        "OPTIONS", "/api/v1/links/abc", headers={"Origin": "https://evil.example", **preflight}
    )
    assert status == 405 and headers.getRawHeaders("access-control-allow-origin") is None


def test_cors_is_off_by_default_and_origins_are_checked() -> None:
    """No --cors-origin: no CORS at all; values are origins (repeatable, comma lists), checked."""
    options = Options()
    options.parseOptions([])
    assert options["cors-origins"] == frozenset()
    options = Options()
    options.parseOptions(
        ["--cors-origin", "https://a.example,http://b.example:8080", "--cors-origin", "https://c.example"]
    )
    assert options["cors-origins"] == {"https://a.example", "http://b.example:8080", "https://c.example"}
    for bad in ("a.example", "https://a.example/path", "ftp://a.example"):
        with pytest.raises(usage.UsageError, match="--cors-origin"):
            Options().parseOptions(["--cors-origin", bad])


def test_listing_with_a_limit_of_thousands_of_digits_is_400() -> None:
    """Found by the fuzz drill: ``limit`` of 5000 digits was a 500 (int() refuses so many digits)."""
    from goto_tw.auth import APIKeys

    client = Client(make_root(URLStore(), HOST, Metrics("master"), keys=APIKeys(None, Clock(), (b"k",))))
    status, headers, _ = client.request(
        "GET", "/api/v1/links?limit=" + "9" * 5000, headers={"Authorization": "Bearer k"}
    )
    assert status == 400
    assert headers.getRawHeaders("content-type") == ["application/problem+json"]


@pytest.mark.parametrize("after", ["", "a%20b", "a/b", "%C3%A9", "x" * 65])
def test_listing_after_what_is_not_a_key_is_400(after: str) -> None:
    """Review 34 (schemathesis): ``after`` is 1 to 64 key characters, as the OpenAPI document says;
    ``after=`` and ``after=a b`` were listed from the start (200)."""
    from goto_tw.auth import APIKeys

    client = Client(make_root(URLStore(), HOST, Metrics("master"), keys=APIKeys(None, Clock(), (b"k",))))
    status, _, body = client.request(
        "GET", "/api/v1/links?after=" + after, headers={"Authorization": "Bearer k"}
    )
    assert status == 400, body
    assert b"after must be a key" in body


def test_listing_after_a_key_that_is_not_stored_starts_after_it() -> None:
    """Any key-shaped ``after`` is a place in the order, stored or not (``_x`` included)."""
    from goto_tw.auth import APIKeys

    store = URLStore({"a": "https://a.example/", "c": "https://c.example/"})
    client = Client(make_root(store, HOST, Metrics("master"), keys=APIKeys(None, Clock(), (b"k",))))
    for after in ("b", "_x", "-"):
        status, _, body = client.request(
            "GET", f"/api/v1/links?after={after}", headers={"Authorization": "Bearer k"}
        )
        assert status == 200, (after, body)


def test_a_slaves_first_poll_lists_every_disabled_key_instead_of_dropping_its_cache() -> None:
    """Found by the whole suite (test_slaves_ride_out_a_master_restart, flaky): a slave's first poll
    answered "incomplete", so the slave dropped what it had cached meanwhile (its first adds), and
    could not serve them during an outage. First contact (epoch "", 0) now gets every key disabled
    since the master started, tombstones loaded from the data file included, as a complete list;
    only a feed that has dropped some (too many changes) still says incomplete."""
    from goto_tw.changes import ChangeFeed

    store = URLStore({"a": "https://a.example/", "b": "https://b.example/"}, disabled={"a": 5})
    first = store.changes("", 0)
    assert (first.keys, first.complete) == (["a"], True)
    assert store.changes(first.epoch, first.seq) == (first.epoch, first.seq, [], True)
    assert ChangeFeed("e").since("", 0) == ("e", 0, [], True)
    truncated = ChangeFeed("e", capacity=2)
    for key in "xyz":
        truncated.record(key)
    assert truncated.since("", 0).complete is False


@pytest.mark.parametrize(
    "origin",
    [b"http://a.example\nSet-Cookie: sid=evil", b"http://a.example\rX: y", b"http://a.example x", b"null"],
)
def test_an_origin_is_echoed_only_if_it_is_one(origin: bytes) -> None:
    """Third read of review 33: with ``*`` any Origin value was echoed into a refusal's raw header
    block (a bare LF or CR in it injected a header); only an origin's characters are echoed."""
    from goto_tw.cors import allowed_origin, refusal_headers

    assert allowed_origin(frozenset({"*"}), origin) is None
    assert refusal_headers(frozenset({"*"}), origin) == b"Vary: Origin\r\n"
    assert allowed_origin(frozenset({"*"}), b"https://App.example:8443") == b"https://App.example:8443"


def test_a_refusal_carries_no_origin_of_the_request_before_it() -> None:
    """Third read of review 33: an over-long request line after a request with an Origin got that
    Origin's CORS headers; each request's refusal carries its own (here none)."""
    from goto_tw.cors import add_cors

    store = URLStore({"0": "https://a.example/"})
    root = make_root(store, HOST, Metrics("master"))
    add_cors(root, frozenset({"https://app.example"}))
    site = GotoSite(root, Metrics("master"), reactor=Clock())
    site.cors_origins = frozenset({"https://app.example"})
    connection = Connection(site)
    connection.send(b"GET /api/v1/links/0 HTTP/1.1\r\nHost: h\r\nOrigin: https://app.example\r\n\r\n")
    first = connection.received()
    assert b"Access-Control-Allow-Origin: https://app.example" in first
    connection.send(b"GET /api/v1/links/" + b"a" * 20000 + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    refused = connection.received()
    assert refused.startswith(b"HTTP/1.1 414 ") and b"Access-Control-Allow-Origin" not in refused


def test_listing_pages_follow_next_to_the_end_and_a_limit_of_0_is_400() -> None:
    """Review 35 (mutation audit): no test followed ``next`` (a listing that never gave one would
    have passed), nor asked for ``limit=0`` (which must be a 400, not an empty page or a 500)."""
    import json

    from goto_tw.auth import APIKeys

    store = URLStore({f"k{n}": f"https://e.example/{n}" for n in range(7)})
    client = Client(make_root(store, HOST, Metrics("master"), keys=APIKeys(None, Clock(), (b"k",))))
    seen: list[str] = []
    target = "/api/v1/links?limit=3"
    for _ in range(5):
        status, _, body = client.request("GET", target, headers={"Authorization": "Bearer k"})
        assert status == 200, body
        page = json.loads(body)
        seen += [link["key"] for link in page["links"]]
        if not page.get("next"):
            break
        target = page["next"]  # the link to the next page, as given
    assert sorted(seen) == sorted(f"k{n}" for n in range(7)) and len(seen) == 7
    status, _, _ = client.request("GET", "/api/v1/links?limit=0", headers={"Authorization": "Bearer k"})
    assert status == 400
