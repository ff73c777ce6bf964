"""Unit tests of issue 11's parts: the change feed, tombstones in the data file, the store's admin
role, the slave's coherence poller, API keys and the add rate limit (no sockets; a Clock)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from goto_tw.auth import MAX_PROBLEMS_LOGGED, APIKeys, KeysFileError, parse_keys
from goto_tw.changes import ChangeFeed
from goto_tw.clients import ClientAddresses, parse_proxy
from goto_tw.coherence import CacheCoherence
from goto_tw.errors import KeyDisabled, KeyNotFound, MasterUnreachable
from goto_tw.interfaces import IChangeSource, ILinkAdmin, IRecordLog, ITombstoneLog, IURLStore
from goto_tw.persistence import CorruptDataFile, open_data_file
from goto_tw.proxystore import ProxyStore
from goto_tw.ratelimit import AddLimiter, limited_message, parse_rate
from goto_tw.store import URLStore
from goto_tw.tombstones import encode_tombstone
from tests.conftest import LogCapture
from tests.helpers import failure_of, result_of


def test_feed_lists_changes_after_a_number_and_says_when_it_cannot() -> None:
    """Changes after ``since`` in order; another epoch, the future or a number the bounded feed
    dropped are answered incomplete (the slave drops its cache)."""
    feed = ChangeFeed("e", capacity=3)
    for key in "abcd":
        feed.record(key)
    assert feed.since("e", 2) == ("e", 4, ["c", "d"], True)
    assert feed.since("e", 4) == ("e", 4, [], True)
    assert feed.since("e", 0).complete is False  # 1 was dropped: more than 3 behind
    assert feed.since("other", 4).complete is False
    assert feed.since("e", 9).complete is False


def write(path: Path, *lines: bytes) -> None:
    path.write_bytes(b"".join(lines))


def test_tombstones_load_with_their_pairs(tmp_path: Path) -> None:
    """A tombstone after its pair disables the key on load; the pairs load as before."""
    path = tmp_path / "data.json"
    write(
        path, b'{"key":"0","url":"http://a/"}\n', b'{"key":"1","url":"http://b/"}\n', encode_tombstone("0", 7)
    )
    data = open_data_file(str(path))
    data.record_file.close()
    assert data.disabled == {"0": 7} and dict(data.urls) == {"0": "http://a/", "1": "http://b/"}


@pytest.mark.parametrize(
    "line",
    [
        encode_tombstone("9", 1),
        b'{"key":"0","disabled":"x"}\n',
        b'{"key":"0","disabled":1,"z":2}\n',
        b'{"key":"0","disabled":-1}\n',  # a time before the epoch: no program writes one
        b'{"key":"0","disabled":true}\n',
    ],
)
def test_a_bad_tombstone_stops_start_up(tmp_path: Path, line: bytes) -> None:
    """A tombstone of an unknown key, or a damaged one (a time that is not whole seconds since the
    epoch among them), is corruption named by line."""
    path = tmp_path / "data.json"
    write(path, b'{"key":"0","url":"http://a/"}\n', line)
    with pytest.raises(CorruptDataFile, match="line 2"):
        open_data_file(str(path))


@implementer(IRecordLog, ITombstoneLog)
class MemoryTombstones:
    """An append log keeping what it was given, acknowledging at once."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, Any]] = []

    def append(self, key: str, url: str, custom: bool = False) -> Deferred[None]:
        self.lines.append((key, url))
        return succeed(None)

    def append_tombstone(self, key: str, when: int) -> Deferred[None]:
        self.lines.append((key, when))
        return succeed(None)


def test_store_disables_a_key_for_ever() -> None:
    """Disabling writes a tombstone, then get is 410, lookup None (fast path defers), the feed has
    it, the listing shows when, and adding its URL again gives a new key."""
    log = MemoryTombstones()
    clock = Clock()
    clock.advance(100)
    store = URLStore(log=log, clock=clock)
    verifyObject(ILinkAdmin, store)
    verifyObject(IChangeSource, store)
    key = result_of(store.put("https://x.example/"))
    assert result_of(store.disable(key)) == 100
    assert log.lines[-1] == (key, 100)
    assert failure_of(store.get(key)).check(KeyDisabled)
    assert store.lookup(key) is None
    assert store.changes(store.feed.epoch, 0).keys == [key]
    assert store.links(None, 10) == [(key, "https://x.example/", 100)]
    assert result_of(store.put("https://x.example/")) != key
    assert failure_of(store.disable("zz")).check(KeyNotFound)


