"""``twistd goto``: option parsing, plugin discovery and the service wiring."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

import pytest
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceMaker, MultiService
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.web.server import Site

from goto_tw.accesslog import LineAccessLog
from goto_tw.errors import MasterUnreachable
from goto_tw.lifecycle import CannotStart, StopInOrder
from goto_tw.metrics import Metrics
from goto_tw.persistence import AppendLog
from goto_tw.site import GotoSite
from goto_tw.tap import Options, default_host, make_slave_store, makeService
from tests.conftest import LogCapture
from tests.helpers import failure_of, has_fired
from tests.wire import exchange


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_plugin_is_found_by_twistd() -> None:
    """twistd finds the goto plugin (an import error in it would hide it silently)."""
    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
    assert "goto" in makers
    assert makers["goto"].options is Options


def test_defaults() -> None:
    """With no options: port 8080, store.json, short URLs on http://localhost:8080, adds fsynced
    (``--no-fsync`` is the opt-out; ``--fsync`` itself is only accepted for compatibility)."""
    options = parse()
    assert options["http"] == "tcp:8080"
    assert options["file"] == os.path.abspath("store.json")
    assert options["host"] == "http://localhost:8080"
    assert not options["no-fsync"]


def test_port_number_becomes_an_endpoint() -> None:
    """``--http 8081`` is shorthand for ``tcp:8081``; the default host follows the port."""
    options = parse("--http", "8081")
    assert options["http"] == "tcp:8081"
    assert options["host"] == "http://localhost:8081"


def test_endpoint_strings_are_accepted() -> None:
    """Any Twisted server endpoint string works, e.g. bound to one interface."""
    assert parse("--http", "tcp:8081:interface=127.0.0.1")["http"] == "tcp:8081:interface=127.0.0.1"


def test_bad_endpoint_is_a_usage_error() -> None:
    """A typo in --http is reported at start-up, before anything runs."""
    with pytest.raises(usage.UsageError, match="--http"):
        parse("--http", "nonsense:1")


def test_bad_ops_endpoint_names_its_own_option() -> None:
    """A typo in --ops is reported as --ops, not as --http."""
    with pytest.raises(usage.UsageError, match=r"^--ops: "):
        parse("--ops", "nonsense:1")


def test_fsync_and_no_fsync_together_are_refused() -> None:
    """Two contradicting durability flags are a usage error, not a silent choice."""
    with pytest.raises(usage.UsageError, match="contradict"):
        parse("--fsync", "--no-fsync")


@pytest.mark.parametrize(
    ("given", "origin"),
    [
        ("go.example.com", "http://go.example.com"),
        ("go.example.com:8080", "http://go.example.com:8080"),
        ("https://go.example.com", "https://go.example.com"),
        ("HTTPS://go.example.com:8443/", "https://go.example.com:8443"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_explicit_host_is_the_origin_of_short_urls(given: str, origin: str) -> None:
    """--host takes an optional http(s) scheme (default http) and becomes the short links' origin."""
    assert parse("--host", given)["host"] == origin


@pytest.mark.parametrize(
    "bad",
    [
        "https://https://go.example.com",
        "ftp://go.example.com",
        "go.example.com/path",
        "user@go.example.com",
        "go.example.com:0",
        "go.example.com:65536",
        "[zz::1]:80",
        "go example",
        "",
    ],
)
def test_a_host_that_is_not_an_origin_is_a_usage_error(bad: str) -> None:
    """A --host that would make broken links (``http://https://...``) is refused, naming the option."""
    with pytest.raises(usage.UsageError, match="--host"):
        parse("--host", bad)


@pytest.mark.parametrize(
    ("endpoint", "host"),
    [
        ("tcp:80", "http://localhost:80"),
        ("tcp:port=81:interface=::1", "http://localhost:81"),
        ("unix:/tmp/s", "http://localhost"),
        # A new user's trial (stop 36): these lost their port, or said http for TLS.
        ("haproxy:tcp:8080", "http://localhost:8080"),
        ("HAPROXY:tcp:port=8081", "http://localhost:8081"),
        ("ssl:8443:privateKey=k.pem", "https://localhost:8443"),
        ("haproxy:ssl:port=443:privateKey=k.pem", "https://localhost:443"),
    ],
)
def test_default_host_from_endpoint(endpoint: str, host: str) -> None:
    """The default host names the port the service listens on, where there is one."""
    assert default_host(endpoint) == host


