"""The access log writers: Common Log Format lines, batched per reactor turn, safe against hostile input."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import socket
import threading
from pathlib import Path
from typing import IO

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from goto_tw import accesslog
from goto_tw.accesslog import (
    HELD_RETRY_SECONDS,
    MAX_HELD_BYTES,
    STOP_WAIT_SECONDS,
    EventAccessLog,
    LineAccessLog,
    NoAccessLog,
    make_access_log,
    printable,
)
from tests.conftest import LogCapture
from tests.helpers import has_fired

#: fcntl's F_SETPIPE_SZ (Linux; Python 3.10 names it): a pipe of one page fills fast.
F_SETPIPE_SZ = 1031


def test_lines_are_common_log_format_written_once_per_turn() -> None:
    """Lines are buffered during a reactor turn and written together at its end."""
    out = io.StringIO()
    clock = Clock()
    clock.advance(1_790_000_000)
    log = LineAccessLog(out, clock)
    log.record("192.0.2.1", "GET", b"/abc", b"HTTP/1.1", 302, "-", "redirect")
    log.record("192.0.2.1", "POST", b"/add", b"HTTP/1.1", 200, 20, "add")
    assert out.getvalue() == ""
    clock.advance(0)
    assert out.getvalue().splitlines() == [
        '192.0.2.1 - - [21/Sep/2026:14:13:20 +0000] "GET /abc HTTP/1.1" 302 -',
        '192.0.2.1 - - [21/Sep/2026:14:13:20 +0000] "POST /add HTTP/1.1" 200 20',
    ]


def test_stopping_writes_what_is_buffered(tmp_path: Path) -> None:
    """A stop (SIGTERM) loses no access-log line."""
    path = tmp_path / "access.log"
    log = make_access_log(str(path), Clock())
    assert isinstance(log, LineAccessLog)
    log.startService()
    log.record("192.0.2.1", "GET", b"/abc", b"HTTP/1.1", 302, "-", "redirect")
    log.stopService()
    assert path.read_text().endswith('"GET /abc HTTP/1.1" 302 -\n')


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        (b"/abc?x=1", "/abc?x=1"),
        (b'/a"b', "/a\\x22b"),
        (b"/a\\b", "/a\\x5cb"),
        (b"/\xff \x1b", "/\\xff\\x20\\x1b"),
    ],
)
def test_client_bytes_cannot_forge_lines(raw: bytes, safe: str) -> None:
    """Quotes, backslashes, spaces and control or non-ASCII bytes are escaped."""
    assert printable(raw) == safe


@given(st.binary(max_size=80))
def test_printable_escapes_exactly_the_unsafe_bytes(raw: bytes) -> None:
    """Every byte outside visible ASCII, and the quote and backslash, is written as ``\\xNN``;
    every other byte as itself (the definition, byte by byte)."""
    expected = "".join(
        chr(byte) if 0x21 <= byte <= 0x7E and byte not in b'"\\' else f"\\x{byte:02x}" for byte in raw
    )
    assert printable(raw) == expected


def test_a_protocol_is_made_printable_too() -> None:
    """A client's odd protocol version cannot forge a line either (the common ones are looked up)."""
    out = io.StringIO()
    clock = Clock()
    log = LineAccessLog(out, clock)
    log.record("192.0.2.1", "GET", b"/abc", b'HTTP/1.1" 200 -', 400, "-", "")
    log.record("192.0.2.1", "GET", b"/abc", b"HTTP/1.0", 302, "-", "redirect")
    clock.advance(0)
    first, second = out.getvalue().splitlines()
    assert first.endswith('"GET /abc HTTP/1.1\\x22\\x20200\\x20-" 400 -')
    assert second.endswith('"GET /abc HTTP/1.0" 302 -')


def test_choices() -> None:
    """--access-log picks the writer: none, events, or lines to stdout or a file."""
    clock = Clock()
    assert isinstance(make_access_log("none", clock), NoAccessLog)
    assert isinstance(make_access_log("events", clock), EventAccessLog)
    assert isinstance(make_access_log("-", clock), LineAccessLog)


