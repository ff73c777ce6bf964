"""``twistd goto``: the command-line options and the wiring of the services (no logic of its own)."""

from __future__ import annotations

import re
import sys
from typing import Any

from twisted.application import strports
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThreadPool
from twisted.python import usage
from twisted.web.resource import Resource

from goto_tw.accesslog import make_access_log
from goto_tw.api import LinksResource
from goto_tw.interfaces import IURLStore
from goto_tw.keybound import CorruptKeyBound
from goto_tw.metrics import Metrics
from goto_tw.ops import ops_resource
from goto_tw.persistence import AppendLog, CorruptDataFile, open_data_file
from goto_tw.proxystore import ProxyStore
from goto_tw.rpc import RPCResource
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from goto_tw.web import GotoRoot, NotFoundResource, PlainResource


def parse_endpoint(value: str) -> str:
    """Accept a port number (``8081``) or any Twisted server endpoint string (``tcp:8081:...``)."""
    if value.isdigit():
        value = f"tcp:{value}"
    try:
        serverFromString(None, value)  # parsing only; nothing listens
    except (ValueError, KeyError, TypeError) as exc:
        raise usage.UsageError(f"--http: not a port or endpoint description: {value!r} ({exc})") from None
    return value


def parse_master(value: str) -> str:
    """Accept ``HOST:PORT`` or a full ``http(s)://HOST:PORT/RPC2`` URL for ``--master``."""
    from goto_tw.remote import master_rpc_url  # a master never needs the RPC client: keep start-up lean

    url = master_rpc_url(value)
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", url):
        raise usage.UsageError(f"--master: expected HOST:PORT or http://HOST:PORT/RPC2, not {value!r}")
    return url


def positive(kind: type[int] | type[float]) -> Any:
    """An option coercer that accepts only positive numbers of ``kind``."""

    def coerce(value: str) -> int | float:
        number = kind(value)
        if number <= 0:
            raise ValueError(f"must be positive, not {value}")
        return number

    coerce.coerceDoc = "Must be positive."  # type: ignore[attr-defined]
    return coerce


def default_host(endpoint: str) -> str:
    """Guess the ``HOST[:PORT]`` of short URLs from the listening endpoint: ``localhost:PORT``."""
    match = re.match(r"^(?:tcp6?|ssl):(?:port=)?(\d+)", endpoint) or re.search(r":port=(\d+)", endpoint)
    return f"localhost:{match.group(1)}" if match else "localhost"


def read_secret(path: str) -> bytes:
    """Read the shared RPC secret (surrounding white space dropped); it must not be empty."""
    try:
        with open(path, "rb") as secret_file:
            secret = secret_file.read().strip()
    except OSError as exc:
        raise usage.UsageError(f"--rpc-secret-file: cannot read {path}: {exc.strerror}") from None
    if not secret or not secret.isascii() or any(byte <= 0x20 for byte in secret):
        raise usage.UsageError(f"--rpc-secret-file: {path} must hold one printable ASCII word")
    return secret


class Options(usage.Options):
    """Options of ``twistd goto``; ``twistd -n goto --help`` lists them."""

    synopsis = "[options]"
    longdesc = (
        "goto: a URL shortener. /add stores a URL and answers its short URL; /KEY redirects. "
        "A master keeps the data file (--file) and, with --rpc, serves its store at /RPC2; "
        "a slave (--master HOST:PORT) caches redirects and forwards adds to the master."
    )

    optParameters = [
        [
            "http",
            None,
            "tcp:8080",
            "Port number or Twisted endpoint string to serve HTTP on.",
            parse_endpoint,
        ],
        [
            "file",
            None,
            "store.json",
            "Master: data file (one JSON record per line), loaded at start, appended to.",
        ],
        ["host", None, None, "HOST[:PORT] written into short URLs [default: localhost:<http port>]."],
        [
            "master",
            None,
            None,
            "Run as a slave of this master: HOST:PORT or http://HOST:PORT/RPC2.",
            parse_master,
        ],
        ["cache-size", None, 100_000, "Slave: how many pairs the cache holds (LRU).", positive(int)],
        ["rpc-timeout", None, 5.0, "Slave: seconds to wait for the master's answer.", positive(float)],
        [
            "rpc-secret-file",
            None,
            None,
            "File holding the shared RPC secret: required by a master, sent by a slave.",
        ],
        [
            "ops",
            None,
            None,
            "Serve /_goto/health and /_goto/metrics on this port or endpoint only (e.g. "
            "tcp:9100:interface=127.0.0.1), not on --http [default: on --http].",
            parse_endpoint,
        ],
        [
            "access-log",
            None,
            "-",
            "Access log (Common Log Format): '-' standard output, a file path, 'events' (twisted.logger "
            "events with fields, for JSON logs), or 'none'.",
        ],
    ]
    optFlags = [
        ["rpc", None, "Master: serve the store over XML-RPC at /RPC2 (Store.Get, Store.Put) for slaves."],
        [
            "fsync",
            None,
            "Master: fsync the data file before acknowledging adds (the default; kept for compatibility).",
        ],
        [
            "no-fsync",
            None,
            "Master: acknowledge adds once written to the OS, without waiting for fsync (faster; a power "
            "loss may lose the latest adds, but their keys are never handed to another URL).",
        ],
    ]

    def postOptions(self) -> None:
        if self["host"] is None:
            self["host"] = default_host(self["http"])
        if self["master"] and (self["rpc"] or self["fsync"]):
            raise usage.UsageError("--rpc and --fsync are for a master; a slave (--master) has no data file")
        self["rpc-secret"] = read_secret(self["rpc-secret-file"]) if self["rpc-secret-file"] else None


