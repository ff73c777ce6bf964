"""Review 26: hand-made struct-of-ints bodies, each decoded by rpcwire as the library does (or declined)."""

from __future__ import annotations

import xmlrpc.client as xmlrpclib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .test_rpcwire import assert_decodes_as_library

BASE = xmlrpclib.dumps(({"a": 1, "b": 2},), "Store.Clicks")
A = "<member>\n<name>a</name>\n<value><int>1</int></value>\n</member>\n"
B = "<member>\n<name>b</name>\n<value><int>2</int></value>\n</member>\n"


def member(name: str, number: str, tag: str = "int") -> str:
    return f"<member>\n<name>{name}</name>\n<value><{tag}>{number}</{tag}></value>\n</member>\n"


EDITS = {
    "duplicate": (A + B, A + B + member("a", "7")),
    "duplicate_first": (A + B, member("b", "9") + A + B),
    "empty": (A + B, ""),
    "amp": (A, member("x&amp;y", "1")),
    "lt_gt": (A, member("&lt;/struct&gt;", "1")),
    "amp_lt": (A, member("&amp;lt;", "1")),
    "bad_entity": (A, member("&quot;", "1")),
    "char_ref": (A, member("&#60;", "1")),
    "bare_amp": (A, member("a&b", "1")),
    "cr": (A, member("a\rb", "1")),
    "crlf": (A, member("a\r\nb", "1")),
    "tab_nl": (A, member("a\t\nb", "1")),
    "nul": (A, member("a\x00b", "1")),
    "ctrl": (A, member("a\x1fb", "1")),
    "fffe": (A, member("a\ufffeb", "1")),
    "nonbmp": (A, member("a\U0001fffeb", "1")),
    "nel": (A, member("a\x85\u2028b", "1")),
    "empty_name": (A, member("", "1")),
    "spaces_name": (A, member("  ", "1")),
    "lead_zero": (A, member("a", "007")),
    "minus_zero": (A, member("a", "-0")),
    "minus_zeros": (A, member("a", "-000")),
    "d18": (A, member("a", "9" * 18)),
    "d19": (A, member("a", "9" * 19)),
    "neg18": (A, member("a", "-" + "9" * 18)),
    "plus": (A, member("a", "+1")),
    "space_int": (A, member("a", " 1")),
    "underscore": (A, member("a", "1_0")),
    "arabic_digit": (A, member("a", "\u0661")),
    "i4": (A, member("a", "1", "i4")),
    "i8": (A, member("a", "1", "i8")),
    "nl_missing": (A, A[:-1]),
    "extra_nl": (A, A + "\n"),
    "space_between": (A, A + " "),
    "no_int_tag": (A, "<member>\n<name>a</name>\n<value>1</value>\n</member>\n"),
    "nested_struct": (
        A,
        "<member>\n<name>s</name>\n<value><struct>\n" + A + "</struct></value>\n</member>\n",
    ),
    "member_close_in_name": (A, member("a</member>", "1")),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_edge(edit: str) -> None:
    """One member of a click batch made odd (its name, its number, its tags, the lines around it):
    read as the library reads it, or left to the library."""
    old, new = EDITS[edit]
    assert old in BASE
    body = BASE.replace(old, new, 1)
    try:
        raw = body.encode("utf-8")
    except UnicodeEncodeError:
        return
    assert_decodes_as_library(raw)


WRAPS = {
    "two_params": lambda t: t.replace(
        "</param>\n", "</param>\n<param>\n<value><int>1</int></value>\n</param>\n", 1
    ),
    "two_structs": lambda t: t.replace(
        "</param>\n", "</param>\n<param>\n<value><struct>\n" + A + "</struct></value>\n</param>\n", 1
    ),
    "trailing": lambda t: t + "x",
    "trailing_nl": lambda t: t + "\n",
    "in_array": lambda t: t.replace(
        "<param>\n<value><struct>", "<param>\n<value><array><data>\n<value><struct>"
    ).replace("</struct></value>\n</param>", "</struct></value>\n</data></array></value>\n</param>"),
    "multicall_method": lambda t: t.replace("Store.Clicks", "system.multicall"),
    "no_params_close": lambda t: t.replace("</params>\n", ""),
    "crlf_everywhere": lambda t: t.replace("\n", "\r\n"),
}


@pytest.mark.parametrize("wrap", sorted(WRAPS))
def test_wrap(wrap: str) -> None:
    """A click batch inside something else, beside another parameter, or with bytes after it: read as
    the library reads it, or left to the library."""
    assert_decodes_as_library(WRAPS[wrap](BASE).encode())


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "&amp;", "&lt;x&gt;", ""]), st.from_regex(r"\A-?[0-9]{1,19}\Z")),
        max_size=6,
    )
)
def test_dup_and_numbers(members: list[tuple[str, str]]) -> None:
    """Repeated names (the last value wins, in the first one's place) and numbers of up to 19
    digits: read as the library reads them, or left to it."""
    body = BASE.replace(A + B, "".join(member(n, v) for n, v in members))
    assert_decodes_as_library(body.encode())
