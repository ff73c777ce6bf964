"""API keys: who may manage links (and, with ``--private``, create them).

``--api-keys-file`` holds one key per line (blank lines and ``#`` comments allowed: a key cannot
hold a ``#``); each key is at least :data:`MIN_KEY_BYTES` bytes, so it cannot be guessed by trying
(nor a key cut short by a ``#`` be used). It is read at start and again on SIGHUP
(:mod:`goto_tw.reload`): the keys in force are exactly the file's good lines, a bad line is logged
and left out, so taking a leaked key out (emptying the file, or commenting it out) revokes it at
the next reload; at start a file with no good line stops start-up, and on reload one that cannot be
read at all keeps the keys already loaded. Keys are compared in constant time, each against every
key, and never logged. A request presents one as ``Authorization: Bearer KEY``; a missing or wrong
key is a 401 with ``WWW-Authenticate: Bearer`` (a problem under ``/api/``, an HTML page for a
browser), and failed attempts are logged at most once a second per client address (from a bounded
table), so a guessing client cannot flood the log.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from goto_tw.accesslog import printable
from goto_tw.clients import ClientAddresses
from goto_tw.ratelimit import rate_bucket
from goto_tw.web import PlainResource, is_form_add, write_refusal_page

log = Logger()

#: Largest keys file read, in bytes: a file of keys is small; anything bigger is a mistake.
MAX_KEYS_FILE_BYTES = 1 << 20
#: Longest key accepted, in bytes.
MAX_KEY_BYTES = 256
#: Client addresses remembered for the once-a-second log of failed attempts.
MAX_LOGGED_CLIENTS = 10_000
#: Bad lines of a keys file logged, at most, each time it is read (each names its line).
MAX_PROBLEMS_LOGGED = 10
#: Most refusal lines logged in one second, whatever the clients (a botnet guessing keys).
MAX_REFUSAL_LINES = 10


class KeysFileError(Exception):
    """The keys file cannot be used; the message names the file and line (never a key)."""


#: Shortest key accepted, in bytes: a shorter one could be found by trying (failed attempts are
#: logged sparingly, not slowed down).
MIN_KEY_BYTES = 16


def _keys_and_problems(path: str, data: bytes) -> tuple[list[bytes], list[str]]:
    """The good keys of a keys file's ``data``, and what is wrong with each bad line (by number)."""
    keys: list[bytes] = []
    problems: list[str] = []
    glued: list[int] = []  # "KEY#x" lines: the key is KEY, which the operator may not know
    for number, raw in enumerate(data.splitlines(), start=1):
        before, comment, _ = raw.partition(b"#")
        line = before.strip()
        if not line:
            continue
        if comment and not before[-1:].isspace():
            glued.append(number)  # the line is kept, as before
        if not line.isascii() or any(byte <= 0x20 or byte == 0x7F for byte in line):
            problems.append(f"{path}, line {number}: a key is one word of printable ASCII")
        elif not MIN_KEY_BYTES <= len(line) <= MAX_KEY_BYTES:
            problems.append(
                f"{path}, line {number}: a key is {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes long "
                "(a short one could be guessed)"
            )
        else:
            keys.append(line)
    if glued:
        more = len(glued) - MAX_PROBLEMS_LOGGED
        log.warn(
            "{path}, line(s) {numbers}{more}: the key is the text before '#', which starts a comment; "
            "write a space before a comment if that is what is meant",
            path=path,
            numbers=", ".join(str(number) for number in glued[:MAX_PROBLEMS_LOGGED]),
            more=f" and {more} more" if more > 0 else "",
        )
    return keys, problems


def parse_keys(path: str, data: bytes) -> tuple[bytes, ...]:
    """The keys in a keys file's ``data`` at start-up: one printable ASCII word of
    :data:`MIN_KEY_BYTES` to :data:`MAX_KEY_BYTES` bytes per line, ``#`` comments. A bad line is
    logged and left out, as on reload (a key file that served before an upgrade still starts the
    service); no good line at all is :class:`KeysFileError`."""
    keys, problems = _keys_and_problems(path, data)
    _log_problems(problems)
    if not keys:
        raise KeysFileError(f"{path} holds no usable key" + (f" ({problems[0]})" if problems else ""))
    return tuple(keys)


def _log_problems(problems: list[str]) -> None:
    for problem in problems[:MAX_PROBLEMS_LOGGED]:
        log.error("Left out of the API keys: {problem}", problem=problem)


def _read(path: str) -> bytes:
    """The keys file's bytes (bounded), or :class:`KeysFileError`."""
    try:
        with open(path, "rb") as keys_file:
            data = keys_file.read(MAX_KEYS_FILE_BYTES + 1)
    except OSError as exc:
        raise KeysFileError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_KEYS_FILE_BYTES:
        raise KeysFileError(f"{path} is larger than {MAX_KEYS_FILE_BYTES} bytes")
    return data


