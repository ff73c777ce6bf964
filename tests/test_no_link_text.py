"""A key no link is stored under is told in the same words on every path (``errors.no_link_text``)."""

from __future__ import annotations

import json
import xmlrpc.client as xmlrpclib

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from goto_tw.errors import SHOWN_KEY_LENGTH, KeyNotFound, no_link_text
from goto_tw.metrics import Metrics
from goto_tw.proxystore import ProxyStore
from goto_tw.rpc import RPCResource
from goto_tw.store import URLStore
from goto_tw.tap import make_root
from tests.helpers import failure_of
from tests.stub_client import Client
from tests.test_rpc import Master


def test_the_text_quotes_the_key_and_shows_at_most_its_first_characters() -> None:
    """The key as ``repr`` writes it (unprintable characters escaped), cut to SHOWN_KEY_LENGTH."""
    assert no_link_text("zz") == "no link is stored under 'zz'"
    assert no_link_text("a\x00b") == "no link is stored under 'a\\x00b'"
    long_key = "k" * (SHOWN_KEY_LENGTH + 500)
    assert no_link_text(long_key) == f"no link is stored under '{'k' * SHOWN_KEY_LENGTH}'"
    assert str(KeyNotFound.for_key(long_key)) == no_link_text(long_key)


@pytest.fixture
def client() -> Client:
    store = URLStore()
    return Client(make_root(store, "go.example", Metrics("master"), rpc=RPCResource(store)))


def master_fault(client: Client, key: str) -> tuple[int, str]:
    """``Store.Get(key)``'s fault code and text, as a plain XML-RPC client reads them."""
    call = xmlrpclib.dumps((key,), "Store.Get").encode()
    _, _, answer = client.request("POST", "/RPC2", data=call, headers={"content-type": "text/xml"})
    with pytest.raises(xmlrpclib.Fault) as fault:
        xmlrpclib.loads(answer)
    return fault.value.faultCode, fault.value.faultString


def test_a_page_the_api_and_a_masters_fault_say_the_same_for_an_unknown_key(client: Client) -> None:
    """``GET /zz``'s 404 page, the API's 404 problem and ``Store.Get``'s fault 404 all say no_link_text."""
    status, _, page = client.request("GET", "/zz")
    assert (status, page.decode()) == (404, no_link_text("zz") + "\n")
    status, _, problem = client.request("GET", "/api/v1/links/zz")
    assert (status, json.loads(problem)["detail"]) == (404, no_link_text("zz"))
    assert master_fault(client, "zz") == (404, no_link_text("zz"))


@pytest.mark.parametrize("key", ["a.b", "x" * 300 + "."])
def test_an_impossible_key_is_told_alike_with_at_most_its_first_characters(client: Client, key: str) -> None:
    """A key no link can have (a dot, too long) is a 404 in the same words, however long the key."""
    status, _, problem = client.request("GET", "/api/v1/links/" + key)
    assert (status, json.loads(problem)["detail"]) == (404, no_link_text(key))
    code, text = master_fault(client, key)
    assert (code, text) == (404, no_link_text(key))
    assert len(text) <= len(no_link_text("x" * SHOWN_KEY_LENGTH))


def test_a_slave_passes_its_masters_words_on_and_repeats_them_from_its_memory() -> None:
    """The master's fault text reaches the slave's caller; asked again while the slave remembers the
    key as unknown, it answers the same words without asking."""
    master = Master(URLStore())
    slave = ProxyStore(master.remote, Clock())
    first = failure_of(master.settle(slave.get("zz")))
    assert first.check(KeyNotFound) and str(first.value) == no_link_text("zz")
    again = failure_of(slave.get("zz"))
    assert again.check(KeyNotFound) and str(again.value) == no_link_text("zz")


@pytest.mark.parametrize(
    "key",
    ["\U000f0000" * 100, "\x85" * 100, "a'\"" * 40, "\u00e9" * 90],
    ids=["astral", "c1", "quotes", "e-acute"],
)
def test_a_key_of_escaped_characters_is_shown_short_enough_for_a_slave_to_pass_on(key: str) -> None:
    """``repr`` writes an unprintable character in up to 10 (``\\U000f0000``): 80 of them made an
    826-character fault text that a slave's ``_client_text`` (300 at most) refused, so its caller got
    KeyNotFound worded "cannot reach its store". The shown key is cut so its repr stays short."""
    text = no_link_text(key)
    assert text.startswith("no link is stored under ") and text.isprintable()
    assert len(text) <= len(no_link_text("x" * SHOWN_KEY_LENGTH))
    master = Master(URLStore())
    got = failure_of(master.settle(master.remote.get(key)))
    assert got.check(KeyNotFound) and str(got.value) == text


def test_the_shown_key_is_its_longest_beginning_whose_repr_fits() -> None:
    """Cut to fit, the key is still shown as ``repr`` writes it: a beginning of it, quoted."""
    assert no_link_text("\x01" * 100) == "no link is stored under " + repr("\x01" * (SHOWN_KEY_LENGTH // 4))
    assert no_link_text("ab\x01" * 5) == "no link is stored under " + repr("ab\x01" * 5)


@given(st.text(max_size=200))
@example("\U000f0000" * 100)
@example("'\"" * 60)
@example("a" * 79 + "\x00")
def test_the_shown_key_is_the_longest_beginning_that_fits_whatever_the_key(key: str) -> None:
    """The bisection finds what cutting one character at a time from SHOWN_KEY_LENGTH would."""
    cut = key[:SHOWN_KEY_LENGTH]
    while len(repr(cut)) > SHOWN_KEY_LENGTH + 2:
        cut = cut[:-1]
    assert no_link_text(key) == "no link is stored under " + repr(cut)
