"""XML-RPC encoding and decoding for the narrow shapes goto's own slaves and master exchange.

Why hand-rolled: every add and uncached redirect through a slave crosses the master's RPC, and
``xmlrpc.client`` spends its time in per-value method dispatch (``Marshaller``) and in expat's
per-element callbacks into ``Unmarshaller`` (slow on PyPy: a callback from C per tag). For the
bodies the two sides actually send (a call or ``system.multicall`` of ``Store.*`` calls with string
and int parameters; answers of strings, small structs, arrays and faults), straight-line code is
faster. Measured (timeit, one process, library and this interleaved; a multicall of 17
``Store.Add`` calls and its answer): encoding the call 45 -> 22 us on CPython 3.11 (23 -> 12 on
PyPy 3.9), the answer 38 -> 18 (21 -> 11); decoding the call 290-490 -> 100 us on CPython and
210-420 -> 33-41 us on PyPy (expat's callbacks were the bulk of PyPy's RPC cost), the answer
250-460 -> 94-170 (320-540 -> 36-55).

The contract, property-tested in ``tests/test_rpcwire.py``:

- :func:`dumps_call` / :func:`dumps_response` return exactly the text ``xmlrpc.client.dumps``
  returns (the caller encodes it as UTF-8, as before), and anything outside the narrow shape
  (``None``, bytes, dates, subclasses, ints beyond 32 bits, deep or recursive nesting, odd method
  names) is handed to ``xmlrpc.client.dumps`` itself, so it succeeds or fails exactly as before.
- :func:`loads` returns what :func:`goto_tw.xmlrpcbody.parse_call` returns (the library's
  ``loads`` behind a hardened parser), or ``None`` when the body is not byte for byte in the
  canonical form ``xmlrpc.client.dumps`` writes; the caller then asks the library, which decides
  (parses, faults, or refuses). Nothing is ever decoded differently: the accepted grammar is a
  strict subset of XML (no DTD, no comments, no character references, no CR, no characters XML
  cannot carry), so whatever it accepts expat would parse into the same events.
"""

from __future__ import annotations

import re
import xmlrpc.client as xmlrpclib
from collections.abc import Sequence
from typing import Any

#: Deepest nesting of arrays and structs handled here; deeper (or recursive) goes to the library.
MAX_DEPTH = 16

_MININT = -(2**31)
_MAXINT = 2**31 - 1
_HEADER = "<?xml version='1.0'?>\n"
_METHOD_NAME = re.compile(r"[A-Za-z0-9_.]{1,128}\Z")


class _Decline(Exception):
    """Outside the narrow shape: the library decides."""


# --- encoding ------------------------------------------------------------------------------------


def _escape(text: str) -> str:
    # xmlrpc.client.escape, skipped when there is nothing to escape (the common case).
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def _dump(value: Any, out: list[str], depth: int) -> None:
    kind = type(value)
    if kind is str:
        out.append("<value><string>")
        out.append(_escape(value))
        out.append("</string></value>\n")
    elif kind is int:
        if value < _MININT or value > _MAXINT:
            raise _Decline
        out.append(f"<value><int>{value}</int></value>\n")
    elif kind is bool:
        out.append(
            "<value><boolean>1</boolean></value>\n" if value else "<value><boolean>0</boolean></value>\n"
        )
    elif kind is float:
        out.append(f"<value><double>{value!r}</double></value>\n")
    elif kind is list or kind is tuple:
        if depth >= MAX_DEPTH:
            raise _Decline
        out.append("<value><array><data>\n")
        for item in value:
            _dump(item, out, depth + 1)
        out.append("</data></array></value>\n")
    elif kind is dict:
        if depth >= MAX_DEPTH:
            raise _Decline
        out.append("<value><struct>\n")
        for name, item in value.items():
            if type(name) is not str:
                raise _Decline
            out.append("<member>\n<name>")
            out.append(_escape(name))
            out.append("</name>\n")
            _dump(item, out, depth + 1)
            out.append("</member>\n")
        out.append("</struct></value>\n")
    else:
        raise _Decline