def test_make_service_access_log_then_writer_then_listener(tmp_path: Path) -> None:
    """Stopped newest first: the listener, then the writer (the adds in flight are written and
    answered), and the access log last, so those answers still get their lines."""
    reactor = MemoryReactorClock()
    options = parse(
        "--file", str(tmp_path / "s.json"), "--http", "tcp:0", "--access-log", str(tmp_path / "a")
    )
    service = makeService(options, reactor=reactor)
    assert isinstance(service, StopInOrder)
    children = list(service)
    assert [type(child) for child in children[:2]] == [LineAccessLog, AppendLog]
    assert [type(listener) for listener in children[-1]] == [StreamServerEndpointService]
    service.startService()
    assert len(reactor.tcpServers) == 1
    service.stopService()


def test_access_log_lines_lost_to_a_full_disk_are_a_metric(tmp_path: Path) -> None:
    """Lines a failed write lost (``--access-log`` on a full disk) show on ``/_goto/metrics`` as
    ``goto_access_log_lost_lines_total``, not only in the log's throttled lines."""
    reactor = MemoryReactorClock()
    options = parse("--file", str(tmp_path / "s.json"), "--http", "tcp:0", "--access-log", "/dev/full")
    service = makeService(options, reactor=reactor)
    service.startService()
    site = reactor.tcpServers[0][1]
    assert isinstance(site, Site)
    scrape = b"GET /_goto/metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    first = exchange(site, scrape)
    assert b"goto_access_log_lost_lines_total 0.0" in first, first
    reactor.advance(0)  # the first scrape's line meets the full disk
    assert b"goto_access_log_lost_lines_total 1.0" in exchange(site, scrape)
    service.stopService()


def test_a_plain_dict_of_options_may_hold_the_add_rate_as_written(tmp_path: Path) -> None:
    """``makeService`` takes a plain dict too (a hostile review, stop 42): one that copies
    ``--add-rate``'s default as ``--help`` shows it (``10/s``, parsed only by ``Options``) gets the
    same limit, rather than a ``ValueError`` at start-up."""
    from goto_tw.tap import DEFAULT_ADD_RATE

    reactor = MemoryReactorClock()
    options = dict(parse("--file", str(tmp_path / "s.json"), "--http", "tcp:0"))
    options["add-rate"] = DEFAULT_ADD_RATE
    service = makeService(options, reactor=reactor)
    service.startService()
    site = reactor.tcpServers[0][1]
    assert isinstance(site, GotoSite) and site.add_gate is not None, "adds are rate-limited"
    service.stopService()
    options["add-rate"] = ""  # nothing, as before: no limit
    reactor = MemoryReactorClock()
    makeService(options, reactor=reactor).startService()
    unlimited = reactor.tcpServers[0][1]
    assert isinstance(unlimited, GotoSite) and unlimited.add_gate is None


def test_corrupt_data_file_stops_start_up_with_a_clear_message(tmp_path: Path) -> None:
    """A corrupt record exits with a one-line message naming the file and line, not a traceback."""
    data = tmp_path / "s.json"
    data.write_text('{"key":"0","url":"http://a/"}\nbroken\n{"key":"2","url":"http://c/"}\n')
    with pytest.raises(SystemExit) as exited:
        makeService(parse("--file", str(data)), reactor=MemoryReactorClock())
    assert f"{data}, line 2" in str(exited.value.code)


