"""Twisted's epoll poll step, less the logging context it sets up for every ready descriptor.

``EPollReactor.doPoll`` hands each ready descriptor to ``_doReadOrWrite`` through
``twisted.python.log.callWithLogger``, which asks the selectable for its ``logPrefix()`` and runs the
handler inside ``twisted.python.context.call({"system": prefix}, ...)``: four Python frames and a
copied dict per event. That context is read by one thing only, the ``system`` of *legacy* log events
(``twisted.python.log.msg``/``err``) emitted while the event is handled; this service logs through
``twisted.logger``, whose events never read it. On a busy CPython process it is a fixed cost per
event, and there is about one event per request (``bench/run.py`` on CPython 3.11, without and with
this step, the same hour: cached redirects on a slave 21.4 -> 17.8 us of CPU a request, 46.5k -> 56.0k
requests a second; durable adds on a master 55.1 -> 50.5 us an add; adds through a slave 86.7 -> 80.3
us, slave and master together). PyPy's JIT makes it nearly free there (no difference measured), but
the same poll step serves both.

:func:`use_lean_poll` replaces the poll step of one ``EPollReactor`` instance (the one ``twistd``
runs) with :func:`_lean_poll`: the same system call, the same events in the same order, handed to
Twisted's own ``_doReadOrWrite``; and, as ``callWithLogger`` does, an exception that escapes a
handler (``_doReadOrWrite`` catches the handler's own; one raised by a protocol's
``connectionLost`` escapes it) is logged with the selectable's ``logPrefix()`` as its system, and the
remaining events are still handled. What differs: a legacy log event emitted *inside* a handler
carries the system ``-`` instead of the connection's prefix. The one an operator may meet is Twisted's
own report of an exception a protocol raised while reading or writing (``_doReadOrWrite`` logs it
itself, then closes the connection): its traceback still names the code that raised, but the line no
longer names the connection (``[FastRedirectChannel,12,127.0.0.1]`` becomes ``[-]``). Twisted logs a
refused accept (``EMFILE``) through ``twisted.logger``, which never read that context.

Twisted's ``doPoll`` is the same in Twisted 25.5 and 26.10 (both tested): a test holds
:func:`_lean_poll` to its source, so a Twisted that changes it fails the test instead of being
silently overridden. Any other reactor, or a subclass, is left alone.
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.python import log

#: The name of the instance attribute that shadows the class's poll step (``mainLoop`` calls
#: ``self.doIteration`` on each turn).
_POLL_STEP = "doIteration"


def use_lean_poll(reactor: Any) -> bool:
    """Give ``reactor`` the lean poll step if it is exactly Twisted's ``EPollReactor``; say whether
    it now has it (calling again changes nothing)."""
    try:
        from twisted.internet.epollreactor import EPollReactor
    except ImportError:  # no epoll on this system
        return False
    if type(reactor) is not EPollReactor:
        return False
    if _POLL_STEP not in vars(reactor):
        setattr(reactor, _POLL_STEP, _lean_poll.__get__(reactor))
    return True


def drop_lean_poll(reactor: Any) -> None:
    """Give ``reactor`` back Twisted's own poll step (for a test that gave it the lean one)."""
    vars(reactor).pop(_POLL_STEP, None)


def _lean_poll(self: Any, timeout: float | None) -> None:
    """``EPollReactor.doPoll`` with each event handled directly instead of through ``callWithLogger``."""
    if timeout is None:
        timeout = -1  # wait indefinitely
    selectables = self._selectables
    try:
        events = self._poller.poll(timeout, len(selectables))
    except OSError as error:
        if error.errno == errno.EINTR:
            return
        raise
    handle = self._doReadOrWrite
    for fd, event in events:
        try:
            selectable = selectables[fd]
        except KeyError:
            continue  # removed by an earlier event of this poll
        try:
            handle(selectable, fd, event)
        except KeyboardInterrupt:
            raise
        except BaseException:
            _log_escaped(selectable)


def _log_escaped(selectable: Any) -> None:
    """Log the exception being handled as ``callWithLogger`` logs it: with the selectable's
    ``logPrefix()`` as the system (a legacy event, as Twisted's own)."""
    try:
        system = selectable.logPrefix()
    except KeyboardInterrupt:
        raise
    except BaseException:
        system = "(buggy logPrefix method)"
    log.err(system=system)