def makeService(options: Options | dict[str, Any], reactor: Any = None) -> IService:
    """Build the service tree: the store's own services first (so they stop last), then the listener.

    A master loads its data file here, before anything listens: a process accepts connections only
    once it can answer them. A corrupt data file stops start-up with the file and line named.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    top = MultiService()
    metrics = Metrics("slave" if options["master"] else "master")
    if options["master"]:
        store: IURLStore = make_slave_store(options, reactor, top, metrics)
    else:
        store = make_master_store(options, reactor, top, metrics)
    access_log = make_access_log(options["access-log"], reactor)
    if isinstance(access_log, Service):
        access_log.setServiceParent(top)  # flushed on stop, after the listener has stopped
    rpc = RPCResource(store, options.get("rpc-secret")) if options["rpc"] else None
    root = make_root(store, options["host"], metrics, rpc)
    site = GotoSite(
        root,
        metrics,
        reactor=reactor,
        store=store,
        host=options["host"],
        access_log=access_log,
    )
    # strports.service fails start-up when the port cannot be opened (in use, no permission):
    # a plain StreamServerEndpointService would only log it and keep running, serving nothing.
    strports.service(options["http"], site, reactor=reactor).setServiceParent(top)
    if options.get("ops"):
        # --ops: /_goto/ moves to an endpoint of its own (a Site with just it); the public port says 404.
        ops_root = PlainResource()
        ops_root.putChild(b"_goto", root.children[b"_goto"])
        root.putChild(b"_goto", NotFoundResource())
        ops_site = GotoSite(ops_root, metrics, reactor=reactor, access_log=access_log)
        strports.service(options["ops"], ops_site, reactor=reactor).setServiceParent(top)
    return top


def make_root(store: IURLStore, host: str, metrics: Metrics, rpc: Resource | None = None) -> Resource:
    """The resource tree: the front end, the JSON API, ``/_goto/`` and, on a master, ``/RPC2``."""
    metrics.watch_store(store.count)
    root = GotoRoot(store, host)
    api = PlainResource()
    root.putChild(b"api", api)
    version1 = PlainResource()
    api.putChild(b"v1", version1)
    version1.putChild(b"links", LinksResource(store, host))
    root.putChild(b"_goto", ops_resource(store, metrics))
    if rpc is not None:
        root.putChild(b"RPC2", rpc)
    return root


def make_master_store(
    options: Options | dict[str, Any], reactor: Any, parent: MultiService, metrics: Metrics
) -> URLStore:
    """Lock and load the data file and start its writer under ``parent``; exit clearly if it is unusable.

    Adds are synced to disk before they are acknowledged unless ``--no-fsync`` says otherwise; either
    way the key bound keeps every acknowledged key from ever going to another URL.
    """
    try:
        data = open_data_file(options["file"])
    except (CorruptDataFile, CorruptKeyBound, OSError) as exc:
        sys.exit(f"goto: cannot load the data file: {exc}")
    record_log = AppendLog(
        data.record_file,
        reactor,
        fsync=not options.get("no-fsync"),
        run_in_thread=_thread_runner(reactor),
        metrics=metrics,
        key_bound=data.key_bound,
        resume_index=data.next_index,
    )
    record_log.setServiceParent(parent)
    return URLStore(data.urls, record_log, next_index=data.next_index)


def make_slave_store(
    options: Options | dict[str, Any], reactor: Any, parent: MultiService, metrics: Metrics
) -> ProxyStore:
    """A caching proxy of the master's store, over a pool of persistent HTTP/1.1 connections."""
    # Imported here: the HTTP client stack is a third of the start-up imports, and only slaves use it.
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    from goto_tw.masterlink import MasterEndpointFactory
    from goto_tw.remote import RemoteStore

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 16
    ConnectionPoolService(pool).setServiceParent(parent)
    timeout = float(options["rpc-timeout"])
    agent = Agent.usingEndpointFactory(reactor, MasterEndpointFactory(reactor, timeout), pool=pool)
    remote = RemoteStore(
        HTTPClient(agent),
        options["master"],
        reactor,
        timeout=timeout,
        secret=options.get("rpc-secret"),
        metrics=metrics,
    )
    store = ProxyStore(remote, reactor, cache_size=int(options["cache-size"]))
    metrics.watch_cache(lambda: (store.stats.hits, store.stats.misses, store.stats.evictions))
    return store


class ConnectionPoolService(Service):
    """Closes the slave's idle connections to the master on shutdown, so nothing is left dangling."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def stopService(self) -> Deferred[None]:
        super().stopService()
        closed: Deferred[None] = self._pool.closeCachedConnections()
        return closed


def _thread_runner(reactor: Any) -> Any:
    """Run blocking calls in the reactor's thread pool (``fsync`` must never stall the reactor)."""

    def run(blocking: Any) -> Any:
        return deferToThreadPool(reactor, reactor.getThreadPool(), blocking)

    return run
