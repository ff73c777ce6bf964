"""URLStore: keys, durability before visibility, idempotent adds, failures."""

from __future__ import annotations

import pytest
from zope.interface.verify import verifyObject

from goto_tw.errors import InvalidURL, KeyExists, KeyNotFound, StoreUnavailable
from goto_tw.interfaces import IURLStore
from goto_tw.keys import index_for_key, key_for_index
from goto_tw.store import URLStore
from tests.fakes import ManualLog
from tests.helpers import failure_of, has_fired, result_of


def test_provides_the_store_interface() -> None:
    """The web layer only knows IURLStore; URLStore must provide all of it."""
    assert verifyObject(IURLStore, URLStore())


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
