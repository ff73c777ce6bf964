"""HTML pages for people: the form, the result of an add, a link's info page, and errors.

Made with ``twisted.web.template``, which escapes every value it is given: nothing a client sent is
ever echoed unescaped. Each page is self-contained (one small inline stylesheet, a few lines of
inline script for the copy button, no external resource) and every HTML answer carries a strict
Content-Security-Policy naming exactly that stylesheet and script by hash, so no injected markup
could run anything. The pages work without JavaScript; the script only adds the copy button.
They fit a 360 px phone screen.
"""

from __future__ import annotations

import base64
import hashlib
import time
from http import HTTPStatus

from twisted.web.http import RESPONSES
from twisted.web.server import Request
from twisted.web.template import Tag, flattenString, tags

from goto_tw.keys import KEY_HINT, KEY_PATTERN, MAX_KEY_LENGTH

#: The one stylesheet: readable on a phone (fluid width, large touch targets), no external fonts.
STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:40rem;margin:0 auto;padding:1rem;line-height:1.5;"
    "color:#111;background:#fff}"
    # A long key without hyphens (a custom one, in a heading or an error) wraps instead of widening the page.
    "h1{font-size:1.4rem;overflow-wrap:anywhere}code,.error{overflow-wrap:anywhere}label{display:block;margin:.6rem 0 .2rem;font-weight:600}"
    "input{box-sizing:border-box;width:100%;font-size:1rem;padding:.5rem}"
    "button,input[type=submit]{width:auto;margin-top:.8rem;padding:.5rem 1rem;font-size:1rem;cursor:pointer}"
    ".short{font-size:1.2rem;word-break:break-all}.long{word-break:break-all;color:#444}"
    ".qr{display:block;margin:1rem 0;image-rendering:pixelated}.error{color:#a00}.hint{display:block;color:#555;margin-top:.2rem}"
    "dl{display:grid;grid-template-columns:auto 1fr;gap:.3rem 1rem}dd{margin:0;word-break:break-all}"
    "dt{font-weight:600}nav{margin-top:1.5rem}"
)
#: The copy button: shown only where the Clipboard API exists; the page is whole without it. (No
#: ``&``, ``<`` or ``>``: the template would escape them, breaking the script and its hash.)
SCRIPT = (
    'var b=document.getElementById("copy");'
    "if(b)if(navigator.clipboard){b.hidden=false;"
    'b.addEventListener("click",function(){'
    'navigator.clipboard.writeText(document.getElementById("short").href).then(function(){'
    'b.textContent="Copied"})})}'
)


def _hash(source: str) -> str:
    return (
        "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii") + "'"
    )


#: Only this page's own stylesheet and script, images from this origin (the QR code), forms posting
#: here; nothing else (no plug-ins, no framing, no base URL change).
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src {_hash(STYLE)}; script-src {_hash(SCRIPT)}; img-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
).encode("ascii")

#: Headers of every HTML answer.
HTML_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"Content-Type", b"text/html; charset=utf-8"),
    (b"Content-Security-Policy", CONTENT_SECURITY_POLICY),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
)


def status_phrase(status: int) -> bytes:
    """The reason phrase of ``status``: twisted.web's, else the standard one (429), else ``Error``."""
    known = RESPONSES.get(status)
    if known is not None:
        return known
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Error"


def reason_phrase(status: int) -> bytes | None:
    """The reason phrase to give ``setResponseCode`` for ``status``: ``None`` where twisted.web knows
    one (it writes its own), else :func:`status_phrase` (twisted.web would say "Unknown Status")."""
    return None if status in RESPONSES else status_phrase(status)


def _document(title: str, *content: Tag) -> bytes:
    page = tags.html(
        tags.head(
            tags.meta(charset="utf-8"),
            tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
            tags.title(title),
            tags.style(STYLE),
        ),
        tags.body(*content, tags.script(SCRIPT)),
        lang="en",
    )
    out: list[bytes] = []
    flattenString(None, page).addCallback(out.append)
    return b"<!DOCTYPE html>\n" + out[0]


#: The form's fields an error can be about (:func:`error_page`'s ``field``).
URL_FIELD = "url"
KEY_FIELD = "key"


