"""``twistd goto``: option parsing, plugin discovery and the service wiring."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceMaker, MultiService
from twisted.internet.testing import MemoryReactor
from twisted.plugin import getPlugins
from twisted.python import usage

from goto_tw.persistence import AppendLog
from goto_tw.tap import Options, default_host, makeService


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
    """With no options: port 8080, store.json, short URLs on localhost:8080, no fsync."""
    options = parse()
    assert options["http"] == "tcp:8080"
    assert options["file"] == "store.json"
    assert options["host"] == "localhost:8080"
    assert not options["fsync"]


def test_port_number_becomes_an_endpoint() -> None:
    """``--http 8081`` is shorthand for ``tcp:8081``; the default host follows the port."""
    options = parse("--http", "8081")
    assert options["http"] == "tcp:8081"
    assert options["host"] == "localhost:8081"


def test_endpoint_strings_are_accepted() -> None:
    """Any Twisted server endpoint string works, e.g. bound to one interface."""
    assert parse("--http", "tcp:8081:interface=127.0.0.1")["http"] == "tcp:8081:interface=127.0.0.1"


def test_bad_endpoint_is_a_usage_error() -> None:
    """A typo in --http is reported at start-up, before anything runs."""
    with pytest.raises(usage.UsageError, match="--http"):
        parse("--http", "nonsense:1")


def test_explicit_host_wins() -> None:
    """--host is written into short URLs as given."""
    assert parse("--host", "go.example.com")["host"] == "go.example.com"


@pytest.mark.parametrize(
    ("endpoint", "host"),
    [("tcp:80", "localhost:80"), ("tcp:port=81:interface=::1", "localhost:81"), ("unix:/tmp/s", "localhost")],
)
def test_default_host_from_endpoint(endpoint: str, host: str) -> None:
    """The default host names the port the service listens on, where there is one."""
    assert default_host(endpoint) == host


def test_make_service_writer_first_then_listener(tmp_path: Path) -> None:
    """The writer starts first and stops last, so the file is flushed after the listener stopped."""
    reactor = MemoryReactor()
    service = makeService(parse("--file", str(tmp_path / "s.json"), "--http", "tcp:0"), reactor=reactor)
    assert isinstance(service, MultiService)
    children = list(service)
    assert isinstance(children[0], AppendLog)
    assert isinstance(children[-1], StreamServerEndpointService)
    service.startService()
    assert len(reactor.tcpServers) == 1
    service.stopService()


def test_corrupt_data_file_stops_start_up_with_a_clear_message(tmp_path: Path) -> None:
    """A corrupt record exits with a one-line message naming the file and line, not a traceback."""
    data = tmp_path / "s.json"
    data.write_text('{"key":"0","url":"http://a/"}\nbroken\n{"key":"2","url":"http://c/"}\n')
    with pytest.raises(SystemExit) as exited:
        makeService(parse("--file", str(data)), reactor=MemoryReactor())
    assert f"{data}, line 2" in str(exited.value.code)


def test_master_option_makes_a_slave_that_writes_no_file(tmp_path: Path) -> None:
    """--master wires a ProxyStore and never touches the data file."""
    reactor = MemoryReactor()
    data = tmp_path / "s.json"
    service = makeService(parse("--master", "127.0.0.1:8081", "--file", str(data)), reactor=reactor)
    assert isinstance(service, MultiService)
    assert not any(isinstance(child, AppendLog) for child in service)
    service.startService()
    service.stopService()
    assert not data.exists()


def test_slave_refuses_master_only_options() -> None:
    """--rpc and --fsync make no sense on a slave; saying so beats silently ignoring them."""
    for flag in ("--rpc", "--fsync"):
        with pytest.raises(usage.UsageError, match="slave"):
            parse("--master", "127.0.0.1:8081", flag)


@pytest.mark.parametrize(
    "args",
    [
        ["--master", "not a url"],
        ["--cache-size", "0"],
        ["--cache-size", "many"],
        ["--rpc-timeout", "-1"],
        ["--rpc-secret-file", "/nonexistent/secret"],
    ],
)
def test_bad_option_values_are_usage_errors(args: list[str]) -> None:
    """Bad values are refused at start-up with a usage error naming the option."""
    with pytest.raises(usage.UsageError):
        parse(*args)


def test_secret_file_is_read_and_stripped(tmp_path: Path) -> None:
    """The secret is the file's one word; an empty file is refused (an empty secret guards nothing)."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    assert parse("--rpc-secret-file", str(secret))["rpc-secret"] == b"s3cret"
    secret.write_text("\n")
    with pytest.raises(usage.UsageError, match="printable"):
        parse("--rpc-secret-file", str(secret))
