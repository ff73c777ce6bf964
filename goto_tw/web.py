"""The web front end: the add form, adding a URL, and redirecting a key (``twisted.web`` resources).

Every response a user can cause is decided here: 302 for a known key, 404 for an unknown one, 400
with a short reason for a refused URL, 503 with ``Retry-After`` while the store cannot answer. HTML
is made with ``twisted.web.template``, which escapes whatever it is given; errors are plain text.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.error import UnsupportedMethod
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.template import Tag, flattenString, tags

from goto_tw.errors import GotoError, InvalidURL
from goto_tw.interfaces import IURLStore
from goto_tw.keys import is_valid_key

log = Logger()
T = TypeVar("T")

#: Why a URL that is not UTF-8 is refused (the general and the fast path say the same).
NOT_UTF8 = "the URL is not valid UTF-8"


def _flatten(tag: Tag) -> bytes:
    """Render a template synchronously: the pages here hold no Deferreds."""
    out: list[bytes] = []
    flattenString(None, tag).addCallback(out.append)
    return b"<!DOCTYPE html>\n" + out[0]


def form_page() -> bytes:
    """Return the HTML of the add form (``GET /``, ``GET /add``), which posts to ``/add``."""
    return _flatten(
        tags.html(
            tags.head(
                tags.meta(charset="utf-8"),
                tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
                tags.title("goto: shorten a URL"),
            ),
            tags.body(
                tags.h1("goto"),
                tags.form(
                    tags.label("Add this URL: ", tags.input(type="url", name="url", required="", size="60")),
                    tags.input(type="submit", value="Shorten"),
                    method="POST",
                    action="/add",
                ),
            ),
            lang="en",
        )
    )


def write_text(request: Request, status: int, text: str, headers: dict[bytes, bytes] | None = None) -> None:
    """Answer ``status`` with a short plain-text body and finish the request."""
    body = text.encode("utf-8") + b"\n"
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"content-length", b"%d" % len(body))
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    request.write(body)
    request.finish()


def write_error(request: Request, error: GotoError) -> None:
    """Answer a store error with its own status; 503s tell the client when to retry."""
    write_text(request, error.http_status, str(error), retry_after_header(error))


def retry_after_header(error: GotoError) -> dict[bytes, bytes]:
    """The ``Retry-After`` header an error's answer carries (none for most errors)."""
    return {} if error.retry_after is None else {b"retry-after": b"%d" % error.retry_after}


def respond_when_ready(
    request: Request,
    result: Deferred[T],
    answer: Callable[[T], None],
    on_error: Callable[[Request, GotoError], None] = write_error,
) -> int:
    """Answer ``request`` with ``answer(value)`` once ``result`` fires; return ``NOT_DONE_YET``.

    Store errors are answered by ``on_error`` (their HTTP status), any other failure is a logged 500
    with no traceback shown to the client. A client that goes away cancels ``result`` and gets
    nothing written to it.
    """
    gone = False

    def client_gone(_: Failure) -> None:
        nonlocal gone
        gone = True
        result.cancel()

    def succeeded(value: T) -> None:
        if not gone:
            answer(value)

    def failed(failure: Failure) -> None:
        if gone:
            return
        if isinstance(failure.value, GotoError):
            # No log line per refused request: the access log has the status, and the cause (a
            # master outage, a disk failure) is logged once where it is detected.
            on_error(request, failure.value)
        else:
            log.failure("Failed to answer {method} {uri}", failure, method=request.method, uri=request.uri)
            write_text(request, http.INTERNAL_SERVER_ERROR, "Internal error: the server log has the details.")

    request.notifyFinish().addErrback(client_gone)
    result.addCallbacks(succeeded, failed).addErrback(
        lambda failure: log.failure("Failed to write a response", failure)
    )
    return NOT_DONE_YET


