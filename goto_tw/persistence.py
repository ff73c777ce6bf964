"""The master's append-only data file: loading it at start-up, and appending records durably.

Format: UTF-8 text, one JSON object per line, ``{"key":"K","url":"U"}``, in the order the pairs were
stored. A record is one ``write`` of a whole line, so a crash can only tear the last line; such a
line was never acknowledged, and loading cuts it off. Anything else that does not parse is
corruption, and start-up stops with the file name and line number rather than guess.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from typing import Callable, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from goto_tw.errors import StoreUnavailable
from goto_tw.interfaces import IRecordLog
from goto_tw.metrics import Metrics
from goto_tw.urlmap import URLMap, expected_keys

log = Logger()


class CorruptDataFile(Exception):
    """The data file holds a record that cannot be read; the message names the file and line."""

    def __init__(self, path: str, line_number: int, reason: str) -> None:
        super().__init__(f"{path}, line {line_number}: {reason}")
        self.path = path
        self.line_number = line_number
        self.reason = reason


def encode_record(key: str, url: str) -> bytes:
    """Return the line that stores one pair, newline included (ASCII-only JSON, no spaces)."""
    return json.dumps({"key": key, "url": url}, separators=(",", ":")).encode("ascii") + b"\n"


def _decode_line(path: str, line_number: int, line: bytes) -> tuple[str, str]:
    """Decode one line, or raise :class:`CorruptDataFile` saying what is wrong with it."""
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise CorruptDataFile(path, line_number, f"not a JSON record ({exc})") from None
    if not isinstance(record, dict):
        raise CorruptDataFile(path, line_number, "not a JSON object")
    key, url = record.get("key"), record.get("url")
    if not isinstance(key, str) or not key or not isinstance(url, str) or not url:
        raise CorruptDataFile(path, line_number, 'the record needs non-empty "key" and "url" strings')
    return key, url


#: Bytes of the file parsed at a time: big enough for C-speed scans, small enough to bound memory.
_CHUNK_BYTES = 1 << 20


def parse_records(path: str, body: bytes) -> URLMap:
    """Parse complete lines (``body`` ends with a newline or is empty) into a :class:`URLMap`.

    The file is read a chunk of lines at a time. The common case, lines this program wrote with
    keys in counter order, costs a regular-expression scan and one list comparison per chunk (no
    Python code per record): a million records load in well under a second. A chunk with anything
    else (a skipped key, a JSON escape, damage) is read record by record, as JSON where needed,
    which also names the first bad line. A key stored twice is corruption: keys are never reused,
    so the file cannot be trusted to say which URL is right.
    """
    urls = URLMap()
    lines_before = 0
    position = 0
    while position < len(body):
        end = body.find(b"\n", min(position + _CHUNK_BYTES, len(body)) - 1) + 1
        chunk = body[position:end]
        lines_before += _parse_chunk(path, chunk, lines_before, urls)
        position = end
    return urls


#: The bytes a plain record may hold: printable ASCII but the backslash, and the line feed.
_PLAIN_BYTES = bytes(byte for byte in range(0x20, 0x7F) if byte != ord("\\")) + b"\n"


def _split_plain(chunk: bytes, lines: int) -> tuple[list[bytes], list[bytes]] | None:
    """Split ``lines`` plain records into their keys and URLs using C-level operations only.

    A plain record, ``{"key":"K","url":"U"}``, splits on ``"`` into eight pieces with fixed ones
    between K and U; checking the fixed pieces by slicing and counting proves every line has that
    shape (no line can hide an escaped quote: backslashes are refused first). ``None`` otherwise.
    """
    if chunk.translate(None, _PLAIN_BYTES):  # deletes every plain byte: anything left is not plain
        return None
    parts = chunk.split(b'"')
    if len(parts) != 8 * lines + 1 or parts[0] != b"{" or parts[-1] != b"}\n":
        return None
    for offset, expected in ((1, b"key"), (2, b":"), (4, b","), (5, b"url"), (6, b":")):
        if parts[offset::8].count(expected) != lines:
            return None
    if parts[8:-1:8].count(b"}\n{") != lines - 1:
        return None
    keys, urls = parts[3::8], parts[7::8]
    if b"" in keys or b"" in urls:
        return None
    return keys, urls


def _parse_chunk(path: str, chunk: bytes, lines_before: int, urls: URLMap) -> int:
    """Add the records of ``chunk`` (complete lines) to ``urls``; return how many lines it held."""
    lines = chunk.count(b"\n")
    split = _split_plain(chunk, lines)
    records: list[tuple[str, str | bytes]]
    if split is not None:
        keys, plain_urls = split
        start = urls.next_index()
        if keys == expected_keys(start, start + lines):
            urls.extend_run(start, plain_urls)
            return lines
        records = [(key.decode("ascii"), url) for key, url in zip(keys, plain_urls)]
    else:
        records = [
            _decode_line(path, lines_before + number, line)
            for number, line in enumerate(chunk[:-1].split(b"\n"), start=1)
        ]
    for number, (key, url) in enumerate(records, start=lines_before + 1):
        try:
            urls.add(key, url)
        except KeyError:
            raise CorruptDataFile(path, number, f"key {key!r} is stored twice") from None
    return lines


def load_records(path: str) -> URLMap:
    """Read the data file at ``path`` into a key -> URL map; a missing file is an empty store.

    The file is streamed a chunk at a time, so loading needs little memory beyond the map itself.
    A torn last line (no final newline: the process died mid-write, before acknowledging it) is cut
    off the file with a warning, so the next append starts on a clean line. Any other unreadable
    record raises :class:`CorruptDataFile`; nothing is silently discarded.
    """
    urls = URLMap()
    try:
        with open(path, "r+b") as data_file:
            lines_before = complete = 0
            carried = b""
            while block := data_file.read(_CHUNK_BYTES):
                data = carried + block if carried else block
                end = data.rfind(b"\n") + 1
                if end:
                    lines_before += _parse_chunk(path, data[:end], lines_before, urls)
                    complete += end
                carried = data[end:]
            if carried:
                log.warn(
                    "Data file {path} ends with a torn record ({torn} bytes, never acknowledged): "
                    "cutting it off",
                    path=path,
                    torn=len(carried),
                )
                data_file.truncate(complete)
    except FileNotFoundError:
        pass
    return urls


class RecordFile(Protocol):
    """The few file operations the writer needs; a seam for tests to inject disk faults."""

    def size(self) -> int:
        """Return the file's current size in bytes."""

    def write_all(self, data: bytes) -> None:
        """Append all of ``data`` to the file and hand it to the OS, or raise ``OSError``."""

    def truncate(self, size: int) -> None:
        """Cut the file back to ``size`` bytes, or raise ``OSError``."""

    def sync(self) -> None:
        """Make what was written survive a power loss (``fsync``), or raise ``OSError``."""

    def close(self) -> None:
        """Release the file."""


