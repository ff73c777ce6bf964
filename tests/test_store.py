"""URLStore: keys, durability before visibility, idempotent adds, failures."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from goto_tw.errors import InvalidURL, KeyDisabled, KeyExists, KeyNotFound, StoreUnavailable
from goto_tw.interfaces import IKnownKeys, IURLStore
from goto_tw.keys import index_for_key, is_reserved, key_for_index
from goto_tw.persistence import AppendLog, OSRecordFile
from goto_tw.store import URLStore
from tests.fakes import ManualLog, ManualThreads
from tests.helpers import failure_of, has_fired, live_records, result_of


def test_provides_the_store_interface() -> None:
    """The web layer only knows IURLStore; URLStore must provide all of it."""
    assert verifyObject(IURLStore, URLStore())


def test_the_store_says_at_once_why_it_has_no_link_under_a_key() -> None:
    """``refusal`` gives the very error ``get`` fails with (404 for an unknown key, 410 for a disabled
    one), and ``None`` for a key ``get`` answers."""
    store = URLStore({"0": "http://a.example/", "gone": "http://g.example/"}, disabled={"gone": 1})
    assert verifyObject(IKnownKeys, store)
    assert store.refusal("0") is None
    assert result_of(store.get("0")) == "http://a.example/"
    for key, error in (("nope", KeyNotFound), ("gone", KeyDisabled)):
        refused = store.refusal(key)
        assert isinstance(refused, error)
        failed = failure_of(store.get(key)).value
        assert type(failed) is error and str(failed) == str(refused)


def test_put_then_get() -> None:
    """A stored URL is found under the key put answered."""
    store = URLStore()
    key = result_of(store.put("http://example.com/"))
    assert result_of(store.get(key)) == "http://example.com/"
    assert store.count() == 1


def test_unknown_key_is_key_not_found() -> None:
    """get of an unknown key fails with KeyNotFound (a 404), not a crash."""
    assert failure_of(URLStore().get("nope")).check(KeyNotFound)


def test_keys_follow_the_count_like_goto() -> None:
    """Keys are base 62 of the count: 0, 1, 2, ... as short as they can be."""
    store = URLStore()
    keys = [result_of(store.put(f"http://example.com/{i}")) for i in range(63)]
    assert keys[:3] == ["0", "1", "2"]
    assert keys[62] == "10"


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.integers(0, 200), st.integers(0, 62**6), st.sampled_from([62**k - 70 for k in range(2, 6)]))
)
def test_the_counter_hands_out_key_for_index_of_each_value(start: int) -> None:
    """Keys made with their prefix remembered (issue 13) are ``key_for_index`` of each counter
    value in turn, across every change of the prefix (one in 62 keys, and a new digit)."""
    store = URLStore(next_index=start)
    keys = [result_of(store.put(f"http://example.com/{i}")) for i in range(140)]
    expected = [key_for_index(index) for index in range(start, start + 150)]
    assert keys == [key for key in expected if not is_reserved(key)][:140]


def test_keys_skip_reserved_words() -> None:
    """A key that spells a reserved path (``add``) is never handed out."""
    start = index_for_key("add")
    store = URLStore({key_for_index(i): f"http://seed/{i}" for i in range(start)})
    assert result_of(store.put("http://example.com/")) == key_for_index(start + 1)


def test_keys_never_collide_with_loaded_ones() -> None:
    """A file whose keys are not a dense prefix (gaps, foreign keys) still never gets a key reused."""
    loaded = {"1": "http://one/", "2": "http://two/"}
    store = URLStore(dict(loaded))
    new_keys = {result_of(store.put(f"http://new/{i}")) for i in range(5)}
    assert not new_keys & set(loaded)
    assert len(new_keys) == 5


def test_same_url_gets_the_same_key() -> None:
    """Adds are idempotent: a retried add never makes a second link."""
    store = URLStore()
    assert result_of(store.put("http://a/")) == result_of(store.put("http://a/"))
    assert store.count() == 1


def test_invalid_url_is_refused_and_stores_nothing() -> None:
    """A refused URL never reaches the log."""
    log = ManualLog()
    store = URLStore(log=log)
    assert failure_of(store.put("ftp://x/")).check(InvalidURL)
    assert log.appended == [] and store.count() == 0


def test_key_is_invisible_until_its_record_is_durable() -> None:
    """put answers, and get finds the key, only after the log acknowledged the record."""
    log = ManualLog()
    store = URLStore(log=log)
    put = store.put("http://a/")
    assert not has_fired(put)
    [(key, url, _)] = log.appended
    assert url == "http://a/"
    assert failure_of(store.get(key)).check(KeyNotFound)
    log.complete_all()
    assert result_of(put) == key
    assert result_of(store.get(key)) == "http://a/"


def test_concurrent_puts_of_one_url_write_one_record() -> None:
    """Two adds of the same URL while its record is being written share it and its key."""
    log = ManualLog()
    store = URLStore(log=log)
    first, second = store.put("http://a/"), store.put("http://a/")
    assert len(log.appended) == 1
    log.complete_all()
    assert result_of(first) == result_of(second)


def test_failed_write_is_not_acknowledged_and_its_key_is_burned() -> None:
    """A write failure answers StoreUnavailable; the URL can be added again later under a new key."""
    log = ManualLog()
    store = URLStore(log=log)
    put = store.put("http://a/")
    [(burned, _, _)] = log.appended
    log.fail_all()
    assert failure_of(put).check(StoreUnavailable)
    assert store.count() == 0
    retry = store.put("http://a/")
    [(key, _, _)] = log.appended
    log.complete_all()
    assert result_of(retry) == key != burned


def test_set_refuses_a_taken_key() -> None:
    """Keys are never overwritten: set of a stored or pending key fails with KeyExists."""
    log = ManualLog()
    store = URLStore({"a": "http://a/"}, log)
    assert failure_of(store.set("a", "http://b/")).check(KeyExists)
    pending = store.set("b", "http://b/")
    assert failure_of(store.set("b", "http://c/")).check(KeyExists)
    log.complete_all()
    assert result_of(pending) == "b"


def test_set_then_get() -> None:
    """set stores under exactly the key given."""
    store = URLStore()
    assert result_of(store.set("custom", "http://c/")) == "custom"
    assert result_of(store.get("custom")) == "http://c/"


@pytest.mark.parametrize("url", ["http://a/", "https://b.example/x?y=z"])
def test_loaded_urls_answer_their_existing_key(url: str) -> None:
    """After a restart, adding a URL that is in the file answers its old key, writing nothing."""
    log = ManualLog()
    store = URLStore({"k": url}, log)
    assert result_of(store.put(url)) == "k"
    assert log.appended == []


def test_only_recent_adds_are_remembered_by_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """A URL among the latest RECENT_ADDS adds answers its key; an older one gets a new key.

    Remembering every URL would double the memory of a large store; retries are recent.
    """
    monkeypatch.setattr("goto_tw.store.RECENT_ADDS", 3)
    store = URLStore()
    first = result_of(store.put("http://first/"))
    for i in range(3):
        result_of(store.put(f"http://later/{i}"))
    assert result_of(store.put("http://later/0")) == key_for_index(1)
    assert result_of(store.put("http://later/2")) == key_for_index(3)
    assert result_of(store.put("http://first/")) == key_for_index(4) != first


def test_a_custom_key_is_not_handed_to_plain_adds_of_its_url() -> None:
    """Review 35: once someone chose ``this-story-is-fake-1`` for a news page, everyone who shortened
    that page got it (and lost their link when an operator disabled the mocking key). A plain add
    gets a counter key of its own; the custom pair's retry still answers the custom key."""
    store = URLStore()
    url = "https://news.example/story"
    assert result_of(store.add(url, "this-story-is-fake-1")) == ("this-story-is-fake-1", True)
    assert result_of(store.add(url)) == ("0", True)
    assert result_of(store.put(url)) == "0"
    assert result_of(store.add(url, "this-story-is-fake-1")) == ("this-story-is-fake-1", False)


