"""The master's append-only data file: loading it at start-up, and appending records durably.

Format: ASCII text, one JSON object per line, ``{"key":"K","url":"U"}``, in the order the pairs
were stored. A record is one ``write`` of a whole line, so a crash can only tear the last line;
such a line was never acknowledged, and loading cuts it off. A master syncing every add keeps zero
bytes written after its records while it runs (:class:`OSRecordFile`); a clean stop trims them, and
loading trims those a crash left, cutting off what it tore of the last write among them (see
:func:`open_data_file`). Anything else that does not parse, or
holds a key or URL the service would not accept from a user, is corruption, and start-up stops
with the file name and line number rather than guess (or serve a stored URL nobody checked).

The file is locked (``flock``) before a byte of it is read, and loading repairs its tail through
that locked descriptor: a second master started by mistake on the same file is refused without
touching it. A file that does not exist yet is created only once start-up has succeeded.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Callable, NamedTuple, Optional, Protocol, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from goto_tw.errors import InvalidURL, StoreUnavailable, one_line
from goto_tw.interfaces import IRecordLog, ITombstoneLog
from goto_tw.keybound import KeyBound, bound_path, sync_directory_of
from goto_tw.keys import RESERVED_SEGMENTS, is_valid_key
from goto_tw.lifecycle import CannotStart
from goto_tw.metrics import Metrics
from goto_tw.throttledlog import ThrottledCondition
from goto_tw.tombstones import MARK, encode_tombstone, parse_tombstone
from goto_tw.urlmap import URLMap, canonical_index, expected_keys
from goto_tw.urls import MAX_URL_LENGTH, validate_url

log = Logger()

#: What a client is told when its add could not be made durable (the cause goes to the log only).
NOT_STORED = "the link could not be stored now; try again shortly"

#: Longest line the loader accepts. A record this program writes is far shorter (a valid key and a
#: URL of at most MAX_URL_LENGTH characters, escaped); anything longer is not a record.
MAX_RECORD_BYTES = 64 * 1024

#: Most bytes the writer has written but not yet synced, in ``fsync`` mode: all a power loss can tear.
#: Start-up allows what is not a zero among the zeros written ahead only this close to the last
#: complete line (see :func:`open_data_file`): damage within it that looks like what a crash leaves
#: is taken for it (with a warning), so it is kept small. Groups of adds are far smaller (bench c:
#: about 30 records of 100 bytes); a bigger one is synced in parts.
MAX_UNSYNCED_BYTES = 256 * 1024

#: The smallest unit a disk writes whole (a power loss keeps or loses each such piece of a write).
SECTOR_BYTES = 512


class CorruptDataFile(Exception):
    """The data file holds a record that cannot be read; the message names the file and line."""

    def __init__(self, path: str, line_number: int, reason: str) -> None:
        super().__init__(f"{path}, line {line_number}: {reason}")
        self.path = path
        self.line_number = line_number
        self.reason = reason


def _needs_no_escape(text: str) -> bool:
    """True when JSON (``ensure_ascii``) writes ``text`` as it is: printable ASCII, no ``"`` or ``\\``."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def encode_record(key: str, url: str) -> bytes:
    """Return the line that stores one pair, newline included (ASCII-only JSON, no spaces).

    A key and URL that need no JSON escape (every key, and every URL of the common shape) are put
    into the line as they are: the very bytes ``json.dumps`` makes (a property test holds them
    equal), at 0.5 us instead of 2.7 us an add on CPython 3.11. Anything else goes through ``json``.
    """
    if _needs_no_escape(url) and _needs_no_escape(key):
        return f'{{"key":"{key}","url":"{url}"}}\n'.encode("ascii")
    return json.dumps({"key": key, "url": url}, separators=(",", ":")).encode("ascii") + b"\n"


def encode_custom_record(key: str, url: str, created: float) -> bytes:
    """The line of a pair under a key a person chose: marked, so loading never takes it for a counter
    value, and dated (whole seconds). Older programs read it as a plain pair."""
    record = {"key": key, "url": url, "custom": 1, "created": int(created)}
    return json.dumps(record, separators=(",", ":")).encode("ascii") + b"\n"


def _decode_line(path: str, line_number: int, line: bytes) -> tuple[str, str, float | None]:
    """Decode one line into ``(key, url, created)``, or raise :class:`CorruptDataFile` saying what is wrong.

    ``created`` is ``None`` for a pair record (a counter key), or the time a custom key was stored.
    """
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the parser goes
        raise CorruptDataFile(path, line_number, f"not a JSON record ({exc})") from None
    if not isinstance(record, dict):
        raise CorruptDataFile(path, line_number, "not a JSON object")
    key, url = record.get("key"), record.get("url")
    if not isinstance(key, str) or not key or not isinstance(url, str) or not url:
        raise CorruptDataFile(path, line_number, 'the record needs non-empty "key" and "url" strings')
    return key, url, _custom_created(path, line_number, record)


def _custom_created(path: str, line_number: int, record: dict[str, object]) -> float | None:
    """The creation time of a custom-key record (``"custom":1,"created":T``), ``None`` for a pair record."""
    if "custom" not in record:
        return None
    created = record.get("created")
    if (
        record["custom"] != 1
        or isinstance(created, bool)
        or not isinstance(created, (int, float))
        or not 0 <= created < 1e11
    ):
        raise CorruptDataFile(path, line_number, 'a custom-key record needs "custom":1 and a "created" time')
    return float(created)


def _check_key(path: str, line_number: int, key: str) -> None:
    if not is_valid_key(key):
        raise CorruptDataFile(path, line_number, f"{key[:80]!r} is not a short key the service hands out")


def _check_url(path: str, line_number: int, url: str) -> None:
    """Refuse a URL the service would not store for a user, in the form it stores it (ASCII)."""
    if not url.isascii():
        raise CorruptDataFile(path, line_number, "the URL is not in its stored form (ASCII only)")
    try:
        checked = validate_url(url)
    except InvalidURL as exc:
        raise CorruptDataFile(path, line_number, f"the URL is refused: {exc}") from None
    if checked != url:  # pragma: no cover - validate_url changes non-ASCII URLs only
        raise CorruptDataFile(path, line_number, "the URL is not in its stored form")


