"""``twistd goto``: the command-line options and the wiring of the services (no logic of its own)."""

from __future__ import annotations

import re
import sys
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThreadPool
from twisted.python import usage
from twisted.web.server import Site

from goto_tw.persistence import AppendLog, CorruptDataFile, OSRecordFile, load_records
from goto_tw.store import URLStore
from goto_tw.web import GotoRoot


def parse_endpoint(value: str) -> str:
    """Accept a port number (``8081``) or any Twisted server endpoint string (``tcp:8081:...``)."""
    if value.isdigit():
        value = f"tcp:{value}"
    try:
        serverFromString(None, value)  # parsing only; nothing listens
    except (ValueError, KeyError, TypeError) as exc:
        raise usage.UsageError(f"--http: not a port or endpoint description: {value!r} ({exc})") from None
    return value


def default_host(endpoint: str) -> str:
    """Guess the ``HOST[:PORT]`` of short URLs from the listening endpoint: ``localhost:PORT``."""
    match = re.match(r"^(?:tcp6?|ssl):(?:port=)?(\d+)", endpoint) or re.search(r":port=(\d+)", endpoint)
    return f"localhost:{match.group(1)}" if match else "localhost"


class Options(usage.Options):
    """Options of ``twistd goto``; ``twistd -n goto --help`` lists them."""

    synopsis = "[options]"
    longdesc = "goto: a URL shortener. /add stores a URL and answers its short URL; /KEY redirects."

    optParameters = [
        [
            "http",
            None,
            "tcp:8080",
            "Port number or Twisted endpoint string to serve HTTP on.",
            parse_endpoint,
        ],
        ["file", None, "store.json", "Data file (one JSON record per line), loaded at start, appended to."],
        ["host", None, None, "HOST[:PORT] written into short URLs [default: localhost:<http port>]."],
    ]
    optFlags = [
        ["fsync", None, "fsync the data file before acknowledging adds (survives power loss)."],
    ]

    def postOptions(self) -> None:
        if self["host"] is None:
            self["host"] = default_host(self["http"])


def makeService(options: Options | dict[str, Any], reactor: Any = None) -> IService:
    """Build the service tree: the data file writer first (so it stops last), then the listener.

    The data file is loaded here, before anything listens: a process accepts connections only once
    it can answer them. A corrupt data file stops start-up with the file and line named.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    top = MultiService()
    try:
        urls = load_records(options["file"])
    except (CorruptDataFile, OSError) as exc:
        sys.exit(f"goto: cannot load the data file: {exc}")
    record_log = AppendLog(
        OSRecordFile(options["file"]),
        reactor,
        fsync=bool(options["fsync"]),
        run_in_thread=_thread_runner(reactor),
    )
    record_log.setServiceParent(top)
    store = URLStore(urls, record_log)
    site = Site(GotoRoot(store, options["host"]), reactor=reactor)
    StreamServerEndpointService(serverFromString(reactor, options["http"]), site).setServiceParent(top)
    return top


def _thread_runner(reactor: Any) -> Any:
    """Run blocking calls in the reactor's thread pool (``fsync`` must never stall the reactor)."""

    def run(blocking: Any) -> Any:
        return deferToThreadPool(reactor, reactor.getThreadPool(), blocking)

    return run
