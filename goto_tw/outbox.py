"""Answers written during one reactor turn, sent together once the turn's work is done.

A busy server answers many connections in one turn of the reactor: every ready socket's requests,
or every add that one ``fsync`` made durable. Sent one by one as each is made, every answer over
loopback wakes its reader (a client, a local proxy) on another CPU while the server goes on making
the next answer, so nearly every send pays a wake-up of a reader that has gone back to sleep: on
this project's VM the kernel's wake-up (``_raw_spin_unlock_irqrestore`` under
``sock_def_readable``, ``perf``) took 7% of a master's durable adds. Held until the turn's events
and timed calls are handled and then sent back to back, the reader is woken about once a turn
rather than once an answer, and each connection's answers of the turn leave in one send.
``bench/run.py --go``, CPython, the releases before and with this module back to back (servers'
CPU per request answered, us): a redirect on a master 56.0 -> 43.0, a cached redirect on a slave
58.1 -> 44.3, the mix of hits and misses 63.3 -> 54.0, an uncached redirect through a slave 135.2
-> 118.0; durable adds and adds through a slave within the noise (118.4 -> 116.4, 181.2 -> 193.9).

What is held and for how long: a writer (:class:`IHeldWriter`, the fast path's channel) keeps its
own unsent bytes and asks :meth:`Outbox.hold` to be called back once per turn; the outbox calls every
writer back from one ``callLater(0)``, which the reactor runs once this turn's events are handled
(a call made from a thread's result, run at the start of the pass of timed calls, runs in the same
pass; one made from a timed call, such as the data file's flush of adds without ``--fsync``, runs in
the next pass, after one more poll that does not wait). A writer bounds what it holds itself (it
sends at once past its own limit) and sends what it holds before anything else may write to or
close its connection. With no outbox (a site built without one, as tests build them) every answer
is sent at once, as before.

From the moment the reactor starts shutting down (its ``before shutdown`` event, when ``twistd``
starts stopping the services) nothing is held: what is held is sent then, and each later answer at
once. The services' stop can end inside the reactor's pass of thread results and timed calls,
and the reactor then drops every connection at once (``disconnectAll``, ``during shutdown``), before
an outbox call made in that pass could run: answers held then would never leave.
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall, IReactorCore, IReactorTime
from twisted.logger import Logger
from zope.interface import Interface

log = Logger()


class IHeldWriter(Interface):
    """Something that holds bytes to send until :meth:`send_held` (the fast path's channel)."""

    def send_held() -> None:
        """Send what is held now (nothing if nothing is, or if the connection has gone)."""


class Outbox:
    """Calls back, once the reactor turn's work is done, every writer that held bytes in it."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        #: Writers to call back, in the order they first held bytes this turn (a writer that sent
        #: early, past its own limit, and held again may be here twice: the second call finds
        #: nothing). At most one entry per write made this turn.
        self._holding: list[IHeldWriter] = []
        self._call: IDelayedCall | None = None
        #: Set once the reactor shuts down: every writer is called back at once.
        self._stopping = False
        if IReactorCore.providedBy(clock):
            IReactorCore(clock).addSystemEventTrigger("before", "shutdown", self.stop)

    def hold(self, writer: IHeldWriter) -> None:
        """Call ``writer.send_held()`` once this turn's work is done (at once if shutting down)."""
        if self._stopping:
            writer.send_held()
            return
        self._holding.append(writer)
        if self._call is None:
            self._call = self._clock.callLater(0, self.send_all)

    def send_all(self) -> None:
        """Call back every writer holding bytes now, each once, in order."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        holding, self._holding = self._holding, []
        for writer in holding:
            try:
                writer.send_held()
            except Exception:  # one broken connection must not keep the others' answers
                log.failure("Sending the answers held for a connection failed")

    def stop(self) -> None:
        """The reactor is shutting down: send what is held now, and hold nothing from now on."""
        self._stopping = True
        self.send_all()
