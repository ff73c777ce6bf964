"""Short keys: the bijection from a counter to a base-62 key, and the paths a key must never take.

goto derives each new key from the store's count; doing the same keeps keys as short as they can be.
The reserved paths live here, in one place, so the web layer and the key generator cannot disagree.
"""

from __future__ import annotations

import re
import string
from collections.abc import Collection

ALPHABET = string.digits + string.ascii_letters
_BASE = len(ALPHABET)
_DIGIT_VALUE = {char: value for value, char in enumerate(ALPHABET)}

#: First path segments the service itself answers; no key may ever equal one of them.
RESERVED_SEGMENTS = frozenset(
    {
        "add",
        "api",
        "RPC2",
        "favicon.ico",
        "robots.txt",
        "health",
        "metrics",
        "static",
    }
)

#: Every path segment starting with this prefix belongs to the service (``/_goto/health``...).
RESERVED_PREFIX = "_"

#: The key a slave's health check looks up on its master: reserved, so it can never be stored; the
#: master answers it "unknown key" when it can serve (its database answers), else a 503.
HEALTH_PROBE_KEY = "_goto_health"


def key_for_index(index: int) -> str:
    """Return the base-62 key of ``index`` (0 -> ``"0"``, 61 -> ``"Z"``, 62 -> ``"10"``).

    It is a bijection between the non-negative integers and the base-62 strings without a leading
    zero (plus ``"0"`` itself), so distinct indexes never give the same key.
    """
    if index < 0:
        raise ValueError(f"key index must not be negative: {index}")
    if index == 0:
        return ALPHABET[0]
    digits = []
    while index:
        index, digit = divmod(index, _BASE)
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def index_for_key(key: str) -> int:
    """Return the index whose key is ``key``: the inverse of :func:`key_for_index`.

    Raises ``ValueError`` for a string that :func:`key_for_index` never produces.
    """
    if not key or (len(key) > 1 and key[0] == ALPHABET[0]):
        raise ValueError(f"not a generated key: {key!r}")
    index = 0
    for char in key:
        try:
            index = index * _BASE + _DIGIT_VALUE[char]
        except KeyError:
            raise ValueError(f"not a generated key: {key!r}") from None
    return index


def is_reserved(key: str) -> bool:
    """Tell whether ``key`` is a path the service answers itself, so it can never be a short key."""
    return key in RESERVED_SEGMENTS or key.startswith(RESERVED_PREFIX)


#: Characters a key may hold: the generated keys' base 62, plus ``-`` and ``_`` for custom keys
#: (``my-launch``). No other: a key is a path segment and a header value as it is, never escaped.
KEY_CHARACTERS = frozenset(ALPHABET + "-_")
#: Longest key, generated or custom.
MAX_KEY_LENGTH = 64
#: A key's shape as a regular expression, for Python's ``re``, JSON Schema and an HTML form's
#: ``pattern`` alike (the hyphen escaped, as a browser's ``v``-flag pattern needs it): 1 to
#: MAX_KEY_LENGTH of KEY_CHARACTERS. Reserved paths match it too (:func:`is_valid_key` says those).
KEY_PATTERN = rf"[0-9A-Za-z_\-]{{1,{MAX_KEY_LENGTH}}}"
#: What a custom key may hold, in words (the form's hint under its key field).
KEY_HINT = f"1 to {MAX_KEY_LENGTH} letters, digits, '-' or '_'"
#: Why a custom key is refused: the one sentence the form, the API and the RPC all answer.
INVALID_KEY = f"a custom key is {KEY_HINT}, and not a path the service uses itself"


def is_valid_key(key: str) -> bool:
    """Tell whether ``key`` could name a stored link: 1 to 64 key characters, not reserved.

    The web layer uses it to answer 404 at once for paths no key can match, without a store look-up;
    a custom key must pass it too, so a key a person chooses is one the service could serve.
    """
    return 0 < len(key) <= MAX_KEY_LENGTH and KEY_CHARACTERS.issuperset(key) and not is_reserved(key)


#: Only key characters and the separator :func:`all_valid_keys` joins keys with (never one of them):
#: one regex pass, several times faster than ``frozenset.issuperset`` of the joined text (PyPy: 30x).
_KEY_CHARACTERS_OR_SEPARATOR = re.compile("[" + re.escape("".join(sorted(KEY_CHARACTERS))) + "\n]*")


def all_valid_keys(keys: Collection[str]) -> bool:
    """``all(is_valid_key(key) for key in keys)``, in a few passes over all the keys at once.

    A master checks every key of a slave's click batch (up to 5,000), and a Python call per key
    was the largest part of that check (CPython: about 0.4 us a key). The rules are
    :func:`is_valid_key`'s, applied to the keys joined by a separator that no valid key holds.
    Every key must be a ``str`` (``TypeError`` otherwise, from the join); for a subclass of ``str``
    that overrides ``__iter__`` or ``startswith`` it may differ (:func:`is_valid_key` calls them).
    """
    if not keys:
        return True
    joined = "\n".join(keys)
    return (
        joined.count("\n") == len(keys) - 1  # no key holds the separator
        and not joined.startswith(RESERVED_PREFIX)
        and "\n" + RESERVED_PREFIX not in joined
        and RESERVED_SEGMENTS.isdisjoint(keys)
        and min(map(len, keys)) > 0
        and max(map(len, keys)) <= MAX_KEY_LENGTH
        and _KEY_CHARACTERS_OR_SEPARATOR.fullmatch(joined) is not None
    )
