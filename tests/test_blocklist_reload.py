"""The block file on SIGHUP: read in a thread (a long file took the reactor seconds, during which
nothing was answered and slaves counted their master down), the last reload started decides, and
the list in force stays until a reading succeeds. Lines written as other lists write a domain
(``*.evil.example``, ``.evil.example``) block it; lines no URL's host can be are warned about."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from twisted.internet.defer import Deferred

from goto_tw.blocklist import BlockFile, LinkPolicy
from goto_tw.errors import InvalidURL
from goto_tw.tap import make_policy
from goto_tw.urls import validate_url
from tests.conftest import LogCapture


class LaterThreads:
    """Stands in for the thread pool: keeps each job until the test runs it."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[], BlockFile], Deferred[BlockFile]]] = []

    def __call__(self, job: Callable[[], BlockFile]) -> Deferred[BlockFile]:
        done: Deferred[BlockFile] = Deferred()
        self.jobs.append((job, done))
        return done

    def run(self, index: int = 0) -> None:
        job, done = self.jobs.pop(index)
        try:
            result = job()
        except Exception as exc:
            done.errback(exc)
        else:
            done.callback(result)


def refused(policy: LinkPolicy, url: str) -> bool:
    try:
        policy(validate_url(url))
    except InvalidURL:
        return True
    return False


def write(path: Path, *lines: str) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_a_reload_reads_in_the_thread_and_then_puts_the_new_list_in_force(
    tmp_path: Path, log_events: LogCapture
) -> None:
    path = tmp_path / "blocked"
    write(path, "old.example")
    threads = LaterThreads()
    policy = LinkPolicy(block_path=str(path), read_in_thread=threads)
    write(path, "new.example", "||bad.example^")
    reloaded = policy.reload()
    assert len(threads.jobs) == 1
    assert refused(policy, "https://old.example/") and not refused(policy, "https://new.example/")
    assert not any("Reloaded" in message for message in log_events.messages())
    threads.run()
    assert reloaded is not None and reloaded.called
    assert not refused(policy, "https://old.example/") and refused(policy, "https://a.new.example/")
    messages = log_events.messages()
    assert any("Ignoring 1 line(s)" in message and "line 2" in message for message in messages), messages
    assert any("Reloaded 1 blocked domain(s)" in message for message in messages), messages


def test_the_reading_itself_runs_in_the_thread(tmp_path: Path) -> None:
    """What the thread runs is the reading of the file, not a list read before it: the file as it
    is when the thread reads it counts (review 40: a parse on the reactor thread handed to a thread
    afterwards passed every other test)."""
    path = tmp_path / "blocked"
    write(path, "old.example")
    threads = LaterThreads()
    policy = LinkPolicy(block_path=str(path), read_in_thread=threads)
    policy.reload()
    write(path, "later.example")  # after reload() returned, before the thread ran
    threads.run()
    assert refused(policy, "https://later.example/") and not refused(policy, "https://old.example/")


def test_a_burst_of_reloads_reads_the_file_twice_at_most(tmp_path: Path) -> None:
    """Review 40: each SIGHUP started a reading of its own (up to 16 MiB each), filling the thread
    pool the data file's writer needs. Reloads asked for while a reading runs are served by one more
    reading after it, which reads the file as it is then; each caller hears once it is done."""
    path = tmp_path / "blocked"
    write(path, "first.example")
    threads = LaterThreads()
    policy = LinkPolicy(block_path=str(path), read_in_thread=threads)
    write(path, "second.example")
    first = policy.reload()
    later = [policy.reload() for _ in range(20)]  # a SIGHUP storm while the first reading waits
    assert len(threads.jobs) == 1
    threads.run()
    assert first is not None and first.called and not any(done is not None and done.called for done in later)
    assert refused(policy, "https://second.example/")
    assert len(threads.jobs) == 1, "one more reading for the 20 reloads asked for meanwhile"
    write(path, "third.example")
    threads.run()
    assert all(done is not None and done.called for done in later)
    assert refused(policy, "https://third.example/") and not refused(policy, "https://second.example/")
    assert threads.jobs == []


