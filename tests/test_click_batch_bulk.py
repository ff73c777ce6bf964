"""The master's bulk checks of click batches decide exactly what the key-by-key rules decide.

``keys.all_valid_keys`` and ``clicks.check_batch``/``check_line_counts`` check a whole batch in a
few passes (a slave's batch holds up to 5,000 keys); ``ClickTotals.add_all`` adds a write's counts
with the key counter read once. Each is compared here with the rule it stands for, on hostile input.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import Any, Callable

from hypothesis import given
from hypothesis import strategies as st

from goto_tw.clicks import MAX_BATCH_COUNT, MAX_CLICK_TOTAL, ClickTotals, check_batch, check_line_counts
from goto_tw.keys import (
    ALPHABET,
    MAX_KEY_LENGTH,
    RESERVED_PREFIX,
    RESERVED_SEGMENTS,
    all_valid_keys,
    is_valid_key,
    key_for_index,
)
from goto_tw.urlmap import canonical_index

#: Strings near the rules' edges: key characters, the join's separator, the reserved prefix,
#: characters outside the alphabet, reserved words and lengths around the bound.
_PIECES = st.sampled_from(
    ["a", "Z", "0", "-", "_", "\n", "\n_", ".", "/", " ", "ä", "\x00", "\r", "add", "RPC2", "_goto", "x" * 63]
)
HOSTILE_KEYS = st.one_of(
    st.lists(_PIECES, max_size=4).map("".join),
    st.text(alphabet=ALPHABET + "-_\n./ä", max_size=MAX_KEY_LENGTH + 2),
    st.sampled_from(sorted(RESERVED_SEGMENTS)),
    st.integers(min_value=0, max_value=10**12).map(key_for_index),
    st.just("k" * MAX_KEY_LENGTH),
    st.just("k" * (MAX_KEY_LENGTH + 1)),
)


@given(st.lists(HOSTILE_KEYS, max_size=12))
def test_all_valid_keys_is_is_valid_key_of_each(keys: list[str]) -> None:
    """Whatever the keys hold (the separator, a reserved prefix after it, lengths at the bound)."""
    assert all_valid_keys(keys) == all(is_valid_key(key) for key in keys)


def test_all_valid_keys_sees_through_the_separator() -> None:
    """The join must not hide a key that holds the separator or starts with the reserved prefix."""
    assert all_valid_keys(["a", "b"])
    assert not all_valid_keys(["a\nb"])  # one key holding the separator, two valid halves
    assert not all_valid_keys(["a", f"{RESERVED_PREFIX}goto"])
    assert not all_valid_keys([f"{RESERVED_PREFIX}x", "a"])
    assert not all_valid_keys(["a", ""])
    assert not all_valid_keys(["a", "add"])
    assert all_valid_keys([])


class _Int(int):
    """An ``int`` subclass: a count the loop accepts and the bulk pass leaves to it."""


class _Str(str):
    """A ``str`` subclass as a key."""


COUNTS = st.one_of(
    st.integers(min_value=-2, max_value=MAX_BATCH_COUNT + 2),
    st.sampled_from(
        [
            0,
            1,
            MAX_BATCH_COUNT,
            MAX_BATCH_COUNT + 1,
            MAX_CLICK_TOTAL,
            MAX_CLICK_TOTAL + 1,
            2**63,
            True,
            False,
            1.0,
            "1",
            None,
        ]
    ),
    st.integers(min_value=1, max_value=9).map(_Int),
)
KEYS = st.one_of(HOSTILE_KEYS, HOSTILE_KEYS.map(_Str), st.sampled_from([1, b"a", None, ("a",)]))


def _reference(counts: dict[Any, Any], most: int | None, key_error: str) -> str | None:
    """What the key-by-key rule (as it was before the bulk pass) says of ``counts``."""
    for key, count in counts.items():
        if not isinstance(key, str) or not is_valid_key(key):
            return key_error
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            return "a click count is not a positive whole number"
        if most is not None and count > most:
            return "a click count is not a positive whole number"
    return None


def _check_decides_as_the_rule(
    check: Callable[[object], dict[str, int]], most: int | None, key_error: str, batch: dict[Any, Any]
) -> None:
    """``check`` accepts ``batch`` (and returns it) exactly when the rule does, else raises its message."""
    expected = _reference(batch, most, key_error)
    try:
        accepted = check(batch)
    except ValueError as error:
        assert str(error) == expected
    else:
        assert expected is None
        assert accepted is batch


BATCHES = st.dictionaries(KEYS, COUNTS, max_size=8)


@given(BATCHES)
def test_check_batch_decides_as_the_key_by_key_rule(batch: dict[Any, Any]) -> None:
    """Accepted or refused, and with which message, as the rule key by key: the bulk pass only ever
    accepts what the loop would, and leaves everything else (and its message) to the loop."""
    _check_decides_as_the_rule(check_batch, MAX_BATCH_COUNT, "a key in the batch is not a valid key", batch)


@given(BATCHES)
def test_check_line_counts_decides_as_the_key_by_key_rule(batch: dict[Any, Any]) -> None:
    """The same for a click file's lines, whose counts go up to a total's bound."""
    _check_decides_as_the_rule(check_line_counts, MAX_CLICK_TOTAL, "a key is not a valid key", batch)


#: Valid keys, many of them counter keys around the key counters drawn beside them (0 to 300).
TOTAL_KEYS = st.one_of(HOSTILE_KEYS, st.integers(min_value=0, max_value=310).map(key_for_index)).filter(
    is_valid_key
)


@given(
    st.dictionaries(TOTAL_KEYS, st.integers(min_value=1, max_value=9), max_size=10),
    st.one_of(st.none(), st.integers(min_value=0, max_value=300)),
)
def test_add_all_is_add_of_each(counts: dict[str, int], next_index: int | None) -> None:
    """A slot for each counter key below the key counter, the dict for every other key, as before."""
    counter = None if next_index is None else (lambda: next_index)
    bulk, one_by_one = ClickTotals(counter), ClickTotals(counter)
    bulk.add_all(counts)
    bulk.add_all(counts)  # added to what is there
    for key, count in [*counts.items(), *counts.items()]:
        _add_reference(one_by_one, key, count)
    assert sorted(bulk.items()) == sorted(one_by_one.items())
    assert bulk.slots() == one_by_one.slots()
    assert all(bulk.get(key) == 2 * count for key, count in counts.items())


def _add_reference(totals: ClickTotals, key: str, count: int) -> None:
    """``ClickTotals.add`` as it was, key by key (the rule for where a key's count goes)."""
    index = canonical_index(key)
    next_index = totals._next_index
    if index is None or next_index is None or index >= next_index():
        totals._others[key] = totals._others.get(key, 0) + count
        return
    slots = totals._by_index
    if index >= len(slots):
        slots.extend(array("q", [0]) * (index - len(slots) + 1))
    slots[index] += count


class _IterKey(str):
    """A ``str`` subclass whose characters, as :func:`is_valid_key` iterates them, are not key ones."""

    def __iter__(self) -> Iterator[str]:
        return iter("!")


class _PrefixKey(str):
    """A ``str`` subclass that says it starts with anything (the reserved prefix too)."""

    def startswith(self, *args: object) -> bool:
        return True


class _ItemsDict(dict[str, int]):
    """A ``dict`` subclass whose items (what the loop reads) are not its keys."""

    def items(self) -> Any:
        return [("_bad", 1)]


def test_bulk_pass_leaves_subclasses_to_the_loop() -> None:
    """A ``str`` or ``dict`` subclass may override what the key-by-key rule calls: it decides."""
    for check, message in (
        (check_batch, "a key in the batch is not a valid key"),
        (check_line_counts, "a key is not a valid key"),
    ):
        for batch in ({_IterKey("abc"): 1}, {_PrefixKey("abc"): 1}, _ItemsDict(abc=1)):
            try:
                check(batch)
            except ValueError as error:
                assert str(error) == message
            else:
                raise AssertionError(f"{check.__name__} accepted {batch!r}")


def test_bulk_pass_refuses_edge_counts_beside_valid_keys() -> None:
    """Counts the bulk pass must leave to the loop when every key is valid (the random batches
    above seldom hold only valid keys): a bool, the bound plus one, zero, a float."""
    for count in (True, MAX_BATCH_COUNT + 1, 0, 1.0):
        batch = {"a": 1, "b": count}
        expected = _reference(batch, MAX_BATCH_COUNT, "a key in the batch is not a valid key")
        assert expected is not None
        _check_decides_as_the_rule(
            check_batch, MAX_BATCH_COUNT, "a key in the batch is not a valid key", batch
        )
    assert check_batch({"a": MAX_BATCH_COUNT}) == {"a": MAX_BATCH_COUNT}
    big = {"a": MAX_BATCH_COUNT + 1, "b": MAX_CLICK_TOTAL}
    assert check_line_counts(big) is big
    for count in (True, MAX_CLICK_TOTAL + 1):
        _check_decides_as_the_rule(
            check_line_counts, MAX_CLICK_TOTAL, "a key is not a valid key", {"a": 1, "b": count}
        )


def test_add_all_puts_the_key_at_the_counter_in_the_dict() -> None:
    """A key at exactly ``next_index`` is not made yet: the dict, as ``add`` did; one below: a slot."""
    totals = ClickTotals(lambda: 100)
    totals.add_all({key_for_index(100): 2, key_for_index(99): 3})
    assert totals.slots() == 100
    assert totals._others == {key_for_index(100): 2}
    assert totals.get(key_for_index(99)) == 3
