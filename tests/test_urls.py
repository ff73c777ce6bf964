"""URL validation: what may be shortened, and the reason given when it may not."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from goto_tw.errors import InvalidURL
from goto_tw.urls import MAX_URL_LENGTH, _read_simple_host, _validate_general, simple_host, validate_url


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


#: URLs near the common shape: every part drawn from pieces that do and do not fit it.
_near_simple_urls = st.builds(
    lambda scheme, host, port, rest: f"{scheme}{host}{port}{rest}",
    st.sampled_from(["http://", "https://", "HTTP://", "Https://", "ftp://", "http:/", "http:", ""]),
    st.one_of(
        st.from_regex(r"\A[A-Za-z0-9._-]{1,12}\Z"),
        st.text(alphabet="aZ09._-%@[]:\\ \u00e9\x00", max_size=12),
    ),
    st.one_of(st.just(""), st.from_regex(r"\A:[0-9]{0,7}\Z"), st.text(alphabet=":0a ", max_size=4)),
    st.one_of(
        st.just(""),
        st.from_regex(r"\A[/?#][!-~]{0,30}\Z"),
        st.text(alphabet='/?#a"\\@ \t\x7f\u00e4\u2028', max_size=10),
    ),
)


@settings(max_examples=500)
@given(_near_simple_urls)
@example("http://Bench.EXAMPLE/x")
@example("http://a.example:99999/")
@example("http://a.example:065535")
@example("http://a%2Eexample/")
@example("http://a.example/a b")
@example("http://a.example/\x7f")
def test_the_common_shape_is_judged_exactly_as_urlsplit_judges_it(url: str) -> None:
    """``simple_host`` gives urlsplit's host and port where it answers at all, and ``validate_url``
    (fast shape first) answers every URL exactly as the general path does: value or reason."""
    simple = simple_host(url)
    if simple is not None:
        parts = urlsplit(url)
        assert simple == (parts.hostname, parts.port)
    try:
        expected: str | BaseException = _validate_general(url)
    except InvalidURL as exc:
        expected = exc
    try:
        got: str | BaseException = validate_url(url)
    except InvalidURL as exc:
        got = exc
    if isinstance(expected, InvalidURL):
        assert isinstance(got, InvalidURL) and str(got) == str(expected)
    else:
        assert got == expected


@given(st.from_regex(r"\Ahttps?://[a-z0-9.-]{1,20}(:[0-9]{1,5})?([/?#][!-~]{0,30})?\Z"))
def test_common_urls_take_the_fast_shape(url: str) -> None:
    """The URLs people shorten are read without urlsplit (unless the port is out of range)."""
    port = re.search(r"//[^/?#]*:([0-9]+)", url)
    assert (simple_host(url) is None) == (port is not None and int(port.group(1)) > 65535)


@settings(max_examples=300)
@given(st.lists(_near_simple_urls, min_size=1, max_size=6), st.lists(st.integers(0, 5), max_size=12))
@example(["http://a.example/", "http://b.example/"], [0, 0, 1, 0])
def test_simple_host_answers_each_url_in_turn_as_if_asked_once(urls: list[str], order: list[int]) -> None:
    """``simple_host`` keeps its last answer for the last URL object (an add asks twice in a row):
    asked about URLs in any order, repeats and equal copies included, each answer is the URL's own."""
    asked = [urls[index % len(urls)] for index in order] + urls
    asked += ["".join(list(url)) for url in asked]  # equal strings, other objects
    for url in asked:
        assert simple_host(url) == _read_simple_host(url)