def test_a_bug_in_applying_a_reloaded_list_is_logged_and_the_next_reload_still_reads(
    tmp_path: Path, log_events: LogCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 40: a failure in applying a list was swallowed (the new list not in force, nothing
    said); it is logged, and reloading goes on."""
    import goto_tw.blocklist

    path = tmp_path / "blocked"
    write(path, "evil.example")
    policy = LinkPolicy(block_path=str(path))

    def broken(path: str, read: BlockFile) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(goto_tw.blocklist, "warn_unmatchable", broken)
    policy.reload()
    assert any("Reloading" in message and "failed" in message for message in log_events.messages())
    monkeypatch.undo()
    write(path, "other.example")
    policy.reload()
    assert refused(policy, "https://other.example/")


def test_a_reload_whose_reading_fails_in_the_thread_keeps_the_list(
    tmp_path: Path, log_events: LogCapture
) -> None:
    path = tmp_path / "blocked"
    write(path, "evil.example")
    threads = LaterThreads()
    policy = LinkPolicy(block_path=str(path), read_in_thread=threads)
    path.unlink()
    policy.reload()
    threads.run()
    assert refused(policy, "https://evil.example/")
    assert any("Keeping the 1 blocked domain(s)" in message for message in log_events.messages())


class RecordingPool:
    """A thread pool that keeps the calls it is given."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def callInThreadWithCallback(self, on_result: Any, function: Any, *args: Any, **kwargs: Any) -> None:
        self.calls.append(function)


class PoolReactor:
    def __init__(self) -> None:
        self.pool = RecordingPool()

    def getThreadPool(self) -> RecordingPool:
        return self.pool


def test_the_service_reads_the_block_file_again_in_the_reactors_thread_pool(tmp_path: Path) -> None:
    """As ``twistd goto`` wires it: a SIGHUP's reading goes to the reactor's thread pool, not the
    reactor thread; start-up reads it at once (before anything is served)."""
    path = tmp_path / "blocked"
    write(path, "evil.example")
    reactor = PoolReactor()
    policy = make_policy({"host": "go.example", "block-file": str(path)}, reactor)
    assert refused(policy, "https://evil.example/")
    policy.reload()
    assert len(reactor.pool.calls) == 1


@pytest.mark.parametrize(
    "line",
    [
        "*.wild.example",
        ".wild.example",
        "*.WILD.example.",
        "*\u3002wild.example",
        "\uff0ewild.example",
        "wild\u3002example\u3002",
    ],
)
def test_a_wildcard_line_blocks_the_domain_and_its_subdomains(tmp_path: Path, line: str) -> None:
    path = tmp_path / "blocked"
    write(path, line)
    policy = LinkPolicy(block_path=str(path))
    assert refused(policy, "https://wild.example/")
    assert refused(policy, "https://a.wild.example/")
    assert not refused(policy, "https://mild.example/")


@pytest.mark.parametrize(
    "line",
    ["||adb.example^", "evil*.example", "ev!l.example", "*", "..x.example", "*..x.example", "a..b", "*.*.x"],
)
def test_a_line_no_host_can_be_is_warned_about_not_counted(
    tmp_path: Path, line: str, log_events: LogCapture
) -> None:
    path = tmp_path / "blocked"
    write(path, "kept.example", line)
    policy = LinkPolicy(block_path=str(path))
    assert policy.blocked == frozenset({"kept.example"})
    assert any("Ignoring 1 line(s)" in message for message in log_events.messages()), log_events.messages()


def test_a_runner_that_refuses_at_once_does_not_stop_reloading(
    tmp_path: Path, log_events: LogCapture
) -> None:
    """Review 41: a thread runner raising at once left a reading marked as running for good: every
    later SIGHUP was only noted, and its Deferred never fired."""
    path = tmp_path / "blocked"
    write(path, "evil.example")
    refusing = True

    def runner(job: Callable[[], BlockFile]) -> Deferred[BlockFile]:
        if refusing:
            raise RuntimeError("the pool refuses")
        done: Deferred[BlockFile] = Deferred()
        done.callback(job())
        return done

    policy = LinkPolicy(block_path=str(path), read_in_thread=runner)
    first = policy.reload()
    assert first is not None and first.called and refused(policy, "https://evil.example/")
    refusing = False
    write(path, "other.example")
    second = policy.reload()
    assert second is not None and second.called and refused(policy, "https://other.example/")