#: Bytes of the file parsed at a time: big enough for C-speed scans, small enough to bound memory.
_CHUNK_BYTES = 1 << 20


def parse_records(path: str, body: bytes) -> URLMap:
    """Parse complete lines (``body`` ends with a newline or is empty) into a :class:`URLMap`.

    The file is read a chunk of lines at a time. The common case, lines this program wrote with
    keys in counter order, costs a few C-level scans per chunk (no Python code per record): a
    million records load in well under a second. A chunk with anything else (a skipped key, a JSON
    escape, a port in a URL, damage) is read record by record, as JSON where needed, which also
    names the first bad line. A key stored twice is corruption: keys are never reused, so the file
    cannot be trusted to say which URL is right.
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


#: Bytes a plain record holds besides its colons: visible ASCII but the backslash (so no JSON
#: escape), and not ``@``, ``[`` or ``]`` (which a URL's host part may hold); and the line feed.
_PLAIN_BYTES = bytes(byte for byte in range(0x21, 0x7F) if byte not in b"\\:@[]") + b"\n"
#: What only a plain record's host part may hold besides what _PLAIN_BYTES lets through.
_HOST_MARKS = b":@[]"
#: Finds a URL in a plain chunk that does not start with ``http://`` or ``https://`` and a host byte.
_NOT_HTTP_WITH_HOST = re.compile(rb'"url":"(?!https?://[^/?#"])')
#: Counter values of the reserved paths that are also base-62 keys, sorted (``add``, ``api``...).
_RESERVED_INDEXES = sorted(
    index for index in (canonical_index(segment) for segment in RESERVED_SEGMENTS) if index is not None
)


def _split_plain(chunk: bytes, lines: int) -> tuple[list[bytes], list[bytes], bool] | None:
    """Split ``lines`` plain records into their keys and URLs using C-level operations only.

    A plain record, ``{"key":"K","url":"U"}``, splits on ``"`` into eight pieces with fixed ones
    between K and U; checking the fixed pieces by slicing and counting proves every line has that
    shape (no line can hide an escaped quote: backslashes are refused first). ``None`` otherwise.
    The flag says whether every URL is also proven valid (see :func:`_plain_urls_valid`).
    """
    marks = chunk.translate(None, _PLAIN_BYTES)  # every byte but the plain ones: colons, mostly
    if marks.translate(None, _HOST_MARKS):
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
    return keys, urls, len(marks) == 3 * lines and _plain_urls_valid(chunk, urls)


def _plain_urls_valid(chunk: bytes, urls: list[bytes]) -> bool:
    """Prove, with whole-chunk scans, that every URL of a plain chunk passes ``validate_url``.

    Called when the chunk's only colons are the two of each record's frame and one more per line:
    so each URL holds one colon, no ``@``, ``[`` or ``]``, no white space, no control or non-ASCII
    byte. If each also starts with ``http://`` or ``https://`` and a byte of a host (so that colon
    is the scheme's and the host is not empty), and is short enough, ``validate_url`` accepts it unchanged. A
    chunk that fails this is checked URL by URL instead, which is slower but names the line.
    """
    return _NOT_HTTP_WITH_HOST.search(chunk) is None and max(map(len, urls)) <= MAX_URL_LENGTH


def _holds_reserved(start: int, stop: int) -> bool:
    """True when a reserved path's counter value lies in ``[start, stop)``."""
    position = bisect.bisect_left(_RESERVED_INDEXES, start)
    return position < len(_RESERVED_INDEXES) and _RESERVED_INDEXES[position] < stop


def _parse_chunk(
    path: str, chunk: bytes, lines_before: int, urls: URLMap, disabled: dict[str, int] | None = None
) -> int:
    """Add the records of ``chunk`` (complete lines) to ``urls``, its tombstones to ``disabled``;
    return how many lines it held."""
    lines = chunk.count(b"\n")
    split = _split_plain(chunk, lines)
    # Read lazily, so the first bad line is the one named; None stands for a tombstone.
    records: Iterable[tuple[str, str, float | None] | None]
    urls_valid = False
    if split is not None:
        keys, plain_urls, urls_valid = split
        start = urls.next_index()
        if (
            urls_valid
            and keys == expected_keys(start, start + lines)
            and not _holds_reserved(start, start + lines)
        ):
            try:
                urls.extend_run(start, plain_urls)
            except KeyError as exc:
                raise CorruptDataFile(
                    path, lines_before + 1, f"key {exc.args[0]!r} is stored twice"
                ) from None
            return lines
        records = ((key.decode("ascii"), url.decode("ascii"), None) for key, url in zip(keys, plain_urls))
    else:
        records = _decode_lines(path, chunk, lines_before, urls, {} if disabled is None else disabled)
    for number, record in enumerate(records, start=lines_before + 1):
        if record is None:
            continue  # a tombstone, already applied
        key, url, created = record
        _check_key(path, number, key)
        if not urls_valid:
            _check_url(path, number, url)
        try:
            if created is None:
                urls.add(key, url)
            else:
                urls.add_custom(key, url, created)
        except KeyError:
            raise CorruptDataFile(path, number, f"key {key!r} is stored twice") from None
    return lines


def _decode_lines(
    path: str, chunk: bytes, lines_before: int, urls: URLMap, disabled: dict[str, int]
) -> Iterator[tuple[str, str, float | None] | None]:
    """Decode the lines of ``chunk`` lazily: a pair per line, or ``None`` for a tombstone, which
    is checked (it must follow its key's pair) and noted in ``disabled`` when reached."""
    for number, line in enumerate(chunk[:-1].split(b"\n"), start=lines_before + 1):
        if MARK in line and b'"url"' not in line:
            tombstone = parse_tombstone(line)
            if tombstone is None:
                raise CorruptDataFile(path, number, 'not a tombstone record {"key":K,"disabled":SECONDS}')
            key, when = tombstone
            if key not in urls:
                raise CorruptDataFile(
                    path, number, f"the tombstone disables {key[:80]!r}, which is not stored"
                )
            disabled.setdefault(key, when)
            yield None
        else:
            yield _decode_line(path, number, line)


