"""The fast path's add reads its ``url`` (and notices a ``key``) exactly as the general path's
``request.args`` does (``goto_tw.formargs.parse_arguments``; issue 13: the plain ``url=...`` shape
is read without it, and its usual escapes replaced in place): the same bytes for any query string or
form body, so the same link, the same refusal, or the same hand-over to the general path."""

from __future__ import annotations

import urllib.parse
from typing import Any

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from zope.interface import implementer

from goto_tw.formargs import parse_arguments
from goto_tw.interfaces import ILocalLookup, IURLStore
from goto_tw.web import FastAnswers
from tests.wire import exchange, goto_site

#: Pieces of query strings: the usual escapes, odd and broken ones, the separators, other arguments.
PIECES = st.sampled_from(
    [
        b"url=",
        b"url=",
        b"http",
        b"%3A",
        b"%2F",
        b"%2F",
        b"%3a",
        b"%2f",
        b"%3F",
        b"%25",
        b"%253A",
        b"%3A%",
        b"%",
        b"%2",
        b"%G1",
        b"%%2F",
        b"%E2%82%AC",
        b"%FF",
        b"&",
        b";",
        b"+",
        b"=",
        b"key=",
        b"key",
        b"%6Bey=",
        b"%75rl=",
        b"url",
        b"URL=",
        b"a.example",
        b"/",
        b":",
        b"?",
        b"#",
        b" ",
        b"\xff",
        b"x",
    ]
)


#: What the plain ``url=...`` shortcut sees: the two escapes it replaces, their lower-case and other
#: spellings, broken ones, and plain bytes.
ESCAPE_PIECES = st.sampled_from(
    [b"%3A", b"%2F", b"%3a", b"%2f", b"%3F", b"%25", b"%", b"%2", b"%%", b"%FF", b"a", b":", b"/", b"3A"]
)


@st.composite
def queries(draw: st.DrawFn) -> bytes:
    """A query string or form body: mostly near ``url=...``, some encoded by ``urlencode``, some any bytes."""
    kind = draw(st.sampled_from(["pieces", "pieces", "pieces", "escapes", "urlencode", "binary"]))
    if kind == "escapes":
        # The shortcut's own shape (``url=``, no separator, no ``+``) with escapes of every case:
        # whether each ``%`` starts ``%3A``/``%2F`` decides between replacing and unquoting.
        return b"url=" + b"".join(draw(st.lists(ESCAPE_PIECES, max_size=6)))
    if kind == "binary":
        return draw(st.binary(max_size=60))
    if kind == "urlencode":
        fields = draw(
            st.lists(
                st.tuples(st.sampled_from(["url", "key", "x"]), st.text(max_size=20)), min_size=1, max_size=3
            )
        )
        return urllib.parse.urlencode(fields).encode()
    return b"".join(draw(st.lists(PIECES, max_size=10)))


def parsed_by_twisted_web(query: bytes) -> tuple[bytes, bool]:
    """What the general path reads: the first ``url`` of ``request.args`` (``b""`` for none), and
    whether any ``key`` was given (``AddResource`` and the fast path leave a custom key to twisted.web)."""
    args = parse_arguments(query)
    return (args.get(b"url") or [b""])[0], bool(args.get(b"key"))


@settings(max_examples=3000, deadline=None)
@given(queries())
@example(b"url=http%3A%2F%2Fbench.example%2Fnonce-1-2")  # what wrk sends
@example(b"url=http%3A%2F%2Fa.example%2F%3Fq%3D1")  # another escape: unquote_to_bytes
@example(b"url=http%3a%2f%2fa.example")  # lower-case escapes
@example(b"url=%2f")  # a lower-case escape alone: unquoted, not left as it is
@example(b"url=%3a")
@example(b"url=http%3A%2f%2Fa.example")
@example(b"url=%3A%")
@example(b"url=a+b")
@example(b"url=a&url=b")
@example(b"url=a;key=b")
@example(b"url=")
@example(b"url")
def test_the_url_argument_is_what_the_general_path_reads(query: bytes) -> None:
    assert FastAnswers._url_argument(query) == parsed_by_twisted_web(query)


@implementer(IURLStore, ILocalLookup)
class RecordingStore:
    """Notes the URL of each put (and never answers it)."""

    def __init__(self) -> None:
        self.puts: list[str] = []

    def put(self, url: str) -> Deferred[str]:
        self.puts.append(url)
        return Deferred()

    def get(self, key: str) -> Deferred[str]:
        return Deferred()

    def lookup(self, key: str) -> str | None:
        return None

    def count(self) -> int:
        return 0


@settings(max_examples=1000, deadline=None)
@given(queries(), st.sampled_from(["GET", "POST"]))
def test_the_fast_add_stores_the_url_twisted_web_would(query: bytes, method: str) -> None:
    """``FastAnswers.add`` of a ``GET /add?QUERY`` or a form ``POST`` of QUERY: twisted.web's answer
    (``None``) where it has no ``url`` or has a ``key``, a 400 where the URL is not UTF-8, else a put
    of exactly the URL the general path reads."""
    store = RecordingStore()
    fast = FastAnswers(store, store, "go.example", Clock())
    answer: Any = (
        fast.add("GET", b"/add?" + query, b"") if method == "GET" else fast.add("POST", b"/add", query)
    )
    raw, key_given = parsed_by_twisted_web(query)
    if not raw or key_given:
        assert answer is None and store.puts == []
        return
    try:
        url = raw.decode("utf-8")
    except UnicodeDecodeError:
        assert isinstance(answer, tuple) and answer[0] == 400 and store.puts == []
        return
    assert isinstance(answer, Deferred)
    assert store.puts == [url]


@settings(max_examples=400, deadline=None)
@given(queries(), st.sampled_from(["GET", "POST"]))
@example(b"url=https://a.example/p;jsessionid=1", "GET")
@example(b"url=https://a.example/p;jsessionid=1", "POST")
@example(b"x=1;url=https://b.example/", "POST")
def test_the_fast_path_stores_what_the_general_path_stores(query: bytes, method: str) -> None:
    """End to end, through a real site with the fast path on and off (twisted.web's general path,
    ``request.args`` as ``BoundedRequest`` reads them, not ``parse_arguments`` again): the same
    puts, of the same URL, for any query string or form body."""
    if method == "GET":
        assume(all(0x21 <= byte <= 0x7E for byte in query) and b"#" not in query)
        request = b"GET /add?%s HTTP/1.1\r\nHost: x\r\n\r\n" % query
    else:
        request = (
            b"POST /add HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(query), query)
        )
    puts = []
    for fast in (True, False):
        store = RecordingStore()
        site, _ = goto_site(store, fast=fast)
        exchange(site, request)
        puts.append(store.puts)
    assert puts[0] == puts[1]
