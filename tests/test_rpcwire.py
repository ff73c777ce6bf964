"""The RPC fast codec (goto_tw.rpcwire) against the library: the same bytes out, the same values in.

Encoding must equal ``xmlrpc.client.dumps`` for every input, in the narrow shape or not (outside it,
the library itself answers, so even its exceptions are the same). Decoding must never differ from
the hardened library parser (:func:`goto_tw.xmlrpcbody.parse_with_expat`): for any body, random or
mutated, the fast decoder either gives the library's exact result or declines (``None``).
"""

from __future__ import annotations

import math
import xmlrpc.client as xmlrpclib
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from goto_tw import rpcwire
from goto_tw.xmlrpcbody import RefusedBody, parse_call, parse_with_expat

#: Any text at all, XML specials, control characters XML-RPC cannot carry, lone surrogates included.
hostile_text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="<>&;\r\n\t\x00\x01\x0b\x1f\x7f\x85\ufffe\uffff\ud800 a&amp;lt;]]>", max_size=30),
    st.sampled_from(["&amp;", "&lt;", "]]>", "&#60;", "\r\n", "\x00", "é€😀", "http://a.example/?q=1&r=<2>"]),
)
#: Text XML 1.0 can carry (XML-RPC turns CR into LF, so CR is left out).
xml_text = st.text(
    alphabet=st.characters(max_codepoint=0x10FFFF).filter(
        lambda c: c in "\t\n" or ((0x20 <= ord(c) < 0xD800 or ord(c) >= 0xE000) and c not in "\ufffe\uffff")
    ),
    max_size=30,
)


def scalars(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """Strings of ``text``, 32-bit ints, booleans and (non-NaN) doubles."""
    return st.one_of(
        text,
        st.integers(min_value=-(2**31), max_value=2**31 - 1),
        st.booleans(),
        st.floats(allow_nan=False),
    )


def values(
    text: st.SearchStrategy[str], extra: st.SearchStrategy[Any] | None = None
) -> st.SearchStrategy[Any]:
    """Nested arrays (lists, tuples) and structs of scalars, and of ``extra`` values if given."""
    return st.recursive(
        st.one_of(scalars(text), extra if extra is not None else st.nothing()),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.lists(inner, max_size=3).map(tuple),
            st.dictionaries(text, inner, max_size=4),
        ),
        max_leaves=12,
    )


#: What the library marshals differently or not at all: the fast encoder must hand these over.
odd_values = st.one_of(
    st.none(),
    st.integers(),  # beyond 32 bits: OverflowError
    st.binary(max_size=8),
    st.just(xmlrpclib.Binary(b"x")),
    st.just(xmlrpclib.DateTime("20260101T00:00:00")),
    st.just(float("nan")),
    st.dictionaries(st.integers(), st.text(max_size=2), min_size=1, max_size=2),  # non-string keys
)
method_names = st.one_of(st.from_regex(r"\A[A-Za-z0-9_.]{1,20}\Z"), st.text(max_size=12))
#: The calls our slaves send: one Store call, or a multicall of them.
store_calls = st.tuples(
    st.sampled_from(["Store.Get", "Store.Put", "Store.Add", "Store.Changes", "Store.Stats"]),
    st.lists(st.one_of(hostile_text, st.integers(min_value=0, max_value=2**31 - 1)), max_size=2),
)


def outcome(function: Callable[[], Any]) -> tuple[Any, ...]:
    """What a call did, comparable across implementations: its value (by repr, so that NaN equals
    NaN), the fault it raised, or the kind of exception it raised."""
    try:
        return ("value", repr(function()))
    except xmlrpclib.Fault as fault:
        return ("fault", repr(fault.faultCode), repr(fault.faultString))
    except Exception as exc:
        return ("error", type(exc))


def assert_decodes_as_library(body: bytes) -> None:
    """rpcwire either declines ``body`` or reads it exactly as the library does."""
    fast = outcome(lambda: rpcwire.loads(body))
    if fast == ("value", "None"):
        return  # declined: the library decides
    assert fast[0] != "error", fast
    assert fast == outcome(lambda: parse_with_expat(body))


@given(params=st.lists(values(hostile_text, odd_values), max_size=4).map(tuple), method=method_names)
def test_a_call_encodes_as_the_library_encodes_it(params: tuple[Any, ...], method: str) -> None:
    """Any call, hostile strings and unmarshallable values included: dumps_call gives the library's
    text, or raises what the library raises."""
    assert outcome(lambda: rpcwire.dumps_call(params, method)) == outcome(
        lambda: xmlrpclib.dumps(params, method)
    )