class _Loaded(NamedTuple):
    """What :func:`_read_records` found in a data file."""

    urls: URLMap
    #: The complete lines, and their bytes.
    lines: int
    complete: int
    #: What follows the last complete line, up to the first zero byte or the end: nothing, a torn
    #: record, or a last record whose final newline is missing.
    rest: bytes
    #: Bytes from the first zero byte to the end: zeros written ahead (see :class:`OSRecordFile`)
    #: that a crash left, maybe with the pieces of a write it tore among them (``torn``).
    after: int
    torn: bool


def _read_records(path: str, read: Callable[[int], bytes], disabled: dict[str, int] | None = None) -> _Loaded:
    """Load every complete line ``read`` yields before the first zero byte (none can be in a record).

    The rest may not grow past :data:`MAX_RECORD_BYTES` (a file with no line breaks must not be
    gathered into memory whole). From the first zero byte on the file must hold what a crash
    leaves (see :func:`_read_crash_tail`), or it raises :class:`CorruptDataFile`.
    """
    urls = URLMap()
    lines_before = complete = 0
    carried = b""
    while True:
        block = read(_CHUNK_BYTES)
        if not block:
            return _Loaded(urls, lines_before, complete, carried, 0, False)
        zero = block.find(b"\0")
        records = block if zero < 0 else block[:zero]
        data = carried + records if carried else records
        end = data.rfind(b"\n") + 1
        if end:
            lines_before += _parse_chunk(path, data[:end], lines_before, urls, disabled)
            complete += end
        carried = data[end:]
        if len(carried) > MAX_RECORD_BYTES:
            raise CorruptDataFile(path, lines_before + 1, f"a line longer than {MAX_RECORD_BYTES} bytes")
        if zero >= 0:
            start = complete + len(carried)  # where the first zero byte is
            after, torn = _read_crash_tail(path, block[zero:], read, start, len(carried), lines_before + 1)
            return _Loaded(urls, lines_before, complete, carried, after, torn)


#: Runs of bytes that are not zeros: among the zeros, the pieces a power loss kept of a write.
_PIECES = re.compile(rb"[^\0]+")


def _read_crash_tail(
    path: str, tail: bytes, read: Callable[[int], bytes], start: int, partial: int, line_number: int
) -> tuple[int, bool]:
    """Read the file from its first zero byte (at ``start``, after ``partial`` bytes of a line;
    ``tail`` is the start of it) to the end, and check that a crash can leave it; return how many
    bytes it is, and whether any of them is not a zero.

    A crash leaves the zeros written ahead there, and maybe pieces of the one write not synced yet:
    that write began where the last complete line ends (``start - partial``) and reached at most
    MAX_UNSYNCED_BYTES further, the zeros at most SPARE_BYTES beyond it. A power loss keeps or loses
    whole sectors of it, so zeros begin only where a sector begins or the records end (after a
    newline), and bytes resume after zeros only where a sector begins. Anything else raises
    :class:`CorruptDataFile`: start-up stops rather than cut off what may be acknowledged records.
    """

    def corrupt(reason: str) -> CorruptDataFile:
        return CorruptDataFile(path, line_number, reason)

    if partial and start % SECTOR_BYTES:
        raise corrupt("a zero byte inside a record")
    most = MAX_UNSYNCED_BYTES + SPARE_BYTES - partial
    while len(tail) <= most:
        more = read(_CHUNK_BYTES)
        if not more:
            break
        tail += more
    if len(tail) > most:
        raise corrupt(
            f"zero bytes followed by more than {most} bytes: more than a crash of a master syncing its "
            f"adds leaves (if a master with --no-fsync lost power, its records end at byte "
            f"{start - partial}: cut the file there to start)"
        )
    torn = False
    for piece in _PIECES.finditer(tail):
        begin, end = piece.span()
        torn = True
        if (start + begin) % SECTOR_BYTES:
            raise corrupt("bytes that are not zeros resume inside a sector, after zero bytes")
        if end < len(tail) and (start + end) % SECTOR_BYTES and tail[end - 1] != 0x0A:
            raise corrupt("a zero byte inside a record")
        if end > MAX_UNSYNCED_BYTES - partial:
            raise corrupt("bytes that are not zeros follow zero bytes further on than a torn write reaches")
    return len(tail), torn


def _is_whole_json(text: bytes) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


class RecordFile(Protocol):
    """The few file operations the writer needs; a seam for tests to inject disk faults."""

    def open(self, spare: int = 0) -> None:
        """Make the file ready for appending (creating it now if start-up found none), or raise
        ``OSError``; keep ``spare`` bytes of zeros written past the records (see :class:`OSRecordFile`)."""

    def size(self) -> int:
        """Return how many bytes of records the file holds (its zeros written ahead not counted)."""

    def write_all(self, data: bytes) -> None:
        """Append all of ``data`` to the file and hand it to the OS, or raise ``OSError``."""

    def truncate(self, size: int) -> None:
        """Cut the file back to ``size`` bytes, or raise ``OSError``."""

    def sync(self) -> None:
        """Make what was written survive a power loss, or raise ``OSError``."""

    def close(self) -> None:
        """Release the file, trimming its zeros written ahead."""


def _in_use(path: str, exc: OSError) -> OSError:
    if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
        return OSError(exc.errno, f"{path} is in use by another goto process")
    return exc