def test_master_option_makes_a_slave_that_writes_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--master wires a ProxyStore and never touches a data file (not even the default one)."""
    monkeypatch.chdir(tmp_path)
    reactor = MemoryReactorClock()
    service = makeService(parse("--master", "127.0.0.1:8081"), reactor=reactor)
    assert isinstance(service, MultiService)
    assert not any(isinstance(child, AppendLog) for child in service)
    service.startService()
    service.stopService()
    assert list(tmp_path.iterdir()) == []


def test_slave_refuses_master_only_options() -> None:
    """--file, --rpc and --fsync make no sense on a slave; saying so beats silently ignoring them."""
    for args in (["--rpc"], ["--fsync"], ["--file", "store.json"]):
        with pytest.raises(usage.UsageError, match="slave"):
            parse("--master", "127.0.0.1:8081", *args)


def test_master_data_file_defaults_to_store_json() -> None:
    """Without --file a master uses store.json; given, it uses that file."""
    assert parse()["file"] == os.path.abspath("store.json")
    assert parse("--file", "x.json")["file"] == os.path.abspath("x.json")


def test_files_are_named_by_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review 39: twistd changes directory (``--rundir``) after the service is made, and the data
    file (its ``.next`` and ``.clicks`` beside it), the API keys and the block file are opened again
    later: relative names are made absolute at once (a key revoked on SIGHUP stayed in force, read
    from the wrong directory; a data file was created beside the other directory's ``.next``)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keys").write_text("a" * 24 + "\n")
    (tmp_path / "block").write_text("evil.example\n")
    options = parse("--file", "store.json", "--api-keys-file", "keys", "--block-file", "block")
    for name, file in (("file", "store.json"), ("api-keys-file", "keys"), ("block-file", "block")):
        assert options[name] == str(tmp_path / file), name
    assert parse("--store", "file:other.json")["file"] == str(tmp_path / "other.json")


@pytest.mark.parametrize(
    "endpoint",
    [
        "ssl:8443:privateKey={missing}",  # a typo in the key's path
        "ssl:8443:privateKey={tmp}",  # a directory
        "ssl:8443:privateKey={bad}",  # not PEM
        "systemd:domain=INET:index=0",  # no socket unit handed sockets over
    ],
)
@pytest.mark.parametrize("option", ["--http", "--ops"])
def test_an_endpoint_its_parser_cannot_open_is_a_one_line_refusal(
    option: str, endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 39: endpoint parsers that open what they name raised other errors than the three the
    option caught (FileNotFoundError, IsADirectoryError, OpenSSL's, IndexError): a traceback."""
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    monkeypatch.delenv("LISTEN_PID", raising=False)
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    value = endpoint.format(missing=tmp_path / "missing.pem", tmp=tmp_path, bad=tmp_path / "bad.pem")
    with pytest.raises(usage.UsageError, match=f"^{option}: .* cannot be used: ") as refused:
        parse(option, value)
    assert "\n" not in str(refused.value)


def test_a_secret_file_longer_than_a_secret_is_refused_unread(tmp_path: Path) -> None:
    """Review 39: ``--rpc-secret-file`` was read whole (``/dev/zero``: memory until MemoryError)."""
    from goto_tw.tap import MAX_SECRET_BYTES

    long = tmp_path / "long"
    long.write_bytes(b"a" * (MAX_SECRET_BYTES + 1))
    with pytest.raises(usage.UsageError, match="longer than 4096 bytes"):
        parse("--rpc-secret-file", str(long))
    with pytest.raises(usage.UsageError, match="longer than 4096 bytes"):
        parse("--rpc-secret-file", "/dev/zero")
    long.write_bytes(b"a" * MAX_SECRET_BYTES)
    assert parse("--rpc-secret-file", str(long))["rpc-secret"] == b"a" * MAX_SECRET_BYTES


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--master", "not a url"], "--master"),
        (["--master", "garbage"], "--master"),
        (["--master", ":::"], "--master"),
        (["--master", "127.0.0.1:99999"], "--master"),
        (["--master", "127.0.0.1:0"], "--master"),
        (["--master", "http://:8081/RPC2"], "--master"),
        (["--master", "http://[::1/RPC2"], "--master"),
        (["--master", "http://[nonsense]:8081/RPC2"], "--master"),
        (["--master", "ftp://127.0.0.1:8081/RPC2"], "--master"),
        (["--master", "http://127.0.0.1:65536/RPC2"], "--master"),
        # Review 33: accepted, then every call failed locally (a path the request line cannot carry,
        # a ':' with no port, read by Twisted as part of the host).
        (["--master", "http://127.0.0.1:19401/RPC2\u00e9"], "--master"),
        (["--master", "http://127.0.0.1:/RPC2"], "--master"),
        (["--master", "http://127.0.0.1:8081/RP C2"], "--master"),
        (["--cache-size", "0"], "--cache-size"),
        (["--cache-size", "-1"], "--cache-size"),
        (["--cache-size", "many"], "--cache-size"),
        (["--rpc-timeout", "-1"], "--rpc-timeout"),
        (["--rpc-timeout", "nan"], "--rpc-timeout"),
        (["--rpc-timeout", "inf"], "--rpc-timeout"),
        (["--rpc-timeout", "1e9"], "--rpc-timeout"),
        (["--rpc-secret-file", "/nonexistent/secret"], "--rpc-secret-file"),
    ],
)
def test_bad_option_values_are_usage_errors(args: list[str], option: str) -> None:
    """Bad values are refused at start-up with a usage error naming the option."""
    with pytest.raises(usage.UsageError, match=option):
        parse(*args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cache-size", "5"], "--cache-size is for a slave (--master) or a master on PostgreSQL"),
        (["--rpc", "--cache-size", "5"], "--cache-size is for a slave"),
        (["--rpc-timeout", "2"], "--rpc-timeout is for a slave (--master)"),
        (["--store", "postgresql://goto@db/goto", "--rpc-timeout", "2"], "--rpc-timeout is for a slave"),
    ],
)
def test_a_slaves_option_given_to_a_master_is_refused(args: list[str], message: str) -> None:
    """A new user's trial (stop 41): ``--cache-size`` and ``--rpc-timeout`` on a master with a data
    file were taken and did nothing (it keeps every link in memory and waits for no master)."""
    with pytest.raises(usage.UsageError) as refused:
        parse(*args)
    assert str(refused.value).startswith(message), refused.value


