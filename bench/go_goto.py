"""Go's goto v5 (the program goto-tw re-creates) as a benchmark peer: its data file and its processes.

Go's goto v5 ("The Way to Go", chapter 19, ``unknwon/the-way-to-go_ZH_CN``,
``eBook/examples/chapter_19/goto_v5``; built unmodified outside this repository, see
``bench/README.md``) keeps its records in a ``encoding/gob`` stream: one ``gob.Encoder`` writes a
type definition for ``record{Key, URL string}`` and then one message per record. To give it the
same keys as goto-tw before a run, :func:`write_go_data_file` writes that stream itself (Go's
``load`` reads it at start), rather than adding hundreds of thousands of keys through its ``/add``:
the uncached-redirect scenario needs a fresh key for every request, because Go's slave caches every
key it has fetched, without bound, for the life of the process. The encoder covers exactly the one
shape Go writes (two strings), byte-equal to Go's own ``encoding/gob`` output
(``tests/test_bench_go_goto.py`` holds Go's bytes), and ``bench/run.py`` checks the loaded master
answers the first and last key with the URL written before it measures anything.

How Go's goto differs from goto-tw (so the comparison is read fairly):

- a redirect is ``302 Found`` with a small HTML body (``http.Redirect``); no access log at all;
- an unknown key answers ``500 key not found`` (goto-tw: 404), and a slave asks the master again for
  every request of an unknown key (no negative cache) over its one ``net/rpc`` connection;
- ``Put`` answers before the record is written: records go through a 1000-record channel to a
  goroutine that ``write``s each one (no buffering, no ``fsync``): an acknowledged add can be lost;
  when that goroutine falls behind, adds wait for room in the channel (Go's add p99 rises with it);
- each start appends a new gob stream (type definition again) to the file, and ``load`` stops at the
  second one ("gob: duplicate type received", logged and ignored): after its second restart a Go
  master has lost every add made since its first (seen with this binary; the bench never restarts it);
- a slave's cache has no bound, and no URL is validated; the slave connects to the master once at
  start (if the master is not up yet, its first request crashes it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from bench._procs import SERVER_CPU, Child, ChildError

#: What ``gob.NewEncoder(f).Encode(record{...})`` writes before the first record: the type
#: definition of ``struct record { Key, URL string }`` (type id 65). Copied from Go 1.19's output.
GOB_PREAMBLE = bytes.fromhex("24ff81030101067265636f726401ff8200010201034b6579010c00010355524c010c000000")

#: Type id 65 as a gob int (``ff 82``): the first bytes of every record message.
_RECORD_TYPE = bytes.fromhex("ff82")


def gob_uint(value: int) -> bytes:
    """A gob unsigned integer: one byte below 128, else the negated byte count then big-endian bytes."""
    if value < 0:
        raise ValueError("gob_uint: negative")
    if value < 128:
        return bytes([value])
    body = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return bytes([256 - len(body)]) + body


def gob_record(key: str, url: str) -> bytes:
    """One ``record{Key, URL}`` message as Go's encoder writes it after the preamble.

    Fields are delta-numbered and an empty string (Go's zero value) is left out, as Go does.
    """
    body = bytearray(_RECORD_TYPE)
    delta = 1
    for text in (key, url):
        data = text.encode("utf-8")
        if data:
            body += gob_uint(delta) + gob_uint(len(data)) + data
            delta = 1
        else:
            delta += 1
    body += b"\x00"
    return gob_uint(len(body)) + bytes(body)


def encode_gob_records(records: Iterable[tuple[str, str]]) -> Iterable[bytes]:
    """The whole stream a fresh ``gob.Encoder`` writes for ``records``, in chunks."""
    yield GOB_PREAMBLE
    for key, url in records:
        yield gob_record(key, url)


def write_go_data_file(path: Path, records: Iterable[tuple[str, str]]) -> None:
    """Write ``records`` as Go's goto v5 data file (``-file``)."""
    with path.open("wb") as out:
        for chunk in encode_gob_records(records):
            out.write(chunk)


def go_command(binary: Path, port: int, *args: str) -> list[str]:
    """Go's goto listening on 127.0.0.1:PORT only (``-http=:PORT`` would listen on every interface)."""
    return [str(binary), f"-http=127.0.0.1:{port}", *args]


def start_go(name: str, binary: Path, port: int, args: list[str], rundir: Path, timeout: float = 60) -> Child:
    """Start one Go goto process pinned like goto-tw's servers and wait until it accepts connections.

    ``GOMAXPROCS=1``: one core per server, as a Twisted process uses (the CPU pinning says the same
    where it applies). Go logs nothing when it listens, so readiness is a TCP connect that succeeds.
    The returned child is registered like every other: it is killed on every exit path.
    """
    child = Child(name, go_command(binary, port, *args), rundir, cpu=SERVER_CPU, env={"GOMAXPROCS": "1"})
    child.start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return child
        except OSError:
            pass
        if child.exited():
            child.stop()
            raise ChildError(f"{name} exited before listening:\n{child.output()[-2000:]}")
        if time.monotonic() > deadline:
            child.stop()
            raise ChildError(f"{name} did not listen within {timeout:g}s:\n{child.output()[-2000:]}")
        time.sleep(0.01)


def go_version(binary: Path) -> str:
    """The Go release that built ``binary`` (``go version BINARY``), or a note that it is unknown."""
    try:
        done = subprocess.run(
            ["go", "version", str(binary)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, "GOFLAGS": ""},
        )
    except (OSError, subprocess.TimeoutExpired):
        return "Go (version unknown: no go command)"
    return done.stdout.split(":", 1)[-1].strip() or "Go (version unknown)"
