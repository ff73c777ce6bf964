"""Arguments are split at ``&`` only (``goto_tw.formargs``): a URL given unescaped with a ``;`` in it
is stored whole on both paths, where twisted.web's ``parse_qs`` cut it at the ``;``."""

from __future__ import annotations

import ast
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.web.http import parse_qs
from twisted.web.resource import Resource
from twisted.web.server import Request

from goto_tw.formargs import parse_arguments
from goto_tw.limits import BAD_REQUEST
from goto_tw.metrics import Metrics
from goto_tw.site import GotoSite
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


class ArgumentsOf(Resource):
    """Answers with the ``request.args`` the general path gives it."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        return repr(sorted((request.args or {}).items())).encode()


def arguments_of(request_bytes: bytes) -> list[tuple[bytes, list[bytes]]]:
    site = GotoSite(ArgumentsOf(), Metrics("master"), reactor=Clock())
    answer = exchange(site, request_bytes)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    found: list[tuple[bytes, list[bytes]]] = ast.literal_eval(answer.split(b"\r\n\r\n", 1)[1].decode("ascii"))
    return found


def post(content_type: bytes, body: bytes, target: bytes = b"/x") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        target,
        content_type,
        len(body),
        body,
    )


MULTIPART = b'--b\r\nContent-Disposition: form-data; name="url"\r\n\r\nhttps://multi.example/b;c\r\n--b--\r\n'


def test_a_multipart_bodys_arguments_stay_when_the_query_holds_a_semicolon() -> None:
    """Review 40: a ``;`` in the query had the arguments read again from the query alone, and a
    multipart body's ``url`` was lost (a 400 where it had been a 200)."""
    assert arguments_of(post(b"multipart/form-data; boundary=b", MULTIPART, b"/x?x=1;y=2")) == [
        (b"url", [b"https://multi.example/b;c"]),
        (b"x", [b"1;y=2"]),
    ]


@pytest.mark.parametrize(
    "content_type",
    [
        b"application/x-www-form-urlencoded",
        b"Application/X-WWW-Form-Urlencoded; charset=UTF-8",
        b"application/x-www-form-urlencoded\xa0",
        b"=?utf-8?q?application/x-www-form-urlencoded?=",
    ],
)
def test_a_form_body_is_read_as_twisted_web_decides_its_type(content_type: bytes) -> None:
    """Review 40: a copy of twisted.web's decision of the body's type missed some it reads as a
    form (a URL still cut at ``;``), and a ``;`` in the query then dropped the body's arguments."""
    body = b"url=https://ct.example/p;jsessionid=1"
    assert arguments_of(post(content_type, body)) == [(b"url", [b"https://ct.example/p;jsessionid=1"])]
    assert arguments_of(post(content_type, b"url=https://ct2.example/whole", b"/x?utm=a;b")) == [
        (b"url", [b"https://ct2.example/whole"]),
        (b"utm", [b"a;b"]),
    ]


def test_a_body_twisted_web_does_not_read_adds_no_arguments() -> None:
    assert arguments_of(post(b"text/plain", b"url=https://t.example/;x", b"/x?a=1;2")) == [(b"a", [b"1;2"])]


def test_a_multipart_body_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review 40: every multipart body holds a ";" (``form-data; name=``), and was read twice, by
    twisted.web and again: a cost any client could double."""
    import twisted.web.http

    import goto_tw.limits

    reads: list[str] = []
    for module in (twisted.web.http, goto_tw.limits):
        original = module._getMultiPartArgs

        def counting(
            content: bytes, ctype: bytes, original: Any = original, name: str = module.__name__
        ) -> Any:
            reads.append(name)
            return original(content, ctype)

        monkeypatch.setattr(module, "_getMultiPartArgs", counting)
    assert arguments_of(post(b"multipart/form-data; boundary=b", MULTIPART, b"/x?x=1;y=2"))[0][0] == b"url"
    assert arguments_of(post(b"multipart/form-data; boundary=b", MULTIPART))[0][0] == b"url"
    assert reads == ["goto_tw.limits", "goto_tw.limits"]


def test_a_multipart_body_that_cannot_be_read_is_a_400() -> None:
    site = GotoSite(ArgumentsOf(), Metrics("master"), reactor=Clock())
    answer = exchange(site, post(b"multipart/form-data; boundary=b", b"not multipart at all"))
    assert answer == BAD_REQUEST


@pytest.mark.parametrize("fast", [True, False])
def test_a_multipart_body_that_cannot_be_read_under_the_api_is_a_problem_document(fast: bool) -> None:
    """Review 41: as every refusal under ``/api/``, whichever layer makes it."""
    site, _ = goto_site(URLStore(), fast=fast)
    answer = exchange(site, post(b"multipart/form-data; boundary=b", b"junk", b"/api/v1/links"))
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"application/problem+json" in answer.split(b"\r\n\r\n", 1)[0]