@given(result=values(hostile_text, odd_values))
def test_an_answer_encodes_as_the_library_encodes_it(result: Any) -> None:
    """Any answer: dumps_response gives the library's methodResponse text (or its exception)."""
    assert outcome(lambda: rpcwire.dumps_response(result)) == outcome(
        lambda: xmlrpclib.dumps((result,), methodresponse=True)
    )


@given(code=st.one_of(st.integers(), st.text(max_size=5), st.none()), text=st.one_of(hostile_text, st.none()))
def test_a_fault_encodes_as_the_library_encodes_it(code: Any, text: Any) -> None:
    """A fault, any code and text: the library's fault text."""
    fault = xmlrpclib.Fault(code, text)
    assert outcome(lambda: rpcwire.dumps_response(fault)) == outcome(
        lambda: xmlrpclib.dumps(fault, methodresponse=True)
    )


@given(
    params=st.lists(values(xml_text), max_size=4).map(tuple), method=st.from_regex(r"\A[A-Za-z0-9_.]{1,20}\Z")
)
def test_a_canonical_call_decodes_as_the_library_decodes_it(params: tuple[Any, ...], method: str) -> None:
    """A call in the canonical form is read by the fast decoder (it does not decline) with the
    library's result."""
    body = xmlrpclib.dumps(params, method).encode("utf-8")
    fast = rpcwire.loads(body)
    assert fast is not None
    assert repr(fast) == repr(parse_with_expat(body))


@given(calls=st.lists(store_calls, min_size=1, max_size=20))
def test_a_slaves_multicall_decodes_as_the_library_decodes_it(calls: list[tuple[str, list[Any]]]) -> None:
    """The multicalls our slaves send, hostile strings included: the library's result or a decline
    (only for what XML cannot carry), never anything else."""
    batch = [{"methodName": name, "params": params} for name, params in calls]
    text = xmlrpclib.dumps((batch,), "system.multicall")
    assert rpcwire.dumps_call((batch,), "system.multicall") == text
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:
        return  # a lone surrogate: neither side can send it
    assert_decodes_as_library(body)
    carried = all(
        not isinstance(param, str) or all(c in "\t\n" or 0x20 <= ord(c) < 0xFFFE for c in param)
        for _, params in calls
        for param in params
    )
    if carried:
        assert rpcwire.loads(body) is not None


#: A slave's ``Store.Clicks`` batch: keys (hostile ones too) to counts.
click_batches = st.dictionaries(
    st.one_of(hostile_text, st.from_regex(r"\A[0-9A-Za-z_-]{1,64}\Z")),
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    max_size=30,
)


@given(batch=click_batches, method=st.sampled_from(["Store.Clicks", "Store.Other"]))
def test_a_click_batch_decodes_as_the_library_decodes_it(batch: dict[str, int], method: str) -> None:
    """A call of one struct of ints (a slave's click batch) is read whole by the struct-of-ints shape,
    with the library's result; only what XML cannot carry is declined."""
    text = xmlrpclib.dumps((batch,), method)
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:
        return  # a lone surrogate: neither side can send it
    assert_decodes_as_library(body)
    if all(all(c in "\t\n" or 0x20 <= ord(c) < 0xFFFE for c in key) for key in batch):
        assert rpcwire._int_struct_call(text, text.index("<param>"), method) == ((batch,), method)
        assert rpcwire.loads(body) == ((batch,), method)


@pytest.mark.parametrize(
    "params",
    [({"a": 1}, {"b": 2}), ({"a": 1, "b": "x"},), ({"a": 1}, "x"), ({"a": {"b": 1}},), ({"a": True},)],
)
def test_other_structs_are_not_the_struct_of_ints_shape(params: tuple[Any, ...]) -> None:
    """Two parameters, a struct holding anything but ints: not the struct-of-ints shape, still read
    as the library reads them."""
    text = xmlrpclib.dumps(params, "Store.Clicks")
    assert rpcwire._int_struct_call(text, text.index("<param>"), "Store.Clicks") is None
    assert rpcwire.loads(text.encode()) == parse_with_expat(text.encode()) == (params, "Store.Clicks")


