"""A seeded random walk over the slave's HTTP client (goto_tw.masterhttp): posts, cancels (also from
callbacks), connections made at once, later or refused, answers of every kind cut anywhere, 1xx,
204/304, refused bodies read or stopped, connections lost, the clock moving. After each step the link
counts exactly the connections made or being made and not yet lost; in the end every post has fired
exactly once, nothing waits, and every 200 carries its own request's answer (never another's)."""

# ruff: noqa
from __future__ import annotations

import random
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

import goto_tw.masterhttp as mh
from goto_tw.masterhttp import MasterConnections

URL = "http://127.0.0.1:8081/RPC2"
H = Headers({b"content-type": [b"text/xml"]})


class T(StringTransport):
    def __init__(self, clock, proto):
        super().__init__()
        self.clock = clock
        self.proto = proto
        self.lost = False
        self.sched = False

    def _sched(self, reason):
        if not self.sched:
            self.sched = True
            self.clock.callLater(0, self._die, reason)

    def _die(self, reason):
        if not self.lost:
            self.lost = True
            self.proto.connectionLost(Failure(reason))

    def abortConnection(self):
        super().abortConnection()
        self._sched(ConnectionAborted())

    def loseConnection(self):
        super().loseConnection()
        self._sched(ConnectionDone())


class EP:
    def __init__(self, rnd, clock):
        self.rnd = rnd
        self.clock = clock
        self.pending = []
        self.conns = []

    def __call__(self, uri):
        return self

    def connect(self, factory):
        mode = self.rnd.choice(["sync", "hold", "hold", "refuse"])
        if mode == "refuse" and self.rnd.random() < 0.5:
            return fail(ConnectionRefusedError())
        d: Deferred[Any] = Deferred()
        if mode == "sync":
            return succeed(self._made(factory))
        self.pending.append((d, factory))
        return d

    def _made(self, factory):
        p = factory.buildProtocol(None)
        t = T(self.clock, p)
        p.makeConnection(t)
        self.conns.append(p)
        p._served = 0
        return p

    def finish(self, i, ok):
        d, f = self.pending.pop(i)
        if d.called:
            return
        if ok:
            d.callback(self._made(f))
        else:
            d.errback(ConnectionRefusedError())


def answer_for(rnd, tag):
    body = b"<r>" + tag + b"</r>"
    k = rnd.choice(
        ["len", "len", "chunk", "close", "until", "404", "404c", "100", "garbage", "extra", "204", "304c"]
    )
    if k == "extra":
        return (
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%sHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad"
            % (len(body), body),
            None,
        )
    if k == "204":
        return b"HTTP/1.1 204 No Content\r\n\r\n", True
    if k == "304c":
        return b"HTTP/1.1 304 NM\r\nTransfer-Encoding: chunked\r\n\r\n", True
    if k == "len":
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body), True
    if k == "chunk":
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\nX: y\r\n\r\n" % (
            len(body),
            body,
        ), True
    if k == "close":
        return b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: %d\r\n\r\n%s" % (
            len(body),
            body,
        ), False
    if k == "until":
        return b"HTTP/1.1 200 OK\r\n\r\n" + body, False
    if k == "404":
        return b"HTTP/1.1 404 NF\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body), True
    if k == "404c":
        return b"HTTP/1.1 404 NF\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (
            len(body),
            body,
        ), True
    if k == "100":
        return b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (
            len(body),
            body,
        ), True
    return b"garbage\r\n\r\n", False