def _lock(fd: int, path: str) -> int:
    """Lock ``fd`` (held until it is closed) or close it and raise "in use"."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise _in_use(path, exc) from None
    return fd


#: Zero bytes a master syncing every add keeps written past its records (``open(spare=...)``), so
#: that most syncs find the file's size unchanged. Below MAX_RECORD_BYTES with a torn record's room
#: to spare: a release that knows nothing of them cuts them off after a crash as a torn last line.
SPARE_BYTES = 32 * 1024

#: ``fdatasync`` where the OS has it: it writes the data and the metadata needed to read it back
#: (the size), not the times, which nothing here needs after a power loss.
_sync_data = getattr(os, "fdatasync", os.fsync)


class OSRecordFile:
    """A :class:`RecordFile` over one unbuffered, locked file descriptor, written at its own offset.

    Construction opens an existing file and locks it (``flock``) at once, before anything reads
    it: two masters on one data file would hand out the same keys, and the second must not even
    repair the first one's in-flight tail. The same descriptor then serves loading, repair and
    appending. A file that does not exist is created by :meth:`open`, once start-up has succeeded.

    Unbuffered, because "flushed to the OS" must hold when ``write_all`` returns: an acknowledged
    record then survives ``kill -9`` of the process (though not a power loss without ``sync``).

    Opened with ``spare``, the file keeps that many zero bytes written past its records, written
    (and synced with the records before them) whenever the records reach the end. A record then
    mostly lands in blocks the file already has, and ``fdatasync`` writes it alone, where an append
    also has the file system journal a new size: on this project's test machine a synced write of
    1,500 bytes took 203 us against 357, and 61 us of system CPU against 126 (``bench/sync_cost.py``,
    medians of 6 rounds). :meth:`close` trims the zeros; start-up trims those a crash left (see
    :func:`open_data_file`).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        #: Where the next record goes (the records' end), and where the file's zeros end.
        self._end = 0
        self._allocated = 0
        self._spare = 0
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return
        self._fd = _lock(fd, path)
        self._end = self._allocated = os.fstat(fd).st_size

    def exists(self) -> bool:
        """Whether the file was there at start-up (or has been created since)."""
        return self._fd is not None

    def read(self, size: int) -> bytes:
        """The next ``size`` bytes from the start on (for loading), or ``b""`` at the end."""
        return b"" if self._fd is None else os.read(self._fd, size)

    def open(self, spare: int = 0) -> None:
        self._spare = spare
        if self._fd is not None:
            return
        # A symbolic link to a file yet to be made: that file is what is made (and synced in its
        # directory, or removed again), not the link.
        path = os.path.realpath(self.path)
        try:
            fd, created = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:  # an empty file another process made
            fd, created = os.open(path, os.O_RDWR | os.O_CREAT, 0o644), False
        fd = _lock(fd, self.path)
        if os.fstat(fd).st_size:  # another process wrote it since start-up found none
            os.close(fd)
            raise OSError(errno.EEXIST, f"{self.path} appeared while this master was starting")
        self._fd = fd
        self._end = self._allocated = 0
        # The new file's directory entry is made durable now, before any record is acknowledged:
        # the key bound's own directory sync comes only with the first counter key, and a custom
        # key as the first record would otherwise rely on the file system to commit the create
        # with the file's first sync (a power loss could lose the file, and the key be claimed again).
        try:
            sync_directory_of(path)
        except OSError:
            # What this open created is not left behind: the next start would take the empty file
            # for one already made durable, and never sync its directory entry. Nothing else is
            # removed (a file another process made, a symbolic link).
            if created:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            os.close(fd)
            self._fd = None
            raise

    def _open_fd(self) -> int:
        if self._fd is None:
            raise OSError(errno.EBADF, f"{self.path} is not open")
        return self._fd

    def size(self) -> int:
        self._open_fd()
        return self._end

    def write_all(self, data: bytes) -> None:
        fd = self._open_fd()
        self._write_at(fd, data)
        if self._spare and self._end >= self._allocated:
            end = self._end
            with contextlib.suppress(OSError):  # a nearly full disk: the zeros only save time
                self._write_at(fd, bytes(self._spare))
            self._allocated, self._end = self._end, end
        self._allocated = max(self._allocated, self._end)

    def _write_at(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, self._end)
            if written == 0:  # pragma: no cover - a regular file never does this; never spin
                raise OSError(errno.EIO, "pwrite() wrote nothing")
            self._end += written
            view = view[written:]

    def truncate(self, size: int) -> None:
        os.ftruncate(self._open_fd(), size)
        self._end = self._allocated = size

    def sync(self) -> None:
        _sync_data(self._open_fd())

    def close(self) -> None:
        if self._fd is not None:
            try:
                if self._allocated > self._end:
                    os.ftruncate(self._fd, self._end)
            except OSError as exc:  # start-up trims them just as well
                log.warn("Could not trim {path}'s zeros written ahead: {error}", path=self.path, error=exc)
            os.close(self._fd)
            self._fd = None


class DataFile(NamedTuple):
    """A loaded data file: its pairs, the locked file to append to, and where keys resume."""

    urls: URLMap
    record_file: OSRecordFile
    key_bound: KeyBound
    #: The first counter value a new key may take: past every key in the file and the bound.
    next_index: int
    #: Disabled keys (their tombstones), with when they were disabled (seconds since the epoch).
    disabled: dict[str, int] = {}


def resume_index(urls: URLMap, bound: int) -> int:
    """Where the key counter resumes: past every key loaded and every key possibly acknowledged."""
    return max(urls.next_index(), bound)