def dumps_call(params: tuple[Any, ...], method: str) -> str:
    """``xmlrpc.client.dumps(params, method)``, the same text."""
    if type(params) is tuple and type(method) is str and _METHOD_NAME.match(method):
        out = [_HEADER, "<methodCall>\n<methodName>", method, "</methodName>\n<params>\n"]
        try:
            for param in params:
                out.append("<param>\n")
                _dump(param, out, 0)
                out.append("</param>\n")
        except _Decline:
            pass
        else:
            out.append("</params>\n</methodCall>\n")
            return "".join(out)
    return xmlrpclib.dumps(params, method)


_MULTICALL_HEAD = (
    _HEADER
    + "<methodCall>\n<methodName>system.multicall</methodName>\n<params>\n<param>\n<value><array><data>\n"
)
_MULTICALL_CALL = "<value><struct>\n<member>\n<name>methodName</name>\n<value><string>"
_MULTICALL_PARAMS = "</string></value>\n</member>\n<member>\n<name>params</name>\n<value><array><data>\n"
_MULTICALL_CALL_END = "</data></array></value>\n</member>\n</struct></value>\n"
_MULTICALL_TAIL = "</data></array></value>\n</param>\n</params>\n</methodCall>\n"


def dumps_multicall(calls: Sequence[tuple[str, Sequence[Any]]]) -> str:
    """``system.multicall`` of ``calls`` (``(method, params)`` pairs) as ``xmlrpc.client.dumps`` writes
    ``([{"methodName": method, "params": list(params)}, ...],)``: the same text, without building
    those dicts and lists (a slave's batches: 3% of its time on uncached redirects)."""
    out = [_MULTICALL_HEAD]
    try:
        for method, params in calls:
            if type(method) is not str:
                raise _Decline
            out.append(_MULTICALL_CALL)
            out.append(_escape(method))
            out.append(_MULTICALL_PARAMS)
            for param in params:
                _dump(param, out, 3)  # the batch's array, a call's struct, its params' array
            out.append(_MULTICALL_CALL_END)
    except _Decline:
        batch = [{"methodName": method, "params": list(params)} for method, params in calls]
        return xmlrpclib.dumps((batch,), "system.multicall")
    out.append(_MULTICALL_TAIL)
    return "".join(out)


def dumps_response(result: Any) -> str:
    """``xmlrpc.client.dumps((result,), methodresponse=True)``, or of ``result`` itself when it is
    a ``Fault``: the same text (and the same exception for what the library cannot marshal)."""
    out = [_HEADER, "<methodResponse>\n"]
    try:
        if isinstance(result, xmlrpclib.Fault):
            out.append("<fault>\n")
            _dump({"faultCode": result.faultCode, "faultString": result.faultString}, out, 0)
            out.append("</fault>\n")
        else:
            out.append("<params>\n<param>\n")
            _dump(result, out, 0)
            out.append("</param>\n</params>\n")
    except _Decline:
        if isinstance(result, xmlrpclib.Fault):
            return xmlrpclib.dumps(result, methodresponse=True)
        return xmlrpclib.dumps((result,), methodresponse=True)
    out.append("</methodResponse>\n")
    return "".join(out)


# --- decoding ------------------------------------------------------------------------------------

# Character data as xmlrpc.client writes it: no markup, no CR (expat would turn it into LF), none of
# the characters XML cannot carry; "&" only in the three entities the writer uses (checked apart).
_TEXT = r"[^<>\x00-\x08\x0b\x0c\x0e-\x1f\r\ufffe\uffff]*"
_BAD_ENTITY = re.compile(r"&(?!amp;|lt;|gt;)")
_CALL_HEAD = re.compile(
    re.escape(_HEADER) + r"<methodCall>\n<methodName>([A-Za-z0-9_.]{1,128})</methodName>\n<params>\n"
)
_PARAM_OPEN = "<param>\n"
_PARAM_CLOSE = "</param>\n"
_CALL_TAIL = "</params>\n</methodCall>\n"
_RESPONSE_HEAD = _HEADER + "<methodResponse>\n"
_RESPONSE_PARAMS = "<params>\n<param>\n"
_RESPONSE_PARAMS_TAIL = "</param>\n</params>\n</methodResponse>\n"
_RESPONSE_FAULT = "<fault>\n"
_RESPONSE_FAULT_TAIL = "</fault>\n</methodResponse>\n"