def run(seed: int, steps: int = 80) -> None:
    rnd = random.Random(seed)
    clock = Clock()
    ep = EP(rnd, clock)
    mc = MasterConnections(clock, 5.0, max_answer_bytes=10000, endpoints=ep)
    posts: list[tuple[bytes, Deferred[Any], list[Any]]] = []  # (tag, deferred, results)
    outq: dict[Any, list[bytes]] = {}  # proto -> list of remaining answer bytes being fed
    n = 0
    readers = []
    for step in range(steps):
        op = rnd.random()
        if op < 0.25:
            tag = b"p%d" % n
            n += 1
            res: list[Any] = []
            d = mc.post(URL, data=tag, headers=H)

            def rec(r, res=res):
                res.append(r)
                if not isinstance(r, Failure) and r.code != 200 and rnd.random() < 0.7:

                    class R:
                        def makeConnection(s, t):
                            s.t = t

                        def dataReceived(s, data):
                            if rnd.random() < 0.3:
                                s.t.stopProducing()

                        def connectionLost(s, reason):
                            s.ended = reason

                    rr = R()
                    readers.append(rr)
                    r.deliverBody(rr)
                    if rnd.random() < 0.2:
                        rr.t.stopProducing()
                if rnd.random() < 0.2:  # synchronous re-post
                    tag2 = b"q%d" % len(posts)
                    r2: list[Any] = []
                    d2: Deferred[Any] = mc.post(URL, data=tag2, headers=H)
                    d2.addBoth(r2.append)
                    posts.append((tag2, d2, r2))
                return None

            d.addBoth(rec)
            posts.append((tag, d, res))
        elif op < 0.35 and posts:
            posts[rnd.randrange(len(posts))][1].cancel()
        elif op < 0.45 and ep.pending:
            ep.finish(rnd.randrange(len(ep.pending)), rnd.random() < 0.8)
        elif op < 0.80 and ep.conns:
            p = rnd.choice(ep.conns)
            if p.transport.lost:
                continue
            # server: answer next unanswered request on that connection
            if p not in outq or not outq[p]:
                sent = p.transport.value().split(b"POST ")[1:]
                if len(sent) > p._served:
                    req = sent[p._served]
                    p._served += 1
                    tag = req.split(b"\r\n\r\n", 1)[1]
                    data, whole = answer_for(rnd, tag)
                    outq[p] = [data]
                    if whole is None:
                        p.dataReceived(data)
                        outq[p] = []
                        continue
                else:
                    if rnd.random() < 0.1:
                        outq[p] = [b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz"]  # unsolicited
                    else:
                        continue
            data = outq[p].pop()
            cut = rnd.randrange(1, len(data) + 1)
            if cut < len(data):
                outq[p].append(data[cut:])
            if not p.transport.disconnecting:
                p.dataReceived(data[:cut])
            if not outq[p] and rnd.random() < 0.3 and not p.transport.disconnecting:
                pass
        elif op < 0.88 and ep.conns:
            p = rnd.choice(ep.conns)
            if not p.transport.lost:
                p.transport._sched(rnd.choice([ConnectionDone(), ConnectionLost()]))
        elif op < 0.95:
            clock.advance(rnd.choice([0, 0, 1, 11, 31]))
        else:
            clock.advance(0)
        # invariant: _open == live conns + pending
        for link in mc._links.values():
            live = sum(1 for p in ep.conns if not p.transport.lost)
            pend = sum(1 for d, _ in ep.pending if not d.called)
            assert link._open == live + pend, (seed, step, link._open, live, pend)
    # wind down: finish pending, kill all
    for _ in range(2000):
        while ep.pending:
            ep.finish(0, False)
        for p in ep.conns:
            if not p.transport.lost:
                p.transport._sched(ConnectionLost())
        clock.advance(0)
        clock.advance(11)
    for link in mc._links.values():
        assert link._open == 0, (seed, link._open)
        assert not link._waiting, seed
    for tag, d, res in posts:
        if not res:
            # still waiting? might be a waiting post in a link never served
            raise AssertionError((seed, tag, "never fired"))
        assert len(res) == 1
        r = res[0]
        if not isinstance(r, Failure) and r.code == 200:
            exp = b"<r>" + tag + b"</r>"
            assert exp.startswith(r.body) or r.body.startswith(exp), (seed, tag, r.body)
        elif not isinstance(r, Failure):
            pass


@pytest.mark.parametrize("connections", [1, 2, 16])
def test_every_post_fires_once_with_its_own_answer_and_every_connection_is_counted(
    connections: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mh, "MAX_CONNECTIONS", connections)
    for seed in range(150):
        run(seed)