@pytest.mark.parametrize(
    "number", ["123456789012345678", "-123456789012345678", "1234567890123456789", "007"]
)
def test_a_struct_of_long_ints_decodes_as_the_library_decodes_it(number: str) -> None:
    """Ints the library would not write (beyond 32 bits, leading zeros): read as it reads them, or
    left to it (more than 18 digits)."""
    body = xmlrpclib.dumps(({"a": 1, "b": 2},), "Store.Clicks").replace(
        "<int>2</int>", f"<int>{number}</int>"
    )
    assert_decodes_as_library(body.encode())
    assert (rpcwire.loads(body.encode()) is None) == (len(number.lstrip("-")) > 18)


@given(result=values(xml_text))
def test_a_canonical_answer_decodes_as_the_library_decodes_it(result: Any) -> None:
    """An answer in the canonical form: read by the fast decoder with the library's result."""
    body = xmlrpclib.dumps((result,), methodresponse=True).encode("utf-8")
    fast = rpcwire.loads(body)
    assert fast is not None
    assert repr(fast) == repr(parse_with_expat(body))


@given(code=st.integers(min_value=-(2**31), max_value=2**31 - 1), text=xml_text)
def test_a_canonical_fault_decodes_as_the_library_decodes_it(code: int, text: str) -> None:
    """A fault answer: the same Fault from the fast decoder as from the library."""
    body = xmlrpclib.dumps(xmlrpclib.Fault(code, text), methodresponse=True).encode("utf-8")
    assert outcome(lambda: rpcwire.loads(body)) == outcome(lambda: parse_with_expat(body))
    assert outcome(lambda: rpcwire.loads(body))[0] == "fault"


_MUTATION_BYTES = st.one_of(
    st.binary(min_size=1, max_size=3),
    st.sampled_from(
        [
            b"<",
            b">",
            b"&",
            b"&amp;",
            b"&#60;",
            b"\r",
            b"\n",
            b" ",
            b"\x00",
            b"\xc3",
            b"\xef\xbf\xbe",
            b"</value>",
            b"<value>",
            b"<string>",
            b"<int>",
            b"<!--x-->",
            b"<!DOCTYPE a>",
            b"<member>\n<name>",
            b"</struct>",
            b"0",
            b"-",
            b"9" * 20,
            b"<boolean>2</boolean>",
            b"<nil/>",
            b"]]>",
        ]
    ),
)


@st.composite
def mutated_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["call", "clicks", "answer", "fault"]))
    if kind == "clicks":
        clicks = draw(st.dictionaries(xml_text, st.integers(0, 2**31 - 1), min_size=1, max_size=4))
        text = xmlrpclib.dumps((clicks,), "Store.Clicks")
    elif kind == "call":
        batch = [
            {"methodName": n, "params": p} for n, p in draw(st.lists(store_calls, min_size=1, max_size=4))
        ]
        text = xmlrpclib.dumps((batch,), "system.multicall")
    elif kind == "answer":
        text = xmlrpclib.dumps((draw(values(xml_text)),), methodresponse=True)
    else:
        text = xmlrpclib.dumps(
            xmlrpclib.Fault(draw(st.integers(-5, 600)), draw(xml_text)), methodresponse=True
        )
    return mutated(draw, text.encode("utf-8", "surrogatepass"), 4)


