"""The mutation audit of stop 41 (over stop 40's code): a test for each behaviour the code promises
that no test held, each failing with the audit's mutation of the line it names."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from goto_tw.blocklist import BlockFile, LinkPolicy
from goto_tw.keybound import write_key_bound
from goto_tw.pages import PRIVATE_NOTE
from goto_tw.persistence import OSRecordFile
from goto_tw.problems import is_api_path
from goto_tw.site import GotoSite
from goto_tw.store import URLStore
from goto_tw.tap import Options, makeService
from tests.conftest import LogCapture
from tests.helpers import record_fsyncs
from tests.test_fix_http import BROWSER_ACCEPT, limited_site
from tests.test_form_fields import private_site
from tests.wire import exchange, goto_site


def test_a_head_of_an_add_takes_no_token_and_asks_for_no_key() -> None:
    """``is_form_add``: a ``HEAD`` adds nothing, so a link checker's ``HEAD /add?url=`` neither
    spends the address's add tokens nor meets a private instance's 401."""
    site = limited_site(1, Clock())
    for number in (1, 2):
        answer = exchange(site, b"HEAD /add?url=https://a.example/%d HTTP/1.1\r\nHost: x\r\n\r\n" % number)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
    added = exchange(site, b"GET /add?url=https://a.example/3 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert added.startswith(b"HTTP/1.1 200"), added[:100]
    answer = exchange(private_site(), b"HEAD /add?url=https://a.example/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and b"WWW-Authenticate" not in answer, answer


def test_the_wiring_gives_a_private_instances_429_page_its_note(tmp_path: Path) -> None:
    """``makeService`` passes ``--private`` to the add limit: its 429 page for a browser keeps the
    note that adding needs a key (the page's own test builds the limit itself)."""
    keys = tmp_path / "keys"
    keys.write_text("a-key-of-sixteen-or-more\n")
    options = Options()
    files = ["--file", str(tmp_path / "s.json"), "--api-keys-file", str(keys), "--access-log", "none"]
    options.parseOptions([*files, "--http", "tcp:0", "--private", "--add-rate", "1/h", "--add-burst", "1"])
    reactor = MemoryReactorClock()
    service = makeService(options, reactor=reactor)
    service.startService()
    site = reactor.tcpServers[0][1]
    assert isinstance(site, GotoSite)
    headers = (
        b"Host: x\r\nAccept: %s\r\nAuthorization: Bearer a-key-of-sixteen-or-more\r\n\r\n" % BROWSER_ACCEPT
    )
    first = exchange(site, b"GET /add?url=ftp://a.example/1 HTTP/1.1\r\n" + headers)  # refused: no write
    assert first.startswith(b"HTTP/1.1 400"), first[:100]
    limited = exchange(site, b"GET /add?url=https://a.example/2 HTTP/1.1\r\n" + headers)
    assert limited.startswith(b"HTTP/1.1 429"), limited[:100]
    assert PRIVATE_NOTE.encode() in limited
    service.stopService()


@pytest.mark.parametrize("fast", [True, False])
def test_a_question_mark_in_an_unescaped_url_is_part_of_it(fast: bool) -> None:
    """The query starts at the first ``?``: ``/add?url=https://q.example/search?q=1`` stores the URL
    whole on both paths (the general path forced by a custom key), as the ``;`` fix stores its ``;``."""
    store = URLStore()
    site, _ = goto_site(store, fast=fast)
    answer = exchange(site, b"GET /add?url=https://q.example/search?q=1&key=qq HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert store.lookup("qq") == "https://q.example/search?q=1"


def test_a_symbolic_links_new_target_is_synced_in_the_targets_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data file given as a link to a file yet to be made: the file made is the target, and the
    directory synced is the one holding it (the link's would not make the new entry durable)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    link = tmp_path / "a" / "store.json"
    link.symlink_to(tmp_path / "b" / "store.json")
    synced = record_fsyncs(monkeypatch)
    record_file = OSRecordFile(str(link))
    record_file.open()
    record_file.close()
    assert synced == [str(tmp_path / "b")]
    assert (tmp_path / "b" / "store.json").is_file()


def test_the_key_bound_is_synced_then_its_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``write_key_bound``: the new bound is synced, then renamed over the old one, and the rename is
    made durable by syncing the directory (or a power loss could bring the old bound back)."""
    synced = record_fsyncs(monkeypatch)
    write_key_bound(str(tmp_path / "store.json.next"), 5)
    assert synced == [str(tmp_path / "store.json.next.tmp"), str(tmp_path)]
    assert (tmp_path / "store.json.next").read_text() == "5\n"


def test_a_failed_open_closes_what_it_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An open whose directory sync fails closes the descriptor it opened (and the lock it took
    with it): nothing is left open, however often start-up is tried."""

    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    before = set(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(OSError, match="Input/output error"):
            OSRecordFile(str(tmp_path / "store.json")).open()
    assert set(os.listdir("/proc/self/fd")) <= before


@pytest.mark.parametrize(
    ("path", "api"),
    [
        (b"/%61pi?x=1", True),
        (b"/%61pi/v1/links", True),
        (b"/%61pix/v1", False),
        (b"/%41PI/v1/links", False),
        (b"/%2561pi/v1/links", False),
        (b"/apix/v1", False),
    ],
)
def test_the_api_is_found_by_its_first_segment_decoded_once(path: bytes, api: bool) -> None:
    """``is_api_path`` matches the first segment as twisted.web finds resources: percent-decoded
    once, exactly ``api`` (case counts), whatever the query says."""
    assert is_api_path(path) is api


def test_a_bug_in_reading_the_block_file_is_logged_with_its_traceback(
    tmp_path: Path, log_events: LogCapture
) -> None:
    """A reading that fails for a reason other than the file (a thread runner that raises) is a bug:
    logged as a failure (with its traceback), not as the routine "keeping the list" line."""
    path = tmp_path / "blocked"
    path.write_text("evil.example\n")

    def runner(job: Callable[[], BlockFile]) -> Deferred[BlockFile]:
        raise RuntimeError("the pool refuses")

    policy = LinkPolicy(block_path=str(path), read_in_thread=runner)
    done = policy.reload()
    assert done is not None and done.called
    failures = [event for event in log_events.events if "log_failure" in event]
    assert len(failures) == 1 and failures[0]["log_failure"].check(RuntimeError)
    assert "Reading" in log_events.messages()[0] and not any("Keeping" in m for m in log_events.messages())
