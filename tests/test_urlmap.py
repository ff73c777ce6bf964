"""URLMap: the compact key -> URL map, equal in behaviour to a dict."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from goto_tw.keys import key_for_index
from goto_tw.urlmap import MAX_GAP, URLMap, expected_keys


def test_behaves_like_a_dict() -> None:
    """get, [], in, len, iteration and equality agree with a dict of the same pairs."""
    pairs = {"0": "http://a/", "5": "http://b/", "custom-key": "http://c/", "01": "http://d/"}
    urls = URLMap.of(pairs)
    assert urls == pairs
    assert len(urls) == 4
    assert urls["5"] == "http://b/" and urls.get("custom-key") == "http://c/"
    assert "1" not in urls and urls.get("1") is None
    with pytest.raises(KeyError):
        urls["1"]


def test_keys_are_never_replaced() -> None:
    """Adding a taken key raises, whichever storage holds it."""
    urls = URLMap.of({"0": "http://a/", "x-y": "http://b/"})
    for key in ("0", "x-y"):
        with pytest.raises(KeyError):
            urls.add(key, "http://other/")


def test_a_far_canonical_key_does_not_allocate_millions_of_slots() -> None:
    """A huge canonical key (a hand-edited file) goes to the side dict and is still found later."""
    urls = URLMap()
    far = key_for_index(10**12)
    urls.add(far, "http://far/")
    assert urls.next_index() == 0
    assert urls[far] == "http://far/"
    urls.add(key_for_index(MAX_GAP), "http://near/")
    assert urls[far] == "http://far/"


def test_newest_pairs_in_allocation_order() -> None:
    """newest(n) gives the last n canonical pairs, oldest first (for the recent-adds memory)."""
    urls = URLMap.of({key_for_index(i): f"http://u/{i}" for i in range(10)})
    assert urls.newest(3) == [(key_for_index(i), f"http://u/{i}") for i in (7, 8, 9)]


def test_extend_run_refuses_overlaps() -> None:
    """A run of records can only extend the map, never overwrite it."""
    urls = URLMap.of({"0": "http://a/"})
    with pytest.raises(KeyError):
        urls.extend_run(0, [b"http://b/"])
    urls.extend_run(3, [b"http://d/"])
    assert urls == {"0": "http://a/", "3": "http://d/"}


def test_extend_run_refuses_a_run_over_a_key_held_apart() -> None:
    """A run past the end that would cover a key held apart (a custom key that looks like a counter
    value, or a far one from a hand-edited file) is refused whole; the map is left as it was."""
    urls = URLMap.of({"0": "http://a/"})
    urls.add_custom(key_for_index(6), "http://custom/", 1.0)
    with pytest.raises(KeyError):
        urls.extend_run(4, [b"http://e/", b"http://f/", b"http://g/"])  # 4, 5, 6
    assert urls == {"0": "http://a/", key_for_index(6): "http://custom/"}
    urls.extend_run(4, [b"http://e/", b"http://f/"])  # 4, 5: up to the key held apart
    assert urls[key_for_index(5)] == "http://f/" and urls[key_for_index(6)] == "http://custom/"


@given(st.integers(min_value=0, max_value=10**7), st.integers(min_value=0, max_value=300))
def test_expected_keys_match_the_generator(start: int, count: int) -> None:
    """The batch key builder agrees with key_for_index everywhere, across 62-key blocks."""
    assert expected_keys(start, start + count) == [
        key_for_index(i).encode() for i in range(start, start + count)
    ]


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.text(min_size=1, max_size=20), max_size=30))
def test_any_pairs_round_trip(pairs: dict[str, str]) -> None:
    """Whatever the keys (canonical or not) and URLs, the map holds exactly what was added."""
    assert URLMap.of(pairs) == pairs


@given(
    held=st.dictionaries(st.integers(min_value=0, max_value=300), st.booleans(), max_size=20),
    index=st.integers(min_value=0, max_value=300 + MAX_GAP + 5),
)
def test_add_at_is_add_for_a_known_counter_value(held: dict[int, bool], index: int) -> None:
    """``holds``/``add_at`` (the store's adds, which know the counter value) agree with ``in``/``add``
    whatever the map holds: counter keys in the list, custom keys that look like counter values
    beside it, a key far past the end."""
    by_add, by_index = URLMap(), URLMap()
    for number, custom in held.items():
        for urls in (by_add, by_index):
            if custom:
                urls.add_custom(key_for_index(number), f"http://c/{number}", 0.0)
            else:
                urls.add(key_for_index(number), f"http://x/{number}")
    key = key_for_index(index)
    assert by_index.holds(index, key) == (key in by_add)
    if key in by_add:
        with pytest.raises(KeyError):
            by_index.add_at(index, key, "http://new/")
        return
    by_add.add(key, "http://new/")
    by_index.add_at(index, key, "http://new/")
    assert dict(by_index) == dict(by_add) and len(by_index) == len(by_add)
    assert by_index.next_index() == by_add.next_index()
