"""Arguments are split at ``&`` only (``goto_tw.formargs``): a URL given unescaped with a ``;`` in it
is stored whole on both paths, where twisted.web's ``parse_qs`` cut it at the ``;``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.web.http import parse_qs

from goto_tw.formargs import is_form_body, parse_arguments
from goto_tw.store import URLStore
from tests.wire import exchange, goto_site

#: Pieces of query strings without ``;``: where twisted.web's reading is the one wanted.
PIECES = st.sampled_from(
    [b"url", b"key", b"=", b"&", b"+", b"%3A", b"%", b"%2", b"%FF", b"\xc3\xa9", b"a", b"/"]
)


@given(st.lists(PIECES, max_size=12).map(b"".join))
def test_without_a_semicolon_the_arguments_are_twisted_webs(data: bytes) -> None:
    assert parse_arguments(data) == parse_qs(data, 1)


def test_a_semicolon_is_part_of_a_value() -> None:
    assert parse_arguments(b"url=https://a.example/p;jsessionid=1&key=k;2") == {
        b"url": [b"https://a.example/p;jsessionid=1"],
        b"key": [b"k;2"],
    }
    assert parse_arguments(b"a=1&a=&b&c=%3B+x") == {b"a": [b"1", b""], b"c": [b"; x"]}


@pytest.mark.parametrize(
    ("content_type", "form"),
    [
        (b"application/x-www-form-urlencoded", True),
        (b"Application/X-WWW-Form-Urlencoded; charset=UTF-8", True),
        (b"multipart/form-data; boundary=x", False),
        (b"text/xml", False),
        (None, False),
    ],
)
def test_form_bodies(content_type: bytes | None, form: bool) -> None:
    assert is_form_body(content_type) is form


SEMICOLON_URL = b"https://semi.example/a;jsessionid=123"


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_an_unescaped_semicolon_does_not_cut_the_url(fast: bool, method: str) -> None:
    """``/add?url=https://semi.example/a;jsessionid=123`` (and the same form POST) stores the URL
    whole, on the fast path and the general path, and answers its short link."""
    store = URLStore()
    site, _ = goto_site(store, fast=fast)
    body = b"url=" + SEMICOLON_URL
    if method == "GET":
        request = b"GET /add?%s HTTP/1.1\r\nHost: go.example\r\n\r\n" % body
    else:
        request = (
            b"POST /add HTTP/1.1\r\nHost: go.example\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
    answer = exchange(site, request)
    assert answer.startswith(b"HTTP/1.1 200 OK"), answer
    key = answer.rstrip().rsplit(b"/", 1)[1].decode()
    assert store.lookup(key) == SEMICOLON_URL.decode()


def test_a_custom_key_after_a_semicolon_url_is_read_too() -> None:
    """The general path reads a form body's arguments over the query's, as twisted.web does, each
    split at ``&`` only."""
    store = URLStore()
    site, _ = goto_site(store, fast=False)
    body = b"url=" + SEMICOLON_URL + b"&key=semi"
    answer = exchange(
        site,
        b"POST /add?url=https://other.example/;x HTTP/1.1\r\nHost: go.example\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body),
    )
    assert answer.startswith(b"HTTP/1.1 200 OK"), answer
    assert store.lookup("semi") == SEMICOLON_URL.decode()