def _records(log: LineAccessLog) -> None:
    log.record("192.0.2.1", "GET", b"/abc", b"HTTP/1.1", 302, "-", "redirect")
    log.record("2001:db8::1", "M\ufffdTHOD", b'/a"b\xff', b"HTTP/1.0", 404, 12, "redirect")


@pytest.mark.parametrize(("encoding", "errors"), [("utf-8", "strict"), ("ascii", "backslashreplace")])
def test_lines_go_to_the_descriptor_as_the_stream_would_write_them(
    tmp_path: Path, encoding: str, errors: str
) -> None:
    """A stream with a descriptor is written beneath its text layer (one ``os.write`` a turn), in
    the very bytes the stream would have written: its encoding, its error handler."""
    clock = Clock()
    clock.advance(1_790_000_000)
    expected = io.StringIO()
    _records(reference := LineAccessLog(expected, clock))
    reference.flush()
    path = tmp_path / "access.log"
    with open(path, "w", encoding=encoding, errors=errors) as out:
        out.write("before\n")  # what the stream held already comes first
        log = LineAccessLog(out, clock)

        def refuse(text: str) -> int:
            raise AssertionError("the text layer was used")

        out.write = refuse  # type: ignore[method-assign]
        _records(log)
        clock.advance(0)
        assert path.read_bytes() == b"before\n" + expected.getvalue().encode(encoding, errors)


def test_a_line_after_the_log_file_is_closed_never_reaches_another_file(tmp_path: Path) -> None:
    """A request answered after the access log stopped (and closed its file) must not have its line
    written to the descriptor number, which the next file opened reuses (before the log wrote by
    descriptor, the closed stream refused it)."""
    clock = Clock()
    log = make_access_log(str(tmp_path / "access.log"), clock)
    assert isinstance(log, LineAccessLog)
    log.startService()
    log.stopService()
    with open(tmp_path / "other", "wb"), contextlib.suppress(ValueError):  # a closed stream refuses
        log.record("192.0.2.1", "GET", b"/late", b"HTTP/1.1", 302, "-", "redirect")
        clock.advance(0)
    assert (tmp_path / "other").read_bytes() == b""


def test_a_full_disk_loses_lines_not_requests_and_says_so_once_an_interval(log_events: object) -> None:
    """Review 34: with the access log's disk full every flush raised out of a timed call (logged
    critical, with a traceback, each turn). The lines are lost and counted now, logged once every
    WRITE_FAILURE_LOG_INTERVAL seconds."""
    from goto_tw.accesslog import WRITE_FAILURE_LOG_INTERVAL

    clock = Clock()
    with open("/dev/full", "a", encoding="ascii") as full:  # every write: ENOSPC
        access = LineAccessLog(full, clock)
        for _ in range(3):
            access.record("127.0.0.1", "GET", b"/0", b"HTTP/1.1", 302, 0, "redirect")
            access.record("127.0.0.1", "GET", b"/1", b"HTTP/1.1", 302, 0, "redirect")
            clock.advance(0)
        assert access.lost_lines == 6
        failures = [m for m in log_events.messages() if "access log line" in m]  # type: ignore[attr-defined]
        assert len(failures) == 1 and "No space left on device" in failures[0]
        clock.advance(WRITE_FAILURE_LOG_INTERVAL)
        access.record("127.0.0.1", "GET", b"/2", b"HTTP/1.1", 302, 0, "redirect")
        clock.advance(0)
        failures = [m for m in log_events.messages() if "access log line" in m]  # type: ignore[attr-defined]
        assert len(failures) == 2 and "(2 more failures since the last line)" in failures[1]