def _text(raw: str) -> str:
    if "&" not in raw:
        return raw
    if _BAD_ENTITY.search(raw):
        raise _Decline
    return raw.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


# One token of a value: whole common shapes, the scalar values, the open and close tags of arrays
# and structs, and a member's name. Which group matched last (``lastindex``) says which token it is.
_TOKEN = re.compile(
    # A call in a slave's multicall (its parameters strings and ints), matched whole.
    r"<value><struct>\n<member>\n<name>methodName</name>\n<value><string>([A-Za-z0-9_.]{1,128})</string></value>\n"
    r"</member>\n<member>\n<name>params</name>\n<value><array><data>\n("  # 1, 2
    r"(?:<value><string>" + _TEXT + r"</string></value>\n|<value><int>-?[0-9]{1,18}</int></value>\n)*"
    r")</data></array></value>\n</member>\n</struct></value>\n"
    # An answer in the master's multicall answer: [a string], matched whole.
    r"|<value><array><data>\n<value><string>(" + _TEXT + r")</string></value>\n</data></array></value>\n"  # 3
    r"|<value><string>(" + _TEXT + r")</string></value>\n"  # 4
    r"|<value><int>(-?[0-9]{1,18})</int></value>\n"  # 5
    r"|<member>\n<name>(" + _TEXT + r")</name>\n"  # 6
    r"|(</member>\n)"  # 7
    r"|(<value><struct>\n)"  # 8
    r"|(</struct></value>\n)"  # 9
    r"|(<value><array><data>\n)"  # 10
    r"|(</data></array></value>\n)"  # 11
    r"|<value><boolean>([01])</boolean></value>\n"  # 12
    r"|<value><double>(-?(?:[0-9]{1,20}(?:\.[0-9]{1,20})?(?:e[-+][0-9]{1,3})?|inf)|nan)</double></value>\n"  # 13
)
# The parameters of a call matched whole: a string (group 1) or an int (group 2) each.
_PARAM = re.compile(
    r"<value><string>(" + _TEXT + r")</string></value>\n|<value><int>(-?[0-9]{1,18})</int></value>\n"
)
_NEED_MEMBER, _NEED_VALUE, _NEED_MEMBER_CLOSE = 0, 1, 2

# A call whose one parameter is a struct of ints by name (``Store.Clicks({key: count})``, up to 5,000
# members a batch), read with one ``findall`` whose matches must tile the struct, as the multicalls
# below: the token loop took three Python steps a member. ``bench/master_clicks.py --keys 5000``:
# parsing 12.3-13.4 -> 3.5-3.7 ms on CPython 3.11 (PyPy 2.5-2.9 -> 2.5), the whole call 27-30 ->
# 18-23 ms.
_INT_MEMBERS = re.compile(
    r"<member>\n<name>(" + _TEXT + r")</name>\n<value><int>(-?[0-9]{1,18})</int></value>\n</member>\n"
)
#: Bytes of a struct member of an int besides its name and digits (its tags, as the library writes
#: them); also what a slave's queue counts for each key of a click batch (``goto_tw.remote``).
INT_MEMBER_FIXED = len("<member>\n<name></name>\n<value><int></int></value>\n</member>\n")
_STRUCT_PARAM_OPEN = "<param>\n<value><struct>\n"
_STRUCT_PARAM_CLOSE = "</struct></value>\n</param>\n" + _CALL_TAIL

