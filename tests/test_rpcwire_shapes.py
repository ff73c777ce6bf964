"""Issue 13: the four body shapes of look-ups and puts (a call with one string, a multicall of such
calls, an answer of one string, a multicall's answer of one string each) are read by
``rpcwire._common_shape`` without the token loop; property: the library's result or a decline, for
hostile strings and mutated bodies, and the shapes are taken (the token loop is not asked)."""

from __future__ import annotations

import xmlrpc.client as xmlrpclib
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from goto_tw import rpcwire
from goto_tw.xmlrpcbody import parse_with_expat
from tests.test_rpcwire import assert_decodes_as_library, hostile_text, mutated, xml_text

_METHODS = st.sampled_from(["Store.Get", "Store.Put", "Store.Clicks", "a", "x" * 128, "x" * 129])


def _carried(text: str) -> bool:
    return all(c in "\t\n" or 0x20 <= ord(c) < 0xFFFE for c in text)


def _bodies(draw: st.DrawFn, strings: st.SearchStrategy[str]) -> str:
    kind = draw(st.sampled_from(["call", "multicall", "answer", "answers"]))
    if kind == "call":
        return xmlrpclib.dumps((draw(strings),), draw(_METHODS))
    if kind == "multicall":
        calls = draw(st.lists(st.tuples(_METHODS, strings), max_size=6))
        batch = [{"methodName": name, "params": [param]} for name, param in calls]
        return xmlrpclib.dumps((batch,), "system.multicall")
    if kind == "answer":
        return xmlrpclib.dumps((draw(strings),), methodresponse=True)
    return xmlrpclib.dumps(([[value] for value in draw(st.lists(strings, max_size=6))],), methodresponse=True)


@st.composite
def shaped_bodies(draw: st.DrawFn) -> str:
    return _bodies(draw, hostile_text)


@st.composite
def mutated_shaped_bodies(draw: st.DrawFn) -> bytes:
    return mutated(draw, _bodies(draw, xml_text).encode("utf-8"), 3)


@settings(max_examples=1500)
@given(text=shaped_bodies())
def test_the_common_shapes_decode_as_the_library_decodes_them(text: str) -> None:
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:
        return  # a lone surrogate: neither side can send it
    assert_decodes_as_library(body)
    if _carried(text) and "x" * 129 not in text:  # a method name the canonical form allows
        assert rpcwire.loads(body) is not None


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(body=mutated_shaped_bodies())
def test_a_mutated_common_shape_never_decodes_differently(body: bytes) -> None:
    assert_decodes_as_library(body)


def _refusing_load(text: str, pos: int) -> Any:
    raise AssertionError("the token loop was asked")


@pytest.mark.parametrize(
    "text",
    [
        xmlrpclib.dumps(("ab&amp;c<>",), "Store.Get"),
        xmlrpclib.dumps(
            ([{"methodName": "Store.Get", "params": [str(n)]} for n in range(17)],), "system.multicall"
        ),
        xmlrpclib.dumps(([],), "system.multicall"),
        xmlrpclib.dumps(("https://a.example/?q=1&r=<2>",), methodresponse=True),
        xmlrpclib.dumps(([[f"https://a.example/{n}"] for n in range(17)],), methodresponse=True),
    ],
)
def test_the_common_shapes_skip_the_token_loop(text: str) -> None:
    body = text.encode("utf-8")
    with mock.patch.object(rpcwire, "_load", _refusing_load):
        fast = rpcwire.loads(body)
    assert fast is not None
    assert repr(fast) == repr(parse_with_expat(body))


def test_a_batch_with_a_fault_in_it_is_read_by_the_token_loop() -> None:
    answers = [["https://a.example/"], {"faultCode": 404, "faultString": "no link"}, ["https://b.example/"]]
    body = xmlrpclib.dumps((answers,), methodresponse=True).encode()
    assert rpcwire.loads(body) == ((answers,), None)


def test_a_batch_that_does_not_tile_is_declined() -> None:
    """Matches that skip bytes between them (here a stray one) do not add up to the batch."""
    text = xmlrpclib.dumps(([["a"], ["b"]],), methodresponse=True)
    body = text.replace("</value>\n<value><array>", "</value>\nX<value><array>", 1).encode()
    assert rpcwire.loads(body) is None
    call = xmlrpclib.dumps(([{"methodName": "Store.Get", "params": ["k"]}] * 2,), "system.multicall")
    body = call.replace("</struct></value>\n<value>", "</struct></value>\n \n<value>", 1).encode()
    assert rpcwire.loads(body) is None


_SHAPES = [
    xmlrpclib.dumps(("k",), "Store.Get"),
    xmlrpclib.dumps(
        ([{"methodName": "Store.Get", "params": [str(n)]} for n in range(3)],), "system.multicall"
    ),
    xmlrpclib.dumps(("https://a.example/",), methodresponse=True),
    xmlrpclib.dumps(([[f"https://a.example/{n}"] for n in range(3)],), methodresponse=True),
]


@pytest.mark.parametrize("text", _SHAPES)
def test_a_shape_whose_closing_tags_are_changed_is_not_read_as_it(text: str) -> None:
    """Every character of each shape's closing tags checked: one changed to another (the length
    kept, so the batch's tiling alone cannot tell) is declined or read as the library reads it."""
    tail = len("</data></array></value>\n</param>\n</params>\n</methodCall>\n")
    for at in range(len(text) - tail, len(text)):
        for other in "X ":
            if text[at] != other:
                assert_decodes_as_library((text[:at] + other + text[at + 1 :]).encode())