@pytest.mark.parametrize(
    ("key", "url", "error"),
    [
        ("custom", "javascript:alert(1)", InvalidURL),
        ("custom", "https://bücher.example/", InvalidURL),
        ("a.b", "http://a/", ValueError),
        ("add", "http://a/", ValueError),
    ],
)
def test_set_stores_nothing_the_data_file_would_refuse(key: str, url: str, error: type[Exception]) -> None:
    """set takes only a valid key and a URL in its stored form: a record the loader refuses at the next
    start-up (a corrupt data file) must never be written in the first place."""
    log = ManualLog()
    store = URLStore(log=log)
    assert failure_of(store.set(key, url)).check(error)
    assert log.appended == [] and store.count() == 0


def _store_on_append_log(tmp_path: Path) -> tuple[URLStore, AppendLog, ManualThreads, Clock, Path]:
    """A store over a real append log with fsync, whose syncs run when the test says so."""
    path = tmp_path / "store.json"
    clock = Clock()
    threads = ManualThreads()
    log = AppendLog(
        OSRecordFile(str(path)),
        clock,
        fsync=True,
        run_in_thread=threads,
        call_from_thread=threads.call_from_thread,
    )
    log.startService()
    return URLStore(log=log, clock=clock), log, threads, clock, path


def test_puts_through_the_append_log_answer_once_synced(tmp_path: Path) -> None:
    """Over the data file's log (its Deferred-free appends), a put answers and its key resolves only
    once the record is written and synced; the record is the pair, in the file."""
    store, log, threads, clock, path = _store_on_append_log(tmp_path)
    put = store.put("http://a.example/")
    clock.advance(0)
    assert not has_fired(put)
    assert failure_of(store.get("0")).check(KeyNotFound)
    threads.run_next()
    assert result_of(put) == "0"
    assert result_of(store.get("0")) == "http://a.example/"
    assert live_records(path) == b'{"key":"0","url":"http://a.example/"}\n'
    assert result_of(store.put("http://a.example/")) == "0"
    result_of(log.stopService())