# Whole bodies of the four shapes a slave and its master exchange for look-ups and puts, each read
# without a Python step per token: a call with one string parameter and an answer of one string (one
# regular expression each), and a multicall of such calls and its answer of one string each (one
# ``findall`` over the batch, whose matches must tile it: their lengths add up to the batch's, so
# they are contiguous and cover it; the text is scanned once). Measured (timeit, CPython 3.11): a
# multicall of 16 ``Store.Get`` 34 -> 14 us, its answer 19 -> 11 us, a single call 1.9 -> 0.9 us
# and answer 1.8 -> 1.1 us. Faults are read whole as well (below); anything else (ints, other shapes)
# is read by ``_load``.
_STRING = r"<value><string>(" + _TEXT + r")</string></value>\n"
_ONE_STRING_CALL = re.compile(r"<param>\n" + _STRING + r"</param>\n" + re.escape(_CALL_TAIL))
_STRING_CALL_PARTS = (
    "<value><struct>\n<member>\n<name>methodName</name>\n<value><string>",
    "</string></value>\n</member>\n<member>\n<name>params</name>\n<value><array><data>\n<value><string>",
    "</string></value>\n</data></array></value>\n</member>\n</struct></value>\n",
)
_STRING_CALLS = re.compile(
    re.escape(_STRING_CALL_PARTS[0])
    + r"([A-Za-z0-9_.]{1,128})"
    + re.escape(_STRING_CALL_PARTS[1])
    + "("
    + _TEXT
    + ")"
    + re.escape(_STRING_CALL_PARTS[2])
)
_STRING_CALL_FIXED = sum(len(part) for part in _STRING_CALL_PARTS)
_MULTICALL_OPEN = "<param>\n<value><array><data>\n"
_MULTICALL_CLOSE = "</data></array></value>\n</param>\n" + _CALL_TAIL
_ONE_STRING_ANSWER = re.compile(re.escape(_RESPONSE_PARAMS) + _STRING + re.escape(_RESPONSE_PARAMS_TAIL))
_STRING_ANSWER_PARTS = (
    "<value><array><data>\n<value><string>",
    "</string></value>\n</data></array></value>\n",
)
_STRING_ANSWERS = re.compile(
    re.escape(_STRING_ANSWER_PARTS[0]) + "(" + _TEXT + ")" + re.escape(_STRING_ANSWER_PARTS[1])
)
_STRING_ANSWER_FIXED = sum(len(part) for part in _STRING_ANSWER_PARTS)
_ANSWERS_OPEN = _RESPONSE_PARAMS + "<value><array><data>\n"
_ANSWERS_CLOSE = "</data></array></value>\n" + _RESPONSE_PARAMS_TAIL
# A master's "no such key" (and every other refusal): a fault, alone or among a multicall's answers,
# read whole too (an unknown key's answer took the token loop: 7.6 -> 2.7 us with its raise, a batch
# of three answers with a fault in it 10.6 -> 4.7 us; timeit, CPython 3.11).
_FAULT_STRUCT = (
    re.escape("<value><struct>\n<member>\n<name>faultCode</name>\n<value><int>")
    + r"(-?[0-9]{1,18})"
    + re.escape("</int></value>\n</member>\n<member>\n<name>faultString</name>\n")
    + _STRING
    + re.escape("</member>\n</struct></value>\n")
)
_ONE_FAULT = re.compile(re.escape(_RESPONSE_FAULT) + _FAULT_STRUCT + re.escape(_RESPONSE_FAULT_TAIL))
# A multicall answer holding faults: each entry [a string] (group 1) or a fault (groups 2 and 3).
_MIXED_ANSWERS = re.compile(_STRING_ANSWERS.pattern + "|" + _FAULT_STRUCT)