class OSRecordFile:
    """A :class:`RecordFile` over an unbuffered ``O_APPEND`` file descriptor.

    Unbuffered, because "flushed to the OS" must hold when ``write_all`` returns: an acknowledged
    record then survives ``kill -9`` of the process (though not a power loss without ``sync``).
    The file is locked (``flock``) for as long as it is open: two masters on one data file would
    hand out the same keys, so the second one is refused at start-up.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise OSError(exc.errno, f"{path} is in use by another goto process") from None
            raise

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            if written == 0:  # pragma: no cover - a regular file never does this; never spin
                raise OSError(errno.EIO, "write() wrote nothing")
            view = view[written:]

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


#: Runs a blocking callable off the reactor thread, returning a Deferred of its result.
ThreadRunner = Callable[[Callable[[], None]], "Deferred[None]"]


@implementer(IRecordLog)
class AppendLog(Service):
    """The writer service: appends records with group commit, acknowledging each once it is safe.

    Appends that arrive in the same reactor turn are written together in one ``write`` (and, with
    ``fsync``, one ``fsync`` in a thread, while the next group gathers), then all their Deferreds
    fire. Only one group is in flight at a time, so records reach the file in order.

    A write that fails (disk full, I/O error) fails its whole group with :class:`StoreUnavailable`
    and cuts the file back to its last complete record before anything else is written, so a half
    record is never followed by a good one; later appends are tried afresh.
    """

    def __init__(
        self,
        record_file: RecordFile,
        clock: IReactorTime,
        *,
        fsync: bool = False,
        run_in_thread: ThreadRunner | None = None,
        metrics: Metrics | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        if fsync and run_in_thread is None:
            raise ValueError("fsync needs a thread runner, so the reactor never waits for the disk")
        self._file = record_file
        self._clock = clock
        self._fsync = fsync
        self._run_in_thread = run_in_thread
        self._metrics = metrics
        self._timer = timer
        self._good_size = record_file.size()
        self._needs_repair = False
        self._pending: list[tuple[bytes, Deferred[None]]] = []
        self._flush_call: IDelayedCall | None = None
        self._in_flight: Deferred[None] | None = None
        self._closed = False

    def append(self, key: str, url: str) -> Deferred[None]:
        """Queue one record; the Deferred fires once it is written (and synced, with ``fsync``)."""
        if self._closed or not self.running:
            return fail(StoreUnavailable("the data file is closed: the server is stopping"))
        acknowledged: Deferred[None] = Deferred()
        self._pending.append((encode_record(key, url), acknowledged))
        self._schedule_flush()
        return acknowledged

    def _schedule_flush(self) -> None:
        if self._flush_call is None and self._in_flight is None and self._pending:
            self._flush_call = self._clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        group, self._pending = self._pending, []
        data = b"".join(line for line, _ in group)
        if self._fsync:
            assert self._run_in_thread is not None
            self._in_flight = self._run_in_thread(lambda: self._write(data, sync=True))
            self._in_flight.addBoth(self._group_done, group)
        else:
            try:
                self._write(data, sync=False)
            except StoreUnavailable:
                self._group_done(Failure(), group)
            else:
                self._group_done(None, group)

    def _write(self, data: bytes, sync: bool) -> None:
        """Write one group; on failure cut the file back and raise :class:`StoreUnavailable`.

        It runs on the reactor thread without ``fsync`` (a page-cache write), in a thread with it;
        either way only one call runs at a time.
        """
        try:
            if self._needs_repair:
                self._file.truncate(self._good_size)
                self._needs_repair = False
            started = self._timer()
            self._file.write_all(data)
            written = self._timer()
            if sync:
                self._file.sync()
            if self._metrics is not None:
                self._metrics.write_latency.observe(written - started)
                if sync:
                    self._metrics.fsync_latency.observe(self._timer() - written)
        except OSError as exc:
            self._needs_repair = True
            try:
                self._file.truncate(self._good_size)
                self._needs_repair = False
            except OSError:
                pass  # tried again before the next write; until it works, nothing is written
            raise StoreUnavailable(f"writing the data file failed: {exc}") from exc
        self._good_size += len(data)

    def _group_done(self, result: object, group: list[tuple[bytes, Deferred[None]]]) -> None:
        self._in_flight = None
        if isinstance(result, Failure):
            if not result.check(StoreUnavailable):
                result = Failure(StoreUnavailable(f"writing the data file failed: {result.value}"))
            log.error(
                "Could not store {count} record(s): {error}",
                count=len(group),
                error=result.value,
            )
            for _, acknowledged in group:
                acknowledged.errback(result)
        else:
            for _, acknowledged in group:
                acknowledged.callback(None)
        self._schedule_flush()

    def stopService(self) -> Deferred[None]:
        """Stop taking records, write every one already taken, then close the file."""
        super().stopService()
        self._closed = True
        done: Deferred[None] = Deferred()

        def drain(_: object = None) -> None:
            if self._in_flight is not None:
                self._in_flight.addBoth(drain)
                return
            if self._flush_call is not None:
                self._flush_call.cancel()
                self._flush_call = None
            if self._pending:
                self._flush()
                drain()
                return
            self._file.close()
            done.callback(None)

        drain()
        return done
