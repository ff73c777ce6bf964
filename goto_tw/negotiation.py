"""Content negotiation: whether a request's ``Accept`` header prefers an HTML page to plain text.

Browsers send ``text/html`` first (``text/html,...,*/*;q=0.8``); curl and scripts send ``*/*`` or
nothing. Only a client that ranks HTML strictly above plain text gets the HTML pages, so every
other client keeps the plain-text answers byte for byte.
"""

from __future__ import annotations

import re

#: Longest ``Accept`` value looked at: a browser's is about 150 bytes; past this, plain text.
MAX_ACCEPT_BYTES = 1024
#: Most media ranges looked at.
MAX_RANGES = 32

_HTML = (b"text/html", b"application/xhtml+xml")
_ACCEPT_IN_HEAD = re.compile(rb"\r\naccept:[ \t]*([^\r\n]*)", re.IGNORECASE)


def _quality(parameters: list[bytes]) -> float:
    for parameter in parameters:
        name, _, value = parameter.partition(b"=")
        if name.strip().lower() == b"q":
            try:
                quality = float(value.strip())
            except ValueError:
                return 0.0
            return quality if 0.0 <= quality <= 1.0 else 0.0
    return 1.0


def prefers_html(accept: bytes | None) -> bool:
    """True when ``accept`` ranks ``text/html`` (or XHTML) above ``text/plain``; False when absent."""
    if not accept or len(accept) > MAX_ACCEPT_BYTES:
        return False
    html = 0.0
    plain: dict[bytes, float] = {}
    for item in accept.split(b",")[:MAX_RANGES]:
        media, *parameters = item.split(b";")
        media = media.strip().lower()
        quality = _quality(parameters)
        if media in _HTML:
            html = max(html, quality)
        elif media in (b"text/plain", b"text/*", b"*/*"):
            plain[media] = quality
    # The most specific range that matches text/plain decides its quality (RFC 9110, 12.5.1).
    plain_quality = next((plain[m] for m in (b"text/plain", b"text/*", b"*/*") if m in plain), 0.0)
    return html > 0.0 and html > plain_quality


def head_prefers_html(head: bytes) -> bool:
    """:func:`prefers_html` of the ``Accept`` header in a raw request head (the fast path's view).

    Of repeated ``Accept`` headers the last one counts, as in twisted.web's ``getHeader``: one rule
    on both paths, so a request gets the same answer whichever path serves it.
    """
    values = _ACCEPT_IN_HEAD.findall(head)
    # twisted.web strips a header value's trailing white space too (it counts against the bound).
    return bool(values) and prefers_html(values[-1].rstrip())
