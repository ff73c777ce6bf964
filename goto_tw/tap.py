"""``twistd goto``: the command-line options and the wiring of the services (no logic of its own)."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import sys
import urllib.parse
from typing import TYPE_CHECKING, Any, Callable

from twisted.application.service import IService, MultiService, Service
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.resource import Resource

from goto_tw.accesslog import LineAccessLog, make_access_log
from goto_tw.api import LinksResource
from goto_tw.auth import APIKeys, KeyRequiredToAdd, KeysFileError
from goto_tw.blocklist import LinkPolicy
from goto_tw.clicks import (
    ClickBook,
    ClickCounter,
    ClickForwarder,
    CorruptClickFile,
    clicks_path,
    open_click_book,
)
from goto_tw.clients import ClientAddresses
from goto_tw.cors import add_cors
from goto_tw.errors import one_line
from goto_tw.interfaces import IClickCounter, ILinkStats, IURLStore
from goto_tw.jitcounters import keep_counters
from goto_tw.keybound import CorruptKeyBound
from goto_tw.leanpoll import use_lean_poll
from goto_tw.lifecycle import (
    DrainService,
    StopInOrder,
    StopSignalsOnce,
    listening_service,
    prepare_process,
)
from goto_tw.limits import ANSWER_DEADLINE
from goto_tw.linkstats import MasterLinkStats, NoLinkStats, RemoteLinkStats
from goto_tw.metrics import Metrics
from goto_tw.nursery import warn_if_small_nursery
from goto_tw.openapi import OpenAPIResource
from goto_tw.ops import ops_resource
from goto_tw.persistence import WRITER_LINGER, AppendLog, CorruptDataFile, open_data_file
from goto_tw.proxystore import ProxyStore
from goto_tw.ratelimit import AddLimiter, LimitAdds, RenderBudget, fast_gate, is_api_add
from goto_tw.reload import ReloadOnSighup
from goto_tw.rpc import RPCResource
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from goto_tw.web import (
    DEFAULT_REDIRECT_STATUS,
    FastAnswers,
    GotoRoot,
    NotFoundResource,
    PlainResource,
    is_form_add,
)

if TYPE_CHECKING:
    # Imported at run time by slaves only (see _remote_store).
    from goto_tw.failover import FailoverStore
    from goto_tw.remote import HTTPPoster, RemoteStore

log = Logger()

#: A master's data file when ``--file`` is not given.
DEFAULT_DATA_FILE = "store.json"
#: Shortest ``--rpc-timeout`` accepted, in seconds: below it no master could ever answer in time.
MIN_RPC_TIMEOUT = 0.001
#: Most pairs ``--cache-size`` may ask for (about 30 GiB of a slave's memory at this bound).
MAX_CACHE_SIZE = 100_000_000
#: Longest ``--rpc-timeout`` accepted, in seconds: beyond it a request has long been given up on.
MAX_RPC_TIMEOUT = 600.0
#: Longest a stopping slave waits for the calls it accepted (it waits ``--rpc-timeout`` + 1 s at most).
MAX_DRAIN_SECONDS = 10.0


#: Options naming a file: given empty, each would turn its feature off without a word (the RPC secret!).
FILE_OPTIONS = ("file", "rpc-secret-file", "api-keys-file", "block-file")


def endpoint_option(option: str) -> Any:
    """An option coercer for ``--option``: a port number (``8081``) or any Twisted server endpoint
    string (``tcp:8081:...``), checked at start-up; a refusal names the option."""

    def parse_endpoint(value: str) -> str:
        if value.isdigit():
            value = f"tcp:{value}"
        try:
            endpoint = serverFromString(None, value)  # parsing only; nothing listens
        except (ValueError, KeyError, TypeError) as exc:
            raise usage.UsageError(
                f"--{option}: not a port or endpoint description: {value!r} ({exc})"
            ) from None
        except Exception as exc:  # a parser that opens what it names (ssl: key files, systemd: sockets)
            raise usage.UsageError(f"--{option}: {value!r} cannot be used: {one_line(exc)}") from None
        port = getattr(endpoint, "_port", None)  # TCP and TLS endpoints; the parser takes any int
        if isinstance(port, int) and not 0 <= port <= 65535:
            raise usage.UsageError(f"--{option}: port {port} is out of range (0 to 65535): {value!r}")
        return value

    parse_endpoint.coerceDoc = "A port number or a Twisted endpoint string."  # type: ignore[attr-defined]
    return parse_endpoint


def parse_master(value: str) -> str:
    """Accept ``HOST:PORT`` (``[::1]:PORT`` for IPv6) or a full ``http(s)://HOST:PORT/RPC2`` URL."""
    from goto_tw.remote import master_rpc_url  # a master never needs the RPC client: keep start-up lean

    try:
        return master_rpc_url(value)
    except ValueError as exc:
        raise usage.UsageError(f"--master: {exc}, not {value!r}") from None