@implementer(IURLStore)
class FakeMaster:
    def __init__(self) -> None:
        self.urls = {"k": "https://a.example/"}
        self.calls: list[tuple[Any, ...]] = []
        self.pending: list[Deferred[Any]] = []

    def get(self, key: str) -> Deferred[str]:
        if key in self.urls:
            return succeed(self.urls[key])
        from twisted.internet.defer import fail

        return fail(KeyDisabled("gone"))

    def put(self, url: str) -> Deferred[str]:
        return succeed("n")

    def count(self) -> int:
        return 0

    def call(self, method: str, *params: Any) -> Deferred[Any]:
        self.calls.append((method, *params))
        answer: Deferred[Any] = Deferred()
        self.pending.append(answer)
        return answer


def test_poller_drops_changed_keys_once_a_second() -> None:
    """The first poll (no epoch) drops the cache; later ones drop just the keys listed; a disabled
    key then answers 410 from the slave and is remembered; one poll in flight at most."""
    clock, master = Clock(), FakeMaster()
    cache = ProxyStore(master, clock)
    assert result_of(cache.get("k")) == "https://a.example/"
    poller = CacheCoherence(master.call, cache, clock)
    poller.startService()
    assert master.calls == [("Store.Changes", "", 0)]
    master.pending.pop().callback({"epoch": "e", "seq": 5, "keys": [], "complete": False})
    assert cache.lookup("k") is None
    assert result_of(cache.get("k")) == "https://a.example/"
    clock.advance(1)
    assert master.calls[-1] == ("Store.Changes", "e", 5)
    clock.advance(1)
    assert len(master.calls) == 2  # the first is still in flight
    del master.urls["k"]
    master.pending.pop().callback({"epoch": "e", "seq": 6, "keys": ["k"], "complete": True})
    assert cache.lookup("k") is None
    assert failure_of(cache.get("k")).check(KeyDisabled)
    assert failure_of(cache.get("k")).check(KeyDisabled)
    poller.stopService()


def test_stopping_with_a_poll_in_flight_logs_nothing(log_events: LogCapture) -> None:
    """Review 39: stopping cancels the poll in flight, and its CancelledError was logged as a failed
    poll ("Polling the master's change feed failed (); retrying every second") at every stop."""
    clock, master = Clock(), FakeMaster()
    poller = CacheCoherence(master.call, ProxyStore(master, clock), clock)
    poller.startService()
    assert master.calls == [("Store.Changes", "", 0)] and master.pending
    poller.stopService()
    assert not [m for m in log_events.messages() if "change feed" in m]
    assert not [event for event in log_events.events if event.get("log_failure") is not None]


def test_an_answer_asked_for_before_a_forget_is_not_cached() -> None:
    """A look-up in flight when its key is forgotten is answered but not cached (it may be stale)."""
    clock = Clock()
    slow: Deferred[str] = Deferred()

    class Slow(FakeMaster):
        def get(self, key: str) -> Deferred[str]:
            return slow

    cache = ProxyStore(Slow(), clock)
    asked = cache.get("k")
    cache.forget(["k"])
    slow.callback("https://a.example/")
    assert result_of(asked) == "https://a.example/"
    assert cache.lookup("k") is None


ONE = b"operator-key-one-0001"
TWO = b"operator-key-two-0002"


def test_keys_file_parsing_and_constant_time_check(tmp_path: Path, log_events: LogCapture) -> None:
    """Comments and blank lines are skipped; at start a key with spaces or a short one is left out
    and logged (review 35's second read: a file that served before must still start the service),
    and a file with no good line at all is refused."""
    assert parse_keys("f", b"# c\n\n" + ONE + b" # note\n " + TWO + b"\n") == (ONE, TWO)
    assert parse_keys("f", ONE + b"\na b\nfifteen-bytes-k\n") == (ONE,)
    problems = [m for m in log_events.messages() if "Left out of the API keys" in m]
    assert len(problems) == 2 and "f, line 2" in problems[0] and "f, line 3" in problems[1]
    for bad in (b"a b\n", b"# none\n", b"fifteen-bytes-k\n"):
        with pytest.raises(KeysFileError, match="holds no usable key"):
            parse_keys("f", bad)
    path = tmp_path / "keys"
    path.write_bytes(ONE + b"\n")
    keys = APIKeys.from_file(str(path), Clock())
    assert keys.valid(ONE) and not keys.valid(TWO) and not keys.valid(None)
    path.write_bytes(TWO + b"\n")
    keys.reload()
    assert keys.valid(TWO) and not keys.valid(ONE)