def test_a_cancelled_put_only_stops_its_own_wait(tmp_path: Path) -> None:
    """Two adds of one URL share one record; cancelling one (its client left) leaves the other's
    answer and the stored pair as they would have been."""
    store, log, threads, clock, _ = _store_on_append_log(tmp_path)
    first, second = store.put("http://a.example/"), store.put("http://a.example/")
    first.cancel()
    assert failure_of(first).check(CancelledError)
    clock.advance(0)
    threads.run_next()
    assert result_of(second) == "0"
    assert result_of(store.get("0")) == "http://a.example/"
    result_of(log.stopService())


def test_a_failed_sync_fails_every_waiter_and_burns_the_key(tmp_path: Path) -> None:
    """A sync that fails answers StoreUnavailable to every add waiting on the record; the key is
    never handed out, and the URL can be added again under a new key."""
    store, log, threads, clock, _ = _store_on_append_log(tmp_path)
    first, second = store.put("http://a.example/"), store.put("http://a.example/")
    clock.advance(0)
    _job, done = threads.jobs.pop(0)
    done.errback(OSError(5, "I/O error"))
    assert failure_of(first).check(StoreUnavailable) and failure_of(second).check(StoreUnavailable)
    assert store.count() == 0
    retry = store.put("http://a.example/")
    clock.advance(0)
    threads.run_next()
    assert result_of(retry) == "1"
    result_of(log.stopService())


def test_a_put_refused_by_a_stopping_log_leaves_nothing_behind(tmp_path: Path) -> None:
    """Once the log has stopped, a put fails at once (every waiter gets an answer) and a later
    put of the same URL is refused the same way rather than joining a put that never ends."""
    store, log, _, _, _ = _store_on_append_log(tmp_path)
    result_of(log.stopService())
    assert failure_of(store.put("http://a.example/")).check(StoreUnavailable)
    assert failure_of(store.put("http://a.example/")).check(StoreUnavailable)