def _form(url: str = "", key: str = "", autofocus: bool = True, at_fault: str | None = None) -> Tag:
    """The add form, holding ``url`` and ``key``. The field ``at_fault`` (an error page's) is marked
    invalid, pointed at the error (``aria-describedby``) and focused, so that a screen reader reads
    the reason with it; otherwise the URL field is focused (``autofocus``).

    The URL field has no ``maxlength``: a browser would cut a longer pasted URL short without a word,
    and a link to that cut URL be made; the server refuses it whole, saying why."""
    url_input = tags.input(
        type="url",
        id="url",
        name="url",
        required="",
        value=url,
        placeholder="https://example.com/a/long/link",
    )
    key_input = tags.input(
        type="text",
        id="key",
        name="key",
        maxlength=str(MAX_KEY_LENGTH),
        pattern=KEY_PATTERN,
        title=f"A custom key: {KEY_HINT}",
        value=key,
        placeholder="my-launch",
        autocomplete="off",
        **{"aria-describedby": "key-hint"},
    )
    faulty = {URL_FIELD: url_input, KEY_FIELD: key_input}.get(at_fault or "")
    if faulty is not None:
        described = "error key-hint" if faulty is key_input else "error"
        faulty(autofocus="", **{"aria-invalid": "true", "aria-describedby": described})
    elif autofocus:
        url_input(autofocus="")
    return tags.form(
        tags.label("Long URL", for_="url"),
        url_input,
        tags.label("Custom key (optional)", for_="key"),
        key_input,
        tags.small(KEY_HINT[0].upper() + KEY_HINT[1:] + ".", id="key-hint", class_="hint"),
        tags.input(type="submit", value="Shorten"),
        method="POST",
        action="/add",
    )


#: The form's line on a private instance (``--private``): a browser's form cannot send a key.
PRIVATE_NOTE = (
    "Adding links here needs an API key (Authorization: Bearer KEY, e.g. with curl or the JSON API "
    "at /api/v1/links); this form alone cannot add."
)


def _private_notes(private: bool) -> list[Tag]:
    return [tags.p(PRIVATE_NOTE, id="private")] if private else []


def form_page(private: bool = False) -> bytes:
    """The add form (``GET /``, ``GET /add``); on a private instance it says that adding needs a
    key, so a visitor is not left with a bare 401."""
    return _document("goto: shorten a link", tags.h1("Shorten a link"), *_private_notes(private), _form())


def result_page(short: str, url: str, key: str, new: bool) -> bytes:
    """The answer to a browser's add: the short link (with a copy button), the long URL, its QR code,
    a link to its info page, and the form again."""
    return _document(
        "goto: your short link",
        tags.h1("Your short link" if new else "This link was already shortened"),
        tags.p(
            tags.a(short, href=short, id="short", class_="short"),
            " ",
            tags.button("Copy", type="button", id="copy", hidden=""),
        ),
        tags.p("Goes to: ", tags.span(url, class_="long")),
        tags.img(src=f"/{key}.qr", alt="QR code of the short link", class_="qr", width="164", height="164"),
        tags.p(tags.a("Info and clicks", href=f"/{key}+", id="info")),
        tags.h2("Shorten another"),
        _form(autofocus=False),
    )


def format_created(created: float | None) -> str:
    """A creation time as people read it (UTC, to the minute), or "unknown"."""
    if created is None:
        return "unknown"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(created))


#: The info page's clicks and creation time while the statistics cannot be had (a slave whose master
#: is down still shows the link it redirects).
STATS_UNAVAILABLE = "not available right now"


def info_page(
    short: str, url: str, key: str, clicks: int | None, created: float | None, stats_unavailable: bool = False
) -> bytes:
    """A link's info page (``GET /KEY+``): where it goes, its QR code, when it was made, its clicks
    (``None``: not counted by this server; ``stats_unavailable``: none to be had right now)."""
    if stats_unavailable:
        clicks_text = created_text = STATS_UNAVAILABLE
    else:
        clicks_text = "not counted by this server" if clicks is None else str(clicks)
        created_text = format_created(created)
    return _document(
        f"goto: {key}",
        tags.h1("Link ", tags.code(key)),
        tags.dl(
            tags.dt("Short link"),
            tags.dd(tags.a(short, href=short, id="short")),
            tags.dt("Goes to"),
            tags.dd(tags.span(url, class_="long", id="long")),
            tags.dt("Clicks"),
            tags.dd(clicks_text, id="clicks"),
            tags.dt("Created"),
            tags.dd(created_text, id="created"),
        ),
        tags.button("Copy the short link", type="button", id="copy", hidden=""),
        tags.img(src=f"/{key}.qr", alt="QR code of the short link", class_="qr", width="164", height="164"),
        tags.nav(tags.a("Shorten a link", href="/")),
    )


def error_page(
    status: int, message: str, url: str = "", key: str = "", field: str | None = None, private: bool = False
) -> bytes:
    """An error for a browser: the reason (announced: ``role="alert"``) and the form again, with
    what was typed (escaped), the ``field`` at fault (:data:`URL_FIELD`, :data:`KEY_FIELD`) marked
    and focused, and on a private instance the note that adding needs a key, as the form page has."""
    title = status_phrase(status).decode("ascii", "replace")
    return _document(
        f"goto: {title}",
        tags.h1(title),
        tags.p(message, class_="error", id="error", role="alert"),
        *_private_notes(private),
        _form(url, key, at_fault=field),
    )


def write_html(request: Request, status: int, body: bytes, headers: dict[bytes, bytes] | None = None) -> None:
    """Answer ``status`` with an HTML page and its security headers, and finish the request."""
    request.setResponseCode(status, reason_phrase(status))
    for name, value in HTML_HEADERS:
        request.setHeader(name, value)
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()
