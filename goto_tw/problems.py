"""RFC 9457 problem documents: how every error under ``/api/`` is answered, whichever layer refuses it.

The JSON API's resources, the web layer's 404/405 answers under ``/api/`` and the channel's own
refusals (413, 414, 431), written before any resource is reached, all build their body here.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from urllib.parse import unquote_to_bytes

#: The media type of a problem document.
PROBLEM_JSON = b"application/problem+json"


def is_api_path(path: bytes) -> bool:
    """Tell whether a request path belongs to the JSON API, whose errors are problem documents: its
    first segment is ``api`` as twisted.web finds resources, percent-decoded (``/%61pi/v1/links``
    reaches the API too, so its refusals must be problem documents as well)."""
    if path == b"/api" or path.startswith((b"/api/", b"/api?")):
        return True
    if not path.startswith(b"/") or b"%" not in path:
        return False
    first = path[1:].split(b"?", 1)[0].split(b"/", 1)[0]
    return unquote_to_bytes(first) == b"api"


def problem_body(status: int, detail: str) -> bytes:
    """The JSON body of a problem: the status, its title and a human sentence."""
    problem = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail}
    return json.dumps(problem, separators=(",", ":")).encode("utf-8") + b"\n"