def test_a_key_cut_short_by_a_comment_is_never_a_key() -> None:
    """Review 35: ``x7#Qm2vLp9RtZk4WcY8nB3sD`` was the key ``x7`` (what follows ``#`` is a comment),
    two characters anyone could guess. A key is 16 bytes at least: that line holds none."""
    with pytest.raises(KeysFileError, match="16 to 256 bytes"):
        parse_keys("f", b"x7#Qm2vLp9RtZk4WcY8nB3sD\n")
    assert parse_keys("f", ONE + b"#comment\n") == (ONE,)


def test_a_key_glued_to_a_comment_is_said(log_events: LogCapture) -> None:
    """A new user's trial (stop 41): ``abcdefghijklmnop#x`` was the key ``abcdefghijklmnop`` without a
    word, and its operator's clients sent the whole line (401). It still is (files that served stay
    as they were), and the log says so, naming the line, without the key; a comment after a space
    says nothing."""
    assert parse_keys("f", ONE + b"#x\n" + TWO + b" # a note\n#" + ONE + b"\n") == (ONE, TWO)
    said = [m for m in log_events.messages() if "the key is the text before '#'" in m]
    assert said == [
        "f, line(s) 1: the key is the text before '#', which starts a comment; write a space before a "
        "comment if that is what is meant"
    ]


def test_keys_glued_to_comments_are_said_in_one_bounded_line(log_events: LogCapture) -> None:
    """A hostile review (stop 42): a file of 5,000 ``KEY#team`` lines logged 5,000 warnings, again on
    every SIGHUP. It is one line naming the first MAX_PROBLEMS_LOGGED lines and how many more."""
    lines = [b"%016d#team" % number for number in range(5000)]
    assert len(parse_keys("f", b"\n".join(lines))) == 5000
    said = [m for m in log_events.messages() if "the key is the text before '#'" in m]
    numbers = ", ".join(str(number) for number in range(1, MAX_PROBLEMS_LOGGED + 1))
    assert said == [
        f"f, line(s) {numbers} and {5000 - MAX_PROBLEMS_LOGGED} more: the key is the text before '#', "
        "which starts a comment; write a space before a comment if that is what is meant"
    ]


def test_a_reload_revokes_what_the_file_no_longer_holds(tmp_path: Path, log_events: LogCapture) -> None:
    """Review 35: emptying the keys file, commenting the leaked key out, or leaving a bad line beside
    it, then SIGHUP, kept the leaked key working (the reload failed and kept the keys in force). The
    keys in force are now exactly the file's good lines; only a file that cannot be read keeps them."""
    path = tmp_path / "keys"
    path.write_bytes(ONE + b"\n" + TWO + b"\n")
    keys = APIKeys.from_file(str(path), Clock())
    path.write_bytes(b"# " + ONE + b" (leaked)\n" + TWO + b"\nnot a key\n")
    keys.reload()
    assert not keys.valid(ONE) and keys.valid(TWO), "the good line stays, the bad one is left out"
    assert any("Left out of the API keys" in m and "line 3" in m for m in log_events.messages())
    for content in (b"", b"# every key revoked\n", b"bad key\n"):
        path.write_bytes(TWO + b"\n")
        keys.reload()
        path.write_bytes(content)
        keys.reload()
        assert len(keys) == 0 and not keys.valid(TWO), content
    assert any("No API key is in force now" in m for m in log_events.messages())
    path.write_bytes(TWO + b"\n")
    keys.reload()
    path.unlink()
    keys.reload()
    assert keys.valid(TWO), "a file that cannot be read keeps the keys in force"
    assert any("Keeping the 1 API key(s) in force: cannot read" in m for m in log_events.messages())


