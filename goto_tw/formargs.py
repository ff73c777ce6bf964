"""The arguments of a query string or form body, split at ``&`` only.

twisted.web's ``parse_qs`` (behind ``Request.args``) also splits at ``;``, HTML 4's old advice that
the WHATWG URL standard and Python's own ``urllib.parse`` (since 3.9.2) dropped: an add of
``/add?url=https://a.example/p;jsessionid=1``, the URL given unescaped as curl users and the README
write it, stored ``https://a.example/p``, a link silently cut. ``urllib.parse.parse_qs`` cannot
stand in: it reads bytes as ASCII and refuses the raw UTF-8 a client may send unescaped. So this is
twisted.web's ``parse_qs(data, keep_blank_values=1)`` less the ``;`` split: the general path's
``request.args`` (a query and a form body; see ``goto_tw.limits.BoundedRequest``) and the fast
path's adds are read with it, on every route.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

#: The body types twisted.web reads arguments from (as its Content-Type parser names them).
FORM_CONTENT_TYPE = b"application/x-www-form-urlencoded"
MULTIPART_CONTENT_TYPE = b"multipart/form-data"


def parse_arguments(data: bytes) -> dict[bytes, list[bytes]]:
    """``name=value`` pairs of ``data`` split at ``&``, each unescaped (``+`` a space, ``%XX`` a
    byte), the values of each name in order; an item without ``=`` is skipped, a blank value kept."""
    arguments: dict[bytes, list[bytes]] = {}
    for item in data.split(b"&"):
        name, equals, value = item.partition(b"=")
        if not equals:
            continue
        name = unquote_to_bytes(name.replace(b"+", b" "))
        value = unquote_to_bytes(value.replace(b"+", b" "))
        if name in arguments:
            arguments[name].append(value)
        else:
            arguments[name] = [value]
    return arguments