def parse_store(value: str) -> str:
    """Accept ``file:PATH`` or a libpq URI (``postgresql://`` or ``postgres://``) for ``--store``.

    A password in the URI is refused: command lines are visible to every user of the machine.
    """
    from urllib.parse import urlsplit

    if value.startswith("file:") and len(value) > len("file:"):
        return value
    if value.startswith(("postgresql://", "postgres://")):
        try:
            parts = urlsplit(value)
        except ValueError as exc:
            raise usage.UsageError(f"--store: not a PostgreSQL URI ({exc})") from None
        if parts.password is not None or "password=" in parts.query:
            raise usage.UsageError("--store: no password on the command line; use PGPASSFILE or a credential")
        return value
    raise usage.UsageError(f"--store: expected file:PATH or postgresql://..., not {value[:100]!r}")


def positive(
    kind: type[int] | type[float], option: str, maximum: float | None = None, minimum: float | None = None
) -> Any:
    """An option coercer for ``--option`` that accepts only finite positive numbers of ``kind``
    (at least ``minimum``, at most ``maximum``), and names the option when it refuses a value."""

    def coerce(value: str) -> int | float:
        try:
            number = kind(value)
        except ValueError:
            number = None
        if number is None or not math.isfinite(number) or number <= 0:
            raise usage.UsageError(f"--{option}: expected a positive number, not {value!r}")
        if maximum is not None and number > maximum:
            raise usage.UsageError(f"--{option}: at most {_shown(maximum)}, not {value!r}")
        if minimum is not None and number < minimum:
            raise usage.UsageError(f"--{option}: at least {_shown(minimum)}, not {value!r}")
        return number

    bounds = [f"at least {_shown(minimum)}" if minimum is not None else "above 0"]
    if maximum is not None:
        bounds.append(f"at most {_shown(maximum)}")
    coerce.coerceDoc = f"{'A whole number' if kind is int else 'A number'}, {' and '.join(bounds)}."  # type: ignore[attr-defined]
    return coerce


def _shown(bound: float) -> str:
    """A bound as people write it: ``100,000,000``, ``600``, ``0.001``."""
    return f"{bound:,}" if isinstance(bound, int) else f"{bound:g}"


#: ``--host``: an optional http(s) scheme, a host name, IPv4 address or bracketed IPv6 address, an
#: optional port; nothing else (no user, path, query or fragment).
_SHORT_ORIGIN = re.compile(
    r"(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)"
    r"(?::(?P<port>[0-9]{1,5}))?/?"
)


def parse_host(value: str) -> str:
    """Accept ``[http://|https://]HOST[:PORT]`` for ``--host``; return it with its scheme (default http).

    Short links over https are what public shorteners hand out; a value that is not an origin
    (``https://https://x``, a path, a user, a port out of range) is refused at start-up rather than
    written into every link.
    """
    match = _SHORT_ORIGIN.fullmatch(value)
    scheme = (match.group("scheme") or "http").lower() if match else ""
    port = match.group("port") if match else None
    if match is None or scheme not in ("http", "https") or (port is not None and not 0 < int(port) < 65536):
        raise usage.UsageError(f"--host: expected [http:// or https://]HOST[:PORT], not {value!r}")
    host = match.group("host")
    if ".." in host:
        raise usage.UsageError(f"--host: a host name has no empty label: {value!r}")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise usage.UsageError(f"--host: not an IPv6 address: {host!r}") from None
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def default_host(endpoint: str) -> str:
    """Guess the origin of short URLs from the listening endpoint: ``http://localhost:PORT``, and
    ``https://`` for an ``ssl:`` one; a ``haproxy:`` prefix (PROXY protocol) names the same port."""
    inner = re.sub(r"^haproxy:", "", endpoint, flags=re.IGNORECASE)
    scheme = "https" if re.match(r"^ssl:", inner, re.IGNORECASE) else "http"
    match = re.match(r"^(?:tcp6?|ssl):(?:port=)?(\d+)", inner, re.IGNORECASE) or re.search(
        r":port=(\d+)", inner
    )
    return f"{scheme}://localhost:{match.group(1)}" if match else f"{scheme}://localhost"


