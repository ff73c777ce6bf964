"""Building a master on PostgreSQL: check the database and migrate its schema, then wire the store.

Start-up is the one moment a master may block: it connects and migrates before anything listens,
as a file master loads its data file, so a process accepts connections only once it can answer
them, and a wrong URI or an unreachable database stops start-up with a clear message.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Gauge, Histogram
from twisted.application.internet import TimerService
from twisted.application.service import MultiService

from goto_tw.metrics import LATENCY_BUCKETS, Metrics
from goto_tw.pgdb import Database, connect
from goto_tw.pgschema import migrate
from goto_tw.pgstore import PGStore

#: Threads (and so connections) each master uses.
POOL_SIZE = 4
#: Seconds between two counts of the links (health's and metrics' ``keys``).
COUNT_INTERVAL = 10.0


class DatabaseUnusable(Exception):
    """The database could not be reached or migrated at start-up (the text says why)."""


def prepare_database(uri: str) -> tuple[int, int]:
    """Connect to ``uri`` and migrate its schema (blocking); return the versions before and after."""
    try:
        connection = connect(uri)
    except Exception as exc:
        raise DatabaseUnusable(" ".join(str(exc).split()) or type(exc).__name__) from None
    import psycopg

    try:
        return migrate(connection)
    except psycopg.Error as exc:  # no right to create the tables, another program's goto_links...
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise DatabaseUnusable(f"its schema could not be prepared: {text}") from None
    finally:
        connection.close()


def make_pg_store(
    uri: str,
    reactor: Any,
    parent: MultiService,
    metrics: Metrics,
    *,
    cache_size: int,
    pool_size: int = POOL_SIZE,
) -> PGStore:
    """Migrate the database, then start its pool under ``parent`` and return the store over it."""
    prepare_database(uri)
    latency = Histogram(
        "goto_database_call_seconds",
        "Time for one call to PostgreSQL (a batch of adds or a look-up), by outcome.",
        ["outcome"],
        buckets=LATENCY_BUCKETS,
        registry=metrics.registry,
    )
    database = Database(uri, reactor, size=pool_size, observe=lambda s, o: latency.labels(o).observe(s))
    Gauge(
        "goto_database_pool_in_use", "Database calls running now (threads busy).", registry=metrics.registry
    ).set_function(lambda: database.in_use)
    Gauge(
        "goto_database_pool_size", "Threads (connections) of the database pool.", registry=metrics.registry
    ).set(pool_size)
    database.setServiceParent(parent)
    store = PGStore(database, reactor, cache_size=cache_size)
    Gauge(
        "goto_database_reachable",
        "1 while the database answers, 0 while it is down.",
        registry=metrics.registry,
    ).set_function(lambda: 1 if store.database_reachable else 0)
    metrics.watch_cache(lambda: (store.hits, store.misses, store.evictions))
    timer = TimerService(COUNT_INTERVAL, store.refresh_count)
    timer.clock = reactor
    timer.setServiceParent(parent)
    return store
