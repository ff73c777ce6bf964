"""Behaviours the code has and no test held (review 35's mutation audit: each test here fails
under a small plausible bug that the suite let through)."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger

from goto_tw.blocklist import LinkPolicy
from goto_tw.changes import MAX_KEYS_PER_ANSWER, ChangeFeed
from goto_tw.errors import InvalidURL
from goto_tw.keybound import write_key_bound
from goto_tw.proxystore import ProxyStore
from goto_tw.ratelimit import AddLimiter
from goto_tw.throttledlog import ThrottledError
from goto_tw.urls import MAX_URL_LENGTH, validate_url
from tests.conftest import LogCapture
from tests.fakes import FakeMaster
from tests.helpers import result_of


def test_the_change_feed_pages_past_one_answer_and_misses_no_key() -> None:
    """More changes than one answer carries: the next answer starts where the last stopped (an
    answer positioned at the latest change would have skipped the rest for good)."""
    feed = ChangeFeed("e")
    keys = [f"k{n}" for n in range(MAX_KEYS_PER_ANSWER + 500)]
    for key in keys:
        feed.record(key)
    first = feed.since("e", 0)
    assert first.keys == keys[:MAX_KEYS_PER_ANSWER] and first.seq == MAX_KEYS_PER_ANSWER and first.complete
    second = feed.since("e", first.seq)
    assert second.keys == keys[MAX_KEYS_PER_ANSWER:] and second.seq == len(keys)


def test_a_put_answered_after_a_forget_is_passed_on_but_not_cached() -> None:
    """As for look-ups: a put's answer that left before ``forget`` may predate the change."""
    master = FakeMaster()
    cache = ProxyStore(master, Clock())
    asked = cache.put("https://a.example/")
    cache.forget(["k"])
    master.answer("k")
    assert result_of(asked) == "k"
    assert cache.lookup("k") is None


def test_the_limiter_forgets_the_client_seen_longest_ago() -> None:
    """Past its bound the limiter drops the least recently seen client's bucket, not the newest
    (then every new client would start afresh: never limited) nor the one made first."""
    clock = Clock()
    limiter = AddLimiter(0.001, 1, clock, max_clients=2)
    assert limiter.admit("a") is None and limiter.admit("b") is None
    assert limiter.admit("a") is not None  # a is seen again: b is now the least recent
    assert limiter.admit("c") is None  # drops b
    assert limiter.admit("a") is not None, "a's empty bucket kept"
    assert limiter.admit("c") is not None, "c's bucket kept"
    assert limiter.admit("b") is None, "b was the one forgotten"


def test_a_wait_is_rounded_up_to_whole_seconds() -> None:
    limiter = AddLimiter(0.4, 1, Clock())
    limiter.admit("a")
    assert limiter.admit("a") == 3  # 2.5 s until the next token: Retry-After 3, never 2


def test_the_key_bound_is_synced_and_so_is_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bound that a power loss can roll back would let keys be handed out twice: the file and
    the folder that holds its new name are both synced."""
    import os

    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr("goto_tw.keybound.os.fsync", fsync)
    path = tmp_path / "store.json.bound"
    write_key_bound(str(path), 4096)
    assert path.read_bytes() == b"4096\n"
    assert len(synced) == 2, "the file, then its folder"


@pytest.mark.parametrize(
    "url",
    [
        "https://b\u00fccher.example/" + "\u00e4" * (MAX_URL_LENGTH // 6),  # short as text, too long as ASCII
        "http://example.com:65536/",
        "http://example.com/\u0085",  # a C1 control
    ],
)
def test_urls_at_the_bounds_are_refused(url: str) -> None:
    with pytest.raises(InvalidURL):
        validate_url(url)


def test_a_host_that_is_a_number_past_ipv4_is_refused_and_the_last_one_is_an_address() -> None:
    """2**32 is no IPv4 address a browser could open; 2**32 - 1 is 255.255.255.255."""
    policy = LinkPolicy()
    with pytest.raises(InvalidURL, match="no IP address"):
        policy("http://4294967296/")
    policy("http://4294967295/")


def test_a_block_file_reload_that_fails_keeps_the_list(tmp_path: Path) -> None:
    """A file that cannot be read on SIGHUP keeps the domains in force (the README says so)."""
    path = tmp_path / "blocked"
    path.write_text("evil.example\n")
    policy = LinkPolicy(block_path=str(path))
    path.unlink()
    policy.reload()
    with pytest.raises(InvalidURL):
        policy("https://evil.example/")


def test_throttled_lines_count_what_they_left_out(log_events: LogCapture) -> None:
    clock = Clock()
    throttled = ThrottledError(Logger(), clock, "it failed ({unlogged} more)", 10.0)
    for _ in range(5):
        throttled.error()
    clock.advance(10)
    throttled.error()
    for _ in range(2):
        throttled.error()
    clock.advance(10)
    throttled.error()
    lines = [m for m in log_events.messages() if m.startswith("it failed")]
    assert lines == ["it failed (0 more)", "it failed (4 more)", "it failed (2 more)"]
