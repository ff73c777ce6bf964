"""bench/go_goto.py writes Go's goto v5 data file byte for byte as Go's ``encoding/gob`` does.

The expected bytes were written by Go 1.19 (``gob.NewEncoder(os.Stdout).Encode(record{...})`` for the
records below, ``record`` being goto v5's ``struct { Key, URL string }``): one-, two- and three-byte
lengths, empty fields (left out by Go, with the next field's delta counting them), and UTF-8.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import _procs
from bench._procs import ChildError
from bench.go_goto import (
    GOB_PREAMBLE,
    encode_gob_records,
    gob_record,
    gob_uint,
    start_go,
    write_go_data_file,
)

_ALPHABET = "abcdefghijklmnopqrstuvwxyz"

RECORDS = [
    ("0", "http://a/"),
    ("1", ""),
    ("", "x"),
    ("zZ9", "https://www.example.com/"),
    ("k", "".join(_ALPHABET[i % 26] for i in range(300))),
    ("big", "b" * 70000),
    ("ü", "https://example.com/é?q=✓"),
]

GO_BEFORE_BIG = bytes.fromhex(
    "24ff81030101067265636f726401ff8200010201034b6579010c00010355524c010c00000011ff820101300109687474"
    "703a2f2f612f0006ff820101310006ff820201780022ff8201037a5a39011868747470733a2f2f7777772e6578616d70"
    "6c652e636f6d2f00fe0136ff8201016b01fe012c"
    + ("6162636465666768696a6b6c6d6e6f707172737475767778797a" * 11)
    + "6162636465666768696a6b6c6d6e"
    + "00fd01117dff82010362696701fd011170"
)
GO_AFTER_BIG = bytes.fromhex("0025ff820102c3bc011c68747470733a2f2f6578616d706c652e636f6d2fc3a93f713de29c9300")
GO_BYTES = GO_BEFORE_BIG + b"b" * 70000 + GO_AFTER_BIG


def test_stream_equals_go_output() -> None:
    """The whole stream for RECORDS is the bytes Go's encoder wrote for them."""
    assert b"".join(encode_gob_records(RECORDS)) == GO_BYTES


def test_data_file(tmp_path: Path) -> None:
    """write_go_data_file writes that same stream to the file."""
    path = tmp_path / "store.gob"
    write_go_data_file(path, iter(RECORDS))
    assert path.read_bytes() == GO_BYTES


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, "00"), (127, "7f"), (128, "ff80"), (255, "ffff"), (256, "fe0100"), (70000, "fd011170")],
)
def test_gob_uint(value: int, encoded: str) -> None:
    """Unsigned integers: one byte below 128, else the negated byte count then big-endian bytes."""
    assert gob_uint(value) == bytes.fromhex(encoded)


def test_gob_uint_refuses_negative() -> None:
    """A negative length cannot be encoded (it would be a bug in the caller)."""
    with pytest.raises(ValueError):
        gob_uint(-1)


def _decode_uint(data: bytes, at: int) -> tuple[int, int]:
    first = data[at]
    if first < 128:
        return first, at + 1
    size = 256 - first
    return int.from_bytes(data[at + 1 : at + 1 + size], "big"), at + 1 + size


@given(st.text(max_size=300), st.text(max_size=300))
def test_record_frames_itself(key: str, url: str) -> None:
    """Every record message is its length then exactly that many bytes, holding both strings."""
    message = gob_record(key, url)
    length, at = _decode_uint(message, 0)
    assert len(message) - at == length
    assert message[at : at + 2] == b"\xff\x82" and message.endswith(b"\x00")
    assert key.encode() in message and url.encode() in message


def test_preamble_is_the_type_definition() -> None:
    """The preamble is one message (its length byte then the rest) defining type 65, ``record``."""
    assert GOB_PREAMBLE[0] == len(GOB_PREAMBLE) - 1
    assert b"record" in GOB_PREAMBLE and b"Key" in GOB_PREAMBLE and b"URL" in GOB_PREAMBLE


def fake_go(tmp_path: Path, body: str) -> Path:
    """An executable standing in for Go's goto: ``body`` runs with ``port`` parsed from ``-http=``."""
    script = tmp_path / "fake-goto"
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, socket, sys, time\n"
        "port = int(next(a for a in sys.argv if a.startswith('-http=')).rsplit(':', 1)[1])\n" + body
    )
    script.chmod(0o755)
    return script


def alive(pid: int) -> bool:
    """Tell whether ``pid`` is a running (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_go_process_listens_on_loopback_and_is_killed_at_exit(tmp_path: Path) -> None:
    """start_go waits until the process accepts connections, gives it GOMAXPROCS=1 and an address on
    127.0.0.1 only, and the benchmark's exit handler (run at exit, on Ctrl-C and SIGTERM) kills it."""
    binary = fake_go(
        tmp_path,
        "with open('env.txt', 'w') as out:\n"
        "    out.write(os.environ.get('GOMAXPROCS', '') + ' ' + ' '.join(sys.argv[1:]))\n"
        "server = socket.create_server(('127.0.0.1', port))\n"
        "time.sleep(60)\n",
    )
    port = _procs.free_port()
    child = start_go("go-test", binary, port, ["-rpc=true"], tmp_path / "run", timeout=20)
    try:
        assert alive(child.pid)
        assert (tmp_path / "run" / "env.txt").read_text() == f"1 -http=127.0.0.1:{port} -rpc=true"
        _procs.kill_all()
        assert not alive(child.pid)
    finally:
        child.stop()


def test_go_process_that_exits_is_reported_and_reaped(tmp_path: Path) -> None:
    """A Go binary that exits before listening (a bad flag, a crash) is a ChildError with its output,
    and leaves nothing running."""
    binary = fake_go(tmp_path, "print('flag provided but not defined: -x')\nsys.exit(2)\n")
    with pytest.raises(ChildError, match="flag provided but not defined"):
        start_go("go-bad", binary, _procs.free_port(), ["-x"], tmp_path / "run", timeout=20)
    assert not _procs._live
