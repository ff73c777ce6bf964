"""The JSON API: ``POST /api/v1/links`` and ``GET /api/v1/links/KEY``, errors as RFC 9457 problems.

It answers the same store errors as the form (404, 400, 503 with ``Retry-After``) but as
``application/problem+json``, and refuses what is not a small JSON object naming a ``url`` with a 4xx
(415 wrong content type, 413 too large, 400 malformed or incomplete), never a 500.
"""

from __future__ import annotations

import json
import time
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from goto_tw.auth import NO_KEYS, APIKeys, refuse
from goto_tw.clients import ClientAddresses
from goto_tw.errors import NO_CUSTOM_KEYS, GotoError, InvalidKey, InvalidURL, NotKept, no_link_text
from goto_tw.interfaces import ILinkAdder, ILinkAdmin, ILinkStats, IURLStore
from goto_tw.keys import INVALID_KEY, KEY_CHARACTERS, MAX_KEY_LENGTH, is_valid_key
from goto_tw.urls import validate_url
from goto_tw.web import (
    PlainResource,
    answered_with_a_key,
    respond_when_ready,
    retry_after_header,
    short_url,
    write_json_body,
    write_problem,
)

#: Largest request body accepted, in bytes: a 4 KiB URL plus JSON framing fits with room to spare.
MAX_JSON_BODY_BYTES = 16 * 1024
#: Links per page of ``GET /api/v1/links`` by default, and at most.
DEFAULT_PAGE = 100
MAX_PAGE = 1000


def write_json(
    request: Request, status: int, document: dict[str, Any], content_type: bytes = b"application/json"
) -> None:
    """Answer ``status`` with ``document`` as JSON and finish the request."""
    body = json.dumps(document, separators=(",", ":")).encode("utf-8") + b"\n"
    write_json_body(request, status, body, content_type)


def write_error_problem(request: Request, error: GotoError) -> None:
    """A store error as a problem document, with ``Retry-After`` for a 503."""
    write_problem(request, error.http_status, str(error), retry_after_header(error))


def _method_not_allowed(request: Request, allowed: bytes) -> int:
    request.setHeader(b"allow", allowed)
    method = request.method.decode("ascii", "replace")
    write_problem(request, 405, f"{method} is not allowed here; use {allowed.decode()}")
    return NOT_DONE_YET


