"""CORS for the JSON API (``--cors-origin``): which browser pages may call ``/api/`` from elsewhere.

Off unless origins are named. A request whose ``Origin`` is one of them gets
``Access-Control-Allow-Origin`` (that origin, never ``*``: an API key may ride along) on every
answer under ``/api/``, errors included, so a page can read a 401 or a 429 (and every answer there
says ``Vary: Origin``, for caches); a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered ``204`` allowing the
API's methods and the ``Authorization`` and ``Content-Type`` headers. Any other origin gets no CORS
header at all (its preflight is what ``OPTIONS`` is without CORS: a 405), and nothing outside
``/api/`` (redirects, the form, ``/_goto/``) is touched.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

#: An origin as a browser sends it: ``http(s)://HOST[:PORT]``, lower case, nothing after.
_ORIGIN = re.compile(r"https?://(?:\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?)(?::[0-9]{1,5})?")
#: What a preflight allows: the API's methods, and the request headers its calls need.
ALLOW_METHODS = b"DELETE, GET, HEAD, OPTIONS, POST"
ALLOW_HEADERS = b"Authorization, Content-Type"
#: Answer headers a page may read: where a link was created, when to retry, how to authenticate.
EXPOSE_HEADERS = b"Location, Retry-After, WWW-Authenticate"
#: Seconds a browser may keep a preflight's answer.
PREFLIGHT_MAX_AGE = b"600"


def parse_origins(value: str) -> frozenset[str]:
    """The origins of one ``--cors-origin`` value (comma-separated), or ``ValueError``; ``*`` is any."""
    origins = set()
    for part in value.split(","):
        origin = part.strip().lower().rstrip("/")
        if not origin:
            continue
        if origin != "*" and _ORIGIN.fullmatch(origin) is None:
            raise ValueError(f"expected an origin (https://HOST[:PORT]) or *, not {part.strip()!r}")
        origins.add(origin)
    if not origins:
        raise ValueError(f"no origin in {value!r}")
    return frozenset(origins)


def allowed_origin(origins: frozenset[str], origin: bytes | None) -> bytes | None:
    """``origin`` (an ``Origin`` header's value) if ``origins`` lets its pages read answers, else ``None``."""
    if origin is None or not origins:
        return None
    try:
        text = origin.decode("ascii").lower()
    except UnicodeDecodeError:
        return None
    if _ORIGIN.fullmatch(text) is None:
        return None  # echoed into a header: an origin's characters only (no CR, LF, spaces)
    return origin if text in origins or "*" in origins else None


def refusal_headers(origins: frozenset[str], origin: bytes | None) -> bytes:
    """The CORS header lines (CRLF-ended) of an answer written before any resource sees the request
    (a 413, 431 or 400 under ``/api/``): the same as :class:`CORSResource` sets, so a page can read
    the problem document instead of a network error."""
    allowed = allowed_origin(origins, origin)
    if allowed is None:
        return b"Vary: Origin\r\n" if origins else b""
    return b"Vary: Origin\r\nAccess-Control-Allow-Origin: %s\r\nAccess-Control-Expose-Headers: %s\r\n" % (
        allowed,
        EXPOSE_HEADERS,
    )


class CORSResource(Resource):
    """Wraps the ``/api`` node: CORS headers for listed origins, and their preflights."""

    def __init__(self, inner: Resource, origins: frozenset[str]) -> None:
        super().__init__()
        self._inner = inner
        self._origins = origins
        #: The wrapped node's children, for code that reaches through it (the rate limit's wiring).
        self.children = inner.children

    def _allowed(self, request: Request) -> bytes | None:
        """The request's ``Origin`` if it is listed (then the CORS headers are set), else ``None``."""
        # Whatever the origin: an answer that depends on Origin says so, for any cache on the way.
        request.setHeader(b"vary", b"Origin")
        origin = allowed_origin(self._origins, request.getHeader(b"origin"))
        if origin is None:
            return None
        request.setHeader(b"access-control-allow-origin", origin)
        request.setHeader(b"access-control-expose-headers", EXPOSE_HEADERS)
        return origin

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        if self._allowed(request) is not None and _is_preflight(request):
            return _Preflight()
        child: IResource = self._inner.getChildWithDefault(path, request)
        return child

    def render(self, request: Request) -> Any:
        if self._allowed(request) is not None and _is_preflight(request):
            return _Preflight().render(request)
        return self._inner.render(request)


def _is_preflight(request: Request) -> bool:
    return request.method == b"OPTIONS" and request.getHeader(b"access-control-request-method") is not None


class _Preflight(Resource):
    """``204`` to a listed origin's preflight (its ``Access-Control-Allow-Origin`` is already set)."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setResponseCode(204)
        request.setHeader(b"access-control-allow-methods", ALLOW_METHODS)
        request.setHeader(b"access-control-allow-headers", ALLOW_HEADERS)
        request.setHeader(b"access-control-max-age", PREFLIGHT_MAX_AGE)
        return b""


def add_cors(root: Resource, origins: frozenset[str]) -> None:
    """Put the JSON API of ``root`` behind CORS for ``origins`` (nothing if there are none)."""
    if origins:
        root.putChild(b"api", CORSResource(root.children[b"api"], origins))