def test_a_line_cut_by_a_failed_write_is_not_glued_to_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 34: when space came back, the next line was written onto the end of the torn one."""
    import os
    import types

    clock = Clock()
    path = tmp_path / "access.log"
    out = open(path, "a", encoding="ascii")  # noqa: SIM115 - the log closes it on stop, as in the server
    access = LineAccessLog(out, clock, close=True)
    real_write = os.write
    calls = []

    def half_then_full(fd: int, data: object) -> int:
        calls.append(fd)
        if len(calls) == 1:
            return real_write(fd, bytes(data)[:10])  # type: ignore[call-overload]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("goto_tw.accesslog.os", types.SimpleNamespace(write=half_then_full))
    access.record("127.0.0.1", "GET", b"/torn", b"HTTP/1.1", 302, 0, "redirect")
    clock.advance(0)
    monkeypatch.setattr("goto_tw.accesslog.os", os)
    access.record("127.0.0.1", "GET", b"/next", b"HTTP/1.1", 302, 0, "redirect")
    clock.advance(0)
    access.stopService()
    lines = path.read_text().splitlines()
    assert lines[0] == "127.0.0.1 " and lines[1].startswith("127.0.0.1 - - [") and '"GET /next' in lines[1]
    assert len(lines) == 2


@pytest.mark.parametrize("mended", [False, True])
def test_a_partial_write_loses_only_the_lines_it_did_not_end(
    monkeypatch: pytest.MonkeyPatch, mended: bool, tmp_path: Path
) -> None:
    """A write that ended the first of three lines and then failed lost two lines, not three (the
    whole batch was counted lost before); after a torn line, the newline that mends it is no line."""
    import types

    clock = Clock()
    with open(tmp_path / "access.log", "a", encoding="ascii") as out:  # a regular file's writes
        access = LineAccessLog(out, clock)
        written: list[bytes] = []
        fail_next = False

        def first_line_and_a_bit(fd: int, data: object) -> int:
            nonlocal fail_next
            if fail_next:
                fail_next = False
                raise OSError(28, "No space left on device")
            fail_next = True
            chunk = bytes(data)  # type: ignore[call-overload]
            end = chunk.index(b"\n", 1) + 5 if b"/0" in chunk else 10  # else: tear the line before
            written.append(chunk[:end])
            return end

        monkeypatch.setattr("goto_tw.accesslog.os", types.SimpleNamespace(write=first_line_and_a_bit))
        if mended:  # a line torn by a write that failed after 10 bytes
            access.record("127.0.0.1", "GET", b"/t", b"HTTP/1.1", 302, 0, "redirect")
            clock.advance(0)
            assert access.lost_lines == 1
        for path in (b"/0", b"/1", b"/2"):
            access.record("127.0.0.1", "GET", path, b"HTTP/1.1", 302, 0, "redirect")
        clock.advance(0)
        assert written[-1].startswith(b"\n127.0.0.1 " if mended else b"127.0.0.1 ")
        assert access.lost_lines == (1 if mended else 0) + 2


def test_a_character_the_log_file_cannot_encode_is_escaped_not_a_lost_batch(tmp_path: Path) -> None:
    """Review 35: one non-ASCII character in a line (a client named by a PROXY header) raised
    ``UnicodeEncodeError`` out of the flush on an ASCII log: a critical traceback, and every line of
    the batch lost, other clients' too. It is escaped now; the other lines are written as they are."""
    clock = Clock()
    path = tmp_path / "access.log"
    with open(path, "a", encoding="ascii") as out:
        access = LineAccessLog(out, clock)
        access.record("\u00e9vil", "GET", b"/0", b"HTTP/1.1", 302, 0, "redirect")
        access.record("127.0.0.1", "GET", b"/1", b"HTTP/1.1", 302, 0, "redirect")
        clock.advance(0)
    lines = path.read_text(encoding="ascii").splitlines()
    assert lines[0].startswith("\\xe9vil - - [") and lines[1].startswith("127.0.0.1 - - [")
    assert access.lost_lines == 0


def _line(log: LineAccessLog, path: bytes) -> None:
    log.record("192.0.2.1", "GET", path, b"HTTP/1.1", 302, "-", "redirect")