def _common_shape(text: str, pos: int, method: str | None) -> tuple[tuple[Any, ...], str | None] | None:
    """``loads`` of ``text`` (a call of ``method``, or an answer when ``None``, whose head ends at
    ``pos``) if it has one of the common shapes, else ``None``: a lone fault raises
    ``xmlrpc.client.Fault`` as ``loads`` does; :class:`_Decline` for an entity XML-RPC's writer
    does not write."""
    if method is not None:
        one = _ONE_STRING_CALL.fullmatch(text, pos)
        if one is not None:
            return (_text(one.group(1)),), method
        if method != "system.multicall" or not text.startswith(_MULTICALL_OPEN, pos):
            return _int_struct_call(text, pos, method)
        start, end = pos + len(_MULTICALL_OPEN), len(text) - len(_MULTICALL_CLOSE)
        if end < start or not text.endswith(_MULTICALL_CLOSE):
            return None
        found = _STRING_CALLS.findall(text, start, end)
        if not _tiled(found, _STRING_CALL_FIXED, end - start):
            return None
        return ([{"methodName": name, "params": [_text(param)]} for name, param in found],), method
    one = _ONE_STRING_ANSWER.fullmatch(text, pos)
    if one is not None:
        return (_text(one.group(1)),), None
    if not text.startswith(_ANSWERS_OPEN, pos):
        fault = _ONE_FAULT.fullmatch(text, pos)
        if fault is not None:
            raise xmlrpclib.Fault(int(fault.group(1)), _text(fault.group(2)))
        return None
    start, end = pos + len(_ANSWERS_OPEN), len(text) - len(_ANSWERS_CLOSE)
    if end < start or not text.endswith(_ANSWERS_CLOSE):
        return None
    values = _STRING_ANSWERS.findall(text, start, end)
    if len(values) * _STRING_ANSWER_FIXED + sum(map(len, values)) != end - start:
        return _mixed_answers(text, start, end)
    return ([[_text(value)] for value in values],), None


def _int_struct_call(text: str, pos: int, method: str) -> tuple[tuple[Any, ...], str] | None:
    """``loads`` of a call (its head ending at ``pos``) whose one parameter is a struct of ints,
    members tiling it; else ``None``."""
    if not text.startswith(_STRUCT_PARAM_OPEN, pos) or not text.endswith(_STRUCT_PARAM_CLOSE):
        return None
    start, end = pos + len(_STRUCT_PARAM_OPEN), len(text) - len(_STRUCT_PARAM_CLOSE)
    found = _INT_MEMBERS.findall(text, start, end)  # the open and the close cannot overlap
    if not _tiled(found, INT_MEMBER_FIXED, end - start):
        return None
    return ({_text(name): int(number) for name, number in found},), method


def _tiled(found: list[tuple[str, str]], fixed: int, span: int) -> bool:
    """Whether ``findall``'s matches of two groups each (``fixed`` characters besides their groups)
    add up to ``span`` characters: then they are contiguous and cover the span."""
    size = len(found) * fixed
    for first, second in found:
        size += len(first) + len(second)
    return size == span


def _mixed_answers(text: str, start: int, end: int) -> tuple[tuple[Any, ...], None] | None:
    """A multicall's answers of [a string] or a fault each, tiling ``text[start:end]``; else ``None``."""
    answers: list[Any] = []
    at = start
    for match in _MIXED_ANSWERS.finditer(text, start, end):
        if match.start() != at:
            return None
        at = match.end()
        if match.lastindex == 1:
            answers.append([_text(match.group(1))])
        else:
            answers.append({"faultCode": int(match.group(2)), "faultString": _text(match.group(3))})
    if at != end:
        return None
    return (answers,), None


def _params(raw: str) -> list[Any]:
    return [
        int(match.group(2)) if match.lastindex == 2 else _text(match.group(1))
        for match in _PARAM.finditer(raw)
    ]


