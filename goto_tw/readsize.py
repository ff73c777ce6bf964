"""How much a connection to goto-tw reads from its socket at once: 16 KiB, not Twisted's 64 KiB.

Twisted's socket transports read with ``recv(bufferSize)``, 64 KiB by default. PyPy allocates that
whole buffer as a young object on every read, then trims it to the bytes that came (a request: a
few hundred). PyPy sizes its young generation (the nursery) from ``/proc/cpuinfo``'s "cache size";
where that line gives a small L2 cache (AMD EPYC: 512 KB) it falls back to 1 MiB, so each read
filled a sixteenth of it. A PyPy slave answering cached redirects collected its nursery about 3,000
times a second, and each collection made old whatever the reactor turn still held (its answers, log
lines, buffers), which the major collector then marked in steps of up to 13 ms: the tail of its
latency (``PYPYLOG=gc-minor,gc-collect-step``, 5 s of wrk ``-c50``; at 16 KiB, 0.078 -> 0.030
collections a request). ``bench/run.py --python .venv-pypy/bin/python --go``, before and after:
cached redirects on a slave 27.2 -> 24.0 us of CPU a request, p99 23.7 -> 13.9 ms (Go's: 7.1 and
6.5); the mix of hits and misses 39.2 -> 22.7 us; durable adds 64.9 -> 47.9 us; adds through a
slave 113.4 -> 88.5 us (Go's own CPU a request moved by up to a sixth between the two runs).
Reading 4 KiB at a time measured no better than 16 KiB (scratch runs). CPython allocates and trims
the same way at little cost: its figures stayed within the noise.

16 KiB still takes a whole fast-path request in one read (a head of at most 4 KiB and a form of at
most 8 KiB, or a slave's usual RPC batch of a few KiB); a larger body (an RPC batch of up to
32 KiB, a body lent to twisted.web) comes in several reads, each handled as a split read always
was.

Under TLS it is the socket's reads, of encrypted bytes, that are 16 KiB: Twisted's TLS layer takes
what it decrypts 32 KiB at a time, unchanged and not measured here. The slave's own connections to
its master (:mod:`goto_tw.masterhttp`) keep Twisted's 64 KiB: one read per batch answered (in
``bench/run.py`` d, about 600 batches a second against 10,800 requests), answers of up to 8 MiB.

``bufferSize`` is also where Twisted judges a transport's send buffer full: past it the channel,
the transport's producer, is paused (it stops reading until the buffer drains). So a client that
does not read its answers is now stopped 16 KiB of unsent bytes in, not 64 KiB.
"""

from __future__ import annotations

from twisted.internet.abstract import FileDescriptor

from goto_tw.transports import beneath

#: Bytes a client's connection reads at once (Twisted's ``bufferSize``, 64 KiB by default).
READ_BYTES = 16 * 1024


def _reads_a_socket(transport: object) -> bool:
    return isinstance(transport, FileDescriptor)


def read_at_most(transport: object, size: int = READ_BYTES) -> None:
    """Make the socket transport beneath ``transport`` (a protocol's: the socket's own, or a
    wrapper's, :func:`~goto_tw.transports.beneath`) read at most ``size`` bytes at a time; one with
    no socket beneath (a test's ``StringTransport``) is left as it is."""
    socket = beneath(transport, _reads_a_socket)
    if socket is not None:
        socket.bufferSize = size
