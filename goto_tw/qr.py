"""QR codes of short links, made by ``segno`` (a well-kept, pure-Python encoder; never hand-rolled).

Only short links of this service are encoded (a key checked by the web layer and ``--host``), so the
input is short and the work bounded: a few milliseconds per code.
"""

from __future__ import annotations

import io

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