def test_reopen_moves_the_lines_to_a_new_file_at_the_path(tmp_path: Path) -> None:
    """Log rotation: once the file is moved aside, SIGHUP (``reopen``) opens the path again; what was
    buffered goes to the old file, later lines to the new one."""
    clock = Clock()
    path = tmp_path / "access.log"
    log = make_access_log(str(path), clock)
    assert isinstance(log, LineAccessLog)
    log.startService()
    _line(log, b"/before")
    clock.advance(0)
    path.rename(tmp_path / "access.log.1")
    _line(log, b"/buffered")
    log.reopen()
    _line(log, b"/after")
    clock.advance(0)
    log.stopService()
    old = (tmp_path / "access.log.1").read_text()
    assert '"GET /before ' in old and '"GET /buffered ' in old and "/after" not in old
    new = path.read_text().splitlines()
    assert len(new) == 1 and '"GET /after ' in new[0]


def test_a_path_that_cannot_be_opened_again_keeps_the_file_open(
    tmp_path: Path, log_events: LogCapture
) -> None:
    """A reopen that fails (the directory is gone) loses no line: they go on to the open file."""
    clock = Clock()
    (tmp_path / "logs").mkdir()
    log = make_access_log(str(tmp_path / "logs" / "access.log"), clock)
    assert isinstance(log, LineAccessLog)
    log.startService()
    (tmp_path / "logs").rename(tmp_path / "old-logs")
    log.reopen()
    _line(log, b"/still")
    log.stopService()
    assert '"GET /still ' in (tmp_path / "old-logs" / "access.log").read_text()
    errors = [m for m in log_events.messages() if "Could not open the access log" in m]
    assert len(errors) == 1 and "No such file or directory" in errors[0]


def test_reopen_leaves_standard_output_alone() -> None:
    """``--access-log -``: nothing to open again; lines go on to the same stream."""
    out = io.StringIO()
    clock = Clock()
    log = LineAccessLog(out, clock)
    log.startService()
    log.reopen()
    _line(log, b"/x")
    clock.advance(0)
    assert '"GET /x ' in out.getvalue()


