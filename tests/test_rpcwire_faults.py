"""Issue 13: the whole-body fault readers of ``rpcwire._common_shape`` take a body only
when it is exactly the canonical text: anything before or after a lone fault, or a fault's struct
where it does not stand for a fault, is read as the library reads it (or left to it)."""

from __future__ import annotations

import xmlrpc.client as xmlrpclib
from typing import Any

import pytest

from goto_tw import rpcwire
from tests.test_rpcwire import assert_decodes_as_library, outcome

_FAULT = xmlrpclib.dumps(xmlrpclib.Fault(404, "no link"), methodresponse=True)
_OPEN = "<methodResponse>\n<fault>\n"


@pytest.mark.parametrize(
    "body",
    [
        _FAULT + "X",
        _FAULT + "<x/>",
        _FAULT + "</methodResponse>\n",
        _FAULT + _FAULT[len("<?xml version='1.0'?>\n") :],
        _FAULT + " ",
        _FAULT.replace(_OPEN, "<methodResponse>\nX<fault>\n"),
        _FAULT.replace(_OPEN, "<methodResponse>\n<fault>\nX"),
        _FAULT.replace("</fault>", "X</fault>"),
    ],
)
def test_a_lone_fault_with_anything_around_it_is_not_read_as_a_fault_by_itself(body: str) -> None:
    """Stray text before or after a lone fault: declined (then expat refuses it, or reads the
    whitespace as nothing), never raised as the fault by the fast reader alone."""
    assert body != _FAULT
    assert rpcwire.loads(body.encode()) is None
    assert_decodes_as_library(body.encode())


@pytest.mark.parametrize(
    "value",
    [
        {"faultCode": 404, "faultString": "no link"},
        [{"faultCode": 404, "faultString": "no link"}],
        [[{"faultCode": 404, "faultString": "no link"}]],
        [["a"], [{"faultCode": 404, "faultString": "no link"}]],
    ],
)
def test_a_fault_struct_that_is_an_answers_value_is_a_value(value: Any) -> None:
    """A struct shaped like a fault is a fault only as a multicall's entry or inside <fault>: as
    a lone answer, or nested in an entry, it is a value (as the library reads it)."""
    body = xmlrpclib.dumps((value,), methodresponse=True).encode()
    assert outcome(lambda: rpcwire.loads(body)) == ("value", repr(((value,), None)))
    assert_decodes_as_library(body)


@pytest.mark.parametrize(
    ("code", "taken"),
    [
        ("007", True),
        ("-0", True),
        ("-2147483649", True),
        ("123456789012345678", True),
        ("1234567890123456789", False),
        ("+4", False),
        (" 4", False),
        ("4.0", False),
    ],
)
def test_a_fault_code_no_writer_here_would_write_is_read_as_the_library_reads_it(
    code: str, taken: bool
) -> None:
    """Codes beyond 32 bits, with leading zeros or a sign (a master of another make may send them),
    alone and in a batch: the library's int, or left to the library."""
    lone = _FAULT.replace("<int>404</int>", f"<int>{code}</int>")
    batch = xmlrpclib.dumps(([["a"], {"faultCode": 404, "faultString": "no"}],), methodresponse=True)
    batch = batch.replace("<int>404</int>", f"<int>{code}</int>")
    for body in (lone.encode(), batch.encode()):
        assert_decodes_as_library(body)
        assert _taken(body) == taken


def _taken(body: bytes) -> bool:
    """Whether rpcwire read ``body`` itself (a value or a fault) rather than leave it to the library."""
    return outcome(lambda: rpcwire.loads(body)) != ("value", "None")