def mutated(draw: st.DrawFn, data: bytes, most: int) -> bytes:
    """``data`` with 1 to ``most`` bytes inserted, deleted or replaced at drawn places."""
    body = bytearray(data)
    for _ in range(draw(st.integers(1, most))):
        at = draw(st.integers(0, len(body)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        if action == "insert":
            body[at:at] = draw(_MUTATION_BYTES)
        elif action == "delete":
            del body[at : at + draw(st.integers(1, 12))]
        else:
            body[at : at + 1] = draw(_MUTATION_BYTES)
    return bytes(body)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(body=mutated_bodies())
def test_a_mutated_body_never_decodes_differently(body: bytes) -> None:
    """Bytes inserted, deleted or replaced anywhere: the fast decoder declines or agrees."""
    assert_decodes_as_library(body)


@given(body=st.binary(max_size=200))
def test_random_bytes_never_decode_differently(body: bytes) -> None:
    """Noise: declined (or, absurdly, read as the library reads it)."""
    assert_decodes_as_library(b"<?xml version='1.0'?>\n<methodResponse>\n" + body)


def test_a_huge_string_round_trips() -> None:
    """A multi-megabyte string with every escaped character: the same text out, the same value in."""
    url = "http://a.example/" + "&<>é😀" * 200_000
    text = rpcwire.dumps_call(("x", url), "Store.Add")
    assert text == xmlrpclib.dumps(("x", url), "Store.Add")
    body = text.encode("utf-8")
    assert rpcwire.loads(body) == parse_with_expat(body) == (("x", url), "Store.Add")


@pytest.mark.parametrize(
    "body",
    [
        b"<?xml version='1.0' encoding='utf-16'?>\n<methodResponse>\n<params>\n<param>\n"
        b"<value><string>a</string></value>\n</param>\n</params>\n</methodResponse>\n",
        b"\xef\xbb\xbf<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n"
        b"<value><string>a</string></value>\n</param>\n</params>\n</methodResponse>\n",
        b"<?xml version='1.0'?>\n<!DOCTYPE a>\n<methodResponse>\n<params>\n<param>\n"
        b"<value><string>a</string></value>\n</param>\n</params>\n</methodResponse>\n",
        b"<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n"
        b"<value><string>a&#60;</string></value>\n</param>\n</params>\n</methodResponse>\n",
        b"<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n"
        b"<value><string>a\r\nb</string></value>\n</param>\n</params>\n</methodResponse>\n",
        b"<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n"
        b"<value><string>a</string></value>\n</param>\n</params>\n</methodResponse>\n<!-- -->",
        b"<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n"
        b"<value>a</value>\n</param>\n</params>\n</methodResponse>\n",
        b"<?xml version='1.0'?>\n<methodResponse>\n<fault>\n<value><struct>\n<member>\n<name>faultCode</name>\n"
        b"<value><int>1</int></value>\n</member>\n</struct></value>\n</fault>\n</methodResponse>\n",
        b"\xff\xfe<\x00a\x00/\x00>\x00",
    ],
)
def test_what_is_not_canonical_is_left_to_the_library(body: bytes) -> None:
    """Declarations, BOMs, DTDs, character references, CR, comments, untyped values, odd faults,
    other encodings: the fast decoder declines, and parse_call answers as the hardened parser does."""
    assert rpcwire.loads(body) is None
    assert outcome(lambda: parse_call(body)) == outcome(lambda: parse_with_expat(body))


def test_a_dtd_is_still_refused() -> None:
    """The fast path does not weaken the parser: a body with a DTD is refused as before."""
    body = (
        b"<?xml version='1.0'?>\n<!DOCTYPE x [<!ENTITY a 'b'>]>\n<methodCall>\n<methodName>Store.Get</methodName>\n"
        b"<params>\n<param>\n<value><string>&a;</string></value>\n</param>\n</params>\n</methodCall>\n"
    )
    with pytest.raises(RefusedBody):
        parse_call(body)


def test_deep_nesting_is_left_to_the_library() -> None:
    """Arrays nested past MAX_DEPTH: encoded by the library, and declined by the fast decoder."""
    value: Any = "x"
    for _ in range(rpcwire.MAX_DEPTH + 2):
        value = [value]
    text = rpcwire.dumps_response(value)
    assert text == xmlrpclib.dumps((value,), methodresponse=True)
    assert rpcwire.loads(text.encode("utf-8")) is None
    assert parse_call(text.encode("utf-8")) == ((value,), None)


def test_nan_and_infinities_round_trip() -> None:
    """Doubles the library writes by repr (nan, inf) read back as the library reads them."""
    body = rpcwire.dumps_response([math.inf, -math.inf, math.nan, 1e300, -0.0]).encode("utf-8")
    assert repr(rpcwire.loads(body)) == repr(parse_with_expat(body))


@given(
    calls=st.lists(
        st.tuples(
            st.one_of(method_names, st.sampled_from(["Store.Get", "Store.Add"])),
            st.one_of(st.lists(values(hostile_text, odd_values), max_size=3), st.tuples(hostile_text)),
        ),
        max_size=6,
    )
)
def test_a_multicall_encodes_as_the_library_encodes_its_dicts(calls: list[tuple[str, Any]]) -> None:
    """``dumps_multicall`` of ``(method, params)`` pairs, hostile and unmarshallable values and deep
    nesting included: the library's text for the dicts a multicall is made of (or its exception)."""
    batch = [{"methodName": method, "params": list(params)} for method, params in calls]
    assert outcome(lambda: rpcwire.dumps_multicall(calls)) == outcome(
        lambda: xmlrpclib.dumps((batch,), "system.multicall")
    )
