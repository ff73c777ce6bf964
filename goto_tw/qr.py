"""QR codes of short links, made by ``segno`` (a well-kept, pure-Python encoder; never hand-rolled).

Only short links of this service are encoded (a key checked by the web layer and ``--host``), so the
input is short and the work bounded: a few milliseconds per code (a PNG about 10 ms on CPython), which
is why the codes made are kept (:class:`QRCodes`) and a client may make only so many a second.
"""

from __future__ import annotations

import io
from collections import OrderedDict

import segno

#: Module size in pixels and quiet-zone width in modules (the standard asks for 4; 2 scans fine on screens).
SCALE = 4
BORDER = 2


def qr_svg(text: str) -> bytes:
    """The QR code of ``text`` as a standalone SVG document (no XML declaration, no scripts)."""
    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="svg", scale=SCALE, border=BORDER, xmldecl=False)
    return out.getvalue()


def qr_png(text: str) -> bytes:
    """The QR code of ``text`` as a PNG image."""
    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="png", scale=SCALE, border=BORDER)
    return out.getvalue()


#: Codes kept (each a few KiB): the links whose QR codes people are looking at now.
MAX_CODES = 1000


class QRCodes:
    """The QR codes made lately, by text and kind (``svg``, ``png``), the oldest dropped past
    ``max_codes``: a link never changes, so a code asked for again costs a look-up, not a render."""

    def __init__(self, max_codes: int = MAX_CODES) -> None:
        self._max_codes = max_codes
        self._codes: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._codes)

    def kept(self, text: str, kind: str) -> bytes | None:
        """The code of ``text`` if it is kept (and now the newest), else ``None``."""
        code = self._codes.get((text, kind))
        if code is not None:
            self._codes.move_to_end((text, kind))
        return code

    def make(self, text: str, kind: str) -> bytes:
        """Render the code of ``text`` as ``kind`` and keep it."""
        code = qr_png(text) if kind == "png" else qr_svg(text)
        self._codes[(text, kind)] = code
        if len(self._codes) > self._max_codes:
            self._codes.popitem(last=False)
        return code
