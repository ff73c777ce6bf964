"""Operations endpoints under ``/_goto/``: ``health`` for load balancers, ``metrics`` for Prometheus."""

from __future__ import annotations

from typing import Any, cast

from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from goto_tw.api import write_json
from goto_tw.errors import RETRY_AFTER_SECONDS
from goto_tw.interfaces import IDatabaseHealth, IMasterHealth, IURLStore
from goto_tw.metrics import Metrics
from goto_tw.web import RETRY_AFTER, PlainResource, respond_when_ready

#: Seconds a slave's health check waits for a master it already knows to be down (its misses and
#: adds are fast 503s meanwhile) before answering 503 itself; the check's call goes on (it is the
#: probe that finds the master back). A master believed up gets its ``--rpc-timeout``.
DOWN_MASTER_WAIT = 1.0


class HealthResource(PlainResource):
    """``GET /_goto/health``: 200 with ``{"status", "role", "keys"}``; a slave also says whether its
    master answers, checked by a call made now (not a guess from past traffic), and answers 503 when
    it does not, so a load balancer can take it out of rotation. While the master is known to be
    down, a check it does not answer within :data:`DOWN_MASTER_WAIT` is a 503 then, not after
    ``--rpc-timeout``: a load balancer's probe that gives up sooner would see no answer at all.
    """

    isLeaf = True

    def __init__(self, store: IURLStore, master: IMasterHealth | None, clock: IReactorTime) -> None:
        super().__init__()
        self._store = store
        self._master = master
        self._clock = clock

    def render_GET(self, request: Request) -> int:
        store, master = self._store, self._master
        if master is None:
            database = IDatabaseHealth(store, None)
            if database is None:
                # A data file that cannot be written (a full disk) is said, with 200: redirects still
                # work, and only an add can find the disk writable again (a 503 would keep adds away).
                failing = getattr(store, "data_file_failing", None)
                document: dict[str, Any] = {"status": "ok" if failing is None else "data file failing"}
                document["role"] = "master"
                document["keys"] = store.count()
                if failing is not None:
                    document["data_file_error"] = failing
                write_json(request, 200, document)
                return NOT_DONE_YET

            def answer_master(reachable: bool) -> None:
                document = {
                    "status": "ok" if reachable else "database unreachable",
                    "role": "master",
                    "keys": store.count(),
                    "database": "postgresql",
                    "database_reachable": reachable,
                }
                _write_health(request, reachable, document)

            return respond_when_ready(request, database.check_database(), answer_master)

        def answer(healthy: bool) -> None:
            # A master that answered "I cannot serve" (its database is down) is reachable: the
            # slave is unhealthy all the same (it cannot add or look up), and says why.
            cannot_serve = None if healthy else master.cannot_serve
            if healthy:
                status = "ok"
            elif cannot_serve is not None:
                status = "master cannot serve"
            else:
                status = "master unreachable"
            document: dict[str, Any] = {
                "status": status,
                "role": "slave",
                "keys": store.count(),
                "master_reachable": healthy or cannot_serve is not None,
            }
            if cannot_serve is not None:
                document["master_error"] = cannot_serve
            _write_health(request, healthy, document)

        checked = master.check_master()
        if not master.master_reachable:
            checked.addTimeout(DOWN_MASTER_WAIT, self._clock, onTimeoutCancel=_still_down)
        return respond_when_ready(request, checked, answer)

    render_HEAD = render_GET


def _still_down(result: object, timeout: float) -> bool:
    """A check of a down master that did not answer in time: still down."""
    return False


def _write_health(request: Request, healthy: bool, document: dict[str, Any]) -> None:
    """200, or 503 with ``Retry-After`` as every other 503 has (what it depends on is unreachable)."""
    if not healthy:
        request.setHeader(RETRY_AFTER, b"%d" % RETRY_AFTER_SECONDS)
    write_json(request, 200 if healthy else 503, document)


class MetricsResource(PlainResource):
    """``GET /_goto/metrics``: every metric in the Prometheus text format."""

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return self._metrics.render()


def ops_resource(store: IURLStore, metrics: Metrics, clock: IReactorTime | None = None) -> Resource:
    """The ``/_goto`` subtree; a store that also sees a master (a slave's) reports on it. ``clock``
    times a health check's wait (the global reactor if not given)."""
    if clock is None:
        from twisted.internet import reactor

        clock = cast(IReactorTime, reactor)
    ops = PlainResource()
    ops.putChild(b"health", HealthResource(store, IMasterHealth(store, None), clock))
    ops.putChild(b"metrics", MetricsResource(metrics))
    return ops
