"""Issue 13: the body shapes of look-ups and puts (a call with one string, a multicall of such
calls, an answer of one string, a multicall's answer of one string each, and the faults of keys a
master does not hold: alone, or among a multicall's answers) are read by ``rpcwire._common_shape``
without the token loop; property: the library's result or a decline, for hostile strings and
mutated bodies, and the shapes are taken (the token loop is not asked)."""

from __future__ import annotations

import xmlrpc.client as xmlrpclib
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from goto_tw import rpcwire
from goto_tw.xmlrpcbody import parse_with_expat
from tests.test_rpcwire import assert_decodes_as_library, hostile_text, mutated, outcome, xml_text

_METHODS = st.sampled_from(["Store.Get", "Store.Put", "Store.Clicks", "a", "x" * 128, "x" * 129])


def _carried(text: str) -> bool:
    return all(c in "\t\n" or 0x20 <= ord(c) < 0xFFFE for c in text)


_CODES = st.one_of(
    st.sampled_from([404, 410, 8001, -1]), st.integers(min_value=-(2**31), max_value=2**31 - 1)
)


def _bodies(draw: st.DrawFn, strings: st.SearchStrategy[str]) -> str:
    kind = draw(st.sampled_from(["call", "multicall", "answer", "answers", "fault", "faults"]))
    if kind == "fault":
        return xmlrpclib.dumps(xmlrpclib.Fault(draw(_CODES), draw(strings)), methodresponse=True)
    if kind == "faults":
        answers = draw(
            st.lists(
                st.one_of(
                    strings.map(lambda value: [value]),
                    st.builds(lambda code, text: {"faultCode": code, "faultString": text}, _CODES, strings),
                ),
                max_size=6,
            )
        )
        return xmlrpclib.dumps((answers,), methodresponse=True)
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
        assert outcome(lambda: rpcwire.loads(body)) != ("value", "None")


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
        xmlrpclib.dumps(
            xmlrpclib.Fault(404, "no link is stored under 'zz' & <no> other"), methodresponse=True
        ),
        xmlrpclib.dumps(
            ([["https://a.example/"], {"faultCode": 404, "faultString": "no link"}, ["b"]],),
            methodresponse=True,
        ),
        xmlrpclib.dumps(([{"faultCode": -5, "faultString": ""}],), methodresponse=True),
    ],
)
def test_the_common_shapes_skip_the_token_loop(text: str) -> None:
    body = text.encode("utf-8")
    with mock.patch.object(rpcwire, "_load", _refusing_load):
        fast = outcome(lambda: rpcwire.loads(body))
    assert fast != ("value", "None")
    assert fast == outcome(lambda: parse_with_expat(body))


def test_an_unknown_keys_fault_is_raised_as_the_library_raises_it() -> None:
    body = xmlrpclib.dumps(xmlrpclib.Fault(404, "no link &amp; <x>"), methodresponse=True).encode()
    with mock.patch.object(rpcwire, "_load", _refusing_load), pytest.raises(xmlrpclib.Fault) as raised:
        rpcwire.loads(body)
    assert (raised.value.faultCode, raised.value.faultString) == (404, "no link &amp; <x>")


def test_a_batch_with_a_fault_in_it_is_read_whole() -> None:
    answers = [["https://a.example/"], {"faultCode": 404, "faultString": "no link"}, ["https://b.example/"]]
    body = xmlrpclib.dumps((answers,), methodresponse=True).encode()
    with mock.patch.object(rpcwire, "_load", _refusing_load):
        assert rpcwire.loads(body) == ((answers,), None)


@pytest.mark.parametrize(
    "answers",
    [
        [{"faultString": "members swapped", "faultCode": 404}],
        [{"faultCode": "404", "faultString": "a string code"}],
        [{"faultCode": 404, "faultString": "a third member", "extra": 1}],
        [["a"], ["two", "values"]],
    ],
)
def test_a_batch_of_other_answers_is_left_to_the_token_loop(answers: list[Any]) -> None:
    """Not the shapes a master writes for its faults: the general reader decides, as the library would."""
    body = xmlrpclib.dumps((answers,), methodresponse=True).encode()
    with mock.patch.object(rpcwire, "_load", wraps=rpcwire._load) as token_loop:
        assert rpcwire.loads(body) == ((answers,), None)
    assert token_loop.called
    assert_decodes_as_library(body)


def test_a_batch_that_does_not_tile_is_declined() -> None:
    """Matches that skip bytes between them (here a stray one) do not add up to the batch."""
    text = xmlrpclib.dumps(([["a"], ["b"]],), methodresponse=True)
    body = text.replace("</value>\n<value><array>", "</value>\nX<value><array>", 1).encode()
    assert rpcwire.loads(body) is None
    text = xmlrpclib.dumps(([["a"], {"faultCode": 404, "faultString": "no"}, ["b"]],), methodresponse=True)
    for stray in (
        "</value>\n<value><struct>",
        "</struct></value>\n<value><array>",
        "</data></array></value>\n</data>",
    ):
        body = text.replace(stray, stray.replace("\n", "\nX", 1), 1).encode()
        assert body != text.encode()
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
    xmlrpclib.dumps(xmlrpclib.Fault(404, "no link"), methodresponse=True),
    xmlrpclib.dumps(([["a"], {"faultCode": 404, "faultString": "no link"}],), methodresponse=True),
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
