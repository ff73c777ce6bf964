"""The access log: one Common Log Format line per answered request.

It is written apart from ``twisted.logger`` by default, because on a redirect server the access log
is the hottest code there is: formatting each line through the logging framework (a format-string
interpreter, a timestamp per event, a chain of observers) cost several times the redirect itself.
Here a line is one f-string, timestamps are formatted once per second, and lines are written in
one batch per reactor turn.

``--access-log``: ``-`` (standard output, the default), a file path (appended to, and opened
again on SIGHUP, so that logrotate or an operator can move it aside), ``events`` (structured
``twisted.logger`` events, for ``--logger goto_tw.logs.json_observer``), or ``none``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import stat
import sys
from typing import IO, Callable, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.http import datetimeToLogString

from goto_tw.throttledlog import ThrottledError
from goto_tw.timestamps import PerSecond

events_log = Logger(namespace="goto.access")
log = Logger()
#: Seconds between two log lines about access-log lines that could not be written (a full disk).
WRITE_FAILURE_LOG_INTERVAL = 10.0

#: The bytes a log line may carry as they are: visible ASCII but the quote and the backslash.
_SAFE_BYTES = bytes(byte for byte in range(0x21, 0x7F) if byte not in b'"\\')
#: The protocols nearly every request names, already made printable (one dict look-up a line).
_PROTOCOL_TEXT = {b"HTTP/1.1": "HTTP/1.1", b"HTTP/1.0": "HTTP/1.0"}


def printable(value: bytes) -> str:
    """Bytes from the client made safe for one log line: no quotes, controls, spaces or newlines.

    Nothing left once the safe bytes are deleted means nothing to escape: one C call, which costs
    CPython 3.11 260-280 ns whatever the length, where a regular-expression search cost 320 ns for
    a key's path and 1,200 ns for a 54-byte add's (timeit)."""
    if not value.translate(None, _SAFE_BYTES):
        return value.decode("ascii")
    return "".join(chr(byte) if byte in _SAFE_BYTES else f"\\x{byte:02x}" for byte in value)


class AccessLog(Protocol):
    """Where answered requests are recorded."""

    def record(
        self, client: str, method: str, path: bytes, protocol: bytes, status: int, size: int | str, route: str
    ) -> None:
        """Record one answered request."""


def _log_time(now: float) -> str:
    """The Common Log Format time of ``now``, without its brackets."""
    text: str = datetimeToLogString(now)
    return text[1:-1]


def _descriptor_of(out: IO[str]) -> int | None:
    """The file descriptor beneath ``out`` (its buffer flushed), or ``None`` for a stream without one."""
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last two
        return None
    out.flush()
    return fd


#: Most bytes held for a reader that is not keeping up (see ``LineAccessLog._write_when_read``).
MAX_HELD_BYTES = 1 << 20
#: Most bytes in one write to such a reader: a pipe that polls writable has a page free.
WRITE_CHUNK = 4096
#: Seconds between two tries to write held lines when no new line comes.
HELD_RETRY_SECONDS = 0.1
#: Seconds a stop waits for a reader that is behind to take the held lines (a journal busy as the
#: whole machine shuts down); a reader still behind then loses them, and the log says how many.
STOP_WAIT_SECONDS = 2.0


def _is_pipe_or_socket(fd: int) -> bool:
    """Whether ``fd`` is a pipe (or FIFO) or a socket: a reader that may stop reading, and a
    descriptor that polls writable only when a write of :data:`WRITE_CHUNK` bytes will not wait.
    A terminal polls writable and still makes a write wait when its reader is held (measured with a
    pseudo-terminal): it is written as a file is."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _poller(fd: int) -> Callable[[], bool]:
    """Whether ``fd`` takes a write now, without waiting (``poll`` with a zero timeout)."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)

    def writable() -> bool:
        return any(
            # An error, a hang-up or a descriptor closed under us: "writable", so that the write
            # fails and says why, rather than held lines tried again for ever.
            events & (select.POLLOUT | select.POLLERR | select.POLLHUP | select.POLLNVAL)
            for _, events in poller.poll(0)
        )

    return writable


def _chunk_end(data: bytes, start: int) -> int:
    """Where the write of ``data`` from ``start`` ends: at most :data:`WRITE_CHUNK` bytes on, after
    the last whole line within them (a longer line alone is cut). A pipe takes a write of that
    size whole or not at all, so what is held starts a line: twistd's own lines, written to the
    same standard output meanwhile, fall between two lines, never inside one."""
    end = start + WRITE_CHUNK
    if end >= len(data):
        return len(data)
    newline = data.rfind(b"\n", start, end)
    return newline + 1 if newline >= 0 else end


def _is_null_device(fd: int) -> bool:
    """Whether ``fd`` is the null device (what is written there is gone)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(os.devnull))
    except OSError:
        return False