def open_data_file(path: str) -> DataFile:
    """Lock the data file at ``path``, load it, repair its tail, and read its key bound.

    The lock comes first: a file in use raises ``OSError`` ("in use") untouched. A missing file is
    an empty store (created on start, see :class:`OSRecordFile`). A last line without its newline
    is kept, its newline added, if it is a whole JSON record (checked like any other); otherwise it
    is a torn write, never acknowledged, and is cut off with a warning. Zeros written ahead that a
    crash left after the records are trimmed with a warning; among them, what a power loss left of
    the one write that was not synced yet (``fsync`` syncs at most MAX_UNSYNCED_BYTES at a time) is
    cut off. Any other unreadable record, or a tail no crash leaves (see
    :func:`_read_crash_tail`), raises :class:`CorruptDataFile`; an unreadable key bound raises
    :class:`~goto_tw.keybound.CorruptKeyBound`. Nothing is silently discarded. The file is synced
    before start-up goes on (a repair, and what a master without ``fsync`` or a killed one left
    unsynced), so that a power loss later can tear only the writes made after it.
    """
    record_file = OSRecordFile(path)
    disabled: dict[str, int] = {}
    try:
        urls, lines, complete, rest, after, torn = _read_records(path, record_file.read, disabled)
        if torn:
            log.warn(
                "Data file {path} ends with a write a crash tore ({after} bytes from its first zero "
                "byte on, never acknowledged): cutting it off",
                path=path,
                after=after,
            )
        elif after:
            log.warn(
                "Data file {path} ends with {after} zero bytes written ahead, left by a crash: trimming them",
                path=path,
                after=after,
            )
        if rest and _is_whole_json(rest):
            _parse_chunk(path, rest + b"\n", lines, urls, disabled)
            log.warn(
                "Data file {path} ends with a whole record without its newline: adding the newline",
                path=path,
            )
            if after:
                record_file.truncate(complete + len(rest))
            record_file.write_all(b"\n")
        elif rest:
            log.warn(
                "Data file {path} ends with a torn record ({torn} bytes, never acknowledged): cutting it off",
                path=path,
                torn=len(rest),
            )
            record_file.truncate(complete)
        elif after:
            record_file.truncate(complete)
        if record_file.exists():  # what it holds (repaired or not) is durable before the next write
            record_file.sync()
        key_bound = KeyBound.at(bound_path(path))
        if len(urls) and not os.path.exists(bound_path(path)):
            log.warn(
                "Data file {path} has records but no key bound file {bound}: keys resume from the data "
                "file alone (normal once, after an upgrade; if the data file was restored or moved "
                "without it, keys answered after that copy was taken may be handed out again)",
                path=path,
                bound=bound_path(path),
            )
    except BaseException:
        record_file.close()
        raise
    return DataFile(urls, record_file, key_bound, resume_index(urls, key_bound.durable), disabled)


def load_records(path: str) -> URLMap:
    """Load (and repair) the data file at ``path`` as :func:`open_data_file` does, then release it."""
    data = open_data_file(path)
    data.record_file.close()
    return data.urls


#: Told once whether a record is safe: ``None`` once it is, or the failure that kept it from being so.
Acknowledge = Callable[[Optional[Failure]], None]


class _Queued(NamedTuple):
    """A record waiting to be written: its line, who to tell, its key's counter value."""

    line: bytes
    acknowledge: Acknowledge
    #: The key's counter value, or -1 for a record the key bound does not cover: a custom key's
    #: pair (``set``, or an add with its own key), a tombstone.
    key_index: int


def _holds_unbounded(group: list[_Queued]) -> bool:
    """Whether ``group`` holds a record the key bound does not cover (``key_index`` -1).

    Without ``fsync`` such a record is still synced before it is acknowledged: a counter key lost
    in a power loss is never handed out again (the bound), but nothing else would keep a lost
    custom key from being claimed again, or counted to, for another URL.
    """
    return any(record.key_index < 0 for record in group)


def _settle(acknowledged: Deferred[None]) -> Acknowledge:
    """An :data:`Acknowledge` that fires ``acknowledged``."""

    def acknowledge(failure: Failure | None) -> None:
        if failure is None:
            acknowledged.callback(None)
        else:
            acknowledged.errback(failure)

    return acknowledge


_Item = TypeVar("_Item")


def _runs(items: Iterable[_Item], size: Callable[[_Item], int], most: int) -> Iterator[list[_Item]]:
    """``items`` in consecutive runs of at most ``most`` bytes each, by ``size`` (an item bigger than
    that makes a run of its own): the parts of a long group, the batches of a writer run."""
    run: list[_Item] = []
    total = 0
    for item in items:
        if run and total + size(item) > most:
            yield run
            run, total = [], 0
        run.append(item)
        total += size(item)
    if run:
        yield run


def _line_bytes(record: _Queued) -> int:
    return len(record.line)


#: A group for the writer thread: its lines, its records, whether it is to be synced.
_Handed = tuple[bytes, list[_Queued], bool]


def _group_bytes(group: _Handed) -> int:
    return len(group[0])


def _tell(records: list[_Queued], failure: Failure | None) -> None:
    """Acknowledge each of ``records``: every one is told, whatever one of them does with it."""
    for record in records:
        try:
            record.acknowledge(failure)
        except Exception:
            log.failure("Acknowledging a record failed")


#: Seconds between two log lines about failing writes of the data file or its key bound: a client
#: adding one link at a time meets a full disk once per add.
FAILURE_LOG_INTERVAL = 10.0


#: Seconds a writer run that has written every group waits for the next (``writer_linger``): a
#: group's write + fsync takes about 0.2 ms here, and a master under load hands one every few
#: milliseconds (bench/run.py ``d``: a group per slave batch, about 240 a second), so one run takes
#: them all; an idle master's run gives its pool thread back 5 ms after its last add.
WRITER_LINGER = 0.005

#: Runs a blocking callable off the reactor thread, returning a Deferred of its result.
ThreadRunner = Callable[[Callable[[], None]], "Deferred[None]"]
#: Calls a function with arguments in the reactor thread, from another thread (``reactor.callFromThread``).
CallFromThread = Callable[..., object]


