"""The master's change feed: what slaves poll to drop cached pairs that changed (a disabled key).

Each change gets the next sequence number; the feed keeps the latest :data:`MAX_CHANGES` of them.
A slave asks for the changes after the last number it has seen, within the master's *epoch* (a
token drawn at each start: sequence numbers begin again after a restart). When it asks about an
older epoch, or about numbers the feed no longer holds (it fell too far behind, or was away), the
answer says the list is incomplete, and the slave drops its whole cache instead: it never keeps a
pair it cannot prove unchanged.
"""

from __future__ import annotations

import secrets
from collections import deque
from typing import NamedTuple

#: Changes the feed remembers; a slave further behind than this drops its cache.
MAX_CHANGES = 10_000
#: The epoch a slave asks about before its first answer (with ``since`` 0).
FIRST_CONTACT = ""
#: Most keys one answer carries (the rest come with the next poll).
MAX_KEYS_PER_ANSWER = 1_000


class Changes(NamedTuple):
    """One answer of the feed."""

    epoch: str
    #: The sequence number of the last change listed (ask again after it).
    seq: int
    #: The keys that changed after the number asked about, oldest first.
    keys: list[str]
    #: False when the list cannot be trusted whole: drop every cached pair.
    complete: bool


class ChangeFeed:
    """A bounded, numbered log of changed keys, for slaves to poll (``Store.Changes``)."""

    def __init__(self, epoch: str | None = None, capacity: int = MAX_CHANGES) -> None:
        self.epoch = epoch if epoch is not None else secrets.token_hex(8)
        self._capacity = capacity
        self._log: deque[tuple[int, str]] = deque(maxlen=capacity)
        self._seq = 0

    @property
    def seq(self) -> int:
        """The number of the latest change (0 before the first)."""
        return self._seq

    def record(self, key: str) -> int:
        """Note that ``key`` changed; return its sequence number."""
        self._seq += 1
        self._log.append((self._seq, key))
        return self._seq

    def since(self, epoch: str, seq: int) -> Changes:
        """The changes after ``seq`` of ``epoch`` (at most :data:`MAX_KEYS_PER_ANSWER` of them).

        Another epoch, a number from the future, or one older than what the feed holds: an
        incomplete answer positioned at the latest change.
        """
        oldest_held = self._log[0][0] if self._log else self._seq + 1
        if epoch == FIRST_CONTACT and seq == 0:
            # A slave's first poll: it may have cached pairs already, fetched from this master; the
            # feed from its start (tombstones loaded at start-up included) covers every key that
            # could be stale among them. Complete if the feed still holds change 1.
            epoch = self.epoch
        if epoch != self.epoch or seq > self._seq or seq < oldest_held - 1:
            return Changes(self.epoch, self._seq, [], False)
        keys: list[str] = []
        last = seq
        # Numbers are consecutive: the first change after ``seq`` sits at a known offset.
        start = seq + 1 - oldest_held
        for position in range(start, len(self._log)):
            if len(keys) >= MAX_KEYS_PER_ANSWER:
                break
            last, key = self._log[position]
            keys.append(key)
        return Changes(self.epoch, last, keys, True)
