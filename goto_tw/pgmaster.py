"""Building a master on PostgreSQL: check the database and migrate its schema, then wire the store.

Start-up is the one moment a master may block: it connects and migrates before anything listens,
as a file master loads its data file, so a process accepts connections only once it can answer
them, and a wrong URI or an unreachable database stops start-up with a clear message.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Gauge, Histogram
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.logger import Logger, LogLevel

from goto_tw.errors import one_line
from goto_tw.metrics import LATENCY_BUCKETS, Metrics
from goto_tw.pgdb import Database, connect
from goto_tw.pgschema import migrate
from goto_tw.pgstore import PGStore

#: Threads (and so connections) each master uses.
POOL_SIZE = 4
#: Seconds between two counts of the links (health's and metrics' ``keys``).
COUNT_INTERVAL = 10.0


#: What psycopg logs when a connection breaks inside a pipeline (the failure itself is ours to
#: report, once): kept at debug level, not an error line per database restart.
_EXPECTED_NOISE = "error ignored terminating"


class _PsycopgToTwisted(logging.Handler):
    """psycopg's ``logging`` records as ``twisted.logger`` events (namespace ``psycopg``): without a
    handler they went to standard error through Python's last resort, lines the log could not tell
    apart ("error ignored terminating <psycopg.Pipeline [BAD]...>" twice a master per restart)."""

    _log = Logger(namespace="psycopg")

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith(_EXPECTED_NOISE):
            level = LogLevel.debug
        elif record.levelno >= logging.ERROR:
            level = LogLevel.error
        elif record.levelno >= logging.WARNING:
            level = LogLevel.warn
        else:
            level = LogLevel.info
        self._log.emit(level, "{text}", text=text)


def route_psycopg_logs() -> None:
    """Send psycopg's log records to ``twisted.logger`` (once, however often it is called)."""
    psycopg_log = logging.getLogger("psycopg")
    if not any(isinstance(handler, _PsycopgToTwisted) for handler in psycopg_log.handlers):
        psycopg_log.addHandler(_PsycopgToTwisted())
        psycopg_log.propagate = False


class DatabaseUnusable(Exception):
    """The database could not be reached or migrated at start-up (the text says why)."""


def prepare_database(uri: str) -> tuple[int, int]:
    """Connect to ``uri`` and migrate its schema (blocking); return the versions before and after."""
    try:
        connection = connect(uri)
    except Exception as exc:
        raise DatabaseUnusable(one_line(exc)) from None
    import psycopg

    try:
        return migrate(connection)
    except psycopg.Error as exc:  # no right to create the tables, another program's goto_links...
        text = one_line(exc)
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
    route_psycopg_logs()
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
