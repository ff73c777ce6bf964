"""Issue 13: the slave's HTTP client reads an answer's head with two regular expressions
(``masterhttp._read_head``) where it read it a line at a time (``_read_head_by_lines``, kept as the
reference and for saying what is wrong). Property: the two agree on every head, to the error
message; and the headers an answer shows are the head's."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from goto_tw.masterhttp import BadAnswer, MasterAnswer, _read_head, _read_head_by_lines

_NAMES = st.sampled_from(
    [
        b"Content-Length",
        b"content-length",
        b"CONTENT-LENGTH",
        b"Transfer-Encoding",
        b"transfer-encoding",
        b"Connection",
        b"connection",
        b"Server",
        b"X-Content-Length",
        b"Content-Length ",
        b" Content-Length",
        b"Con\x00tent",
        b"",
        b"a:b",
        b"Date",
    ]
)
_VALUES = st.sampled_from(
    [
        b"146",
        b" 146 ",
        b"\t146\t",
        b"0",
        b"00",
        b"-1",
        b"1 2",
        b"999999999999999999",
        b"9999999999999999999",
        b"ABC",
        b"chunked",
        b" Chunked",
        b"gzip, chunked",
        b"close",
        b"Keep-Alive, Close",
        b"keep-alive",
        b"clo se",
        b"close\t",
        b"\tclose",
        b"",
        b"text/xml; charset=utf-8",
        b"a\x01b",
        b"a\rb",
        b"a\nb",
        b"a\x7fb",
        b"caf\xc3\xa9",
        b":",
    ]
)
_STATUS = st.sampled_from(
    [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.0 200 OK",
        b"HTTP/1.1 200",
        b"HTTP/1.1 200 ",
        b"HTTP/1.1 200  OK \t",  # the phrase as it comes, its spaces and tab kept
        b"HTTP/1.1 404 Not Found",
        b"HTTP/1.1 100 Continue",
        b"HTTP/1.1 101 Switching",
        b"HTTP/1.1 204 No Content",
        b"HTTP/1.2 200 OK",
        b"HTTP/1.1 099 OK",
        b"HTTP/1.1 200 O\x01K",
        b"HTTP/1.1 200 \xff",
        b"http/1.1 200 OK",
    ]
)
_LINE = st.one_of(
    st.tuples(_NAMES, st.sampled_from([b":", b": ", b":\t", b" :", b""]), _VALUES).map(b"".join),
    st.binary(max_size=12),
)


def _outcome(read: object, head: bytes) -> object:
    try:
        return read(head)  # type: ignore[operator]
    except BadAnswer as refused:
        return ("refused", str(refused))


@settings(max_examples=3000, deadline=None)
@given(_STATUS, st.lists(_LINE, max_size=6))
def test_both_readings_of_a_head_agree(status: bytes, lines: list[bytes]) -> None:
    head = b"\r\n".join([status, *lines])
    assert _outcome(_read_head, head) == _outcome(_read_head_by_lines, head)


@given(st.binary(max_size=40))
def test_both_readings_agree_on_any_bytes(head: bytes) -> None:
    assert _outcome(_read_head, head) == _outcome(_read_head_by_lines, head)


def test_a_goto_masters_head_is_read() -> None:
    head = (
        b"HTTP/1.1 200 OK\r\nServer: TwistedWeb/26.10.0\r\nDate: Sun, 29 Nov 2026 22:40:43 GMT\r\n"
        b"Content-Type: text/xml; charset=utf-8\r\nContent-Length: 146"
    )
    code, phrase, keep_alive, length, chunked, block = _read_head(head)
    assert (code, phrase, keep_alive, length, chunked) == (200, b"OK", True, 146, False)
    answer = MasterAnswer(code, phrase, block, length)
    assert list(answer.headers.getAllRawHeaders()) == [
        (b"Server", [b"TwistedWeb/26.10.0"]),
        (b"Date", [b"Sun, 29 Nov 2026 22:40:43 GMT"]),
        (b"Content-Type", [b"text/xml; charset=utf-8"]),
        (b"Content-Length", [b"146"]),
    ]


def test_connection_close_and_http_1_0_end_the_connection() -> None:
    assert _read_head(b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 1")[2] is False
    assert _read_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1")[2] is False
    assert _read_head(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1")[2] is True