def test_limiter_buckets_and_bound() -> None:
    """Burst then rate; the wait is whole seconds; the table of clients never passes its bound."""
    clock = Clock()
    limiter = AddLimiter(0.5, 2, clock, max_clients=3)
    assert [limiter.admit("a") for _ in range(3)] == [None, None, 2]
    clock.advance(2)
    assert limiter.admit("a") is None
    for number in range(10):
        limiter.admit(f"c{number}")
    assert len(limiter) == 3
    assert parse_rate("10/s") == 10 and parse_rate("60/m") == 1
    with pytest.raises(ValueError):
        parse_rate("0/s")


def test_forwarded_for_only_from_trusted_proxies() -> None:
    """The right-most untrusted address from a trusted peer; the peer otherwise or on garbage."""
    clients = ClientAddresses(frozenset({"10.0.0.1"}))
    assert clients.client("10.0.0.1", [b"1.2.3.4, 5.6.7.8"]) == "5.6.7.8"
    assert clients.client("10.0.0.1", [b"1.2.3.4, 10.0.0.1"]) == "1.2.3.4"
    assert clients.client("9.9.9.9", [b"1.2.3.4"]) == "9.9.9.9"
    assert clients.client("10.0.0.1", [b"nonsense"]) == "10.0.0.1"
    head = b"GET /add?url=x HTTP/1.1\r\nX-Forwarded-For: 7.7.7.7\r\n\r\n"
    assert clients.of_head("10.0.0.1", head) == "7.7.7.7"
    assert ClientAddresses().of_head("10.0.0.1", head) == "10.0.0.1"


@pytest.mark.parametrize("written", ["127.0.0.1", "::ffff:127.0.0.1", "::ffff:7f00:1"])
def test_a_trusted_proxy_matches_however_its_address_is_spelt(written: str) -> None:
    """A ``tcp6:`` listener reports an IPv4 peer IPv4-mapped; the option may be written either way:
    the proxy is trusted, the address it names is the client (a mapped one as plain IPv4)."""
    clients = ClientAddresses(frozenset({parse_proxy(written)}))
    head = b"GET /add?url=x HTTP/1.1\r\nX-Forwarded-For: ::ffff:198.51.100.7\r\n\r\n"
    for peer in ("127.0.0.1", "::ffff:127.0.0.1"):
        assert clients.of_head(peer, head) == "198.51.100.7"
        assert clients.client(peer, [b"198.51.100.8, ::ffff:127.0.0.1"]) == "198.51.100.8"
    assert clients.of_head("::ffff:127.0.0.2", head) == "::ffff:127.0.0.2"
    assert clients.of_head("::1", head) == "::1"


def test_the_remembered_peer_spellings_are_bounded() -> None:
    """Peers seen behind ``--trusted-proxy`` are remembered in normal form, a bounded number of them."""
    from goto_tw import clients as module

    clients = ClientAddresses(frozenset({"10.0.0.1"}))
    for number in range(module._NORMAL_FORMS_KEPT + 500):
        assert not clients.is_trusted(f"::ffff:192.0.{number // 256}.{number % 256}")
    assert module._normal_peer.cache_info().currsize <= module._NORMAL_FORMS_KEPT
    assert clients.is_trusted("::ffff:10.0.0.1")


def test_after_an_outage_a_slave_serving_only_cached_keys_finds_its_master_back() -> None:
    """A master marked down by one failed miss, then back, while the slave serves cached keys only:
    the poller asks whether it is back (review 33: it waited for a miss that never came), then polls
    the feed at once, so a link disabled during the outage stops redirecting within seconds."""
    clock, master = Clock(), FakeMaster()
    master.urls["cached"] = "https://cached.example/"
    cache = ProxyStore(master, clock)
    assert result_of(cache.get("cached")) == "https://cached.example/"
    poller = CacheCoherence(master.call, cache, clock)
    poller.startService()
    master.pending.pop().callback({"epoch": "e", "seq": 1, "keys": [], "complete": True})
    down = [True]
    answer_get = master.get

    def get(key: str) -> Deferred[str]:
        if down[0]:
            from twisted.internet.defer import fail

            return fail(MasterUnreachable("connection refused"))
        return answer_get(key)

    master.get = get  # type: ignore[method-assign]
    assert failure_of(cache.get("missing")).check(MasterUnreachable)
    assert not cache.master_reachable
    polls = len(master.calls)
    for _ in range(3):
        clock.advance(1)
        assert result_of(cache.get("cached")) == "https://cached.example/"
    assert len(master.calls) == polls, "no feed polls while the master is down"
    down[0] = False
    del master.urls["cached"]  # disabled on the master meanwhile
    clock.advance(1)
    assert cache.master_reachable
    assert master.calls[-1] == ("Store.Changes", "e", 1)
    master.pending.pop().callback({"epoch": "e", "seq": 2, "keys": ["cached"], "complete": True})
    assert failure_of(cache.get("cached")).check(KeyDisabled)
    poller.stopService()