def _load(text: str, pos: int) -> tuple[Any, int]:
    """The value at ``pos`` and the position after it; :class:`_Decline` if it is not canonical.

    One regular expression reads one token at a time; a stack of open arrays and structs (each
    struct with the member name it waits a value for) checks the nesting.
    """
    match_token = _TOKEN.match
    containers: list[Any] = []  # open arrays (lists) and structs (dicts)
    names: list[Any] = []  # per open container: None for an array, else [state, pending name]
    while True:
        match = match_token(text, pos)
        if match is None:
            raise _Decline
        pos = match.end()
        token = match.lastindex
        if token == 6:  # a member's name
            if not names or names[-1] is None or names[-1][0] != _NEED_MEMBER:
                raise _Decline
            names[-1][0] = _NEED_VALUE
            names[-1][1] = _text(match.group(6))
            continue
        if token == 7:  # a member's end
            if not names or names[-1] is None or names[-1][0] != _NEED_MEMBER_CLOSE:
                raise _Decline
            names[-1][0] = _NEED_MEMBER
            continue
        if token == 9 or token == 11:  # a struct's or an array's end
            if not names or (token == 9) != (names[-1] is not None):
                raise _Decline
            if token == 9 and names[-1][0] != _NEED_MEMBER:
                raise _Decline
            names.pop()
            value = containers.pop()
        else:
            # A value begins here: it must be awaited (at the top, in an array, after a member's name).
            if names and names[-1] is not None and names[-1][0] != _NEED_VALUE:
                raise _Decline
            if token == 4:
                value = _text(match.group(4))
            elif token == 2:
                value = {"methodName": match.group(1), "params": _params(match.group(2))}
            elif token == 3:
                value = [_text(match.group(3))]
            elif token == 5:
                value = int(match.group(5))
            elif token == 8 or token == 10:
                if len(containers) >= MAX_DEPTH:
                    raise _Decline
                if token == 8:
                    containers.append({})
                    names.append([_NEED_MEMBER, None])
                else:
                    containers.append([])
                    names.append(None)
                continue
            elif token == 12:
                value = match.group(12) == "1"
            else:
                value = float(match.group(13))
        if not containers:
            return value, pos
        frame = names[-1]
        if frame is None:
            containers[-1].append(value)
        else:
            containers[-1][frame[1]] = value
            frame[0] = _NEED_MEMBER_CLOSE


def loads(body: bytes) -> tuple[tuple[Any, ...], str | None] | None:
    """``(params, method name)`` of a canonical call or response, as ``parse_call`` would return
    them (the name is ``None`` for a response; a fault response raises ``xmlrpc.client.Fault``), or
    ``None`` when the body is not in the canonical form: then the library must decide."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        head = _CALL_HEAD.match(text)
        if head is not None:
            pos = head.end()
            common = _common_shape(text, pos, head.group(1))
            if common is not None:
                return common
            params: list[Any] = []
            while text.startswith(_PARAM_OPEN, pos):
                value, pos = _load(text, pos + len(_PARAM_OPEN))
                if not text.startswith(_PARAM_CLOSE, pos):
                    return None
                pos += len(_PARAM_CLOSE)
                params.append(value)
            if text.endswith(_CALL_TAIL) and pos + len(_CALL_TAIL) == len(text):
                return tuple(params), head.group(1)
            return None
        if not text.startswith(_RESPONSE_HEAD):
            return None
        pos = len(_RESPONSE_HEAD)
        common = _common_shape(text, pos, None)
        if common is not None:
            return common
        if text.startswith(_RESPONSE_PARAMS, pos):
            value, pos = _load(text, pos + len(_RESPONSE_PARAMS))
            if text.endswith(_RESPONSE_PARAMS_TAIL) and pos + len(_RESPONSE_PARAMS_TAIL) == len(text):
                return (value,), None
            return None
        if text.startswith(_RESPONSE_FAULT, pos):
            value, pos = _load(text, pos + len(_RESPONSE_FAULT))
            if (
                text.endswith(_RESPONSE_FAULT_TAIL)
                and pos + len(_RESPONSE_FAULT_TAIL) == len(text)
                and type(value) is dict
                and len(value) == 2
                and "faultCode" in value
                and "faultString" in value
            ):
                raise xmlrpclib.Fault(value["faultCode"], value["faultString"])
        return None
    except _Decline:
        return None