def test_a_slaves_options_are_taken_where_they_apply() -> None:
    """A slave takes both; a master on PostgreSQL takes ``--cache-size`` (its own LRU cache)."""
    slave = parse("--master", "127.0.0.1:8081", "--cache-size", "5", "--rpc-timeout", "2")
    assert (slave["cache-size"], slave["rpc-timeout"]) == (5, 2.0)
    assert parse("--store", "postgresql://goto@db/goto", "--cache-size", "5")["cache-size"] == 5


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("[::1]:8081", "http://[::1]:8081/RPC2"),
        ("http://[::1]:8081/RPC2", "http://[::1]:8081/RPC2"),
        ("no-such-master.invalid:8081", "http://no-such-master.invalid:8081/RPC2"),
        ("127.0.0.1:65535", "http://127.0.0.1:65535/RPC2"),
        ("https://m.example", "https://m.example/RPC2"),
    ],
)
def test_master_forms_accepted(given: str, url: str) -> None:
    """IPv6 masters (in brackets) and names that may resolve later are accepted at start-up."""
    assert parse("--master", given)["master"] == url


def test_secret_file_is_read_and_stripped(tmp_path: Path) -> None:
    """The secret is the file's one word; an empty file is refused (an empty secret guards nothing)."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    assert parse("--rpc-secret-file", str(secret))["rpc-secret"] == b"s3cret"
    for unusable in (b"\n", b"s3c\x7fret\n", b"s3cr\xc3\xa9t\n", b"two words\n"):
        secret.write_bytes(unusable)  # DEL (review 33) or non-ASCII: no header could carry it
        with pytest.raises(usage.UsageError, match="printable"):
            parse("--rpc-secret-file", str(secret))


class BusyReactor(MemoryReactorClock):
    """A reactor on which every port is taken."""

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        raise CannotListenError(interface, port, OSError(errno.EADDRINUSE, "Address already in use"))


def test_busy_port_is_one_line_naming_the_option(tmp_path: Path) -> None:
    """A port in use ends start-up with one line naming --http and the reason (no traceback)."""
    service = makeService(
        parse("--file", str(tmp_path / "s.json"), "--http", "tcp:8081"), reactor=BusyReactor()
    )
    with pytest.raises(CannotStart) as exited:
        service.privilegedStartService()
    assert str(exited.value) == "goto: --http: Address already in use (cannot listen on tcp:8081)"
    assert not isinstance(exited.value, SystemExit), "a daemonizing twistd reports Exceptions only"


def test_a_unix_socket_in_a_missing_directory_is_one_line_naming_the_option(tmp_path: Path) -> None:
    """Review 39: a ``unix:`` endpoint whose directory does not exist failed with a FileNotFoundError
    from its lock file, not ``CannotListenError``: a traceback."""
    from twisted.internet import reactor

    socket = tmp_path / "missing" / "http.sock"
    service = makeService(
        parse("--file", str(tmp_path / "s.json"), "--http", f"unix:{socket}"), reactor=reactor
    )
    with pytest.raises(CannotStart) as exited:
        service.privilegedStartService()
    assert str(exited.value) == f"goto: --http: No such file or directory (cannot listen on unix:{socket})"


def test_unwritable_access_log_is_one_line_and_creates_no_data_file(tmp_path: Path) -> None:
    """An access log that cannot be opened ends start-up with one line naming --access-log, before the
    data file is created."""
    data = tmp_path / "s.json"
    with pytest.raises(SystemExit) as exited:
        makeService(
            parse("--file", str(data), "--access-log", str(tmp_path / "no" / "access.log")),
            reactor=MemoryReactorClock(),  # not the session's reactor (makeService would give it the lean poll)
        )
    assert str(exited.value.code).startswith("goto: --access-log: cannot open ")
    assert "No such file or directory" in str(exited.value.code)
    assert not data.exists()


def test_ipv6_master_is_connected_to(log_events: LogCapture) -> None:
    """With --master [::1]:PORT a slave's call opens a TCP connection to ::1 (it used to raise inside
    the batch flush, leaving the caller waiting for ever)."""
    reactor = MemoryReactorClock()
    options = parse("--master", "[::1]:8081")
    store = make_slave_store(options, reactor, MultiService(), Metrics("slave"))
    call = store.get("abc")
    reactor.advance(0)
    [(host, port, *_)] = reactor.tcpClients
    assert (host, port) == ("::1", 8081)
    assert not has_fired(call)
    reactor.advance(float(options["rpc-timeout"]) + 1)
    assert failure_of(call).check(MasterUnreachable)
    assert not [event for event in log_events.events if event.get("log_failure") is not None]


def test_store_option_file_and_postgresql() -> None:
    """--store file:PATH is --file; --store postgresql://... selects PostgreSQL; nonsense, a password on
    the command line, --store with --file, and --store on a slave are refused."""
    assert parse("--store", "file:/tmp/x.json")["file"] == "/tmp/x.json"
    options = parse("--store", "postgresql://goto@db.internal/goto")
    assert options["store"] == "postgresql://goto@db.internal/goto" and options["file"] is None
    for args in (
        ("--store", "mysql://x"),
        ("--store", "postgresql://goto:secret@db/goto"),
        ("--store", "postgresql://db/goto?password=x"),
        ("--store", "file:a", "--file", "b"),
        ("--store", "postgresql://db/goto", "--master", "127.0.0.1:8081"),
        ("--store", "postgresql://db/goto", "--no-fsync"),
    ):
        with pytest.raises(usage.UsageError):
            parse(*args)


def test_several_masters_by_list_or_repeated_option() -> None:
    """--master a,b and --master a --master b both give a slave two masters, in order."""
    expected = ["http://127.0.0.1:8081/RPC2", "http://127.0.0.1:8082/RPC2"]
    assert parse("--master", "127.0.0.1:8081,127.0.0.1:8082")["masters"] == expected
    options = parse("--master", "127.0.0.1:8081", "--master", "127.0.0.1:8082")
    assert options["masters"] == expected and options["master"] == expected[0]
    with pytest.raises(usage.UsageError):
        parse("--master", "127.0.0.1:8081,nonsense")


@pytest.mark.parametrize(("rpc_timeout", "deadline"), [("5", 30.0), ("20", 41.0)])
def test_a_slaves_answer_deadline_outlasts_its_rpc(tmp_path: Path, rpc_timeout: str, deadline: float) -> None:
    """The fast path's answer deadline is never shorter than what a slave's look-up may take (a
    batch in flight, then its own call: twice --rpc-timeout), so a slow master answers 503 in time
    rather than the connection being cut first; at least the default 30 s."""
    reactor = MemoryReactorClock()
    options = parse("--master", "127.0.0.1:8081", "--rpc-timeout", rpc_timeout, "--http", "tcp:0")
    service = makeService(options, reactor=reactor)
    service.startService()
    try:
        [(_, site, *_)] = reactor.tcpServers
        assert isinstance(site, GotoSite)
        channel: Any = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert site.answer_deadline == channel.answer_deadline == deadline
    finally:
        service.stopService()


def test_a_goto_process_ignores_sighup_until_its_reloader_and_prints_cannot_start_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Review 34: a SIGHUP while the data file loaded (before the reloader took the signal) ended
    the process with status 129; a CannotStart in the foreground would print a traceback."""
    import signal
    import sys

    from goto_tw.lifecycle import prepare_process

    handler, hook = signal.getsignal(signal.SIGHUP), sys.excepthook
    try:
        prepare_process()
        installed = sys.excepthook
        prepare_process()
        assert sys.excepthook is installed, "twice: one hook, not a chain"
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        sys.excepthook(CannotStart, CannotStart("goto: --http: cannot listen on tcp:1: nope"), None)
        assert capsys.readouterr().err == "goto: --http: cannot listen on tcp:1: nope\n"
        try:
            raise ValueError("other")
        except ValueError as error:
            sys.excepthook(ValueError, error, error.__traceback__)
        assert "Traceback" in capsys.readouterr().err, "anything else as before"
    finally:
        signal.signal(signal.SIGHUP, handler)
        sys.excepthook = hook


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # Review 34: each of these started, serving without a secret, keys or blocklist, or failed
        # after listening with a traceback, or blamed --block-file for the port.
        (["--rpc", "--rpc-secret-file", ""], "--rpc-secret-file: an empty file name"),
        (["--api-keys-file", ""], "--api-keys-file: an empty file name"),
        (["--block-file", ""], "--block-file: an empty file name"),
        (["--file", ""], "--file: an empty file name"),
        (["--file", "/nonexistent/dir/store.json"], "--file: the data file's directory '/nonexistent/dir'"),
        # Each refusal names the option given (they named --file for --store file:).
        (
            ["--store", "file:/nonexistent/dir/store.json"],
            "--store: the data file's directory '/nonexistent/dir'",
        ),
        (["--master", "127.0.0.1:8081", "--store", "file:store.json"], "--store is for a master"),
        (["--http", "99999"], "--http: port 99999 is out of range"),
        (["--http", "tcp:-1"], "--http: port -1 is out of range"),
        (["--ops", "tcp:70000:interface=127.0.0.1"], "--ops: port 70000 is out of range"),
    ],
)
def test_empty_file_names_missing_folders_and_ports_out_of_range_are_refused(
    args: list[str], message: str
) -> None:
    with pytest.raises(usage.UsageError) as refused:
        Options().parseOptions(args)
    assert str(refused.value).startswith(message), refused.value


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # Review 34: accepted, then useless or worse.
        (["--master", "127.0.0.1:8081", "--rpc-timeout", "1e-300"], "--rpc-timeout: at least 0.001"),
        (["--cache-size", "99999999999999999999"], "--cache-size: at most 100,000,000"),
        (["--host", "https://a..b"], "--host: a host name has no empty label"),
        (
            ["--master", "127.0.0.1:8081", "--master", "127.0.0.1:8081"],
            "--master: '127.0.0.1:8081' is named twice",
        ),
        (
            ["--master", "127.0.0.1:8081,http://127.0.0.1:8081/RPC2"],
            "--master: 'http://127.0.0.1:8081/RPC2' is named twice",
        ),
        # Second read: one master in two spellings.
        (
            ["--master", "HTTP://127.0.0.1:8081/RPC2/,127.0.0.1:8081"],
            "--master: '127.0.0.1:8081' is named twice",
        ),
        (
            ["--master", "127.0.0.1:80,http://127.0.0.1/RPC2"],
            "--master: 'http://127.0.0.1/RPC2' is named twice",
        ),
        (["--master", "[::1]:8081,[0:0::1]:8081"], "--master: '[0:0::1]:8081' is named twice"),
        (["--master", "example.com:8081,EXAMPLE.com:8081"], "--master: 'EXAMPLE.com:8081' is named twice"),
    ],
)
def test_nonsense_that_started_before_is_refused(args: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError) as refused:
        Options().parseOptions(args)
    assert str(refused.value).startswith(message), refused.value


