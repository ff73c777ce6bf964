"""URL validation: what may be shortened, and the reason given when it may not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from goto_tw.errors import InvalidURL
from goto_tw.urls import MAX_URL_LENGTH, validate_url


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "https://example.com/a/b?c=d&e=f#g",
        "HTTP://EXAMPLE.COM/",
        "http://127.0.0.1:8080/x",
        "http://[::1]/x",
        "https://user@example.com/~x/%20y",
    ],
)
def test_absolute_http_urls_are_stored_exactly(url: str) -> None:
    """An ASCII http(s) URL with a host is accepted and kept byte for byte."""
    assert validate_url(url) == url


def test_non_ascii_url_becomes_its_ascii_uri() -> None:
    """An IRI is converted for the Location header: IDNA host, percent-encoded path and query."""
    assert validate_url("https://bücher.example/ä?q=ü") == "https://xn--bcher-kva.example/%C3%A4?q=%C3%BC"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("example.com", "http"),
        ("/relative", "http"),
        ("ftp://example.com/", "http"),
        ("javascript:alert(1)", "http"),
        ("http://", "host"),
        ("http:///path", "host"),
        ("http://a b.com/", "white space"),
        ("http://example.com/\r\nSet-Cookie: x", "white space"),
        ("http://example.com/\x00", "control"),
        ("http://example.com/\x7f", "control"),
        ("http://example.com:99999/", "malformed"),
        ("http://example.com/" + "a" * MAX_URL_LENGTH, "longer"),
    ],
)
def test_refused_urls_say_why(url: str, reason: str) -> None:
    """Each refusal carries a short reason fit to show the user."""
    with pytest.raises(InvalidURL, match=reason):
        validate_url(url)


@given(st.text(max_size=200))
def test_validation_never_raises_anything_but_invalid_url(text: str) -> None:
    """Any string either validates to a safe absolute URL or is refused with InvalidURL."""
    try:
        url = validate_url(text)
    except InvalidURL:
        return
    assert url.isascii()
    assert url.split(":", 1)[0].lower() in {"http", "https"}
    assert not any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url)
    assert len(url) <= MAX_URL_LENGTH


@given(st.from_regex(r"\Ahttps?://[a-z0-9]{1,20}(\.[a-z]{2,6})?(/[A-Za-z0-9._~%-]{0,30}){0,4}\Z"))
def test_generated_valid_urls_are_accepted_unchanged(url: str) -> None:
    """Well-formed ASCII URLs are never refused nor altered."""
    assert validate_url(url) == url