def read_keys(path: str) -> tuple[bytes, ...]:
    """Read and parse the keys file at ``path`` (bounded), or raise :class:`KeysFileError`."""
    return parse_keys(path, _read(path))


def bearer_token(request: Request) -> bytes | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or ``None``."""
    header = request.getHeader(b"authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(b" ")
    token = token.strip()
    return token if scheme.lower() == b"bearer" and token else None


class APIKeys:
    """The keys in force, reloadable; and the check every guarded request goes through."""

    def __init__(self, path: str | None, clock: IReactorTime, keys: tuple[bytes, ...] = ()) -> None:
        self.path = path
        self._clock = clock
        self._keys = keys
        self._logged: OrderedDict[str, float] = OrderedDict()
        self._second = -1
        self._lines_this_second = 0
        self._unlogged = 0

    @classmethod
    def from_file(cls, path: str, clock: IReactorTime) -> APIKeys:
        """Load the keys at start-up (:class:`KeysFileError` if the file is unusable)."""
        return cls(path, clock, read_keys(path))

    def __len__(self) -> int:
        return len(self._keys)

    def reload(self) -> None:
        """Read the file again (SIGHUP): its good lines are the keys in force from now on, none if it
        holds none (a key taken out is revoked, whatever else the file holds); a file that cannot
        be read keeps the keys in force. Either way it says so."""
        if self.path is None:
            return
        try:
            data = _read(self.path)
        except KeysFileError as exc:
            log.error(
                "Keeping the {count} API key(s) in force: {error}", count=len(self._keys), error=str(exc)
            )
            return
        keys, problems = _keys_and_problems(self.path, data)
        _log_problems(problems)
        self._keys = tuple(keys)
        if keys:
            log.info("Reloaded {count} API key(s) from {path}", count=len(keys), path=self.path)
        else:
            log.warn(
                "No API key is in force now: {path} holds none; every call that needs one is refused",
                path=self.path,
            )

    def valid(self, presented: bytes | None) -> bool:
        """Whether ``presented`` is a key in force, compared with every key in constant time."""
        if presented is None:
            return False
        found = False
        for key in self._keys:
            found |= hmac.compare_digest(presented, key)
        return found

    def authorize(self, request: Request, client: str) -> bool:
        """True if ``request`` carries a key in force; else answer 401 (a problem) and return False."""
        if self.valid(bearer_token(request)):
            return True
        self._log_refusal(client, request)
        refuse(request)
        return False

    def _log_refusal(self, client: str, request: Request) -> None:
        """One line a second per client (an IPv6 client's /64, as the add rate limit counts it), and
        at most MAX_REFUSAL_LINES a second in all; lines left out are counted in the next one."""
        now = self._clock.seconds()
        bucket = rate_bucket(client)
        last = self._logged.get(bucket)
        second = int(now)
        if second != self._second:
            self._second, self._lines_this_second = second, 0
        if (last is not None and now - last < 1.0) or self._lines_this_second >= MAX_REFUSAL_LINES:
            self._unlogged += 1
            return
        self._lines_this_second += 1
        self._logged[bucket] = now
        self._logged.move_to_end(bucket)
        if len(self._logged) > MAX_LOGGED_CLIENTS:
            self._logged.popitem(last=False)
        log.warn(
            "Refused {method} {path} from {client}: missing or wrong API key ({unlogged} refusals not "
            "logged since the last line)",
            method=printable(request.method[:20]),
            path=printable((request.path or b"")[:200]),  # the client's bytes: no controls in the log
            client=client,
            unlogged=self._unlogged,
        )
        self._unlogged = 0


#: Why a call that needs a key is refused by a process that has none: no key could ever do.
NO_KEYS = "this needs an API key, and this server takes none: it was started without --api-keys-file"


def refuse(request: Request, text: str = "this needs an API key: Authorization: Bearer KEY") -> None:
    """Answer 401 with ``WWW-Authenticate: Bearer``: a problem under ``/api/``, an HTML page with the
    form for a browser, else plain text. Outside ``/api/`` only a private instance asks for a key
    (its ``/add``): the page has its note that adding needs one."""
    request.setHeader(b"www-authenticate", b'Bearer realm="goto"')
    write_refusal_page(request, 401, text, private=True)


class KeyRequiredToAdd(PlainResource):
    """``/add`` of a private instance (``--private``): the form for anyone, storing a URL only with a key."""

    isLeaf = True

    def __init__(self, add: Resource, keys: APIKeys, clients: ClientAddresses) -> None:
        super().__init__()
        self._add = add
        self._keys = keys
        self._clients = clients

    def render(self, request: Request) -> Any:
        if is_form_add(request) and not self._keys.authorize(request, self._clients.of_request(request)):
            return NOT_DONE_YET
        return self._add.render(request)