def test_help_reads_as_the_readme_does() -> None:
    """A new user's trial (stop 36): ``--help`` showed two defaults for --add-rate, '..' after
    --ops, a docstring's indentation inside --master's text, and "Must be positive" where each
    number has real bounds. Each description is one clean sentence run now, with the bounds, and
    each default once."""
    from goto_tw.tap import Options

    text = Options().getUsage(width=80)
    descriptions = " ".join(
        re.sub(r"^\s*(--\S+)?\s+", "", line) for line in text.splitlines() if line.strip()
    )
    assert "  " not in descriptions, "no run of spaces in a description"
    assert ".." not in text and "Must be positive" not in text
    flat = " ".join(text.split())
    assert "at most 100,000,000" in flat and "at least 0.001 and at most 600" in flat
    # Its default as an operator writes one (a new user's trial, stop 41: "10.0" read as no unit).
    assert flat.count("[default: 10/s]") == 1 and "10.0" not in flat
    assert "[IPv6]:PORT" in flat and "IP addresses" in flat


def _sites(service: object) -> list[object]:
    from twisted.application.service import IServiceCollection

    found = []
    factory = getattr(service, "factory", None)
    if factory is not None:
        found.append(factory)
    collection = IServiceCollection(service, None)
    if collection is not None:
        for child in collection:
            found.extend(_sites(child))
    return found


