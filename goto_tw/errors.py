"""The failures a store reports, each mapped to one stable HTTP status and one XML-RPC fault code.

The web layer and the RPC layer translate these, and nothing else, into client-visible errors; any
other exception is a bug and is logged with its traceback.
"""

from __future__ import annotations

#: Seconds a client is told to wait (``Retry-After``) when the store is unavailable: the one place
#: that decides it, for the web pages, the JSON API and the fast path alike.
RETRY_AFTER_SECONDS = 5


def one_line(exc: BaseException) -> str:
    """An exception as one line for an operator (libpq's and OpenSSL's texts span lines): its text,
    at most 300 characters, or its type's name when it has none."""
    return " ".join(str(exc).split())[:300] or type(exc).__name__


class GotoError(Exception):
    """Base of the errors a store reports to its callers.

    ``str(error)`` is the message for the client: short, in words fit for the user, free of
    internals. ``detail`` (optional) is for the operator's log only: errno texts, peer addresses,
    failure reprs. Nothing that answers a client ever writes ``detail``.
    """

    #: HTTP status the web front end answers for this error.
    http_status = 500
    #: XML-RPC fault code the master answers (and the slave maps back) for this error.
    fault_code = 500
    #: Seconds for a ``Retry-After`` header with this error, or ``None`` for none.
    retry_after: int | None = None

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail

    def log_text(self) -> str:
        """The message with its detail, for a log line (never for a client)."""
        return f"{self} ({self.detail})" if self.detail else str(self)


#: How much of a key :func:`no_link_text` shows: a key no check has bounded yet (a PostgreSQL master's,
#: a path segment the API refuses) can be as long as the request line. It bounds the key as ``repr``
#: writes it (quotes aside), not the key: ``repr`` writes an unprintable character in up to 10
#: (``\U000f0000``), and a master's fault text longer than a slave shows (300) would reach the slave's
#: caller as "cannot reach its store".
SHOWN_KEY_LENGTH = 80


def no_link_text(key: str) -> str:
    """What a client is told for a key no link is stored under: the same words on every path (the
    JSON API's problem, a master's fault, a slave's 404, a valid key's page), the longest beginning of
    the key whose ``repr`` (quoted, anything unprintable escaped) is at most :data:`SHOWN_KEY_LENGTH`
    characters besides its quotes."""
    shown = repr(key[:SHOWN_KEY_LENGTH])
    if len(shown) > SHOWN_KEY_LENGTH + 2:
        # Only a key with escaped characters. Bisection (the repr of a longer beginning is never
        # shorter): 7 reprs at most, where cutting a character at a time took up to 80 (60 us for a
        # key of astral characters, CPython 3.11, and a multicall may hold 1,000 such keys).
        fits, too_long = 0, SHOWN_KEY_LENGTH
        while too_long - fits > 1:
            middle = (fits + too_long) // 2
            if len(repr(key[:middle])) <= SHOWN_KEY_LENGTH + 2:
                fits = middle
            else:
                too_long = middle
        shown = repr(key[:fits])
    return f"no link is stored under {shown}"


class KeyNotFound(GotoError):
    """No long URL is stored under the key."""

    http_status = 404
    fault_code = 404

    @classmethod
    def for_key(cls, key: str) -> KeyNotFound:
        """The error for ``key``, its message :func:`no_link_text`."""
        return cls(no_link_text(key))


class KeyExists(GotoError):
    """``set`` was asked to store a key that is already taken (keys are never overwritten)."""

    http_status = 409
    fault_code = 409


class InvalidURL(GotoError):
    """The long URL is refused; the message says why, in words fit for the user."""

    http_status = 400
    fault_code = 400


#: Why a ``POST /add`` without a URL is refused: it would add nothing (a ``GET`` gets the form).
NO_URL = "no URL to shorten: send it as the form field url"


class InvalidKey(GotoError):
    """A custom key is refused (characters, length, a reserved path); the message says why."""

    http_status = 400
    fault_code = 400


#: Why a custom key is refused by a server whose store takes none (PostgreSQL, for now): the one
#: sentence the form, the API and the RPC all answer.
NO_CUSTOM_KEYS = "this server takes no custom keys"


class StoreUnavailable(GotoError):
    """The store cannot answer now (master unreachable, disk write failed); retrying later may work."""

    http_status = 503
    fault_code = 503
    retry_after = RETRY_AFTER_SECONDS


class MasterBusy(StoreUnavailable):
    """This slave's queue of calls to one master is full (the master answers too slowly for the
    load): a 503 for the caller, and, with several masters, a reason to ask another."""


class MasterUnreachable(StoreUnavailable):
    """A slave could not get an answer from its master (refused, reset, timed out, not XML-RPC)."""


class MasterFailed(StoreUnavailable):
    """The master answered a fault this slave has no meaning for (a bug there, most likely): a 503
    for the user, and no reason to believe the master down or to ask another master the same."""


class SlaveStopping(MasterUnreachable):
    """A stopping slave gave up waiting for its master (its drain ran out of time): a 503 for the
    user, and no news of the master (no outage logged, no master passed over or reported)."""


class MasterRefused(MasterUnreachable):
    """The master refused a slave's RPC secret: a deployment mistake, so a 503 for the user.

    For the slave it is as good as an unreachable master: it serves its cache, fails the rest
    fast, logs the cause once, and notices by itself when the secret is accepted again.
    """


#: What a disabled key answers (the same words on every path, master or slave).
DISABLED_MESSAGE = "This link has been disabled."


class KeyDisabled(GotoError):
    """The key was disabled by an operator: it answers 410 Gone for ever and is never handed out again."""

    http_status = 410
    fault_code = 410


class LinkUnusable(GotoError):
    """The URL stored under a key is not one the service would redirect to (a row written by hand
    or by another program): a 503 for that key only, not a sign that the store (or its master) is
    down, so a slave of several masters does not pass its master over for it."""

    http_status = 503
    fault_code = 500
    retry_after = RETRY_AFTER_SECONDS


class RateLimited(GotoError):
    """The client made more adds than its rate allows; ``retry_after`` says when one is allowed again."""

    http_status = 429
    fault_code = 429

    def __init__(self, message: str, retry_after: int, detail: str | None = None) -> None:
        super().__init__(message, detail)
        self.retry_after = retry_after


class NotAuthorized(GotoError):
    """The RPC caller did not present the shared secret the master requires."""

    http_status = 403
    fault_code = 401


class NotKept(GotoError):
    """What was asked is not kept by this server's store (click statistics on PostgreSQL, for now)."""

    http_status = 501
    fault_code = 501


class AddsUnchecked(GotoError):
    """A private master refuses an add forwarded by a slave that checks no API keys (started
    without ``--private``): adding needs a key this server cannot check. Everything else that
    slave asks is answered (redirects, disables, clicks)."""

    http_status = 403
    fault_code = 403


#: Errors by fault code, for the RPC client to map a master's fault back to the same error.
ERRORS_BY_FAULT_CODE: dict[int, type[GotoError]] = {
    cls.fault_code: cls
    for cls in (
        KeyNotFound,
        KeyExists,
        KeyDisabled,
        InvalidURL,
        StoreUnavailable,
        NotAuthorized,
        NotKept,
        LinkUnusable,
        AddsUnchecked,
    )
}