def test_refusals_are_logged_once_a_second_per_slash_64_and_ten_a_second_in_all(log_events: Any) -> None:
    """Review 34: refusals were logged once a second per address, so addresses of one IPv6 /64 (as
    the add rate limit counts them: one client) logged 500 lines a second. Now per /64, at most
    MAX_REFUSAL_LINES a second in all, the lines left out counted in the next one."""
    from twisted.internet.task import Clock
    from twisted.web.test.requesthelper import DummyRequest

    from goto_tw.auth import MAX_REFUSAL_LINES, APIKeys

    clock = Clock()
    clock.advance(100)
    keys = APIKeys(None, clock, (b"right",))

    def refusals() -> list[str]:
        return [m for m in log_events.messages() if "missing or wrong API key" in m]

    def request() -> Any:  # a Request as authorize reads it: its path, its headers
        made: Any = DummyRequest([b"api"])
        made.path = b"/api/v1/links"
        return made

    for host in range(500):
        assert not keys.authorize(request(), f"2001:db8:1:2::{host:x}")
    assert len(refusals()) == 1
    for client in range(50):
        keys.authorize(request(), f"192.0.2.{client}")
    assert len(refusals()) == MAX_REFUSAL_LINES
    assert "(499 refusals not logged since the last line)" in refusals()[1]
    clock.advance(1.0)
    keys.authorize(request(), "2001:db8:1:2::1")
    assert len(refusals()) == MAX_REFUSAL_LINES + 1
    assert f"({50 - (MAX_REFUSAL_LINES - 1)} refusals not logged since the last line)" in refusals()[-1]


def test_a_full_change_feed_answer_is_followed_by_the_next_poll_at_once() -> None:
    """Review 35: a slave learned at most MAX_KEYS_PER_ANSWER disabled keys a poll, one poll a
    second: after 8,000 disables (a bulk disable, or an outage) it served some of them for 8 s. A
    full answer is followed by the next poll at once; a short one waits for the next second."""
    from goto_tw.changes import MAX_KEYS_PER_ANSWER

    clock, master = Clock(), FakeMaster()
    cache = ProxyStore(master, clock)
    poller = CacheCoherence(master.call, cache, clock)
    poller.startService()
    master.pending.pop().callback({"epoch": "e", "seq": 0, "keys": [], "complete": True})
    clock.advance(1)
    full = [f"k{n}" for n in range(MAX_KEYS_PER_ANSWER)]
    master.pending.pop().callback({"epoch": "e", "seq": MAX_KEYS_PER_ANSWER, "keys": full, "complete": True})
    assert master.calls[-1] == ("Store.Changes", "e", MAX_KEYS_PER_ANSWER), "asked again at once"
    master.pending.pop().callback(
        {"epoch": "e", "seq": MAX_KEYS_PER_ANSWER + 1, "keys": ["x"], "complete": True}
    )
    calls = len(master.calls)
    assert not master.pending and calls == 3
    clock.advance(1)
    assert len(master.calls) == calls + 1, "then once a second again"
    poller.stopService()


@pytest.mark.parametrize(
    ("wait", "when"),
    [
        (1, "1 second"),
        (59, "59 seconds"),
        (119, "119 seconds"),
        (120, "2 minutes"),
        (3600, "60 minutes"),
        (7199, "120 minutes"),
        (7200, "2 hours"),
        (86400, "24 hours"),
    ],
)
def test_a_limited_client_is_told_when_to_try_again(wait: int, when: str) -> None:
    """A new user's trial (stop 41): ``--add-rate 1/h`` answered "try again shortly" beside
    ``Retry-After: 3600``. The text says the wait, in words."""
    assert limited_message(wait) == f"Too many links added from your address; try again in {when}."