def test_a_slaves_ops_site_gets_the_slaves_answer_deadline(tmp_path: object) -> None:
    """Review 39: a slave with ``--rpc-timeout 20`` waits 41 s for an answer on its public site; its
    ``--ops`` site's health check asks the master the same way, and waits as long (not 30 s)."""
    from twisted.internet.testing import MemoryReactorClock

    from goto_tw.site import GotoSite
    from goto_tw.tap import makeService

    service = makeService(
        parse("--master", "127.0.0.1:8081", "--rpc-timeout", "20", "--ops", "tcp:9090:interface=127.0.0.1"),
        reactor=MemoryReactorClock(),
    )
    sites = [s for s in _sites(service) if isinstance(s, GotoSite)]
    assert len(sites) == 2, sites
    assert sorted(s.answer_deadline for s in sites) == [41.0, 41.0]


RPC_WITHOUT_SECRET = "/RPC2 takes calls without a secret"


def test_a_master_serving_rpc_without_a_secret_says_who_can_add(
    tmp_path: Path, log_events: LogCapture
) -> None:
    """A new user's trial (stop 41): --rpc without --rpc-secret-file started without a word, though
    anyone reaching --http can add through /RPC2, past --add-rate. Start-up warns, once; with the
    secret, or without --rpc, it does not."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    for args in (["--rpc"], ["--rpc", "--rpc-secret-file", str(secret)], []):
        makeService(
            parse("--file", str(tmp_path / "s.json"), "--http", "tcp:0", *args), reactor=MemoryReactorClock()
        )
    assert len([m for m in log_events.messages() if RPC_WITHOUT_SECRET in m]) == 1


def test_a_private_master_serving_rpc_needs_the_secret(tmp_path: Path) -> None:
    """A new user's trial (stop 41): a --private master with --rpc and no secret stored a standard
    XML-RPC client's Store.Put without any API key (such a caller is taken for a slave that checks
    keys): start-up refuses it, naming the option that closes the hole."""
    keys = tmp_path / "keys"
    keys.write_text("a-key-of-sixteen-or-more\n")
    with pytest.raises(usage.UsageError, match="--private with --rpc needs --rpc-secret-file"):
        parse("--private", "--api-keys-file", str(keys), "--rpc")
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    assert parse("--private", "--api-keys-file", str(keys), "--rpc", "--rpc-secret-file", str(secret))[
        "private"
    ]
    assert parse("--private", "--api-keys-file", str(keys))["private"]  # no /RPC2: nothing to guard