def test_a_relative_path_is_opened_again_where_it_was_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review of stop 36: twistd changes directory (``--rundir``) after the log is opened, and a
    relative ``--access-log`` was opened again in the new directory."""
    clock = Clock()
    (tmp_path / "launch").mkdir()
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path / "launch")
    log = make_access_log("access.log", clock)
    assert isinstance(log, LineAccessLog)
    log.startService()
    monkeypatch.chdir(tmp_path / "run")
    (tmp_path / "launch" / "access.log").rename(tmp_path / "launch" / "access.log.1")
    log.reopen()
    _line(log, b"/after")
    log.stopService()
    assert '"GET /after ' in (tmp_path / "launch" / "access.log").read_text()
    assert not (tmp_path / "run" / "access.log").exists()


def test_a_new_file_gets_the_old_files_mode_whatever_the_umask(tmp_path: Path) -> None:
    """A daemonized twistd runs with umask 077: the next file was 0600 where the first was 0644,
    and whoever read the first (a log shipper) could not read the next. A file already made at
    the path (logrotate's ``create``) keeps its own mode."""
    import os

    clock = Clock()
    path = tmp_path / "access.log"
    log = make_access_log(str(path), clock)
    assert isinstance(log, LineAccessLog)
    log.startService()
    path.chmod(0o644)
    path.rename(tmp_path / "access.log.1")
    previous = os.umask(0o077)
    try:
        log.reopen()
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644
    path.rename(tmp_path / "access.log.2")
    path.touch(mode=0o600)
    path.chmod(0o600)
    log.reopen()
    _line(log, b"/kept")
    log.stopService()
    assert path.stat().st_mode & 0o777 == 0o600 and '"GET /kept ' in path.read_text()


def test_standard_output_that_is_the_null_device_is_said_at_start(
    tmp_path: Path, log_events: LogCapture
) -> None:
    """A new user's trial (stop 41): a daemonized twistd's standard output is /dev/null, and the
    default access log wrote every line there without a word. Starting says so, once; standard
    output that is a file (or a stream without a descriptor) says nothing."""
    with open(os.devnull, "w") as null, open(tmp_path / "out", "w") as file:
        for out in (null, file, io.StringIO()):
            LineAccessLog(out, Clock()).startService()
    told = [m for m in log_events.messages() if "The access log goes to standard output" in m]
    assert told == [
        f"The access log goes to standard output, which is {os.devnull} here (a daemonized twistd, "
        "without -n, has none): no request is logged. Give --access-log a file (or events, for "
        "twistd's own log; none, to log no requests)."
    ]


def _pipe_log(clock: Clock, kind: str = "pipe") -> tuple[LineAccessLog, int, IO[str]]:
    """An access log writing to a pipe (or a Unix stream socket, as the journal's) nobody reads
    yet: the log, the reading end, the stream."""
    if kind == "pipe":
        read_end, write_end = os.pipe()
    else:
        reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        read_end, write_end = reader.detach(), writer.detach()
    out = os.fdopen(write_end, "w", encoding="ascii")
    return LineAccessLog(out, clock), read_end, out


def _advance_in_time(clock: Clock, seconds: float) -> None:
    """``clock.advance(seconds)``, which must return: a write that waits for the reader fails the test."""
    worker = threading.Thread(target=clock.advance, args=(seconds,), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "the access log waited for its reader (the reactor would be frozen)"


def _read_all(read_end: int) -> bytes:
    os.set_blocking(read_end, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(read_end, 1 << 16):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("kind", ["pipe", "socket"])
def test_a_reader_that_stops_reading_never_stops_the_reactor(kind: str, log_events: LogCapture) -> None:
    """An operations audit (stop 41): standard output's reader stopped (a stuck journal, ``| tee``
    on hold), the pipe filled, and the blocking write froze every request. What the reader cannot
    take is held and written, whole and in order, once it reads again; nothing is lost or said."""
    clock = Clock()
    access, read_end, out = _pipe_log(clock, kind)
    with out:
        paths = [b"/%05d" % number for number in range(2000)]  # about 150 KB: more than a pipe holds
        for start in range(0, len(paths), 100):
            for path in paths[start : start + 100]:
                _line(access, path)
            _advance_in_time(clock, 0)
        received = _read_all(read_end)
        assert 0 < len(received) < 150_000
        for _ in range(100):
            _advance_in_time(clock, HELD_RETRY_SECONDS)  # the held lines are tried again, unasked
            received += _read_all(read_end)
        lines = received.decode().splitlines()
        assert [line.split('"')[1] for line in lines] == [f"GET {p.decode()} HTTP/1.1" for p in paths]
        assert access.lost_lines == 0
        assert not [m for m in log_events.messages() if "did not keep up" in m]
    os.close(read_end)


def test_past_the_bound_a_stopped_readers_lines_are_lost_counted_and_said_once_it_reads(
    log_events: LogCapture,
) -> None:
    """What is held for a stopped reader is bounded (MAX_HELD_BYTES): batches past it are dropped
    and counted at once (goto_access_log_lost_lines_total), and said in one line once the reader
    has caught up (said meanwhile, the line would wait on the same stopped reader)."""
    clock = Clock()
    access, read_end, out = _pipe_log(clock)
    with out:
        batches = MAX_HELD_BYTES // 7000 + 40  # 100 lines of about 75 bytes a batch
        for batch in range(batches):
            for number in range(100):
                _line(access, b"/%04d-%03d" % (batch, number))
            _advance_in_time(clock, HELD_RETRY_SECONDS)  # written at once, or with the held lines
        assert access.lost_lines > 0 and access.lost_lines % 100 == 0, "whole batches"
        assert not [m for m in log_events.messages() if "did not keep up" in m]
        received = b""
        for _ in range(400):
            received += _read_all(read_end)
            _advance_in_time(clock, HELD_RETRY_SECONDS)
        received += _read_all(read_end)
        assert received.count(b"\n") + access.lost_lines == batches * 100
        assert received.endswith(b"\n") and all(b'"GET /' in line for line in received.splitlines())
        said = [m for m in log_events.messages() if "did not keep up" in m]
        assert said == [
            f"The access log's reader did not keep up: {access.lost_lines} line(s) lost meanwhile"
        ]
    os.close(read_end)


def test_a_reader_that_has_gone_loses_the_lines_and_says_so(log_events: LogCapture) -> None:
    """A closed pipe (EPIPE): the lines are lost and counted, said as a failed write, no traceback;
    the held lines go with them."""
    clock = Clock()
    access, read_end, out = _pipe_log(clock)
    os.close(read_end)
    with out:
        _line(access, b"/gone")
        _advance_in_time(clock, 0)
        assert access.lost_lines == 1
        assert any("Broken pipe" in m for m in log_events.messages() if "access log line" in m)
        access.startService()
        access.stopService()


def test_after_a_reader_went_mid_line_the_next_line_starts_on_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write to a pipe that ended inside a line and then failed: the next batch starts with the
    newline that ends the torn line, once (not again on every batch after it)."""
    import types

    clock = Clock()
    access, read_end, out = _pipe_log(clock)
    real_write = os.write
    fail_after: list[int] = [10]

    def tearing_write(fd: int, data: object) -> int:
        if fail_after:
            written = real_write(fd, bytes(data)[: fail_after.pop()])  # type: ignore[call-overload]
            return written
        return real_write(fd, data)  # type: ignore[arg-type]

    calls = [0]

    def write(fd: int, data: object) -> int:
        calls[0] += 1
        if calls[0] == 2:
            raise OSError(5, "Input/output error")
        return tearing_write(fd, data)

    with out:
        monkeypatch.setattr("goto_tw.accesslog.os", types.SimpleNamespace(write=write))
        _line(access, b"/torn")
        _advance_in_time(clock, 0)
        for path in (b"/a", b"/b"):
            _line(access, path)
            _advance_in_time(clock, 0)
        monkeypatch.undo()
        received = _read_all(read_end)
    os.close(read_end)
    lines = received.split(b"\n")
    assert lines[0] == b"192.0.2.1 " and lines[1].endswith(b'"GET /a HTTP/1.1" 302 -'), received
    assert lines[2].endswith(b'"GET /b HTTP/1.1" 302 -') and lines[3:] == [b""], received
    assert access.lost_lines == 1


def test_what_is_held_starts_a_line_so_other_writers_fall_between_lines() -> None:
    """A hostile review (stop 42): writes were cut every 4,096 bytes, mid-line, so the held bytes
    began inside a line, and twistd's own log line, written to the same standard output meanwhile,
    landed in the middle of an access-log line. Each write now ends after a whole line."""
    clock = Clock()
    access, read_end, out = _pipe_log(clock)
    with out:
        fcntl.fcntl(out.fileno(), F_SETPIPE_SZ, 4096)
        for number in range(100):
            _line(access, b"/" + b"a" * 50 + b"%03d" % number)
        _advance_in_time(clock, 0)
        first = _read_all(read_end)
        assert first and first.endswith(b"\n"), "what was written ends a line"
        os.write(out.fileno(), b"TWISTD LOG LINE\n")  # twistd -n's own observer
        for _ in range(20):
            _advance_in_time(clock, HELD_RETRY_SECONDS)
            first += _read_all(read_end)
    os.close(read_end)
    lines = first.split(b"\n")[:-1]
    assert [line for line in lines if not line.startswith(b"192.0.2.1 ")] == [b"TWISTD LOG LINE"]
    assert len(lines) == 101


def test_a_batch_past_the_bound_counts_exactly_the_lines_it_loses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile review (stop 42): the line that ends past MAX_HELD_BYTES is kept, and was counted
    lost too: every line is either read, held, or counted lost, once."""
    monkeypatch.setattr(accesslog, "MAX_HELD_BYTES", 1000)
    clock = Clock()
    access, read_end, out = _pipe_log(clock)
    with out:
        fcntl.fcntl(out.fileno(), F_SETPIPE_SZ, 4096)
        for number in range(200):
            _line(access, b"/k%03d" % number)
        _advance_in_time(clock, 0)
        written = _read_all(read_end).count(b"\n")
        held = access._held.count(b"\n")
        assert held > 0 and access.lost_lines == 200 - written - held
        for _ in range(5):
            _advance_in_time(clock, HELD_RETRY_SECONDS)
            written += _read_all(read_end).count(b"\n")
        assert written + access.lost_lines == 200
    os.close(read_end)


def test_a_stop_waits_a_while_for_a_reader_that_is_behind(log_events: LogCapture) -> None:
    """A hostile review (stop 42): a stop dropped the held lines at once, with no line said (a
    journal busy while the machine shuts down). The stop now waits, without waiting in a write, up
    to STOP_WAIT_SECONDS for the reader: one that reads meanwhile gets every line."""
    clock = Clock()
    access, read_end, out = _pipe_log(clock)
    access.startService()
    for number in range(2000):
        _line(access, b"/%05d" % number)
    _advance_in_time(clock, 0)
    received = _read_all(read_end)
    stopped = access.stopService()
    assert stopped is not None and not has_fired(stopped)
    for _ in range(5):
        _advance_in_time(clock, HELD_RETRY_SECONDS)
        received += _read_all(read_end)
    assert has_fired(stopped) and clock.getDelayedCalls() == []
    assert received.count(b"\n") == 2000 and access.lost_lines == 0
    assert not [m for m in log_events.messages() if "did not keep up" in m]
    out.close()
    os.close(read_end)


def test_a_stop_gives_up_on_a_reader_still_behind_and_says_what_it_lost(log_events: LogCapture) -> None:
    """A reader that does not read within STOP_WAIT_SECONDS: the held lines are lost, counted, and
    said; the stop ends then, with nothing left scheduled."""
    clock = Clock()
    access, read_end, out = _pipe_log(clock)
    access.startService()
    for number in range(2000):
        _line(access, b"/%05d" % number)
    _advance_in_time(clock, 0)
    stopped = access.stopService()
    assert stopped is not None
    for _ in range(int(STOP_WAIT_SECONDS / HELD_RETRY_SECONDS) - 1):
        _advance_in_time(clock, HELD_RETRY_SECONDS)
    assert not has_fired(stopped)
    _advance_in_time(clock, HELD_RETRY_SECONDS * 2)
    assert has_fired(stopped) and clock.getDelayedCalls() == []
    received = _read_all(read_end)
    assert 0 < access.lost_lines == 2000 - received.count(b"\n")
    said = [m for m in log_events.messages() if "did not keep up" in m]
    assert said == [f"The access log's reader did not keep up: {access.lost_lines} line(s) lost meanwhile"]
    out.close()
    os.close(read_end)


def test_a_write_refused_for_now_holds_the_lines_rather_than_losing_them(
    monkeypatch: pytest.MonkeyPatch, log_events: LogCapture
) -> None:
    """Standard output another process shares, and made non-blocking, can answer a write with
    EAGAIN though it polled writable (that process wrote in between): that is "not now", not a
    reader gone; the lines are held and written next time, none lost."""
    import types

    clock = Clock()
    access, read_end, out = _pipe_log(clock)
    real_write = os.write

    def busy(fd: int, data: object) -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    with out:
        monkeypatch.setattr("goto_tw.accesslog.os", types.SimpleNamespace(write=busy))
        for number in range(100):
            _line(access, b"/%03d" % number)
        _advance_in_time(clock, 0)
        assert access.lost_lines == 0 and access._held.count(b"\n") == 100
        monkeypatch.setattr("goto_tw.accesslog.os", types.SimpleNamespace(write=real_write))
        _advance_in_time(clock, HELD_RETRY_SECONDS)
        assert _read_all(read_end).count(b"\n") == 100 and access.lost_lines == 0
        assert not [m for m in log_events.messages() if "access log line" in m]
    os.close(read_end)


def test_a_terminal_is_written_as_a_file_is() -> None:
    """A terminal polls writable and a write to it still waits when its reader is held (measured
    with a pseudo-terminal), so it gets no held lines: its lines go out as they always did."""
    import pty

    clock = Clock()
    controller, terminal = pty.openpty()
    with os.fdopen(terminal, "w", encoding="ascii") as out:
        access = LineAccessLog(out, clock)
        _line(access, b"/tty")
        clock.advance(0)
        assert b"GET /tty HTTP/1.1" in os.read(controller, 4096)
        assert access._writable is None
    os.close(controller)
