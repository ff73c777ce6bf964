"""The key bound: a small companion file that says no key at or past an index was ever acknowledged.

Without ``fsync`` an add is acknowledged once its record is in the page cache; a power loss can
drop it, and a counter resuming from the data file alone would hand that key to another URL while
users still hold the old link. The bound closes that hole: before a key's record is acknowledged,
a file ``<data file>.next`` must durably hold an index past the key's, so start-up can resume at
``max(the file's next index, the bound)`` and never reuse a key that anyone may have seen.

The file holds one decimal number and a newline. It is replaced atomically (write a temporary
file, ``fsync`` it, rename it over the old one, ``fsync`` the directory), so after any crash it
holds either the old bound or the new one, never a torn mix. Only the holder of the data file's
lock writes it.
"""

from __future__ import annotations

import os
import re
from typing import Callable

#: How far past the highest key in use the bound is raised at a time: one durable write per this
#: many adds; a restart skips at most this many keys.
BOUND_BLOCK = 10_000

_BOUND_TEXT = re.compile(rb"(0|[1-9][0-9]{0,19})\n")


class CorruptKeyBound(Exception):
    """The key bound file cannot be read as a bound; the message names the file."""


def bound_path(data_path: str) -> str:
    """The key bound file that belongs to the data file at ``data_path``."""
    return data_path + ".next"


def read_key_bound(path: str) -> int:
    """Return the bound stored at ``path`` (0 when there is no file yet), or raise :class:`CorruptKeyBound`.

    A missing file is a store that never had one (new, or written by a version without it); an
    unreadable or malformed one is refused, since guessing low could hand out a key twice.
    """
    try:
        with open(path, "rb") as bound_file:
            text = bound_file.read(64)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise CorruptKeyBound(f"{path}: cannot read the key bound: {exc.strerror}") from None
    match = _BOUND_TEXT.fullmatch(text)
    if match is None:
        raise CorruptKeyBound(f"{path}: not a key bound (one decimal number and a newline): {text[:40]!r}")
    return int(match.group(1))


def write_key_bound(path: str, bound: int) -> None:
    """Replace the bound at ``path`` with ``bound`` durably (blocking: run it in a thread)."""
    temporary = path + ".tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"%d\n" % bound)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    sync_directory_of(path)


def sync_directory_of(path: str) -> None:
    """``fsync`` the directory holding ``path``, so that its entry (a file just created or renamed
    there) survives a power loss: syncing the file alone does not promise that (blocking)."""
    directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class KeyBound:
    """The bound as the writer sees it: the value known durable, and how to make a higher one so.

    ``store`` blocks (it writes and syncs a file): the writer calls it in a thread only.
    """

    def __init__(self, durable: int, store: Callable[[int], None], block: int = BOUND_BLOCK) -> None:
        self.durable = durable
        self.store = store
        self.block = block

    @classmethod
    def at(cls, path: str) -> KeyBound:
        """The bound kept in the file at ``path``, read now; raises :class:`CorruptKeyBound`."""
        return cls(read_key_bound(path), lambda bound: write_key_bound(path, bound))
