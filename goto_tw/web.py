"""The web front end: the add form, adding a URL, and redirecting a key (``twisted.web`` resources).

Every response a user can cause is decided here: 302 for a known key, 404 for an unknown one, 400
with a short reason for a refused URL, 503 with ``Retry-After`` while the store cannot answer. HTML
is made with ``twisted.web.template``, which escapes whatever it is given; errors are plain text
(problem documents under ``/api/``).

The fast path's answers live here too (:class:`FastAnswers`), beside the resources whose bytes they
equal: both serialisers take their headers from the same definitions (:data:`TEXT_HEADERS`,
:data:`REDIRECT_HEADERS`), so they cannot drift apart.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any, Callable, NamedTuple, Optional, TypeVar, Union
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.error import UnsupportedMethod
from twisted.web.http import RESPONSES, datetimeToString
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.server import version as server_version
from zope.interface import Interface, implementer

from goto_tw.clicks import PreviewBotFilter, is_preview_bot
from goto_tw.errors import (
    NO_CUSTOM_KEYS,
    NO_URL,
    GotoError,
    InvalidKey,
    InvalidURL,
    KeyExists,
    NotKept,
    StoreUnavailable,
)
from goto_tw.fastpath import FastAnswer, IFastResponder
from goto_tw.formargs import parse_arguments
from goto_tw.interfaces import IClickCounter, ILinkAdder, ILinkStats, ILocalLookup, IURLStore
from goto_tw.keys import INVALID_KEY, is_valid_key
from goto_tw.negotiation import prefers_html
from goto_tw.pages import (
    KEY_FIELD,
    URL_FIELD,
    error_page,
    form_page,
    info_page,
    reason_phrase,
    result_page,
    write_html,
)
from goto_tw.problems import PROBLEM_JSON, is_api_path, problem_body
from goto_tw.qr import QRCodes
from goto_tw.timestamps import PerSecond
from goto_tw.urls import validate_url

log = Logger()
T = TypeVar("T")

#: Why a URL that is not UTF-8 is refused (the general and the fast path say the same).
NOT_UTF8 = "the URL is not valid UTF-8"
#: What a client is told about a bug; the log has the details.
INTERNAL_ERROR = "Internal error: the server log has the details."

#: Headers of a plain-text answer, after twisted.web's Server and Date and before Content-Length,
#: in the order twisted.web writes them: the one definition both serialisers use.
TEXT_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"Content-Type", b"text/plain; charset=utf-8"),
    (b"X-Content-Type-Options", b"nosniff"),
)
#: Every ``/add`` answer says its form (an HTML page or plain text) follows the client's ``Accept``,
#: so that no cache hands a browser's page to a script or the reverse: the one definition both
#: paths use (twisted.web writes it right after Date, where the fast path puts it).
VARY_ACCEPT = (b"Vary", b"Accept")
_VARY_ACCEPT = b"\r\n%s: %s" % VARY_ACCEPT
#: The Content-Type of an XML-RPC answer (twisted.web's ``XMLRPC``'s): the one definition both paths use.
XML_CONTENT_TYPE = b"text/xml; charset=utf-8"
#: The header telling a client when to try again (its value: ``GotoError.retry_after``).
RETRY_AFTER = b"Retry-After"
#: The header carrying a redirect's target, and the headers that follow it.
LOCATION = b"Location"
REDIRECT_HEADERS: tuple[tuple[bytes, bytes], ...] = ((b"Content-Length", b"0"),)
#: The statuses ``--redirect-status`` may choose; 302 (the seed's) by default.
REDIRECT_STATUSES = (301, 302, 307, 308)
DEFAULT_REDIRECT_STATUS = 302
#: How long a browser may keep a permanent redirect (301, 308) without asking again, in seconds.
PERMANENT_REDIRECT_MAX_AGE = 90


def redirect_headers(status: int) -> tuple[tuple[bytes, bytes], ...]:
    """The headers after ``Location`` of a redirect with ``status``: the one definition both paths use.

    A permanent redirect (301, 308) may be kept by a browser for ever unless told otherwise, and then
    a link disabled later (410) would keep redirecting there without the browser ever asking again.
    So permanent redirects say ``Cache-Control: private, max-age=90``, as YOURLS does (Shlink sends
    ``private,max-age=`` its redirect cache lifetime): shared caches keep nothing, a browser at most
    90 seconds. Temporary ones (302, 307) are not cached by default and get nothing, as the seed.
    """
    if status in (301, 308):
        return (*REDIRECT_HEADERS, (b"Cache-Control", b"private, max-age=%d" % PERMANENT_REDIRECT_MAX_AGE))
    return REDIRECT_HEADERS


#: A header value we send: visible ASCII only (no CR, LF, NUL, space or anything else that could
#: end a header or mean something else to a client).
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


def is_header_safe(value: str) -> bool:
    """Tell whether ``value`` may be sent as a header value as it is (visible ASCII only)."""
    return _HEADER_SAFE.fullmatch(value) is not None


def _log_unsendable(key: str) -> None:
    log.error(
        "The URL stored under {key!r} is not visible ASCII and cannot be sent in a Location header: "
        "answering 500 (a corrupt record?)",
        key=key,
    )


def short_url(origin: str, key: str) -> str:
    """The short link of ``key``: ``ORIGIN/KEY``, where ``origin`` is ``--host`` as checked at start-up
    (``https://go.example``), or a bare ``HOST[:PORT]`` (then over ``http``, as goto's are)."""
    return f"{origin}/{key}" if "://" in origin else f"http://{origin}/{key}"


def write_text(request: Request, status: int, text: str, headers: dict[bytes, bytes] | None = None) -> None:
    """Answer ``status`` with a short plain-text body and finish the request."""
    body = text.encode("utf-8") + b"\n"
    request.setResponseCode(status, reason_phrase(status))
    for name, value in TEXT_HEADERS:
        request.setHeader(name, value)
    request.setHeader(b"content-length", b"%d" % len(body))
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    request.write(body)
    request.finish()


#: The attribute marking a general-path request answered with a link's key (an add, new or found).
_ANSWERED_WITH_A_KEY = "goto_answered_with_a_key"


def answered_with_a_key(request: Request) -> None:
    """Mark ``request`` as an add answered with its key: ``goto_adds_total`` counts it when it is
    logged (a status alone cannot tell: the form page is a 200 on ``/add`` too)."""
    setattr(request, _ANSWERED_WITH_A_KEY, True)


def was_answered_with_a_key(request: object) -> bool:
    """Whether :func:`answered_with_a_key` marked ``request``."""
    return getattr(request, _ANSWERED_WITH_A_KEY, False)


def write_json_body(request: Request, status: int, body: bytes, content_type: bytes) -> None:
    """Answer ``status`` with a JSON ``body`` already encoded, and finish the request."""
    request.setResponseCode(status, reason_phrase(status))
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-length", b"%d" % len(body))
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.write(body)
    request.finish()


def write_problem(
    request: Request, status: int, detail: str, headers: dict[bytes, bytes] | None = None
) -> None:
    """Answer an RFC 9457 problem document: the status, its title and a human sentence."""
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    write_json_body(request, status, problem_body(status, detail), PROBLEM_JSON)


def write_refusal(
    request: Request, status: int, text: str, headers: dict[bytes, bytes] | None = None
) -> None:
    """Answer an error in the form its path calls for: a problem document under ``/api/``, else text."""
    if is_api_path(request.path or b""):
        write_problem(request, status, text, headers)
    else:
        write_text(request, status, text, headers)


def write_refusal_page(
    request: Request, status: int, text: str, headers: dict[bytes, bytes] | None = None, private: bool = False
) -> None:
    """Answer a refusal a person may meet in a browser (401 of ``--private``, 429 of the rate limit):
    under ``/api/`` a problem document and for other clients plain text, as :func:`write_refusal`;
    for a browser (``Accept`` preferring HTML) the HTML error page, same status and headers, with
    the reason and the form holding what was typed, as :class:`AddResource`'s other errors (with the
    note of a ``private`` instance). Outside ``/api/`` the answer says :data:`VARY_ACCEPT`, as every
    answer of ``/add``."""
    if is_api_path(request.path or b""):
        write_problem(request, status, text, headers)
        return
    request.setHeader(*VARY_ACCEPT)
    if not prefers_html(request.getHeader(b"accept")):
        write_text(request, status, text, headers)
        return
    args = request.args or {}
    url = (args.get(b"url") or [b""])[0].decode("utf-8", "replace")
    key = (args.get(b"key") or [b""])[0].decode("ascii", "replace")
    write_html(request, status, error_page(status, text, url, key, private=private), headers)


def write_error(request: Request, error: GotoError) -> None:
    """Answer a store error with its own status; 503s tell the client when to retry."""
    write_text(request, error.http_status, str(error), retry_after_header(error))


def retry_after_header(error: GotoError) -> dict[bytes, bytes]:
    """The ``Retry-After`` header an error's answer carries (none for most errors)."""
    return {} if error.retry_after is None else {RETRY_AFTER: b"%d" % error.retry_after}


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
            write_refusal(request, http.INTERNAL_SERVER_ERROR, INTERNAL_ERROR)

    def answer_failed(failure: Failure) -> None:
        # A bug in ``answer`` or ``on_error``: the client still gets an answer, unless one was begun.
        log.failure("Failed to write a response", failure)
        if not gone and not request.startedWriting and not request.finished:
            write_refusal(request, http.INTERNAL_SERVER_ERROR, INTERNAL_ERROR)

    request.notifyFinish().addErrback(client_gone)
    result.addCallbacks(succeeded, failed).addErrback(answer_failed).addErrback(
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
            return self._not_allowed(request, [method for method in allowed if method != b"HEAD"])

    @staticmethod
    def _not_allowed(request: Request, allowed: list[bytes]) -> int:
        if not allowed:
            # A node that only holds children (``/api``, ``/_goto``) answers nothing itself: twisted.web's
            # inherited HEAD would make it a 405 allowing only HEAD. Nothing is here.
            return _not_found(request)  # type: ignore[return-value]
        if b"GET" in allowed and b"HEAD" not in allowed:
            allowed.append(b"HEAD")
        request.setHeader(b"allow", b", ".join(sorted(allowed)))
        method = request.method.decode("ascii", "replace")
        write_refusal(request, http.NOT_ALLOWED, f"{method} is not allowed here.")
        return NOT_DONE_YET


class FormResource(PlainResource):
    """``GET /``: the add form."""

    isLeaf = True

    def __init__(self, private: bool = False) -> None:
        super().__init__()
        self._page = form_page(private)

    def render_GET(self, request: Request) -> bytes:
        if request.postpath not in ([], [b""]):
            return _not_found(request)
        write_html(request, http.OK, self._page)
        return NOT_DONE_YET  # type: ignore[return-value]


class AddResource(PlainResource):
    """``/add``: the form without ``url`` (a ``POST`` without it is a 400: it adds nothing); with it,
    store the URL and answer ``http://HOST/KEY``. ``/add/anything`` is not it: 404."""

    isLeaf = True

    def __init__(self, store: IURLStore, host: str, private: bool = False) -> None:
        super().__init__()
        self._store = store
        self._host = host
        self._private = private
        self._form = form_page(private)

    def render(self, request: Request) -> object:
        if request.postpath not in ([], [b""]):
            return _not_found(request)
        request.setHeader(*VARY_ACCEPT)
        return super().render(request)

    def render_GET(self, request: Request) -> object:
        args = request.args or {}
        raw = (args.get(b"url") or [b""])[0]
        raw_key = (args.get(b"key") or [b""])[0]
        html = prefers_html(request.getHeader(b"accept"))
        if not raw and request.method == b"POST":
            self._error(request, InvalidURL(NO_URL), html, "", raw_key.decode("ascii", "replace"))
            return NOT_DONE_YET
        if not raw:
            write_html(request, http.OK, self._form)
            return NOT_DONE_YET
        try:
            url = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._error(request, InvalidURL(NOT_UTF8), html)
            return NOT_DONE_YET
        key: str | None = None
        if raw_key:
            key = raw_key.decode("ascii", "replace")
            if not is_valid_key(key):
                self._error(request, InvalidKey(INVALID_KEY), html, url, key)
                return NOT_DONE_YET
        adder = ILinkAdder(self._store, None)
        if adder is None or (key is None and not html):
            # Plain clients without a custom key: exactly the seed's answer, through ``put``.
            if key is not None:
                self._error(request, InvalidKey(NO_CUSTOM_KEYS), html, url, key)
                return NOT_DONE_YET
            return respond_when_ready(request, self._store.put(url), lambda key: self._answer(request, key))
        return respond_when_ready(
            request,
            adder.add(url, key),
            lambda added: self._added(request, added, html, url),
            on_error=lambda request, error: self._error(request, error, html, url, key or ""),
        )

    render_POST = render_GET

    def render_HEAD(self, request: Request) -> bytes:
        # HEAD must be safe: a link checker or prefetcher must not create links. Answer the form's headers.
        write_html(request, http.OK, self._form)
        return NOT_DONE_YET  # type: ignore[return-value]

    def _answer(self, request: Request, key: str) -> None:
        answered_with_a_key(request)
        write_text(request, http.OK, short_url(self._host, key))

    def _added(self, request: Request, added: tuple[str, bool], html: bool, url: str) -> None:
        key, new = added
        if not html:
            self._answer(request, key)
            return
        stored_url = validate_url(url)  # as stored (an IRI in its ASCII form); the add accepted it
        answered_with_a_key(request)
        write_html(request, http.OK, result_page(short_url(self._host, key), stored_url, key, new))

    def _error(self, request: Request, error: Exception, html: bool, url: str = "", key: str = "") -> None:
        if not isinstance(error, GotoError):
            log.error("Failed to answer an add: {error!r}", error=error)
            error = GotoError(INTERNAL_ERROR)
        if html:
            page = error_page(error.http_status, str(error), url, key, _field_at_fault(error), self._private)
            write_html(request, error.http_status, page, retry_after_header(error))
        else:
            write_error(request, error)


def is_form_add(request: Request) -> bool:
    """Whether a request to ``/add`` would store a URL: a ``GET`` or ``POST`` with ``url``, at
    ``/add`` itself (``/add/anything`` is a 404; the form page and ``HEAD`` add nothing). The rate
    limit takes a token and ``--private`` asks for a key for exactly these."""
    return (
        request.method in (b"GET", b"POST")
        and request.postpath in ([], [b""])
        and bool((request.args or {}).get(b"url", [b""])[0])
    )


def _field_at_fault(error: GotoError) -> str | None:
    """The form's field an add's error is about, for the error page to mark: the key (refused or
    taken), the URL (refused), or neither (the service cannot add now, the client is limited)."""
    if isinstance(error, (InvalidKey, KeyExists)):
        return KEY_FIELD
    if isinstance(error, InvalidURL):
        return URL_FIELD
    return None


class RedirectResource(PlainResource):
    """``/KEY``: a redirect (302 unless ``--redirect-status`` says otherwise) to the long URL, 404 for
    an unknown key (``HEAD`` answers the same headers)."""

    isLeaf = True

    def __init__(
        self,
        store: IURLStore,
        key: str,
        clicks: IClickCounter | None = None,
        status: int = DEFAULT_REDIRECT_STATUS,
    ) -> None:
        super().__init__()
        self._store = store
        self._key = key
        self._clicks = clicks
        self._status = status

    def render_GET(self, request: Request) -> object:
        if request.postpath:
            return _not_found(request)
        key = self._key
        return respond_when_ready(
            request, self._store.get(key), lambda url: self._redirect(request, key, url)
        )

    def _redirect(self, request: Request, key: str, url: str) -> None:
        _redirect(request, key, url, self._status)
        if (
            self._clicks is not None
            and request.code == self._status
            and request.method == b"GET"
            and not is_preview_bot(request.getHeader(b"user-agent"))
        ):
            self._clicks.click(key)

    render_HEAD = render_GET


def _stats_not_kept(failure: Failure, url: str) -> tuple[str, dict[str, object]]:
    """The info page of a link whose statistics are not kept here (the link, its clicks not counted
    here), or cannot be had now (a slave's master is down: the link it still redirects, its clicks
    unavailable, rather than a 503 for the whole page)."""
    if failure.check(StoreUnavailable):
        return url, {"clicks": None, "created": None, "unavailable": True}
    failure.trap(NotKept)
    return url, {"clicks": None, "created": None}


class InfoResource(PlainResource):
    """``/KEY+``: the link's info page (long URL, short link, QR code, created, clicks); 404 page if unknown."""

    isLeaf = True

    def __init__(
        self, store: IURLStore, stats: ILinkStats | None, host: str, key: str, private: bool = False
    ) -> None:
        super().__init__()
        self._store = store
        self._stats = stats
        self._host = host
        self._key = key
        self._private = private

    def render_GET(self, request: Request) -> object:
        if request.postpath:
            return _not_found(request)
        key = self._key

        def with_stats(url: str) -> Deferred[tuple[str, dict[str, object]]]:
            if self._stats is None:
                return succeed((url, {"clicks": 0, "created": None}))
            return self._stats.stats(key).addCallbacks(
                lambda stats: (url, stats), lambda failure: _stats_not_kept(failure, url)
            )

        def answer(found: tuple[str, dict[str, object]]) -> None:
            url, stats = found
            clicks, created = stats.get("clicks"), stats.get("created")
            page = info_page(
                short_url(self._host, key),
                url,
                key,
                clicks if isinstance(clicks, int) else None,
                created if isinstance(created, float) else None,
                stats_unavailable=stats.get("unavailable") is True,
            )
            write_html(request, http.OK, page)

        def failed(request: Request, error: GotoError) -> None:
            message = "No link is stored under this key." if error.http_status == 404 else str(error)
            page = error_page(error.http_status, message, private=self._private)
            write_html(request, error.http_status, page, retry_after_header(error))

        return respond_when_ready(request, self._store.get(key).addCallback(with_stats), answer, failed)

    render_HEAD = render_GET


#: Headers of a QR code: an image that can hold no active content, cached (a link never changes).
QR_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"Content-Security-Policy", b"default-src 'none'"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Cache-Control", b"public, max-age=86400"),
)


class RenderRefusal(NamedTuple):
    """Why a QR code is not rendered now: the status (429 for this client, 503 for everyone), the
    text, and whole seconds until one may be (``Retry-After``)."""

    status: int
    text: str
    wait: int


#: Asks whether the client of a request may have a QR code rendered now: ``None`` (yes) or why not
#: (:class:`~goto_tw.ratelimit.RenderBudget`, while adds are rate-limited).
RenderGate = Callable[[Request], Optional[RenderRefusal]]


class QRResource(PlainResource):
    """``/KEY.qr``: the short link's QR code as SVG, or PNG with ``?format=png``; 404 if unknown.

    A code is rendered once and kept (:class:`~goto_tw.qr.QRCodes`); rendering one that is not
    kept first asks ``may_render``, so neither one client nor many together can keep the reactor
    busy rendering (a 429 or a 503, with ``Retry-After``).
    """

    isLeaf = True

    def __init__(
        self, store: IURLStore, host: str, key: str, codes: QRCodes, may_render: RenderGate | None = None
    ) -> None:
        super().__init__()
        self._store = store
        self._host = host
        self._key = key
        self._codes = codes
        self._may_render = may_render

    def render_GET(self, request: Request) -> object:
        if request.postpath:
            return _not_found(request)
        wanted = ((request.args or {}).get(b"format") or [b"svg"])[0]
        if wanted not in (b"svg", b"png"):
            write_text(request, http.BAD_REQUEST, "format is svg or png")
            return NOT_DONE_YET
        short = short_url(self._host, self._key)

        def answer(_: str) -> None:
            kind = wanted.decode("ascii")
            body = self._codes.kept(short, kind)
            if body is None:
                refused = None if self._may_render is None else self._may_render(request)
                if refused is not None:
                    write_text(request, refused.status, refused.text, {RETRY_AFTER: b"%d" % refused.wait})
                    return
                body = self._codes.make(short, kind)
            request.setResponseCode(http.OK)
            request.setHeader(b"content-type", b"image/png" if kind == "png" else b"image/svg+xml")
            for name, value in QR_HEADERS:
                request.setHeader(name, value)
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
            request.finish()

        return respond_when_ready(request, self._store.get(self._key), answer)

    render_HEAD = render_GET


def _redirect(request: Request, key: str, url: str, status: int) -> None:
    if not is_header_safe(url):
        # twisted.web would turn CR/LF into spaces and send a mangled Location: refuse it whole.
        _log_unsendable(key)
        write_text(request, http.INTERNAL_SERVER_ERROR, INTERNAL_ERROR)
        return
    request.setResponseCode(status)
    request.setHeader(LOCATION, url.encode("ascii"))
    for name, value in redirect_headers(status):
        request.setHeader(name, value)
    request.finish()


def _not_found(request: Request) -> bytes:
    if is_api_path(request.path or b""):
        write_problem(request, http.NOT_FOUND, "no such API resource")
    else:
        write_text(request, http.NOT_FOUND, "No link here.")
    return NOT_DONE_YET  # type: ignore[return-value]


class GotoRoot(PlainResource):
    """The root: fixed children (``add``, ``RPC2``...) first, then any other segment is a key."""

    def __init__(
        self,
        store: IURLStore,
        host: str,
        clicks: IClickCounter | None = None,
        stats: ILinkStats | None = None,
        *,
        redirect_status: int = DEFAULT_REDIRECT_STATUS,
        private: bool = False,
    ) -> None:
        super().__init__()
        self._store = store
        self._host = host
        self._clicks = clicks
        self._stats = stats
        self._redirect_status = redirect_status
        self._private = private
        self._qr_codes = QRCodes()
        #: Set by the wiring when adds are rate-limited (see :class:`QRResource`).
        self.may_render: RenderGate | None = None
        self.putChild(b"", FormResource(private))
        self.putChild(b"add", AddResource(store, host, private))

    def getChild(self, path: bytes, request: Request) -> Resource:
        try:
            key = path.decode("ascii")
        except UnicodeDecodeError:
            key = ""
        if key.endswith("+") and is_valid_key(key[:-1]):
            return InfoResource(self._store, self._stats, self._host, key[:-1], self._private)
        if key.endswith(".qr") and is_valid_key(key[:-3]):
            return QRResource(self._store, self._host, key[:-3], self._qr_codes, self.may_render)
        if not is_valid_key(key):
            return NotFoundResource()
        return RedirectResource(self._store, key, self._clicks, self._redirect_status)

    def render_GET(self, request: Request) -> bytes:
        # Reached for a request target with no path segment at all; answer as "/" does.
        return self.children[b""].render(request)  # type: ignore[no-any-return]


class NotFoundResource(Resource):
    """404 for any path that cannot be a key, whatever the method."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        return _not_found(request)


#: Status line and Server header of each answer the fast path writes, made once.
_STATUS_LINES = {
    status: b"HTTP/1.1 %d %s\r\nServer: %s\r\nDate: " % (status, RESPONSES[status], server_version)
    for status in (200, *REDIRECT_STATUSES, 400, 403, 404, 409, 500, 503)
}
_TEXT_HEADERS = b"".join(b"\r\n%s: %s" % header for header in TEXT_HEADERS)
_LOCATION = b"\r\n" + LOCATION + b": "
#: What follows the URL in a redirect, per status.
_REDIRECT_ENDS = {
    status: b"".join(b"\r\n%s: %s" % header for header in redirect_headers(status)) + b"\r\n\r\n"
    for status in REDIRECT_STATUSES
}


def text_response(
    status: int, date: bytes, text: bytes, retry_after: int | None = None, vary_accept: bool = False
) -> bytes:
    """The bytes twisted.web sends for :func:`write_text`, header for header (``vary_accept``: an
    ``/add`` answer, with :data:`VARY_ACCEPT`)."""
    start = _STATUS_LINES.get(status) or b"HTTP/1.1 %d %s\r\nServer: %s\r\nDate: " % (
        status,
        RESPONSES.get(status) or reason_phrase(status),
        server_version,
    )
    return b"%s%s%s%s\r\nContent-Length: %d\r\n%s\r\n%s" % (
        start,
        date,
        _VARY_ACCEPT if vary_accept else b"",
        _TEXT_HEADERS,
        len(text),
        b"" if retry_after is None else b"%s: %d\r\n" % (RETRY_AFTER, retry_after),
        text,
    )


class IRPCCalls(Interface):
    """The master's XML-RPC calls, as the fast path makes them (``/RPC2``'s resource provides it)."""

    def fast_call(
        authorization: Optional[bytes], body: bytes, unchecked_adds: bool = False
    ) -> Union[bytes, Deferred[bytes], None]:
        """The UTF-8 XML answer (or a Deferred of it) to the XML-RPC call in ``body``, sent with the
        ``Authorization`` header value ``authorization`` (``None`` without one): the very content
        the general path writes; ``None`` to leave the request to twisted.web, which refuses it (the
        authorization is not the one required: checked before the body is parsed). With
        ``unchecked_adds`` (a slave that checks no API keys), a private master refuses the adds in
        the call and answers the rest. A Deferred never fails, but with ``CancelledError`` once
        cancelled (then nothing more is done or logged)."""


_XML_HEADERS = b"\r\nContent-Type: %s\r\nContent-Length: " % XML_CONTENT_TYPE


def xml_response(date: bytes, content: bytes) -> FastAnswer:
    """The answer twisted.web writes for an XML-RPC call answered ``content``, dated ``date``."""
    return (
        200,
        len(content),
        b"%s%s%s%d\r\n\r\n%s" % (_STATUS_LINES[200], date, _XML_HEADERS, len(content), content),
    )


def _headers_only(answer: FastAnswer) -> FastAnswer:
    """``answer`` without its body, as twisted.web answers a ``HEAD`` (the access log says ``-``)."""
    status, size, whole = answer
    assert isinstance(size, int)
    return status, "-", whole[: len(whole) - size]


@implementer(IFastResponder)
class FastAnswers:
    """The fast path's answers: the very bytes :class:`RedirectResource`, :class:`AddResource` and
    (through :attr:`rpc_calls`) the ``/RPC2`` resource send.

    No accounting here: the channel has each answer logged and counted once it is written.
    """

    #: False (``--private``): every add goes to the general path, which asks for a key.
    adds = True
    #: The master's ``/RPC2`` calls (set by the site when it serves them), or ``None``: every
    #: ``POST /RPC2`` goes to the general path.
    rpc_calls: IRPCCalls | None = None

    def __init__(
        self,
        store: IURLStore,
        local: ILocalLookup,
        host: str,
        clock: IReactorTime,
        clicks: IClickCounter | None = None,
        redirect_status: int = DEFAULT_REDIRECT_STATUS,
    ) -> None:
        self._store = store
        self._lookup = local.lookup
        self._host = host
        self._date = PerSecond(clock, datetimeToString)
        self._click = clicks.click if clicks is not None else None
        self._is_bot = PreviewBotFilter()
        self._redirect_status = redirect_status
        self._redirect_start = _STATUS_LINES[redirect_status]
        self._redirect_end = _REDIRECT_ENDS[redirect_status]

    def redirect(self, method: str, key: str, head: bytes = b"") -> FastAnswer | None:
        """A redirect to what the store holds locally under ``key``, at once; ``None`` otherwise
        (then :meth:`redirect_later`). A ``GET`` from anyone but a link-preview bot counts one
        click (a dict increment)."""
        url = self._lookup(key)
        if url is None:
            return None
        return self._redirect(url, method, key, head)

    def redirect_later(self, method: str, key: str, head: bytes = b"") -> Deferred[FastAnswer]:
        """Answer ``GET``/``HEAD /KEY`` of a key not held locally as :class:`RedirectResource` does.

        The store is asked (``get``: a slave asks its master) and the answer made once it has
        answered: the redirect (and its click), or what :func:`write_error` writes (404, 410, 503
        with ``Retry-After``...). A Deferred the channel cancels (the client has gone) counts and
        logs nothing.
        """
        try:
            asked = self._store.get(key)
        except Exception:  # a bug in the store: a 500 in order, as twisted.web answers a resource that raises
            asked = fail()
        return asked.addBoth(self._redirect_answered, method, key, head)

    def _redirect_answered(
        self, result: Union[str, Failure], method: str, key: str, head: bytes
    ) -> Union[FastAnswer, Failure]:
        """:meth:`_redirect` or :meth:`_refused`: one ``addBoth``, which costs about 0.25 us less
        than ``addCallbacks`` on CPython 3.11 (that checks its four argument slots on every call)."""
        if isinstance(result, Failure):
            return self._refused(result, method, key)
        return self._redirect(result, method, key, head)

    def _redirect(self, url: str, method: str, key: str, head: bytes) -> FastAnswer:
        if _HEADER_SAFE.fullmatch(url) is None:
            _log_unsendable(key)
            return self.internal_error(method)
        if self._click is not None and method == "GET" and not self._is_bot(head):
            self._click(key)
        start = self._redirect_start + self._date.now() + _LOCATION
        return self._redirect_status, "-", start + url.encode("ascii") + self._redirect_end

    def _refused(self, failure: Failure, method: str, key: str) -> Union[FastAnswer, Failure]:
        """What :func:`respond_when_ready` answers for a failed look-up, dated now."""
        return self._failed(failure, method, b"/" + key.encode(), self._date.now())

    def _failed(
        self, failure: Failure, method: str, uri: bytes, date: bytes, vary_accept: bool = False
    ) -> Union[FastAnswer, Failure]:
        """What :func:`respond_when_ready` answers for a store call that failed, dated ``date``: the
        error's status and text (with its ``Retry-After``), nothing for one the channel cancelled (its
        client has gone: nothing to answer or log), a logged 500 for anything else (a bug), logged as
        the general path logs it (the method and URI as bytes)."""
        error = failure.value
        if isinstance(error, CancelledError):
            return failure
        if isinstance(error, GotoError):
            answer = self._dated_text(date, error.http_status, str(error), error.retry_after, vary_accept)
        else:
            log.failure("Failed to answer {method} {uri}", failure, method=method.encode(), uri=uri)
            answer = self._dated_text(date, 500, INTERNAL_ERROR, vary_accept=vary_accept)
        return _headers_only(answer) if method == "HEAD" else answer

    def _text(self, method: str, status: int, text: str, retry_after: int | None = None) -> FastAnswer:
        """The bytes of :func:`write_text`, dated now (for ``HEAD``, twisted.web sends the headers only)."""
        answer = self._dated_text(self._date.now(), status, text, retry_after)
        return _headers_only(answer) if method == "HEAD" else answer

    def add(
        self,
        method: str,
        target: bytes,
        body: bytes,
        admit: Callable[[], FastAnswer | None] | None = None,
    ) -> Union[FastAnswer, Deferred[FastAnswer], None]:
        """Answer ``GET /add?url=`` or a form ``POST /add`` as :class:`AddResource` does.

        ``None`` (twisted.web answers) when there is no ``url`` (the form page) or there is a custom
        ``key``. Otherwise ``admit`` (the rate limit) is asked, exactly where twisted.web's
        ``LimitAdds`` would ask, and then the answer, or a Deferred of it once the pair is durable;
        the arguments are those the general path reads (``request.args``: :meth:`_url_argument`).
        Asking only here keeps it one token per add: an add left to twisted.web takes its token there.
        """
        if not self.adds:
            return None
        raw, key_given = self._url_argument(target.split(b"?", 1)[1] if method == "GET" else body)
        if not raw or key_given:
            return None  # the form page, or a custom key: twisted.web answers (and limits)
        if admit is not None:
            refused = admit()
            if refused is not None:
                return refused
        date = self._date.now()  # twisted.web dates a response when the request is processed
        try:
            url = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._dated_text(date, InvalidURL.http_status, NOT_UTF8, vary_accept=True)
        try:
            putting = self._store.put(url)
        except Exception:  # a bug in the store: a 500 in order, not an exception out of dataReceived
            putting = fail()
        # A bound method with arguments, not closures made per add, and one addBoth (as for a miss):
        # the same answers, less work each.
        return putting.addBoth(self._add_answered, method, target, date)

    @staticmethod
    def _url_argument(query: bytes) -> tuple[bytes, bool]:
        """The first ``url`` argument of a query string or form body (``b""`` for none), and whether
        it has a ``key`` argument: as :func:`~goto_tw.formargs.parse_arguments` (the general path's
        ``request.args``) gives them, a property test holds them equal.

        The shape nearly every add has, ``url=`` and the URL alone, is read without
        ``parse_arguments`` (two ``unquote_to_bytes``, a dict and lists per add), and its usual
        escapes (``%3A``, ``%2F``, as browsers and wrk encode a URL) are replaced in place: the form
        wrk sends, measured on CPython 3.11, 2.5 -> 1.0 us. Anything else goes through it.
        """
        # One argument, no ``+`` for a space: no ``&`` or ``+`` (one C-level scan for the two).
        if not query.startswith(b"url=") or len(query.translate(None, b"&+")) != len(query):
            args = parse_arguments(query)
            return (args.get(b"url") or [b""])[0], bool(args.get(b"key"))
        url = query[4:]
        escapes = url.count(b"%")
        if not escapes:
            return url, False
        if escapes == url.count(b"%3A") + url.count(b"%2F"):  # every % starts one of those two
            return url.replace(b"%3A", b":").replace(b"%2F", b"/"), False
        return unquote_to_bytes(url), False

    @staticmethod
    def _dated_text(
        date: bytes, status: int, text: str, retry_after: int | None = None, vary_accept: bool = False
    ) -> FastAnswer:
        """The bytes of :func:`write_text` for a ``GET``/``POST`` (not ``HEAD``), dated ``date``."""
        data = text.encode("utf-8") + b"\n"
        return status, len(data), text_response(status, date, data, retry_after, vary_accept)

    def _add_answered(
        self, result: Union[str, Failure], method: str, target: bytes, date: bytes
    ) -> Union[FastAnswer, Failure]:
        if not isinstance(result, Failure):
            try:
                return self._dated_text(date, 200, short_url(self._host, result), vary_accept=True)
            except Exception:  # a bug (a key that is no text): the add's 500, as the general path's
                result = Failure()
        return self._failed(result, method, target, date, vary_accept=True)

    def rpc(
        self, body: bytes, authorization: bytes | None = None, unchecked_adds: bool = False
    ) -> Union[FastAnswer, Deferred[FastAnswer], None]:
        """Answer ``POST /RPC2`` as the ``/RPC2`` resource does on the general path (its own
        :meth:`IRPCCalls.fast_call` makes the answer), or ``None`` to leave it to twisted.web."""
        calls = self.rpc_calls
        if calls is None:
            return None
        date = self._date.now()  # twisted.web dates a response when the request is processed
        content = calls.fast_call(authorization, body, unchecked_adds)
        if content is None:
            return None
        if isinstance(content, bytes):
            return xml_response(date, content)
        return content.addCallback(partial(xml_response, date))

    def internal_error(self, method: str = "GET") -> FastAnswer:
        """The 500 :func:`respond_when_ready` answers for a bug, dated now."""
        return self._text(method, 500, INTERNAL_ERROR)
