"""The hardened XML-RPC body parser: the same result as xmlrpc.client.loads for any call it accepts."""

from __future__ import annotations

import xmlrpc.client as xmlrpclib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from goto_tw.xmlrpcbody import RefusedBody, parse_call

#: Text XML 1.0 can carry (XML-RPC turns CR LF into LF, so CR is left out).
xml_text = st.text(
    alphabet=st.characters(max_codepoint=0x10FFFF).filter(
        lambda c: c in "\t\n" or ((0x20 <= ord(c) < 0xD800 or ord(c) >= 0xE000) and c not in "\ufffe\uffff")
    ),
    max_size=20,
)
values = st.recursive(
    st.one_of(xml_text, st.integers(min_value=-(2**31), max_value=2**31 - 1), st.booleans()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(xml_text, inner, max_size=4)),
    max_leaves=12,
)


@given(params=st.lists(values, max_size=4).map(tuple), method=st.from_regex(r"\A[A-Za-z.]{1,12}\Z"))
def test_a_call_parses_as_loads_parses_it(params: tuple[Any, ...], method: str) -> None:
    """Whatever the call, parse_call answers exactly what xmlrpc.client.loads does."""
    body = xmlrpclib.dumps(params, method).encode("utf-8")
    assert parse_call(body) == xmlrpclib.loads(body)


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe<\x00a\x00/\x00>\x00",
        b'<?xml version="1.0"?><!DOCTYPE a><a/>',
        b'<?xml version="1.0" standalone="no"?><!DOCTYPE a SYSTEM "a.dtd"><a/>',
    ],
)
def test_what_is_refused(body: bytes) -> None:
    """A body that is not UTF-8, or that has any DOCTYPE at all, is refused."""
    with pytest.raises(RefusedBody):
        parse_call(body)
