"""Tombstones: the data-file record that disables a key, ``{"key":"K","disabled":SECONDS}``.

A disabled key answers 410 Gone for ever and is never handed out again; its pair stays in the file
(keys are never reused), and the tombstone follows it. Tombstones are rare, so the loader's fast
scan of plain pair records is untouched: a chunk holding one is read line by line, and a line that
names ``"disabled"`` is parsed here.
"""

from __future__ import annotations

import json

#: The bytes that mark a line as a tombstone candidate (a pair record never holds them unescaped:
#: a URL's quote would be escaped).
MARK = b'"disabled":'


def encode_tombstone(key: str, when: int) -> bytes:
    """The line that disables ``key`` (``when``: whole seconds since the epoch), newline included."""
    return json.dumps({"key": key, "disabled": int(when)}, separators=(",", ":")).encode("ascii") + b"\n"


def parse_tombstone(line: bytes) -> tuple[str, int] | None:
    """``(key, when)`` if ``line`` is a well-formed tombstone, else ``None`` (not one, or damaged)."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or set(record) != {"key", "disabled"}:
        return None
    key, when = record["key"], record["disabled"]
    if not isinstance(key, str) or not key or type(when) is not int or when < 0:
        return None
    return key, when