#: The longest ``--rpc-secret-file`` read: a secret is one word; a file longer than this is not one
#: (the data file named by mistake, ``/dev/zero``), refused without being read whole.
MAX_SECRET_BYTES = 4096


def read_secret(path: str) -> bytes:
    """Read the shared RPC secret (surrounding white space dropped); it must not be empty."""
    try:
        with open(path, "rb") as secret_file:
            secret = secret_file.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise usage.UsageError(f"--rpc-secret-file: cannot read {path}: {exc.strerror}") from None
    if len(secret) > MAX_SECRET_BYTES:
        raise usage.UsageError(
            f"--rpc-secret-file: {path} is longer than {MAX_SECRET_BYTES} bytes: not a secret"
        )
    secret = secret.strip()
    if not secret or any(byte <= 0x20 or byte >= 0x7F for byte in secret):  # a header's visible ASCII
        raise usage.UsageError(f"--rpc-secret-file: {path} must hold one printable ASCII word")
    return secret


#: ``--cache-size`` and ``--rpc-timeout`` by default; a master that is given other values is told
#: they are not its options (a file master keeps every link in memory and calls no one).
DEFAULT_CACHE_SIZE = 100_000
DEFAULT_RPC_TIMEOUT = 5.0

#: ``--add-rate`` by default: adds per second per client (10/s), far above what a person adding
#: links by hand ever does, far below what a script spamming the service needs.
DEFAULT_ADD_RATE = "10/s"


def parse_add_rate(value: str) -> float | None:
    """``--add-rate``: adds per second from ``N/s``, ``N/m`` or ``N/h``; ``off`` (``None``): no limit."""
    from goto_tw.ratelimit import parse_rate

    if value.strip().lower() == "off":
        return None
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise usage.UsageError(f"--add-rate: {exc}") from None