class PlainResource(Resource):
    """Base of every resource here: unknown children are a plain 404, unsupported methods a plain 405.

    twisted.web's own answers for these are deprecated HTML error pages; ours are short text, with
    the ``Allow`` header a 405 must carry.
    """

    def getChild(self, path: bytes, request: Request) -> Resource:
        return NotFoundResource()

    def render(self, request: Request) -> Any:
        if request.method == b"HEAD" and getattr(self, "render_GET", None) is None:
            # twisted.web's default HEAD calls render_GET even where there is none (XML-RPC).
            methods = [
                name[len("render_") :].encode("ascii") for name in dir(self) if name.startswith("render_")
            ]
            return self._not_allowed(request, [method for method in methods if method != b"HEAD"])
        try:
            return super().render(request)
        except UnsupportedMethod as unsupported:
            allowed: list[bytes] = list(unsupported.allowedMethods)
            if request.method == b"HEAD" and b"GET" in allowed:
                raise  # twisted.web answers HEAD by rendering GET without its body
            return self._not_allowed(request, allowed)

    @staticmethod
    def _not_allowed(request: Request, allowed: list[bytes]) -> int:
        if b"GET" in allowed and b"HEAD" not in allowed:
            allowed.append(b"HEAD")
        request.setHeader(b"allow", b", ".join(sorted(allowed)))
        method = request.method.decode("ascii", "replace")
        write_text(request, http.NOT_ALLOWED, f"{method} is not allowed here.")
        return NOT_DONE_YET


class FormResource(PlainResource):
    """``GET /``: the add form."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self._page = form_page()

    def render_GET(self, request: Request) -> bytes:
        if request.postpath not in ([], [b""]):
            return _not_found(request)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return self._page


class AddResource(PlainResource):
    """``/add``: the form without ``url``; with it, store the URL and answer ``http://HOST/KEY``."""

    isLeaf = True

    def __init__(self, store: IURLStore, host: str) -> None:
        super().__init__()
        self._store = store
        self._host = host
        self._form = form_page()

    def render_GET(self, request: Request) -> object:
        values = (request.args or {}).get(b"url") or [b""]
        raw = values[0]
        if not raw:
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            return self._form
        try:
            url = raw.decode("utf-8")
        except UnicodeDecodeError:
            write_error(request, InvalidURL(NOT_UTF8))
            return NOT_DONE_YET
        return respond_when_ready(request, self._store.put(url), lambda key: self._answer(request, key))

    render_POST = render_GET

    def render_HEAD(self, request: Request) -> bytes:
        # HEAD must be safe: a link checker or prefetcher must not create links. Answer the form's headers.
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return self._form

    def _answer(self, request: Request, key: str) -> None:
        write_text(request, http.OK, f"http://{self._host}/{key}")


class RedirectResource(PlainResource):
    """``/KEY``: 302 to the long URL, 404 for an unknown key (``HEAD`` answers the same headers)."""

    isLeaf = True

    def __init__(self, store: IURLStore, key: str) -> None:
        super().__init__()
        self._store = store
        self._key = key

    def render_GET(self, request: Request) -> object:
        if request.postpath:
            return _not_found(request)
        return respond_when_ready(request, self._store.get(self._key), lambda url: _redirect(request, url))

    render_HEAD = render_GET


def _redirect(request: Request, url: str) -> None:
    request.setResponseCode(http.FOUND)
    request.setHeader(b"location", url.encode("ascii"))
    request.setHeader(b"content-length", b"0")
    request.finish()


def _not_found(request: Request) -> bytes:
    write_text(request, http.NOT_FOUND, "No link here.")
    return NOT_DONE_YET  # type: ignore[return-value]


class GotoRoot(PlainResource):
    """The root: fixed children (``add``, ``RPC2``...) first, then any other segment is a key."""

    def __init__(self, store: IURLStore, host: str) -> None:
        super().__init__()
        self._store = store
        self.putChild(b"", FormResource())
        self.putChild(b"add", AddResource(store, host))

    def getChild(self, path: bytes, request: Request) -> Resource:
        try:
            key = path.decode("ascii")
        except UnicodeDecodeError:
            key = ""
        if not is_valid_key(key):
            return NotFoundResource()
        return RedirectResource(self._store, key)

    def render_GET(self, request: Request) -> bytes:
        # Reached for a request target with no path segment at all; answer as "/" does.
        return self.children[b""].render(request)  # type: ignore[no-any-return]


class NotFoundResource(Resource):
    """404 for any path that cannot be a key, whatever the method."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        return _not_found(request)