@implementer(IRecordLog, ITombstoneLog)
class AppendLog(Service):
    """The writer service: appends records with group commit, acknowledging each once it is safe.

    Appends that arrive in the same reactor turn are written together in one ``write``, then all
    their Deferreds fire. With ``fsync`` (``fdatasync``, mostly into zeros the file keeps written
    ahead: see :class:`OSRecordFile`) the writing and syncing happen in a thread, one
    ``write`` + ``fsync`` at a time: the records that arrived meanwhile wait, and the thread takes
    all of them (in batches of at most MAX_UNSYNCED_BYTES) for its next ``write`` + ``fsync`` as
    soon as the last one ends, handing that one's
    acknowledgements to the reactor (``call_from_thread``) without waiting for them. A thread
    started per group (as before) left the disk idle twice per group: while the thread woke to
    take it, and while the reactor took the result and started the next (on PyPy, measured with
    timestamps around the thread's work: 0.6 ms of each 1 ms cycle). With ``writer_linger``, a run
    that has written everything waits that long for the next group before it gives its pool thread
    back: under a steady load of adds one run takes group after group, each handed over by a
    notify instead of a new run through the thread pool (its queue, its worker's wake-up, a
    Deferred per run: on a CPython master taking adds through a slave, 7% of the main thread's
    samples were in the pool's ``Condition.notify`` alone, py-spy). ``bench/run.py`` ``d``, the
    same hour: the master's CPU per add 26.0 -> 24.6 us on CPython, 16.5 -> 15.1 on PyPy;
    throughput, and ``c``, within the noise.

    Without ``fsync`` a group is written on the reactor thread and acknowledged at once, except one
    holding a record the key bound does not cover (a custom key's pair, a tombstone): that group is
    synced by the writer thread first, as with ``fsync``, so no power loss can free a custom key for
    another URL; while that runs, later groups queue behind it.

    With a :class:`~goto_tw.keybound.KeyBound`, no record whose key is a counter value at or past
    the durable bound is written (so none is acknowledged) until a higher bound is durable; the
    others go ahead. The bound is raised a block ahead, in a thread, whenever keys come within
    half a block of it, so adds almost never wait for it (the first after a start may); start-up resumes past it,
    so even without ``fsync`` a power loss never lets a key be handed out again. A clean stop
    syncs the file and lowers the bound to the keys really used, so restarts skip no keys.

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
        call_from_thread: CallFromThread | None = None,
        metrics: Metrics | None = None,
        timer: Callable[[], float] = time.perf_counter,
        key_bound: KeyBound | None = None,
        resume_index: int = 0,
        writer_linger: float = 0.0,
    ) -> None:
        if (fsync or key_bound is not None) and run_in_thread is None:
            raise ValueError(
                "fsync and the key bound need a thread runner: the reactor never waits for the disk"
            )
        if fsync and call_from_thread is None:
            raise ValueError(
                "fsync needs call_from_thread: the writer thread hands its results to the reactor"
            )
        self._file = record_file
        self._clock = clock
        self._fsync = fsync
        #: Whether a writer thread can sync (always when served: tests may run a log without one).
        self._can_sync = run_in_thread is not None and call_from_thread is not None
        self._run_in_thread = run_in_thread
        self._call_from_thread = call_from_thread
        self._metrics = metrics
        if metrics is not None:
            metrics.watch_data_file()
        self._timer = timer
        self._key_bound = key_bound
        #: One past the highest counter value any acknowledged key may have (every key below the
        #: index the store resumes at may have been, before a power loss): the bound must exceed it.
        self._needed = resume_index
        self._opened = False
        self._raising: Deferred[None] | None = None
        self._good_size = 0
        self._needs_repair = False
        self._pending: list[_Queued] = []
        self._flush_call: IDelayedCall | None = None
        #: The writer thread's run while it lasts (what a stop waits for).
        self._in_flight: Deferred[None] | None = None
        #: Shared with the writer thread (under the lock): the groups it has still to write (each
        #: with whether it is to be synced), and whether it is running (it stops once it finds none).
        self._lock = threading.Lock()
        self._to_write: list[_Handed] = []
        self._writer_running = False
        #: How long a writer run with nothing left waits for the next group (see the class doc);
        #: woken through this condition (on the same lock) by the next group, or by a stop.
        self._writer_linger = writer_linger
        self._group_handed = threading.Condition(self._lock)
        self._closed = False
        #: Why the last write of the data file failed, and why the last raise of the key bound did,
        #: each until one of its own succeeds (:attr:`failing`, for ``/_goto/health``).
        self._data_failing: str | None = None
        self._bound_failing: str | None = None
        #: The same two as conditions for the log: failures and recoveries, each kind said at most
        #: once every FAILURE_LOG_INTERVAL, a line left out said later if the log's last line would
        #: otherwise be wrong; each one's cost, the records it refused.
        self._data_file_lines = ThrottledCondition(
            log,
            clock,
            "Could not store {count} record(s): {error} ({unlogged} more failures since the last line)",
            "The data file is written again ({cost} record(s) refused since the last such line; "
            "{unlogged} more recoveries since)",
            FAILURE_LOG_INTERVAL,
        )
        self._key_bound_lines = ThrottledCondition(
            log,
            clock,
            "{failure} ({unlogged} more failures since the last line)",
            "The key bound is written again ({cost} record(s) refused since the last such line; "
            "{unlogged} more recoveries since)",
            FAILURE_LOG_INTERVAL,
        )

    @property
    def fsync(self) -> bool:
        """Whether each group is synced to disk before it is acknowledged."""
        return self._fsync

    def startService(self) -> None:
        """Open the file (creating it now if start-up found none): start-up has succeeded. With
        ``fsync`` it keeps zeros written ahead, so that most syncs write the records alone. A file
        that cannot be opened or created stops the start with one line (:class:`CannotStart`)."""
        try:
            self._file.open(spare=SPARE_BYTES if self._fsync else 0)
        except OSError as exc:
            raise CannotStart(f"goto: the data file cannot be opened: {one_line(exc)}") from None
        self._opened = True
        self._good_size = self._file.size()
        super().startService()

    def append(self, key: str, url: str, custom: bool = False) -> Deferred[None]:
        """Queue one record; the Deferred fires once it is written (and synced, with ``fsync``).

        A ``custom`` key is recorded as such (with the time) and never counts against the key bound.
        """
        acknowledged: Deferred[None] = Deferred()
        if custom:
            if self._refuse(_settle(acknowledged)):
                return acknowledged
            line = encode_custom_record(key, url, self._clock.seconds())
            self._pending.append(_Queued(line, _settle(acknowledged), -1))
            self._schedule_flush()
            return acknowledged
        index = canonical_index(key)
        if index is None:
            if not self._refuse(_settle(acknowledged)):
                self._pending.append(_Queued(encode_record(key, url), _settle(acknowledged), -1))
                self._schedule_flush()
        else:
            self.append_counter(index, key, url, _settle(acknowledged))
        return acknowledged

    def append_counter(self, index: int, key: str, url: str, acknowledge: Acknowledge) -> None:
        """Queue the record of ``key``, the counter's key for ``index``; call ``acknowledge(None)``
        once it is written (and synced, with ``fsync``), or with the failure that kept it from that.

        :meth:`append` without a Deferred per record: the store's adds, the hottest writes there
        are, make one Deferred each for their caller and none here. ``acknowledge`` is called
        exactly once, maybe before this returns (when the log is closed).
        """
        if self._refuse(acknowledge):
            return
        if index >= self._needed:
            self._needed = index + 1
        self._pending.append(_Queued(encode_record(key, url), acknowledge, index))
        self._raise_bound_ahead()
        self._schedule_flush()

    def _refuse(self, acknowledge: Acknowledge) -> bool:
        """Refuse a record (and say so) once the log is closed; ``False`` while it takes records."""
        if self._closed or not self.running:
            acknowledge(
                Failure(
                    StoreUnavailable(NOT_STORED, detail="the data file is closed: the server is stopping")
                )
            )
            return True
        return False

    def append_tombstone(self, key: str, when: int) -> Deferred[None]:
        """Queue a tombstone for ``key``; the Deferred fires once it is as safe as a pair would be."""
        acknowledged: Deferred[None] = Deferred()
        if not self._refuse(_settle(acknowledged)):
            self._pending.append(_Queued(encode_tombstone(key, when), _settle(acknowledged), -1))
            self._schedule_flush()
        return acknowledged

    def _raise_bound_ahead(self) -> None:
        """Start making a higher bound durable once keys come within half a block of it."""
        bound = self._key_bound
        if bound is None or self._raising is not None or self._needed + bound.block // 2 <= bound.durable:
            return
        target = max(bound.durable, self._needed) + bound.block
        assert self._run_in_thread is not None
        self._raising = self._run_in_thread(lambda: bound.store(target))
        self._raising.addBoth(self._bound_raised, target)

    def _bound_raised(self, result: object, target: int) -> None:
        self._raising = None
        assert self._key_bound is not None
        if isinstance(result, Failure):
            error = StoreUnavailable(
                NOT_STORED, detail=f"making the key bound durable failed: {result.value}"
            )
            self._pending, waiting = self._split_covered()
            self._bound_failing = error.log_text()
            if waiting:
                if self._metrics is not None:
                    self._metrics.refused_records.inc(len(waiting))
                failure = f"Could not store {len(waiting)} record(s): {self._bound_failing}"
            else:  # raised ahead of need: no add is refused (yet)
                failure = (
                    f"Could not raise the key bound ahead of the keys in use ({self._bound_failing}); "
                    "adds past it will wait for it"
                )
            self._key_bound_lines.holds(cost=len(waiting), failure=failure)
            _tell(waiting, Failure(error))
        else:
            if self._bound_failing is not None:
                self._bound_failing = None
                self._key_bound_lines.ended()
            self._key_bound.durable = max(self._key_bound.durable, target)
            self._raise_bound_ahead()  # keys may have come near the new bound meanwhile
        self._schedule_flush()

    def _split_covered(self) -> tuple[list[_Queued], list[_Queued]]:
        """The pending records whose keys the durable bound covers, and the others (held back)."""
        if self._key_bound is None:
            return self._pending, []
        durable = self._key_bound.durable
        covered = [record for record in self._pending if record.key_index < durable]
        if len(covered) == len(self._pending):
            return self._pending, []
        return covered, [record for record in self._pending if record.key_index >= durable]

    def _schedule_flush(self) -> None:
        if self._flush_call is None and self._pending:
            self._flush_call = self._clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        group, self._pending = self._split_covered()
        if self._pending:
            self._raise_bound_ahead()  # its completion flushes what it holds back
        if not group:
            return
        data = b"".join(record.line for record in group)
        unbounded = not self._fsync and self._can_sync and _holds_unbounded(group)
        # Without fsync the writer thread still syncs what the key bound cannot protect, and while
        # it runs every group goes through it: one writer at a time, in order. (Only this thread
        # sets ``_writer_running`` true, so a read without the lock sees a run that is over or ends.)
        if self._fsync or unbounded or self._writer_running:
            self._hand_to_writer(data, group, sync=self._fsync or unbounded)
        else:
            try:
                self._write(data, sync=False)
            except StoreUnavailable:
                self._group_done(Failure(), group)
            else:
                self._group_done(None, group)

    def _hand_to_writer(self, data: bytes, group: list[_Queued], sync: bool) -> None:
        """Queue a group for the writer thread, starting it unless it is running (it then takes the
        group once its current ``write`` + ``fsync`` ends); ``sync``: ``fsync`` it before it is
        acknowledged. A group of more than MAX_UNSYNCED_BYTES goes in parts of at most that."""
        if len(data) > MAX_UNSYNCED_BYTES:
            handed = [
                (b"".join(record.line for record in part), part, sync)
                for part in _runs(group, _line_bytes, MAX_UNSYNCED_BYTES)
            ]
        else:
            handed = [(data, group, sync)]
        with self._lock:
            self._to_write.extend(handed)
            if self._writer_running:
                self._group_handed.notify()  # a run lingering for the next group takes it now
                return
            self._writer_running = True
        assert self._run_in_thread is not None
        try:
            writer = self._run_in_thread(self._write_groups)
        except Exception:  # a pool that has quit refuses at once (Twisted's AlreadyQuit)
            writer = fail()
        self._in_flight = writer
        writer.addBoth(self._writer_stopped, writer)

    def _write_groups(self) -> None:
        """The writer thread: write and sync whatever groups wait, in batches of at most
        MAX_UNSYNCED_BYTES (one ``write`` + ``fsync`` each, acknowledged as it ends: only the last
        can be torn by a power loss, and a failure cuts back that batch alone), until none wait (and
        none came within the linger)."""
        assert self._call_from_thread is not None
        while True:
            with self._lock:
                # Lingering pays with fsync only: without it the writer runs only for what the key
                # bound cannot protect, and plain groups go back to the reactor once it stops.
                if not self._to_write and self._writer_linger > 0 and not self._closed and self._fsync:
                    self._group_handed.wait(self._writer_linger)
                taken, self._to_write = self._to_write, []
                if not taken:
                    self._writer_running = False
                    return
            for batch in _runs(taken, _group_bytes, MAX_UNSYNCED_BYTES):
                failure: Failure | None = None
                try:
                    self._write(
                        b"".join([data for data, _, _ in batch]), sync=any(sync for _, _, sync in batch)
                    )
                except Exception:
                    failure = Failure()
                self._call_from_thread(self._groups_written, [group for _, group, _ in batch], failure)

    def _groups_written(self, groups: list[list[_Queued]], failure: Failure | None) -> None:
        """Acknowledge groups the writer thread wrote and synced (or failed to)."""
        self._acknowledge([record for group in groups for record in group], failure)

    @property
    def failing(self) -> str | None:
        """Why records cannot be stored now (the data file or the key bound), ``None`` while they can."""
        return self._data_failing or self._bound_failing

    def _acknowledge(self, records: list[_Queued], failure: Failure | None) -> None:
        """Tell ``records`` they are written, or that they failed: the failure as a user-fit
        :class:`StoreUnavailable` (its cause for the log, at most once an interval, and for
        :attr:`failing` until a write of the data file succeeds again, which is logged too)."""
        if failure is not None:
            error = failure.value
            if not isinstance(error, StoreUnavailable):
                error = StoreUnavailable(NOT_STORED, detail=f"writing the data file failed: {error}")
                failure = Failure(error)
            self._data_failing = error.log_text()
            if self._metrics is not None:
                self._metrics.refused_records.inc(len(records))
            self._data_file_lines.holds(cost=len(records), count=len(records), error=self._data_failing)
        elif self._data_failing is not None and records:
            self._data_failing = None
            self._data_file_lines.ended()
        _tell(records, failure)

    def _writer_stopped(self, result: object, writer: Deferred[None]) -> None:
        """The writer thread's run ended: normally (it found nothing more to write), or not at all
        (the thread pool refused it, at once or later): then what waits for it is failed, not left
        waiting."""
        if self._in_flight is writer:
            self._in_flight = None
        if isinstance(result, Failure):
            log.failure("The data file's writer thread failed", result)
            with self._lock:
                stranded, self._to_write = self._to_write, []
                self._writer_running = False
            error = StoreUnavailable(NOT_STORED, detail=f"the writer thread failed: {result.value!r}")
            _tell([record for _, group, _ in stranded for record in group], Failure(error))

    def _write(self, data: bytes, sync: bool) -> None:
        """Write one group; on failure cut the file back and raise :class:`StoreUnavailable`.

        It runs on the reactor thread without ``fsync`` (a page-cache write), in the writer thread
        with it (at most MAX_UNSYNCED_BYTES then: see :meth:`_write_groups`); either way only one
        call runs at a time. A cut-back is synced along with what is synced.
        """
        try:
            if self._needs_repair:
                self._file.truncate(self._good_size)
                if sync:  # what a failed write left is gone before this one can be torn
                    self._file.sync()
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
                if sync:
                    self._file.sync()
                self._needs_repair = False
            except OSError:
                pass  # tried again before the next write; until it works, nothing is written
            raise StoreUnavailable(NOT_STORED, detail=f"writing the data file failed: {exc}") from exc
        self._good_size += len(data)

    def _group_done(self, result: object, group: list[_Queued]) -> None:
        """Acknowledge a group written on the reactor thread (without ``fsync``), or failed."""
        self._acknowledge(group, result if isinstance(result, Failure) else None)
        self._schedule_flush()

    def stopService(self) -> Deferred[None]:
        """Stop taking records, write every one already taken, then close the file."""
        super().stopService()
        with self._lock:
            self._closed = True
            self._group_handed.notify()  # a lingering writer run ends now
        done: Deferred[None] = Deferred()

        def drain(_: object = None) -> None:
            for busy in (self._in_flight, self._raising):
                if busy is not None:
                    busy.addBoth(drain)
                    return
            if self._flush_call is not None:
                self._flush_call.cancel()
                self._flush_call = None
            if self._pending:
                self._flush()
                drain()
                return
            self._lower_bound().addBoth(close)

        def close(_: object) -> None:
            if self._needs_repair:  # a failed write's records were refused: they go, not stay
                with contextlib.suppress(OSError):
                    self._file.truncate(self._good_size)
                    self._file.sync()
            for lines in (self._data_file_lines, self._key_bound_lines):
                lines.stop()
            try:
                self._file.close()
            finally:
                done.callback(None)

        drain()
        return done

    def _lower_bound(self) -> Deferred[None]:
        """On a clean stop, sync the file and bring the bound down to the keys really used.

        Safe once every record is synced: start-up then resumes past them from the file itself, and
        ``_needed`` never drops below where this run resumed. It saves a restart from skipping up to
        a block of keys. If anything fails, the higher bound stays, which is merely wasteful.
        """
        bound = self._key_bound
        if bound is None or not self._opened or bound.durable <= self._needed:
            return succeed(None)
        needed = self._needed

        def sync_then_lower() -> None:
            self._file.sync()
            bound.store(needed)

        assert self._run_in_thread is not None
        lowered = self._run_in_thread(sync_then_lower)

        def done(result: object) -> None:
            if isinstance(result, Failure):
                log.warn(
                    "Could not lower the key bound on stop (it stays higher): {error}", error=result.value
                )
            else:
                bound.durable = needed

        return lowered.addBoth(done)