def parse_redirect_status(value: str) -> int:
    """``--redirect-status``: one of the redirect statuses a short link may answer."""
    from goto_tw.web import REDIRECT_STATUSES

    if not value.isdigit() or int(value) not in REDIRECT_STATUSES:
        raise usage.UsageError(f"--redirect-status: expected 301, 302, 307 or 308, not {value!r}")
    return int(value)


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
            "Where to serve HTTP.",
            endpoint_option("http"),
        ],
        [
            "file",
            None,
            None,
            f"Master: data file (one JSON record per line), loaded at start, appended to "
            f"[default: {DEFAULT_DATA_FILE}].",
        ],
        [
            "host",
            None,
            None,
            "[http://|https://]HOST[:PORT] of short URLs (http://HOST/KEY) [default: http://localhost:<http port>].",
            parse_host,
        ],
        [
            "store",
            None,
            None,
            "Master: where links are kept: file:PATH (the data file, as --file) or a PostgreSQL "
            "connection URI postgresql://USER@HOST/DB (no password in it: PGPASSFILE, a systemd "
            "credential or a client certificate).",
            parse_store,
        ],
        [
            "cache-size",
            None,
            DEFAULT_CACHE_SIZE,
            "Slave, or master on PostgreSQL: how many pairs the cache holds (LRU).",
            positive(int, "cache-size", MAX_CACHE_SIZE),
        ],
        [
            "rpc-timeout",
            None,
            DEFAULT_RPC_TIMEOUT,
            "Slave: seconds to wait for the master's answer.",
            positive(float, "rpc-timeout", MAX_RPC_TIMEOUT, MIN_RPC_TIMEOUT),
        ],
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
            "tcp:9100:interface=127.0.0.1), not on --http [default: on --http]",
            endpoint_option("ops"),
        ],
        [
            "api-keys-file",
            None,
            None,
            "File of API keys, one per line (# comments): required for listing and disabling links "
            "(and, with --private, for adding); re-read on SIGHUP.",
        ],
        [
            "block-file",
            None,
            None,
            "File of domains and IP addresses (one per line, # comments) whose URLs, and their "
            "subdomains', may not be shortened; re-read on SIGHUP.",
        ],
        [
            "trusted-proxy",
            None,
            None,
            "Comma-separated addresses of reverse proxies whose X-Forwarded-For is believed.",
        ],
        [
            "add-rate",
            None,
            DEFAULT_ADD_RATE,
            "Rate limit on adds per client address: N/s, N/m or N/h (a bare N: per second), or 'off'; "
            "over it, 429.",
            parse_add_rate,
        ],
        [
            "add-burst",
            None,
            50,
            "Adds a client may make at once before --add-rate applies.",
            positive(int, "add-burst"),
        ],
        [
            "redirect-status",
            None,
            DEFAULT_REDIRECT_STATUS,
            "Status of a short link's redirect: 301, 302, 307 or 308 (permanent ones carry "
            "Cache-Control: private, max-age=90).",
            parse_redirect_status,
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
        ["private", None, "Adding links needs an API key too (--api-keys-file)."],
        [
            "rpc",
            None,
            "Master: serve the store over XML-RPC at /RPC2 (Store.Get, Store.Put and the calls slaves make).",
        ],
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

    def __init__(self) -> None:
        super().__init__()
        self["master"] = None
        self["masters"] = []
        self["cors-origins"] = frozenset()

    def opt_master(self, value: str) -> None:
        """Run as a slave of this master: HOST:PORT, [IPv6]:PORT or http(s)://HOST[:PORT]/RPC2; several
        masters (on one PostgreSQL database) as a comma-separated list or by repeating the option."""
        from goto_tw.remote import master_identity

        for one in value.split(","):
            master = parse_master(one.strip())
            named = {master_identity(known) for known in self["masters"]}
            if master_identity(master) in named:  # the same master twice would get every call twice
                raise usage.UsageError(f"--master: {one.strip()!r} is named twice")
            self["masters"].append(master)
        self["master"] = self["masters"][0]

    def opt_cors_origin(self, value: str) -> None:
        """Let browser pages from this origin (https://app.example; repeatable or comma-separated)
        call the JSON API (CORS) [default: none]."""
        from goto_tw.cors import parse_origins

        try:
            self["cors-origins"] = self["cors-origins"] | parse_origins(value)
        except ValueError as exc:
            raise usage.UsageError(f"--cors-origin: {exc}") from None

    # twistd's --help wraps an option's docstring as it is, indentation and all: one line each.
    opt_master.__doc__ = " ".join((opt_master.__doc__ or "").split())
    opt_cors_origin.__doc__ = " ".join((opt_cors_origin.__doc__ or "").split())

    def postOptions(self) -> None:
        for name in FILE_OPTIONS:  # "" is a mistake ("$UNSET"), never "leave the feature off"
            if self.get(name) == "":
                raise usage.UsageError(f"--{name}: an empty file name; give a file, or leave the option out")
        store = self.get("store")
        # The option the user named the data file with, for the refusals below.
        file_option = "--file"
        if store is not None:
            if self["master"]:
                raise usage.UsageError("--store is for a master; a slave (--master) has no store of its own")
            if self["file"] is not None:
                raise usage.UsageError("--store and --file name the same thing: give one of them")
            if store.startswith("file:"):
                self["file"] = store[len("file:") :]
                self["store"] = None
                file_option = "--store"
        if self.get("store") and (self["fsync"] or self["no-fsync"]):
            raise usage.UsageError("--fsync and --no-fsync are for the data file; PostgreSQL commits durably")
        if self["host"] is None:
            self["host"] = default_host(self["http"])
        if self["fsync"] and self["no-fsync"]:
            raise usage.UsageError("--fsync and --no-fsync contradict each other: give one of them")
        if self["master"] and (self["rpc"] or self["fsync"] or self["no-fsync"] or self["file"] is not None):
            raise usage.UsageError(
                "--file, --rpc, --fsync and --no-fsync are for a master; a slave (--master) has no data file"
            )
        if not self["master"] and self["file"] is None and not self.get("store"):
            self["file"] = DEFAULT_DATA_FILE
        if not self["master"] and self["rpc-timeout"] != DEFAULT_RPC_TIMEOUT:
            raise usage.UsageError("--rpc-timeout is for a slave (--master): a master waits for no master")
        if self["file"] is not None and self["cache-size"] != DEFAULT_CACHE_SIZE:
            raise usage.UsageError(
                "--cache-size is for a slave (--master) or a master on PostgreSQL (--store "
                "postgresql://...): a master with a data file keeps every link in memory"
            )
        for name in ("file", "api-keys-file", "block-file"):
            # Absolute now: twistd changes directory (--rundir) after the service is made, and these
            # are opened again later (the data file's .next and .clicks beside it, reloads on SIGHUP).
            if self.get(name):
                self[name] = os.path.abspath(self[name])
        if self["file"] is not None:  # else the master listened, then failed to create the file
            folder = os.path.dirname(os.path.realpath(self["file"]))  # a symlink's target's folder
            if not os.path.isdir(folder):
                raise usage.UsageError(f"{file_option}: the data file's directory {folder!r} does not exist")
        self["rpc-secret"] = read_secret(self["rpc-secret-file"]) if self["rpc-secret-file"] else None
        if self["private"] and not self["api-keys-file"]:
            raise usage.UsageError("--private needs --api-keys-file: nobody could add a link")
        if self["private"] and self["rpc"] and self["rpc-secret"] is None:
            # /RPC2 is served on --http, and a caller that does not say it checks no keys is taken
            # for a slave that checks them: without the secret anyone could add without a key.
            raise usage.UsageError(
                "--private with --rpc needs --rpc-secret-file (the same file for every slave): "
                "without it anyone who can reach /RPC2 adds links without an API key"
            )
        self["trusted-proxies"] = parse_trusted_proxies(self["trusted-proxy"])
        if self["add-rate"] == DEFAULT_ADD_RATE:  # shown as written in --help; taken as given ones are
            self["add-rate"] = parse_add_rate(DEFAULT_ADD_RATE)


def parse_trusted_proxies(value: str | None) -> frozenset[str]:
    """The addresses ``--trusted-proxy`` names (comma-separated IP addresses)."""
    from goto_tw.clients import parse_proxy

    if not value:
        return frozenset()
    try:
        return frozenset(parse_proxy(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise usage.UsageError(f"--trusted-proxy: expected IP addresses, not {value!r}") from None


def make_policy(options: Options | dict[str, Any], reactor: Any = None) -> LinkPolicy:
    """What may not be shortened: ``--block-file``'s domains and this service's own host; with
    ``reactor``, the file is read again on SIGHUP in its thread pool."""
    own = urllib.parse.urlsplit(options["host"] if "://" in options["host"] else f"http://{options['host']}")
    read_in_thread = None if reactor is None else _thread_runner(reactor)
    try:
        return LinkPolicy(frozenset({own.netloc}), options.get("block-file"), read_in_thread)
    except (OSError, ValueError) as exc:
        sys.exit(f"goto: --block-file: {exc}")


def make_api_keys(options: Options | dict[str, Any], reactor: Any) -> APIKeys | None:
    """The API keys of ``--api-keys-file``, or ``None``; exit clearly if the file is unusable."""
    path = options.get("api-keys-file")
    if not path:
        return None
    try:
        return APIKeys.from_file(path, reactor)
    except KeysFileError as exc:
        sys.exit(f"goto: --api-keys-file: {exc}")


def makeService(options: Options | dict[str, Any], reactor: Any = None) -> IService:
    """Build the service tree: the store's own services first (so they stop last), then the listener.

    A master loads its data file here, before anything listens: a process accepts connections only
    once it can answer them. A corrupt data file stops start-up with the file and line named.
    """
    top = StopInOrder()
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
        prepare_process()
        use_lean_poll(reactor)  # the reactor twistd runs: one logging context less per event
        warn_if_small_nursery()  # a PyPy server only: see goto_tw/nursery.py
        keep_counters()  # a PyPy server only: see goto_tw/jitcounters.py
        StopSignalsOnce(reactor).setServiceParent(top)  # the process's own signal handlers
    metrics = Metrics("slave" if options["master"] else "master")
    try:
        access_log = make_access_log(options["access-log"], reactor)  # before any file is created
    except OSError as exc:
        sys.exit(f"goto: --access-log: cannot open {options['access-log']}: {exc.strerror}")
    if isinstance(access_log, LineAccessLog):
        line_log = access_log
        metrics.watch_access_log(lambda: line_log.lost_lines)
    if isinstance(access_log, Service):
        # Added before every child that can answer a request (only the signal wrapper above, which
        # has nothing to stop, comes before it), so stopped after all of them: every request
        # answered while the others stop (the adds a master is still writing, the calls a slave
        # drains) still gets its line.
        access_log.setServiceParent(top)
    drain: Service | None = None
    book: ClickBook | None = None
    clicks: ClickCounter
    stats: ILinkStats
    if options["master"]:
        slave_store, clicks, stats = make_slave(options, reactor, top, metrics)
        drain = DrainService(slave_store, reactor, min(float(options["rpc-timeout"]) + 1, MAX_DRAIN_SECONDS))
        store: IURLStore = slave_store
    elif options.get("store"):
        store = make_postgres_store(options, reactor, top, metrics)
        clicks = ClickCounter(max_keys=0)  # not kept on PostgreSQL yet: counted as dropped
        stats = NoLinkStats()
    else:
        master_store = make_master_store(options, reactor, top, metrics)
        book = make_click_book(options, reactor, top, master_store.next_index)
        clicks = book.counter
        stats = MasterLinkStats(master_store, master_store, book)
        store = master_store
    metrics.watch_clicks(book.total if book is not None else clicks.total, lambda: clicks.dropped)
    if drain is not None:
        drain.setServiceParent(top)  # the accepted requests finish before the log and the pool close
    if options["rpc"] and options.get("rpc-secret") is None:
        log.warn(
            "/RPC2 takes calls without a secret: anyone who can reach --http (directly or through a "
            "proxy) can add links there, past --add-rate. Give the master and its slaves "
            "--rpc-secret-file, or serve --http on an interface only they reach."
        )
    rpc = (
        RPCResource(
            store, options.get("rpc-secret"), book, stats, clock=reactor, private=bool(options.get("private"))
        )
        if options["rpc"]
        else None
    )
    keys = make_api_keys(options, reactor)
    clients = ClientAddresses(options.get("trusted-proxies") or frozenset())
    reloaders: list[Callable[[], object]] = [keys.reload] if keys is not None else []
    policy = make_policy(options, reactor)
    reloaders.append(policy.reload)
    if isinstance(access_log, LineAccessLog):
        reloaders.append(access_log.reopen)
    if hasattr(store, "policy"):  # every store that takes adds: the file's, PostgreSQL's, a slave's
        store.policy = policy
    ReloadOnSighup(reactor, reloaders).setServiceParent(top)
    redirect_status = int(options.get("redirect-status") or DEFAULT_REDIRECT_STATUS)
    root = make_root(
        store,
        options["host"],
        metrics,
        rpc,
        clicks,
        stats,
        keys=keys,
        private=bool(options.get("private")),
        clients=clients,
        redirect_status=redirect_status,
        clock=reactor,
    )
    limiter = None
    add_rate = options.get("add-rate")
    if isinstance(add_rate, str) and add_rate:  # a plain dict of options, not parsed: "10/s"
        add_rate = parse_add_rate(add_rate)
    if add_rate:
        limiter = AddLimiter(float(add_rate), int(options.get("add-burst") or 50), reactor, metrics)
        private = bool(options.get("private"))
        root.putChild(b"add", LimitAdds(root.children[b"add"], limiter, clients, is_form_add, private))
        if isinstance(root, GotoRoot):
            root.may_render = RenderBudget(clients, reactor)
        links = root.children[b"api"].children[b"v1"].children[b"links"]
        root.children[b"api"].children[b"v1"].putChild(
            b"links", LimitAdds(links, limiter, clients, is_api_add)
        )
    add_cors(root, options.get("cors-origins") or frozenset())
    site = GotoSite(
        root,
        metrics,
        reactor=reactor,
        store=store,
        host=options["host"],
        access_log=access_log,
        clicks=clicks,
        redirect_status=redirect_status,
        # A slave's look-up may wait for a batch in flight, then its own: twice --rpc-timeout.
        answer_deadline=max(ANSWER_DEADLINE, 2 * float(options.get("rpc-timeout") or 0) + 1),
        hold_answers=True,  # a busy turn's answers leave together (goto_tw.outbox)
        trusted=clients,
    )
    site.cors_origins = options.get("cors-origins") or frozenset()
    if isinstance(site.responder, FastAnswers) and options.get("private"):
        site.responder.adds = False  # adds need a key: the general path checks it
    elif limiter is not None:
        site.add_gate = fast_gate(limiter, clients, reactor)
    listening_service("--http", options["http"], site, reactor).setServiceParent(top)
    if options.get("ops"):
        # --ops: /_goto/ moves to an endpoint of its own (a Site with just it); the public port says 404.
        ops_root = PlainResource()
        ops_root.putChild(b"_goto", root.children[b"_goto"])
        root.putChild(b"_goto", NotFoundResource())
        ops_site = GotoSite(
            ops_root, metrics, reactor=reactor, access_log=access_log, answer_deadline=site.answer_deadline
        )
        listening_service("--ops", options["ops"], ops_site, reactor).setServiceParent(top)
    return top


def make_root(
    store: IURLStore,
    host: str,
    metrics: Metrics,
    rpc: Resource | None = None,
    clicks: IClickCounter | None = None,
    stats: ILinkStats | None = None,
    *,
    keys: APIKeys | None = None,
    private: bool = False,
    clients: ClientAddresses | None = None,
    redirect_status: int = DEFAULT_REDIRECT_STATUS,
    clock: Any = None,
) -> Resource:
    """The resource tree: the front end, the JSON API, ``/_goto/`` and, on a master, ``/RPC2``
    (``clock``: the reactor, for what waits a bounded time; the global one if not given)."""
    metrics.watch_store(store.count)
    root = GotoRoot(
        store,
        host,
        clicks,
        stats,
        redirect_status=redirect_status,
        private=private and keys is not None,
    )
    api = PlainResource()
    root.putChild(b"api", api)
    version1 = PlainResource()
    api.putChild(b"v1", version1)
    version1.putChild(b"links", LinksResource(store, host, stats, keys, private=private, clients=clients))
    version1.putChild(b"openapi.json", OpenAPIResource())
    if private and keys is not None:
        root.putChild(b"add", KeyRequiredToAdd(root.children[b"add"], keys, clients or ClientAddresses()))
    root.putChild(b"_goto", ops_resource(store, metrics, clock))
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
        call_from_thread=_from_thread(reactor),
        metrics=metrics,
        key_bound=data.key_bound,
        resume_index=data.next_index,
        writer_linger=WRITER_LINGER,
    )
    record_log.setServiceParent(parent)
    return URLStore(data.urls, record_log, next_index=data.next_index, disabled=data.disabled, clock=reactor)


def make_click_book(
    options: Options | dict[str, Any], reactor: Any, parent: MultiService, next_index: Callable[[], int]
) -> ClickBook:
    """Load (and compact) the master's click file beside its data file; its writer stops after the listener.

    ``next_index`` is where the store's key counter stands: the book dates counter keys by it.
    """
    path = clicks_path(options["file"])
    try:
        totals, marks, lines = open_click_book(path, reactor.seconds(), next_index)
    except (CorruptClickFile, OSError) as exc:
        sys.exit(f"goto: cannot load the click file: {exc}")
    fsync = not options.get("no-fsync")
    try:
        keys_written_by: float | None = os.stat(options["file"]).st_mtime
    except OSError:
        keys_written_by = None  # no data file yet: no keys to date
    book = ClickBook(
        path,
        totals,
        reactor,
        fsync=fsync,
        run_in_thread=_thread_runner(reactor),
        marks=marks,
        next_index=next_index,
        lines=lines,
        keys_written_by=keys_written_by,
    )
    book.setServiceParent(parent)
    return book


def make_slave(
    options: Options | dict[str, Any],
    reactor: Any,
    parent: MultiService,
    metrics: Metrics,
    http: HTTPPoster | None = None,
) -> tuple[ProxyStore, ClickCounter, RemoteLinkStats]:
    """A slave's store (:func:`make_slave_store`), its click counter, and its view of link statistics.

    The counter's forwarder sends a batch a second (``Store.Clicks``, a request of its own); it stops
    before the connection pool closes, sending what is pending once more.
    """
    from goto_tw.remote import RemoteStore

    remote = _remote_store(options, reactor, parent, metrics, http)
    store = _proxy_store(remote, reactor, options, metrics, parent)
    counter = ClickCounter()
    # A batch of clicks travels as a request of its own: the master answers it once it is on disk,
    # and a multicall waits for all of its calls (several masters share PostgreSQL: no clicks kept).
    call = remote.call_alone if isinstance(remote, RemoteStore) else remote.call
    forwarder = ClickForwarder(counter, lambda batch: call("Store.Clicks", batch), reactor)
    forwarder.setServiceParent(parent)
    # A question of statistics only reads: with several masters it is hedged as a look-up is.
    stats_call = remote.call if isinstance(remote, RemoteStore) else remote.read
    return store, counter, RemoteLinkStats(store, stats_call, forwarder)


def make_postgres_store(
    options: Options | dict[str, Any], reactor: Any, parent: MultiService, metrics: Metrics
) -> IURLStore:
    """A master on PostgreSQL (``--store postgresql://...``); exit clearly if the database is unusable."""
    from goto_tw.pgmaster import DatabaseUnusable, make_pg_store  # psycopg only for such masters
    from goto_tw.pgschema import SchemaTooNew

    try:
        return make_pg_store(
            options["store"], reactor, parent, metrics, cache_size=int(options["cache-size"])
        )
    except (DatabaseUnusable, SchemaTooNew) as exc:
        sys.exit(f"goto: cannot use the database: {exc}")


def make_slave_store(
    options: Options | dict[str, Any],
    reactor: Any,
    parent: MultiService,
    metrics: Metrics,
    http: HTTPPoster | None = None,
) -> ProxyStore:
    """A caching proxy of the master's store, over a pool of persistent HTTP/1.1 connections
    (or over ``http``, a client given instead: tests pass one that needs no sockets)."""
    remote = _remote_store(options, reactor, parent, metrics, http)
    return _proxy_store(remote, reactor, options, metrics, parent)


def _remote_store(
    options: Options | dict[str, Any],
    reactor: Any,
    parent: MultiService,
    metrics: Metrics,
    http: HTTPPoster | None = None,
) -> RemoteStore | FailoverStore:
    """The master's store as this slave calls it: over one connection pool, to one master or (with
    several ``--master``) to whichever of them answers (:class:`~goto_tw.failover.FailoverStore`)."""
    # Imported here: the HTTP client stack is a third of the start-up imports, and only slaves use it.
    from goto_tw.remote import RemoteStore

    timeout = float(options["rpc-timeout"])
    if http is None:
        http = master_client(reactor, timeout, parent)
    masters = options.get("masters") or [options["master"]]
    remotes = [
        RemoteStore(
            http,
            url,
            reactor,
            timeout=timeout,
            secret=options.get("rpc-secret"),
            unchecked_adds=not options.get("private"),  # a private master refuses this slave's adds
            metrics=metrics,
        )
        for url in masters
    ]
    if len(remotes) == 1:
        return remotes[0]
    from goto_tw.failover import FailoverStore, shares_a_database

    return FailoverStore(list(zip(masters, remotes)), reactor, check=shares_a_database)


def _proxy_store(
    remote: RemoteStore | FailoverStore,
    reactor: Any,
    options: Options | dict[str, Any],
    metrics: Metrics,
    parent: MultiService,
) -> ProxyStore:
    """The slave's cache over ``remote``; with one master, kept coherent with its change feed (a
    disabled link answers 410 here within 2 s). Several masters share a PostgreSQL database, which
    has no change feed yet (links cannot be disabled there)."""
    from goto_tw.coherence import CacheCoherence
    from goto_tw.remote import RemoteStore

    store = ProxyStore(remote, reactor, cache_size=int(options["cache-size"]))
    if isinstance(remote, RemoteStore):
        CacheCoherence(remote.call, store, reactor).setServiceParent(parent)
    metrics.watch_cache(lambda: (store.stats.hits, store.stats.misses, store.stats.evictions))
    return store


def master_client(reactor: Any, timeout: float, parent: MultiService) -> HTTPPoster:
    """The HTTP client a slave reaches its masters with; its connections close when ``parent`` stops."""
    from goto_tw.masterhttp import MasterConnections
    from goto_tw.remote import MAX_ANSWER_BYTES

    client = MasterConnections(reactor, timeout, max_answer_bytes=MAX_ANSWER_BYTES)
    client.setServiceParent(parent)
    return client


def _from_thread(reactor: Any) -> Callable[..., object]:
    """Hand a call from a thread to the reactor thread (looked up when called, as the runner's pool)."""

    def call(function: Callable[..., object], *args: object) -> object:
        return reactor.callFromThread(function, *args)

    return call


def _thread_runner(reactor: Any) -> Any:
    """Run blocking calls in the reactor's thread pool (``fsync`` must never stall the reactor)."""

    def run(blocking: Any) -> Any:
        return deferToThreadPool(reactor, reactor.getThreadPool(), blocking)

    return run
