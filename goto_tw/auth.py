"""API keys: who may manage links (and, with ``--private``, create them).

``--api-keys-file`` holds one key per line (blank lines and ``#`` comments allowed); it is read at
start and again on SIGHUP (:mod:`goto_tw.reload`), and a file that cannot be read or holds a bad
line keeps the keys already loaded. Keys are compared in constant time, each against every key, and
never logged. A request presents one as ``Authorization: Bearer KEY``; a missing or wrong key is a
401 with ``WWW-Authenticate: Bearer`` (a problem under ``/api/``, an HTML page for a browser), and failed attempts are logged at most once a second
per client address (from a bounded table), so a guessing client cannot flood the log.
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
from goto_tw.web import PlainResource, write_refusal_page

log = Logger()

#: Largest keys file read, in bytes: a file of keys is small; anything bigger is a mistake.
MAX_KEYS_FILE_BYTES = 1 << 20
#: Longest key accepted, in bytes.
MAX_KEY_BYTES = 256
#: Client addresses remembered for the once-a-second log of failed attempts.
MAX_LOGGED_CLIENTS = 10_000
#: Most refusal lines logged in one second, whatever the clients (a botnet guessing keys).
MAX_REFUSAL_LINES = 10


class KeysFileError(Exception):
    """The keys file cannot be used; the message names the file and line (never a key)."""


def parse_keys(path: str, data: bytes) -> tuple[bytes, ...]:
    """The keys in a keys file's ``data``: one printable ASCII word per line, ``#`` comments."""
    keys: list[bytes] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        line = raw.split(b"#", 1)[0].strip()
        if not line:
            continue
        if (
            not line.isascii()
            or any(byte <= 0x20 or byte == 0x7F for byte in line)
            or len(line) > MAX_KEY_BYTES
        ):
            raise KeysFileError(
                f"{path}, line {number}: a key is one word of printable ASCII (at most {MAX_KEY_BYTES} bytes)"
            )
        keys.append(line)
    if not keys:
        raise KeysFileError(f"{path} holds no key")
    return tuple(keys)


def read_keys(path: str) -> tuple[bytes, ...]:
    """Read and parse the keys file at ``path`` (bounded), or raise :class:`KeysFileError`."""
    try:
        with open(path, "rb") as keys_file:
            data = keys_file.read(MAX_KEYS_FILE_BYTES + 1)
    except OSError as exc:
        raise KeysFileError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_KEYS_FILE_BYTES:
        raise KeysFileError(f"{path} is larger than {MAX_KEYS_FILE_BYTES} bytes")
    return parse_keys(path, data)


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
        """Read the file again (SIGHUP); keep the keys in force if it is unusable, and say so."""
        if self.path is None:
            return
        try:
            keys = read_keys(self.path)
        except KeysFileError as exc:
            log.error(
                "Keeping the {count} API key(s) in force: {error}", count=len(self._keys), error=str(exc)
            )
            return
        self._keys = keys
        log.info("Reloaded {count} API key(s) from {path}", count=len(keys), path=self.path)

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


def refuse(request: Request) -> None:
    """Answer 401 with ``WWW-Authenticate: Bearer``: a problem under ``/api/``, an HTML page with the
    form for a browser, else plain text."""
    request.setHeader(b"www-authenticate", b'Bearer realm="goto"')
    write_refusal_page(request, 401, "this needs an API key: Authorization: Bearer KEY")


class KeyRequiredToAdd(PlainResource):
    """``/add`` of a private instance (``--private``): the form for anyone, storing a URL only with a key."""

    isLeaf = True

    def __init__(self, add: Resource, keys: APIKeys, clients: ClientAddresses) -> None:
        super().__init__()
        self._add = add
        self._keys = keys
        self._clients = clients

    def render(self, request: Request) -> Any:
        wants_add = request.method != b"HEAD" and (request.args or {}).get(b"url", [b""])[0]
        if wants_add and not self._keys.authorize(request, self._clients.of_request(request)):
            return NOT_DONE_YET
        return self._add.render(request)