class LineAccessLog(Service):
    """Writes Common Log Format lines to a text stream, in one batch per reactor turn.

    A stream with a file descriptor (standard output, a file) gets each batch encoded as the stream
    itself would encode it (its ``encoding`` and ``errors``) and written with one ``os.write``:
    PyPy's ``TextIOWrapper`` made ``write`` + ``flush`` cost 0.7-0.9 us a line against 0.2 us this
    way (CPython: 0.13 us either way; a micro-benchmark of 20-line batches). The bytes are the same,
    but for a character the stream's ``strict`` encoding would refuse: escaped (``\\xe9``) rather than
    losing the batch.
    A service, so that whatever is still buffered is written when the process stops.

    With ``path`` (the file it writes, opened by :func:`make_access_log`), :meth:`reopen` opens that
    path again: a file moved aside (log rotation) stops growing, and a new one takes the lines.
    """

    def __init__(
        self, out: IO[str], clock: IReactorTime, *, close: bool = False, path: str | None = None
    ) -> None:
        self._use(out)
        self._clock = clock
        self._close = close
        self._path = path
        self._time = PerSecond(clock, _log_time)
        self._lines: list[str] = []
        self._flush_call: IDelayedCall | None = None
        #: Lines lost to failed writes (a full disk; ``goto_access_log_lost_lines_total``), and
        #: whether the last write stopped mid-line.
        self.lost_lines = 0
        self._torn = False
        #: Bytes a reader that is not keeping up (a pipe's, a socket's) could not take yet,
        #: written first by the next flush; lines dropped meanwhile since they were last said.
        self._held = b""
        self._dropped_while_held = 0
        #: Whether the last byte written to such a reader ended inside a line (held bytes finish it),
        #: and whether the held bytes start with the newline that ends a line cut short before (no
        #: line of its own: never counted as a line lost).
        self._mid_line = False
        self._held_mending = False
        #: While a stop waits for the reader to take the held lines: fired once they are written.
        self._caught_up: Deferred[None] | None = None
        #: Whether lines are lost as they come: a stop closed the stream (see :meth:`_finish`;
        #: until :meth:`reopen` opens another); and when a stop that waits gives up.
        self._finished = False
        self._give_up_call: IDelayedCall | None = None
        #: Stops asked for again while one waits: they end with it.
        self._also_waiting: list[Deferred[None]] = []
        self._write_failures = ThrottledError(
            log,
            clock,
            "Could not write {lines} access log line(s), lost: {error} ({unlogged} more failures since "
            "the last line)",
            WRITE_FAILURE_LOG_INTERVAL,
        )

    def _use(self, out: IO[str]) -> None:
        """Write to ``out`` from now on."""
        self._out = out
        self._fd = _descriptor_of(out)
        #: Asks whether a descriptor whose reader may stop reading (a pipe, a socket: the journal's
        #: under systemd) can take a write now, or ``None``.
        self._writable: Callable[[], bool] | None = None
        if self._fd is not None and _is_pipe_or_socket(self._fd):
            self._writable = _poller(self._fd)
        self._encoding: str = getattr(out, "encoding", None) or "utf-8"
        # Never "strict": a character the stream cannot encode is escaped, not a lost batch.
        errors: str = getattr(out, "errors", None) or "strict"
        self._errors = "backslashreplace" if errors == "strict" else errors

    def reopen(self) -> None:
        """Open the log's path again (on SIGHUP), after writing what is buffered to the old file.

        Nothing to do for a stream this log did not open (standard output). If the path cannot be
        opened (a directory gone, no permission), the lines go on to the file already open, and the
        error is logged."""
        if self._path is None or not self.running:
            return
        try:
            mode = None if self._fd is None else os.fstat(self._fd).st_mode & 0o777
            new = _open_again(self._path, mode)
        except OSError as exc:
            log.error(
                "Could not open the access log {path} again ({error}); lines go on to the file open before",
                path=self._path,
                error=exc.strerror or exc,
            )
            return
        self.flush()
        old = self._out
        self._use(new)
        self._finished = False  # a log stopped and started again writes to the new file
        self._torn = False  # a new file: a line cut short in the old one is not carried over
        with contextlib.suppress(OSError):  # nothing of ours is buffered in it: batches go out with os.write
            old.close()
        log.info("Opened the access log {path} again", path=self._path)

    def record(
        self, client: str, method: str, path: bytes, protocol: bytes, status: int, size: int | str, route: str
    ) -> None:
        if self._finished:
            self.lost_lines += 1
            return
        protocol_text = _PROTOCOL_TEXT.get(protocol) or printable(protocol)
        self._lines.append(
            f'{client} - - [{self._time.now()}] "{method} {printable(path)} {protocol_text}" {status} {size}\n'
        )
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self.flush)

    def flush(self) -> None:
        """Write every buffered line now."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        lines, self._lines = self._lines, []
        if not lines and not self._held:
            return
        text = "".join(lines)
        mended = self._torn  # the last write stopped mid-line: these start on a line of their own
        if mended:
            text = "\n" + text
        encoded = b""
        sent = 0
        try:
            if self._fd is None:
                self._torn = True  # unknown how much a failing stream took
                self._out.write(text)
                self._out.flush()
                self._torn = False
                return
            encoded = text.encode(self._encoding, self._errors)
            if self._writable is not None:
                self._torn = False  # the mending newline, if any, is in ``encoded``
                self._write_when_read(encoded, len(lines), mended)
                return
            data = memoryview(encoded)
            while data:
                written = os.write(self._fd, data)
                if written == 0:  # pragma: no cover - a file or pipe never does this; never spin
                    raise OSError(errno.EIO, "write() wrote nothing")
                self._torn = True
                sent += written
                data = data[written:]
            self._torn = False
        except (OSError, UnicodeError) as exc:  # a full disk, a closed pipe: lines lost, not requests
            # Lines a partial write ended are in the file (the mending newline is none of them).
            whole = encoded.count(b"\n", 0, sent) - (1 if mended and sent else 0)
            lost = len(lines) - whole
            self.lost_lines += lost
            self._write_failures.error(lines=lost, error=getattr(exc, "strerror", None) or exc)

    def _write_when_read(self, encoded: bytes, count: int, mended: bool = False) -> None:
        """Write ``encoded`` (``count`` lines) to a descriptor whose reader may stop reading, never
        waiting for it: what it cannot take now is held (at most :data:`MAX_HELD_BYTES`, whole
        batches: a batch that does not fit is dropped and counted) and written first next time.

        A blocking ``write`` to a full pipe or socket waits until its reader reads: a stopped or
        stuck reader of standard output (the journal, ``| tee``, a container's log driver) froze
        the reactor, every request with it, while a client's requests filled the pipe (an
        operations audit, stop 41). Each write is of at most :data:`WRITE_CHUNK` bytes, made only
        once ``poll`` says the descriptor takes it: a pipe, a Unix or a TCP socket that polls
        writable takes that much without waiting (measured: each stopped at "not writable").

        The loss is said once the reader has caught up (what logging said while it was stuck would
        be written where twistd writes its own log, standard output too, and wait there).
        ``mended``: ``encoded`` starts with the newline that ends a line cut short before (no line
        of its own: never counted as one)."""
        if self._held:
            mending = self._held_mending
            if len(self._held) + len(encoded) > MAX_HELD_BYTES:
                self.lost_lines += count
                self._dropped_while_held += count
                encoded = b""
            data = self._held + encoded
        else:
            mending = mended
            data = encoded
        assert self._fd is not None and self._writable is not None
        done = 0
        try:
            while done < len(data) and self._writable():
                end = _chunk_end(data, done)
                written = os.write(self._fd, memoryview(data)[done:end])
                if written == 0:  # pragma: no cover - a pipe or socket never does this; never spin
                    raise OSError(errno.EIO, "write() wrote nothing")
                done += written
                self._mid_line = data[done - 1] != 10
        except BlockingIOError:
            pass  # a descriptor another process made non-blocking, full: as "not writable now"
        except OSError as exc:  # the reader has gone (EPIPE): what was not written is lost
            self._torn = self._mid_line  # the next flush starts on a line of its own
            self._mid_line = False
            self._held = b""
            # A mending newline that starts ``data``, unwritten, is no line lost.
            lost = data.count(b"\n", done) - (1 if mending and done == 0 else 0)
            self._held_mending = False
            self.lost_lines += lost
            self._write_failures.error(lines=lost, error=exc.strerror or exc)
            self._said_caught_up()
            return
        self._held = data[done:]
        self._held_mending = mending and done == 0 and bool(self._held)
        if self._held:
            if len(self._held) > MAX_HELD_BYTES:  # one batch larger than the bound: its tail goes
                cut = self._held.index(b"\n", MAX_HELD_BYTES) + 1
                lost = self._held.count(b"\n", cut)
                self.lost_lines += lost
                self._dropped_while_held += lost
                self._held = self._held[:cut]
            if self._flush_call is None:
                self._flush_call = self._clock.callLater(HELD_RETRY_SECONDS, self.flush)
            return
        self._said_caught_up()

    def _said_caught_up(self) -> None:
        """Nothing is held any more: say what was lost meanwhile; a stop waiting for it goes on."""
        if self._dropped_while_held:
            log.warn(
                "The access log's reader did not keep up: {lines} line(s) lost meanwhile",
                lines=self._dropped_while_held,
            )
            self._dropped_while_held = 0
        self._end_stops()

    def _end_stops(self) -> None:
        """A stop waiting for the reader ends (with the stops asked for meanwhile)."""
        waiting, self._caught_up = self._caught_up, None
        if waiting is not None:
            waiting.callback(None)
        also, self._also_waiting = self._also_waiting, []
        for stop in also:
            stop.callback(None)

    def startService(self) -> None:
        """Start; say so if every line would be lost: standard output that is ``/dev/null`` (a
        daemonized twistd's, which keeps no standard output) logs nothing, and nothing else would
        tell the operator (no write fails). Started again while a stop waits for the reader: that
        stop ends (the held lines are written as the reader reads, as before it)."""
        super().startService()
        if self._caught_up is not None:
            self._cancel_give_up()
            self._end_stops()  # the held lines go on being written as the reader reads
        if self._path is None and self._fd is not None and _is_null_device(self._fd):
            log.warn(
                "The access log goes to standard output, which is {null} here (a daemonized twistd, "
                "without -n, has none): no request is logged. Give --access-log a file (or events, "
                "for twistd's own log; none, to log no requests).",
                null=os.devnull,
            )

    def stopService(self) -> Deferred[None] | None:
        """Write what is buffered; a reader that is behind (a pipe's, a socket's) gets up to
        :data:`STOP_WAIT_SECONDS` to take the held lines, without waiting in a write (the stop's
        Deferred fires then). What it has not taken by then is lost, counted and said (see
        :meth:`_finish` for a line recorded after the stop has ended)."""
        super().stopService()
        if self._caught_up is not None:  # stopped again while a stop waits: the same wait
            again: Deferred[None] = Deferred()
            self._also_waiting.append(again)
            return again
        self.flush()
        if not self._held:
            self._finish()
            return None
        caught_up: Deferred[None] = Deferred()
        self._caught_up = caught_up
        self._give_up_call = self._clock.callLater(STOP_WAIT_SECONDS, self._give_up_held)

        def stopped(_: object) -> None:
            self._cancel_give_up()
            if not self.running:  # not started again meanwhile
                self._finish()

        return caught_up.addCallback(stopped)

    def _cancel_give_up(self) -> None:
        if self._give_up_call is not None and self._give_up_call.active():
            self._give_up_call.cancel()
        self._give_up_call = None

    def _give_up_held(self) -> None:
        """The stop has waited long enough for the reader: the held lines, and any recorded while
        it waited, are lost, and said."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        lost = self._held.count(b"\n") - (1 if self._held_mending else 0) + len(self._lines)
        self._lines = []
        self.lost_lines += lost
        self._dropped_while_held += lost
        self._held = b""
        self._held_mending = False
        self._torn = self._mid_line  # a line cut short stays cut: what comes next starts its own
        self._mid_line = False
        self._said_caught_up()

    def _finish(self) -> None:
        """The stop has ended. A stream this log opened is closed: a line recorded from now on (an
        answer on a connection still open as the process stops) is lost and counted, never
        buffered for a flush that would meet the closed stream. Standard output stays open and
        takes such lines as before."""
        if self._close:
            self._finished = True
        self._close_stream()

    def _close_stream(self) -> None:
        if self._close:
            # Its descriptor number is free for the next file opened: a later line must meet the
            # closed stream (which refuses it), never a raw write to whatever reuses the number.
            self._fd = None
            self._out.close()


class EventAccessLog:
    """Records each request as a ``twisted.logger`` event with the facts as fields (for JSON logs)."""

    def __init__(self, clock: IReactorTime) -> None:
        self._time = PerSecond(clock, _log_time)

    def record(
        self, client: str, method: str, path: bytes, protocol: bytes, status: int, size: int | str, route: str
    ) -> None:
        events_log.info(
            '{client} - - [{when}] "{method} {path} {protocol}" {status} {size}',
            client=client,
            when=self._time.now(),
            method=method,
            path=printable(path),
            protocol=printable(protocol),
            status=status,
            size=size,
            route=route,
        )


class NoAccessLog:
    """Records nothing (``--access-log none``)."""

    def record(
        self, client: str, method: str, path: bytes, protocol: bytes, status: int, size: int | str, route: str
    ) -> None:
        pass


def make_access_log(where: str, clock: IReactorTime) -> AccessLog:
    """The access log ``--access-log`` names; a file is opened here, at start-up."""
    if where == "none":
        return NoAccessLog()
    if where == "events":
        return EventAccessLog(clock)
    if where == "-":
        return LineAccessLog(sys.stdout, clock)
    out = open(where, "a", encoding="ascii", buffering=1 << 16)  # noqa: SIM115 - the log closes it on stop
    # Its path made absolute now: twistd changes directory (--rundir) after the service is made.
    return LineAccessLog(out, clock, close=True, path=os.path.abspath(where))


def _open_again(path: str, mode: int | None) -> IO[str]:
    """The access log at ``path`` once more, to append to. A file made here gets ``mode``, the old
    file's (a daemonized twistd's umask would make it 0600, and a log shipper reading the first
    file could not read the next); a file already there (made by logrotate's ``create``) is kept as
    it is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        created = True
    except FileExistsError:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        created = False
    try:
        if created and mode is not None:
            os.fchmod(fd, mode)
        return open(fd, "a", encoding="ascii", buffering=1 << 16, closefd=True)
    except BaseException:
        os.close(fd)
        raise
