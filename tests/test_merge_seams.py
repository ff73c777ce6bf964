"""Where issues 10, 11 and 12 meet: custom keys, disabled keys, the blocklist, slaves' adds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from zope.interface import implementer

from goto_tw.blocklist import LinkPolicy
from goto_tw.errors import InvalidURL, KeyExists
from goto_tw.interfaces import ILinkAdder, IURLStore
from goto_tw.proxystore import ProxyStore
from goto_tw.store import URLStore
from tests.conftest import LogCapture
from tests.helpers import failure_of, result_of


@pytest.mark.parametrize(
    "url",
    [
        "http://evil%2Eexample/",  # browsers percent-decode the host
        "http://evil.example\\.ok.com/",  # and read a backslash as a slash
        "http://go.test\\.ok.com/0",  # a loop back to the service itself
        "https://evil.example:443\\@ok.com/",
    ],
)
def test_hosts_a_browser_reads_differently_are_refused(tmp_path: Path, url: str) -> None:
    """The blocklist and the loop check read the host as Python does; a host a browser would read
    as another (``%`` escapes, a backslash) is refused rather than let through."""
    blocks = tmp_path / "blocked"
    blocks.write_text("evil.example\n")
    policy = LinkPolicy(frozenset({"go.test"}), str(blocks))
    with pytest.raises(InvalidURL):
        policy(url)
    policy("https://ok.example:8443/a%2Eb?c=%5C")  # escapes after the host are fine


def test_a_unicode_domain_in_the_block_file_blocks_its_stored_form(tmp_path: Path) -> None:
    """URLs are stored in ASCII (punycode); a block file may name the domain in Unicode."""
    blocks = tmp_path / "blocked"
    blocks.write_text("bücher.example\n", encoding="utf-8")
    policy = LinkPolicy(frozenset(), str(blocks))
    with pytest.raises(InvalidURL):
        policy("https://xn--bcher-kva.example/x")
    with pytest.raises(InvalidURL):
        policy("https://shop.xn--bcher-kva.example/x")


@implementer(IURLStore, ILinkAdder)
class AddingMaster:
    """A master whose adds wait until the test answers them."""

    def __init__(self) -> None:
        self.adds: list[Deferred[tuple[str, bool]]] = []

    def get(self, key: str) -> Deferred[str]:
        return Deferred()

    def put(self, url: str) -> Deferred[str]:
        return Deferred()

    def add(self, url: str, key: str | None = None) -> Deferred[tuple[str, bool]]:
        added: Deferred[tuple[str, bool]] = Deferred()
        self.adds.append(added)
        return added

    def count(self) -> int:
        return 0


def test_a_slaves_custom_and_browser_adds_pass_its_policy() -> None:
    """A slave's own blocklist applies to ``add`` (custom keys, browsers, the API) as to ``put``."""
    master = AddingMaster()
    slave = ProxyStore(master, Clock())

    def policy(url: str) -> None:
        if "evil.example" in url:
            raise InvalidURL("links to this domain are not accepted here")

    slave.policy = policy
    assert failure_of(slave.add("https://evil.example/", "mine")).check(InvalidURL)
    assert failure_of(slave.add("https://evil.example/")).check(InvalidURL)
    assert master.adds == [], "nothing reached the master"


def test_an_add_answered_after_a_forget_is_not_cached() -> None:
    """An add whose answer comes after the key was dropped (disabled meanwhile) is passed on, never
    cached: the slave would otherwise redirect a disabled link for ever."""
    master = AddingMaster()
    slave = ProxyStore(master, Clock())
    added = slave.add("https://a.example/", "k")
    slave.forget(["k"])
    master.adds[0].callback(("k", False))
    assert result_of(added) == ("k", False)
    assert slave.lookup("k") is None


def test_a_custom_key_the_counter_has_passed_is_refused() -> None:
    """A counter key below where the counter resumes may have been handed out before a power loss
    (``--no-fsync``): nobody may claim it as a custom key for another URL."""
    store = URLStore({"0": "https://a.example/"}, next_index=500)
    assert failure_of(store.add("https://evil.example/", "7")).check(KeyExists)
    assert failure_of(store.add("https://evil.example/", "0")).check(KeyExists)
    assert result_of(store.add("https://a.example/", "0")) == ("0", False)
    assert result_of(store.add("https://b.example/", "my-launch")) == ("my-launch", True)
    assert result_of(store.add("https://c.example/", "zz")) == ("zz", True)  # index 3843, ahead
    assert result_of(succeed(store.lookup("zz"))) == "https://c.example/"


@pytest.mark.parametrize(
    ("url", "loops"),
    [
        ("http://go.test/0", True),
        ("https://go.test/0", True),
        ("http://go.test:8080/0", True),
        ("https://go.test:443/0", True),
        ("http://go.test:9000/", False),  # another service on the same machine
        ("http://other.test:8080/", False),
    ],
)
def test_a_link_to_the_service_itself_loops_but_another_port_does_not(url: str, loops: bool) -> None:
    """The service's own host loops on its port and the default ports (it may sit behind a proxy);
    another explicit port on the same host is another service (the browser test links the slave to
    its master, both on 127.0.0.1)."""
    policy = LinkPolicy(frozenset({"go.test:8080"}))
    if loops:
        with pytest.raises(InvalidURL, match="loop"):
            policy(url)
    else:
        policy(url)


def test_a_double_submitted_custom_add_is_one_link() -> None:
    """The same custom pair added twice while the first is being written: both answered with the key,
    one record written (not a 409 for the second)."""
    from tests.fakes import ManualLog

    log = ManualLog()
    store = URLStore(log=log)
    first = store.add("https://a.example/", "launch")
    second = store.add("https://a.example/", "launch")
    assert len(log.appended) == 1
    log.complete_all()
    assert result_of(first) == ("launch", True)
    assert result_of(second)[0] == "launch"
    other = store.add("https://b.example/", "launch")
    assert failure_of(other).check(KeyExists)


def test_a_refused_api_call_is_logged_without_the_clients_control_bytes(log_events: LogCapture) -> None:
    """The path of a request refused for its API key reaches the log escaped (no terminal controls)."""
    from twisted.web.test.requesthelper import DummyRequest

    from goto_tw.auth import APIKeys

    keys = APIKeys(None, Clock(), (b"right-key-0123456789",))
    request: Any = DummyRequest([b"api", b"v1", b"links"])  # Request's API, untyped
    request.path = b"/api/v1/links/\x1b[2Jx"
    assert not keys.authorize(request, "192.0.2.7")
    [line] = [m for m in log_events.messages() if "API key" in m]
    assert "\x1b" not in line and "\\x1b" in line
