"""A compact key -> URL map for millions of links, indexed by the key's counter value.

A ``dict[str, str]`` of a million links costs about 230 MiB on CPython: a key object, a URL object
and a hash-table slot per link. Keys here are base 62 of a counter, so they are indexes in disguise:
this map keeps one list slot (8 bytes) per index holding the URL as ASCII ``bytes``, and no key
objects at all, about 125 MiB for the same million. A key that is not the canonical form of an
index (``set`` of a custom key, a hand-edited file) lives in a small dict beside it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping

from goto_tw.keys import ALPHABET, index_for_key, key_for_index

_ALPHABET_BYTES = [char.encode("ascii") for char in ALPHABET]

#: A canonical key this far past the end of the list is kept in the side dict rather than
#: growing the list by millions of empty slots (a hand-edited file, ``set`` of a long key).
MAX_GAP = 1 << 16


#: Longest canonical key: 16 base-62 digits cover far more links than any store will hold.
MAX_CANONICAL_LENGTH = 16


def canonical_index(key: str) -> int | None:
    """The counter value ``key`` is the base-62 form of, or ``None`` for any other string.

    Longer strings are never canonical: decoding is quadratic in the length, and a look-up of a
    megabyte-long "key" (an RPC call can carry one) must not stall the reactor for seconds.
    """
    if len(key) > MAX_CANONICAL_LENGTH:
        return None
    try:
        return index_for_key(key)
    except ValueError:
        return None


def expected_keys(start: int, stop: int) -> list[bytes]:
    """The keys of indexes ``start`` to ``stop - 1``, as bytes, built 62 at a time.

    Start-up compares a data file's keys against this list in one C-level comparison instead of
    decoding each key: in a file this program wrote, they are the same, bar reserved keys skipped
    and keys whose write failed.
    """
    keys: list[bytes] = []
    index = start
    while index < stop:
        prefix_index, digit = divmod(index, 62)
        prefix = key_for_index(prefix_index).encode("ascii") if prefix_index else b""
        end = min(stop - index, 62 - digit)
        keys.extend([prefix + char for char in _ALPHABET_BYTES[digit : digit + end]])
        index += end
    return keys


class URLMap(Mapping[str, str]):
    """key -> URL, compact: URLs as bytes in a list indexed by the key's counter value."""

    def __init__(self) -> None:
        self._by_index: list[bytes | None] = []
        self._others: dict[str, bytes] = {}
        self._count = 0
        #: Counter values of the keys held in ``_others`` that look like one, sorted: what ``extend_run``
        #: must not overwrite, found by bisection instead of a look-up per key of the run.
        self._other_indexes: list[int] = []
        #: When each custom key was stored (custom keys are few: a dict is fine).
        self.custom_created: dict[str, float] = {}
        #: The keys of ``_others`` in order, for :meth:`page`: made by the first page that needs it
        #: (not at start-up), then kept in order as keys come (a page sorted them each time: 0.4 s
        #: of the reactor a page with 500,000 custom keys).
        self._others_in_order: list[str] | None = None

    @classmethod
    def of(cls, pairs: Mapping[str, str]) -> URLMap:
        """A map holding ``pairs`` (for tests and small stores)."""
        built = cls()
        for key, url in pairs.items():
            built.add(key, url)
        return built

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, key: str) -> str:
        url = self.get_bytes(key)
        if url is None:
            raise KeyError(key)
        return url.decode("utf-8")

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        url = self.get_bytes(key)
        return default if url is None else url.decode("utf-8")

    def get_bytes(self, key: str) -> bytes | None:
        """The URL under ``key`` as stored (UTF-8 bytes), or ``None``."""
        index = canonical_index(key)
        if index is not None and index < len(self._by_index):
            url = self._by_index[index]
            if url is not None:
                return url
        return self._others.get(key) if self._others else None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get_bytes(key) is not None

    def __iter__(self) -> Iterator[str]:
        for index, url in enumerate(self._by_index):
            if url is not None:
                yield key_for_index(index)
        yield from list(self._others)

    def newest(self, count: int) -> list[tuple[str, str]]:
        """Up to ``count`` of the most recently allocated canonical pairs, oldest first."""
        found: list[tuple[str, str]] = []
        index = len(self._by_index) - 1
        while index >= 0 and len(found) < count:
            url = self._by_index[index]
            if url is not None:
                found.append((key_for_index(index), url.decode("utf-8")))
            index -= 1
        found.reverse()
        return found

    def page(self, after: str | None, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` pairs in a stable order, starting past the key ``after`` (``None``: the start).

        The order is canonical keys by counter value, then any other keys sorted: it never changes
        as links are added (new ones come at the end of their part), so paging with the last key
        seen visits every link once.
        """
        found: list[tuple[str, str]] = []
        slots = self._by_index
        index = 0
        others_after: str | None = None
        if after is not None:
            after_index = canonical_index(after)
            if after_index is not None and after not in self._others:
                index = after_index + 1
            else:
                index = len(slots)
                others_after = after
        while index < len(slots) and len(found) < limit:
            url = slots[index]
            if url is not None:
                found.append((key_for_index(index), url.decode("utf-8")))
            index += 1
        if len(found) < limit and self._others:
            ordered = self._others_in_order
            if ordered is None:
                ordered = self._others_in_order = sorted(self._others)
            start = 0 if others_after is None else bisect.bisect_right(ordered, others_after)
            for key in ordered[start : start + limit - len(found)]:
                found.append((key, self._others[key].decode("utf-8")))
        return found

    def next_index(self) -> int:
        """The first counter value past every canonical key held."""
        return len(self._by_index)

    def add(self, key: str, url: str | bytes) -> None:
        """Hold ``url`` under ``key``; raises ``KeyError`` if the key is taken (keys never change)."""
        data = url.encode("utf-8") if isinstance(url, str) else url
        if key in self:
            raise KeyError(key)
        self._place(canonical_index(key), key, data)

    def holds(self, index: int, key: str) -> bool:
        """``key in self`` for ``key``, the canonical key of ``index``, without decoding it again."""
        slots = self._by_index
        if index < len(slots) and slots[index] is not None:
            return True
        return bool(self._others) and key in self._others

    def add_at(self, index: int, key: str, url: str) -> None:
        """:meth:`add` of ``key``, the canonical key of ``index`` (the store's adds know both)."""
        if self.holds(index, key):
            raise KeyError(key)
        self._place(index, key, url.encode("utf-8"))

    def _place(self, index: int | None, key: str, data: bytes) -> None:
        """Put a new pair in the counter's list at ``index``, or apart (a key that is no counter
        value, or one too far past the list's end)."""
        slots = self._by_index
        if index is None or index > len(slots) + MAX_GAP:
            self._hold_apart(key, data)
        else:
            if index >= len(slots):
                slots.extend([None] * (index - len(slots) + 1))
            slots[index] = data
        self._count += 1

    def add_custom(self, key: str, url: str | bytes, created: float) -> None:
        """Hold ``url`` under a key a person chose, stored at ``created``; ``KeyError`` if taken.

        Kept beside the counter's list even when it looks like a counter value (``abc``), so a
        custom key never moves where the counter resumes (``next_index``); the counter skips it.
        """
        if key in self:
            raise KeyError(key)
        self._hold_apart(key, url.encode("utf-8") if isinstance(url, str) else url)
        self.custom_created[key] = created
        self._count += 1

    def _hold_apart(self, key: str, data: bytes) -> None:
        self._others[key] = data
        if self._others_in_order is not None:
            bisect.insort(self._others_in_order, key)
        index = canonical_index(key)
        if index is not None:
            bisect.insort(self._other_indexes, index)

    def extend_run(self, start: int, urls: list[bytes]) -> None:
        """Hold ``urls`` under the keys of indexes ``start``, ``start + 1``... (all past the end)."""
        slots = self._by_index
        held = self._other_indexes
        position = bisect.bisect_left(held, start)
        if start < len(slots) or (position < len(held) and held[position] < start + len(urls)):
            raise KeyError(key_for_index(start))
        if start > len(slots):
            slots.extend([None] * (start - len(slots)))
        slots.extend(urls)
        self._count += len(urls)