class LinksResource(PlainResource):
    """``/api/v1/links`` (POST creates) and ``/api/v1/links/KEY`` (GET reads)."""

    isLeaf = True

    def __init__(
        self,
        store: IURLStore,
        host: str,
        stats: ILinkStats | None = None,
        keys: APIKeys | None = None,
        *,
        private: bool = False,
        clients: ClientAddresses | None = None,
    ) -> None:
        """``keys`` guard the management calls (listing, disabling; and creating if ``private``):
        without keys, those always answer 401, saying that this server takes no key."""
        super().__init__()
        self._store = store
        self._host = host
        self._stats = stats
        self._keys = keys
        self._private = private
        self._clients = clients or ClientAddresses()
        self._admin = ILinkAdmin(store, None)

    def _authorized(self, request: Request) -> bool:
        """Whether the request carries an API key in force; if not, it has been answered 401."""
        client = self._clients.of_request(request)
        if self._keys is None:
            refuse(request, NO_KEYS)  # not "send a key": none would do
            return False
        return self._keys.authorize(request, client)

    def render(self, request: Request) -> int:
        path = request.postpath or []
        if path in ([], [b""]):
            if request.method in (b"GET", b"HEAD"):
                return self._list(request) if self._authorized(request) else NOT_DONE_YET
            if request.method != b"POST":
                return _method_not_allowed(request, b"GET, HEAD, POST")
            if self._private and not self._authorized(request):
                return NOT_DONE_YET
            return self._create(request)
        if len(path) == 1:
            if request.method == b"DELETE":
                return self._disable(request, path[0]) if self._authorized(request) else NOT_DONE_YET
            if request.method not in (b"GET", b"HEAD"):
                return _method_not_allowed(request, b"DELETE, GET, HEAD")
            return self._read(request, path[0])
        write_problem(request, 404, "no such API resource")
        return NOT_DONE_YET

    def _create(self, request: Request) -> int:
        content_type = (request.getHeader(b"content-type") or b"").split(b";", 1)[0].strip().lower()
        if content_type != b"application/json" and not content_type.endswith(b"+json"):
            write_problem(request, 415, 'send the link as application/json: {"url": "https://..."}')
            return NOT_DONE_YET
        assert request.content is not None
        body = request.content.read(MAX_JSON_BODY_BYTES + 1)
        if len(body) > MAX_JSON_BODY_BYTES:
            write_problem(request, 413, f"the body is larger than {MAX_JSON_BODY_BYTES} bytes")
            return NOT_DONE_YET
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            write_problem(request, 400, "the body is not valid JSON")
            return NOT_DONE_YET
        url = document.get("url") if isinstance(document, dict) else None
        if not isinstance(url, str):
            write_problem(request, 400, 'the JSON object needs a "url" string')
            return NOT_DONE_YET
        key = document.get("key")
        # "key": null is refused as any other non-string is: the OpenAPI document says a string.
        if "key" in document and (not isinstance(key, str) or not is_valid_key(key)):
            write_error_problem(request, InvalidKey(INVALID_KEY))
            return NOT_DONE_YET
        try:
            url = validate_url(url)  # answer the URL as stored (an IRI becomes its ASCII form)
        except InvalidURL as error:
            write_error_problem(request, error)
            return NOT_DONE_YET

        def created(added: tuple[str, bool]) -> None:
            key, new = added
            request.setHeader(b"location", f"/api/v1/links/{key}".encode("ascii"))
            document = {"key": key, "url": url, "short_url": short_url(self._host, key)}
            answered_with_a_key(request)
            write_json(request, 201 if new else 200, document)

        adder = ILinkAdder(self._store, None)
        if adder is None:
            if key is not None:
                write_problem(request, 400, NO_CUSTOM_KEYS)
                return NOT_DONE_YET
            added = self._store.put(url).addCallback(lambda key: (key, True))
        else:
            added = adder.add(url, key)
        return respond_when_ready(request, added, created, on_error=write_error_problem)

    def _read(self, request: Request, segment: bytes) -> int:
        key = segment.decode("ascii", "replace")
        if not is_valid_key(key):
            write_problem(request, 404, no_link_text(key))
            return NOT_DONE_YET

        def with_stats(url: str) -> Deferred[dict[str, Any]]:
            document: dict[str, Any] = {"key": key, "url": url}
            if self._stats is None:
                return succeed(document)

            def add(stats: dict[str, object]) -> dict[str, Any]:
                created = stats.get("created")
                document["clicks"] = stats.get("clicks")
                document["created"] = None if not isinstance(created, float) else _rfc3339(created)
                return document

            def not_kept(failure: Failure) -> dict[str, Any]:
                failure.trap(NotKept)  # this store keeps no statistics: the link without them
                return document

            return self._stats.stats(key).addCallbacks(add, not_kept)

        found = self._store.get(key).addCallback(with_stats)
        return respond_when_ready(
            request, found, lambda document: write_json(request, 200, document), on_error=write_error_problem
        )

    def _list(self, request: Request) -> int:
        """``GET /api/v1/links?after=KEY&limit=N``: a page of links in a stable order (master only)."""
        admin = self._admin
        if admin is None:
            write_problem(
                request,
                404,
                "links are listed by a master on the data-file store (not by a slave, not yet on PostgreSQL)",
            )
            return NOT_DONE_YET
        args = request.args or {}
        after_raw = (args.get(b"after") or [b""])[0]
        limit_raw = (args.get(b"limit") or [b"%d" % DEFAULT_PAGE])[0]
        # At most four digits before int(): thousands of them are refused by int() itself (a 500).
        if not limit_raw.isdigit() or len(limit_raw) > 4 or not 1 <= int(limit_raw) <= MAX_PAGE:
            write_problem(request, 400, f"limit must be a whole number from 1 to {MAX_PAGE}")
            return NOT_DONE_YET
        # As the OpenAPI document says: 1 to MAX_KEY_LENGTH key characters (``after=`` included).
        after: str | None = None
        if b"after" in args:
            if not 0 < len(after_raw) <= MAX_KEY_LENGTH or not KEY_CHARACTERS.issuperset(
                after_raw.decode("latin-1")
            ):
                write_problem(request, 400, "after must be a key")
                return NOT_DONE_YET
            after = after_raw.decode("ascii")
        limit = int(limit_raw)
        page = admin.links(after, limit)
        document: dict[str, Any] = {
            "links": [_link_document(self._host, key, url, disabled) for key, url, disabled in page]
        }
        if len(page) == limit:
            document["next"] = f"/api/v1/links?after={page[-1][0]}&limit={limit}"
        write_json(request, 200, document)
        return NOT_DONE_YET

    def _disable(self, request: Request, segment: bytes) -> int:
        """``DELETE /api/v1/links/KEY``: disable the link everywhere (410 from then on); master only."""
        admin = self._admin
        if admin is None:
            write_problem(
                request,
                404,
                "links are disabled on a master on the data-file store (not on a slave, not yet on PostgreSQL)",
            )
            return NOT_DONE_YET
        key = segment.decode("ascii", "replace")
        if not is_valid_key(key):
            write_problem(request, 404, no_link_text(key))
            return NOT_DONE_YET

        def disabled(when: int) -> None:
            assert admin is not None
            write_json(request, 200, _link_document(self._host, key, admin.url_of(key) or "", when))

        return respond_when_ready(request, admin.disable(key), disabled, on_error=write_error_problem)


def _link_document(host: str, key: str, url: str, disabled: int | None) -> dict[str, Any]:
    """A link as the management API shows it: ``disabled`` is when (seconds since the epoch) or null."""
    return {"key": key, "url": url, "short_url": short_url(host, key), "disabled": disabled}


def _rfc3339(seconds: float) -> str:
    """A time as RFC 3339 UTC, to the second (``2026-11-29T12:52:00Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
