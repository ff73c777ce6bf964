"""``/add`` adds or shows the form, nothing else: a ``POST`` without a URL (a script posting JSON or
a misspelled field) is a 400 saying so, not the form page's ``200 OK``; ``/add/anything`` is a 404,
on both paths."""

from __future__ import annotations

import pytest

from goto_tw.errors import NO_URL
from goto_tw.store import URLStore
from tests.test_fix_http import BROWSER_ACCEPT
from tests.wire import exchange, goto_site


def post(body: bytes, content_type: bytes, accept: bytes = b"*/*") -> bytes:
    return (
        b"POST /add HTTP/1.1\r\nHost: x\r\nAccept: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
        % (
            accept,
            content_type,
            len(body),
            body,
        )
    )


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (b"application/json", b'{"url": "https://json.example/"}'),
        (b"application/x-www-form-urlencoded", b"link=https://typo.example/"),
        (b"application/x-www-form-urlencoded", b"url="),
    ],
)
def test_a_post_without_a_url_is_a_400_that_says_so(fast: bool, content_type: bytes, body: bytes) -> None:
    store = URLStore()
    site, _ = goto_site(store, fast=fast)
    answer = exchange(site, post(body, content_type))
    assert answer.startswith(b"HTTP/1.1 400 Bad Request"), answer[:200]
    assert answer.endswith(NO_URL.encode() + b"\n")
    assert store.count() == 0


def test_a_browser_posting_without_a_url_gets_the_error_page_with_the_form() -> None:
    site, _ = goto_site(URLStore(), fast=False)
    answer = exchange(site, post(b"url=&key=mine", b"application/x-www-form-urlencoded", BROWSER_ACCEPT))
    assert answer.startswith(b"HTTP/1.1 400 Bad Request")
    assert b"text/html" in answer.split(b"\r\n\r\n", 1)[0]
    assert NO_URL.encode() in answer and b'action="/add"' in answer and b'value="mine"' in answer


@pytest.mark.parametrize("fast", [True, False])
def test_a_get_without_a_url_is_still_the_form(fast: bool) -> None:
    site, _ = goto_site(URLStore(), fast=fast)
    for target in (b"/add", b"/add/", b"/add?x=1"):
        answer = exchange(site, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target)
        assert answer.startswith(b"HTTP/1.1 200 OK") and b'action="/add"' in answer, target


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /add/oops?url=https%3A%2F%2Fx.example%2F&key=k1 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /add/oops?url=https%3A%2F%2Fx.example%2F HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /add/oops HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HEAD /add/a/b HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
def test_a_path_below_add_is_not_found_and_adds_nothing(fast: bool, request_bytes: bytes) -> None:
    store = URLStore()
    site, _ = goto_site(store, fast=fast)
    answer = exchange(site, request_bytes)
    assert answer.startswith(b"HTTP/1.1 404 Not Found"), answer[:200]
    assert store.count() == 0


def test_a_path_below_add_takes_no_token_and_asks_for_no_key() -> None:
    """Review 40: the rate limit and ``--private`` judged an add by its ``url`` alone, before the 404:
    ``/add/anything?url=`` took a token (the next real add was a 429) and, limited, was itself a
    429; on a private instance a 401."""
    from twisted.internet.task import Clock

    from tests.test_fix_http import limited_site

    site = limited_site(1, Clock())
    for number in (1, 2):
        answer = exchange(site, b"GET /add/x?url=https://a.example/%d HTTP/1.1\r\nHost: x\r\n\r\n" % number)
        assert answer.startswith(b"HTTP/1.1 404"), answer[:100]
    assert exchange(site, b"GET /add?url=https://a.example/3 HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
        b"HTTP/1.1 200"
    )
    private = limited_site(5, Clock(), private=True)
    answer = exchange(private, b"GET /add/x?url=https://a.example/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404"), answer[:100]
