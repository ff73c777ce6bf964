"""Keys: the count -> key bijection and the reserved paths."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from goto_tw.keys import RESERVED_SEGMENTS, index_for_key, is_reserved, is_valid_key, key_for_index


def test_first_keys_are_single_base62_digits() -> None:
    """Keys start as short as they can: 0..9, a..z, A..Z, then two digits."""
    assert [key_for_index(i) for i in (0, 9, 10, 35, 36, 61, 62, 63)] == [
        "0",
        "9",
        "a",
        "z",
        "A",
        "Z",
        "10",
        "11",
    ]


@given(st.integers(min_value=0, max_value=2**80))
def test_key_for_index_is_a_bijection(index: int) -> None:
    """Every index maps to a key that maps back to it, so distinct indexes never share a key."""
    assert index_for_key(key_for_index(index)) == index


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=10**9))
def test_distinct_indexes_give_distinct_keys(a: int, b: int) -> None:
    """Two different counts never produce the same key."""
    assert (key_for_index(a) == key_for_index(b)) == (a == b)


@pytest.mark.parametrize("bad", ["", "01", "a-b", "ä"])
def test_index_for_key_rejects_strings_never_generated(bad: str) -> None:
    """Strings with a leading zero or foreign characters are not generated keys."""
    with pytest.raises(ValueError):
        index_for_key(bad)


def test_negative_index_is_refused() -> None:
    """There is no key for a negative count."""
    with pytest.raises(ValueError):
        key_for_index(-1)


@pytest.mark.parametrize("path", ["add", "RPC2", "favicon.ico", "robots.txt", "api", "_goto", "_x"])
def test_service_paths_are_reserved(path: str) -> None:
    """Paths the service answers itself are reserved and never valid keys."""
    assert is_reserved(path)
    assert not is_valid_key(path)


def test_reserved_generated_keys_exist_and_are_flagged() -> None:
    """Some base-62 keys spell reserved words (``add``): the generator must be told to skip them."""
    assert key_for_index(index_for_key("add")) == "add"
    assert is_reserved("add")
    assert {"add", "RPC2"} <= RESERVED_SEGMENTS


@pytest.mark.parametrize("key", ["0", "abc", "Zz9"])
def test_generated_keys_are_valid(key: str) -> None:
    """Base-62 strings that are not reserved can name links."""
    assert is_valid_key(key)


@pytest.mark.parametrize("key", ["", "a/b", "a.b", "x" * 65, "%41"])
def test_paths_no_key_can_match_are_invalid(key: str) -> None:
    """Paths outside the key alphabet, or absurdly long, are answered 404 without a look-up."""
    assert not is_valid_key(key)


def test_the_key_pattern_is_the_key_characters_up_to_the_longest_key() -> None:
    """KEY_PATTERN (the fast path's, the OpenAPI document's, the form's) says what KEY_CHARACTERS and
    MAX_KEY_LENGTH say: one fact, where four copies of it stood (review 35's audit)."""
    import re

    from goto_tw.keys import KEY_CHARACTERS, KEY_PATTERN, MAX_KEY_LENGTH

    for code in range(0x20, 0x7F):
        assert (re.fullmatch(KEY_PATTERN, chr(code)) is not None) == (chr(code) in KEY_CHARACTERS), chr(code)
    assert re.fullmatch(KEY_PATTERN, "a" * MAX_KEY_LENGTH) and not re.fullmatch(
        KEY_PATTERN, "a" * (MAX_KEY_LENGTH + 1)
    )
    assert not re.fullmatch(KEY_PATTERN, "")
