"""Write a small answer to a TCP connection at once, without the writer registration round trip.

``transport.write`` never sends: it appends to the transport's buffer and registers the socket
for writing (an ``epoll_ctl``), and the reactor's next turn sends it and unregisters the socket (a
second ``epoll_ctl``). For one small answer per request that is two system calls beside the send
itself: py-spy put ``EPollReactor._add`` and ``_remove`` at 36% of a CPython slave's samples when
it answered cached redirects (bench scenario a), more than the send. :func:`send_now` sends
straight away when nothing is waiting in the transport's buffer, and hands whatever the socket does
not take (a partial send, a full buffer, an error) to ``transport.write``, which then carries on
exactly as it always does: order, backpressure (``pauseProducing`` of the producer) and the
closing of a broken connection stay Twisted's.

Twisted has no public "is the send buffer empty" question, so this reads two attributes of
``twisted.internet.abstract.FileDescriptor`` (``dataBuffer``, ``_tempDataLen``) and one of
``tcp.Connection`` (``_aborting``: after ``abortConnection`` and until the next turn closes it, the
transport is still ``connected`` but ``write`` never sends again), the same in Twisted 25.5 and
26.10, both tested, and calls ``writeSomeData``, the method its own ``doWrite`` sends with. Any
transport that is not a plain (non-TLS) ``tcp.Connection`` is simply written to.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.tcp import Connection

#: The one ``writeSomeData`` this module knows the buffer of (TCP, client and server side).
_TCP_SEND = Connection.writeSomeData


def send_now(transport: Any, data: bytes) -> None:
    """Write ``data`` to ``transport``: sent at once if the transport holds nothing unsent."""
    if (
        getattr(type(transport), "writeSomeData", None) is _TCP_SEND
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._aborting
        and not transport.dataBuffer
        and not transport._tempDataLen
    ):
        sent = transport.writeSomeData(data)
        if sent.__class__ is int and sent > 0:
            if sent == len(data):
                return
            data = data[sent:]
        # Nothing sent (the socket's buffer is full) or an error (an exception instance): the
        # transport's own write buffers the rest, and its doWrite meets the same error and closes.
    transport.write(data)
