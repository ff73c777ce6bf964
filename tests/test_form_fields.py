"""The form on the error pages: the field an error is about is marked invalid, pointed at the
reason and focused (a screen reader reads the reason with it; the reason itself is announced); the
key field says what a key may hold; the URL field does not cut a pasted URL (no ``maxlength``); and a
private instance's error pages keep its note that adding needs a key."""

from __future__ import annotations

import re

import pytest
from twisted.internet.task import Clock

from goto_tw.auth import APIKeys
from goto_tw.clients import ClientAddresses
from goto_tw.keys import KEY_HINT
from goto_tw.metrics import Metrics
from goto_tw.pages import KEY_FIELD, PRIVATE_NOTE, URL_FIELD, error_page, form_page, result_page
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from goto_tw.tap import make_root
from tests.test_fix_http import BROWSER_ACCEPT
from tests.wire import exchange, goto_site


def input_of(page: bytes, name: str) -> str:
    found = re.search(rb'<input[^>]*id="%s"[^>]*>' % name.encode(), page)
    assert found, page
    return found.group(0).decode()


def test_an_error_about_the_key_marks_and_focuses_the_key_field() -> None:
    page = error_page(409, "the key 'launch' is already taken", "https://x.example/", "launch", KEY_FIELD)
    key, url = input_of(page, "key"), input_of(page, "url")
    assert 'aria-invalid="true"' in key and 'aria-describedby="error key-hint"' in key and "autofocus" in key
    assert "autofocus" not in url and "aria-invalid" not in url
    assert b'<p class="error" id="error" role="alert">' in page


def test_an_error_about_the_url_marks_and_focuses_the_url_field() -> None:
    page = error_page(400, "the URL is refused", "ftp://x", "", URL_FIELD)
    key, url = input_of(page, "key"), input_of(page, "url")
    assert 'aria-invalid="true"' in url and 'aria-describedby="error"' in url and "autofocus" in url
    assert "aria-invalid" not in key and "autofocus" not in key


def test_an_error_about_neither_field_focuses_the_url_field_and_marks_none() -> None:
    page = error_page(503, "try again shortly")
    assert "autofocus" in input_of(page, "url") and b"aria-invalid" not in page


@pytest.mark.parametrize(
    "page", [form_page(), error_page(400, "x"), result_page("http://g/k", "https://a/", "k", True)]
)
def test_the_key_field_says_what_a_key_may_hold_and_the_url_field_cuts_nothing(page: bytes) -> None:
    key = input_of(page, "key")
    assert f'title="A custom key: {KEY_HINT}"' in key, key
    assert 'aria-describedby="key-hint' in key
    assert re.search(rb'<small[^>]*id="key-hint"[^>]*>1 to 64 letters', page)
    assert "maxlength" not in input_of(page, "url")


@pytest.mark.parametrize(
    ("request_bytes", "field"),
    [
        (b"GET /add?url=https%3A%2F%2Fa.example%2F&key=add HTTP/1.1\r\n", "key"),
        (b"GET /add?url=https%3A%2F%2Fb.example%2F&key=taken HTTP/1.1\r\n", "key"),
        (b"GET /add?url=ftp%3A%2F%2Fa.example%2F HTTP/1.1\r\n", "url"),
    ],
    ids=["reserved key", "taken key", "refused URL"],
)
def test_an_add_refused_in_a_browser_marks_the_field_at_fault(request_bytes: bytes, field: str) -> None:
    site, _ = goto_site(URLStore({"taken": "https://taken.example/"}), fast=False)
    answer = exchange(site, request_bytes + b"Host: x\r\nAccept: " + BROWSER_ACCEPT + b"\r\n\r\n")
    assert answer.split(b" ", 2)[1] in (b"400", b"409"), answer[:200]
    assert 'aria-invalid="true"' in input_of(answer, field)


def private_site() -> GotoSite:
    store = URLStore()
    metrics = Metrics("master")
    keys = APIKeys(None, Clock(), (b"sesame-sesame-sesame",))
    return GotoSite(
        make_root(store, "go.example", metrics, keys=keys, private=True),
        metrics,
        reactor=Clock(),
        host="go.example",
    )


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /add?url=https%3A%2F%2Fa.example%2F HTTP/1.1\r\n",  # the 401
        b"GET /nope+ HTTP/1.1\r\n",  # the info page of an unknown key
        b"GET /add?url=ftp%3A%2F%2Fa HTTP/1.1\r\nAuthorization: Bearer sesame-sesame-sesame\r\n",  # a 400
    ],
    ids=["401", "unknown info page", "refused URL with a key"],
)
def test_a_private_instances_error_pages_keep_its_note(request_bytes: bytes) -> None:
    answer = exchange(private_site(), request_bytes + b"Host: x\r\nAccept: " + BROWSER_ACCEPT + b"\r\n\r\n")
    assert answer.split(b" ", 2)[1] in (b"400", b"401", b"404"), answer[:200]
    assert PRIVATE_NOTE.encode() in answer


def test_a_public_instances_error_pages_have_no_private_note() -> None:
    site, _ = goto_site(URLStore(), fast=False)
    answer = exchange(site, b"GET /nope+ HTTP/1.1\r\nHost: x\r\nAccept: " + BROWSER_ACCEPT + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404") and PRIVATE_NOTE.encode() not in answer


def test_a_private_instances_429_page_keeps_its_note() -> None:
    """Review 40: the rate limit's page on a private instance had no note (its 401 page had)."""
    from goto_tw.ratelimit import AddLimiter, LimitAdds
    from goto_tw.web import is_form_add

    site = private_site()
    add = site.resource.children[b"add"]
    site.resource.putChild(
        b"add", LimitAdds(add, AddLimiter(1 / 60, 1, Clock()), ClientAddresses(), is_form_add, True)
    )
    request = (
        b"GET /add?url=https%3A%2F%2Fa.example%2F HTTP/1.1\r\nHost: x\r\nAccept: "
        + BROWSER_ACCEPT
        + b"\r\n\r\n"
    )
    exchange(site, request)
    answer = exchange(site, request)
    assert answer.startswith(b"HTTP/1.1 429"), answer[:200]
    assert PRIVATE_NOTE.encode() in answer
