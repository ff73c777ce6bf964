"""Which URLs may not be shortened: blocked domains (``--block-file``), the service's own host
(a short link to a short link loops), and URLs with credentials before the host
(``https://bank.example@evil.example/``, a classic phishing form). Refusals are 400 with a reason.

The block file holds one domain per line (``#`` comments); a domain blocks itself and its
subdomains (``*.evil.example`` and ``.evil.example``, as other lists write that, mean
``evil.example``). It is read at start and again on SIGHUP, then in a thread: a file of many
thousand Unicode domains takes seconds to read, and the reactor must keep answering meanwhile. A
file that cannot be read keeps the list in force.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from typing import Callable, NamedTuple, Optional

import hyperlink
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from goto_tw.errors import InvalidURL
from goto_tw.urls import canonical_host, ends_in_number, simple_host

log = Logger()

#: A host as browsers read it the same way Python does: DNS labels (letters, digits, ``-``, ``_``,
#: dots) or a bracketed IPv6 address. A ``%`` (browsers percent-decode hosts: ``evil%2Eexample``) or a
#: ``\`` (browsers read it as ``/``: ``evil.example\.ok.com``) would let a blocked or looping host
#: pass as another.
_PLAIN_HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")

#: Largest block file read, in bytes.
MAX_BLOCK_FILE_BYTES = 16 << 20


#: What a block file's line must be after conversion: DNS labels of what :data:`_PLAIN_HOST` lets a
#: URL's host hold (lower case, none empty), or an address as :func:`~goto_tw.urls.canonical_host`
#: spells it. Anything else (``||evil.example^``, ``evil*.example``, ``..evil.example``) matches no
#: URL's host.
_BLOCKABLE = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*|[0-9a-f.]*:[0-9a-f:.]*")
#: Full stops UTS 46 maps to ``.`` (as browsers read a host): mapped before a line's ``*.`` is seen.
_FULL_STOPS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


class BlockFile(NamedTuple):
    """What a block file holds: its domains and addresses, and the lines no URL can match (their
    count, and the first one with its number, for the one warning)."""

    domains: frozenset[str]
    unmatchable: int = 0
    first_unmatchable: tuple[int, str] = (0, "")


def read_domains(path: str) -> frozenset[str]:
    """The domains of a block file (lower case, no trailing dot), or ``OSError``/``ValueError``;
    lines no URL can match are warned about (once)."""
    read = read_block_file(path)
    warn_unmatchable(path, read)
    return read.domains


def warn_unmatchable(path: str, read: BlockFile) -> None:
    """The one warning about ``read``'s lines that no URL can match, if it has any."""
    if read.unmatchable:
        # No URL the service accepts has such a host (browsers refuse it too): nothing to block.
        number, line = read.first_unmatchable
        log.warn(
            "Ignoring {count} line(s) of {path} that no URL can match, neither a domain nor an IP "
            "address (the first, line {number}: {line!r})",
            count=read.unmatchable,
            path=path,
            number=number,
            line=line[:80],
        )


def read_block_file(path: str) -> BlockFile:
    """Read and parse a block file (blocking, logging nothing: it may run in a thread), or raise
    ``OSError``/``ValueError``."""
    with open(path, "rb") as block_file:
        data = block_file.read(MAX_BLOCK_FILE_BYTES + 1)
    if len(data) > MAX_BLOCK_FILE_BYTES:
        raise ValueError(f"{path} is larger than {MAX_BLOCK_FILE_BYTES} bytes")
    domains = set()
    unmatchable: list[tuple[int, str]] = []
    for number, raw in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip().lower().translate(_FULL_STOPS).rstrip(".")
        line = line[2:] if line.startswith("*.") else line[1:] if line.startswith(".") else line
        if not line:
            continue
        with_path = " " in line or "/" in line
        domain = None if with_path else _blockable(line.strip("[]"))
        port = ":" in line and not _zoned_address(line)  # fe80::1%eth0: no URL's host (a warning)
        if domain is None and (with_path or port):  # a port, a path: meant to block something
            raise ValueError(f"{path}, line {number}: not a domain (a port or a path after it?)")
        if domain is None:
            unmatchable.append((number, line))
        else:
            domains.add(domain)
    if unmatchable:
        return BlockFile(frozenset(domains), len(unmatchable), unmatchable[0])
    return BlockFile(frozenset(domains))


def _zoned_address(line: str) -> bool:
    """Whether ``line`` is an IPv6 address with a zone ID (``fe80::1%eth0``): a host no URL the
    service takes can have (a ``%`` in the host is refused), not a host with a port."""
    address, percent, zone = line.strip("[]").partition("%")
    if not percent or any(mark in zone for mark in ":[]"):  # fe80::1%eth0:80, [fe80::1%eth0]:80: a port
        return False
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


def _blockable(line: str) -> str | None:
    """A block file's domain or address in the form hosts are compared in, or ``None``.

    A Unicode domain is converted as a URL's host is (``hyperlink``, IDNA 2008 with UTS 46, as
    browsers do: ``straße.example`` is ``xn--strae-oqa.example``, not ``strasse.example``); an
    address as :func:`~goto_tw.urls.canonical_host` spells it.
    """
    if not line.isascii():
        try:
            line = hyperlink.URL(scheme="http", host=line).to_uri().host
        except (ValueError, UnicodeError):
            return None
    host = canonical_host(line)
    return host if host is not None and _BLOCKABLE.fullmatch(host) else None


#: Runs a blocking read off the reactor thread, returning a Deferred of its result.
ReadInThread = Callable[[Callable[[], BlockFile]], "Deferred[BlockFile]"]


class LinkPolicy:
    """``check(url)`` raises :class:`InvalidURL` for a URL this service will not shorten."""

    def __init__(
        self,
        own_hosts: frozenset[str] = frozenset(),
        block_path: str | None = None,
        read_in_thread: Optional[ReadInThread] = None,
    ) -> None:
        """``own_hosts``: this service's ``HOST`` or ``HOST:PORT`` (``--host``): a link to it would
        loop. ``read_in_thread``: how :meth:`reload` reads the block file (at once without it)."""
        self._read_in_thread = read_in_thread
        #: Whether a reading runs; whether another must follow it (a SIGHUP came meanwhile); who
        #: waits for the next reading to end.
        self._reading = False
        self._again = False
        self._waiting: list[Deferred[None]] = []
        self._own: dict[str, int | None] = {}
        for own in own_hosts:
            origin = urllib.parse.urlsplit(f"http://{own}")
            name = (origin.hostname or "").rstrip(".").lower()
            self._own[canonical_host(name) or name] = origin.port
        self._path = block_path
        self.blocked: frozenset[str] = read_domains(block_path) if block_path else frozenset()

    def reload(self) -> Deferred[None] | None:
        """Read the block file again (SIGHUP), in a thread when given one; keep the list in force if
        it is unusable. The Deferred fires once the file as it was at the call is in force (or the
        old list kept). One reading at a time: reloads asked for while one runs are served by one
        more reading after it (a burst of SIGHUPs, each a parse of up to 16 MiB, would fill the
        thread pool the data file's writer needs, and hold the GIL against the reactor)."""
        if self._path is None:
            return None
        done: Deferred[None] = Deferred()
        self._waiting.append(done)
        if self._reading:
            self._again = True
        else:
            self._read_again(self._path)
        return done

    def _read_again(self, path: str) -> None:
        self._reading, self._again = True, False
        waiting, self._waiting = self._waiting, []
        if self._read_in_thread is None:
            reading: Deferred[BlockFile] = maybeDeferred(read_block_file, path)
        else:
            try:
                reading = self._read_in_thread(lambda: read_block_file(path))
            except Exception:  # a runner that refuses at once: this reading fails, the next may not
                reading = fail()
        reading.addBoth(self._reloaded, path).addBoth(self._read_ended, path, waiting)

    def _read_ended(self, result: object, path: str, waiting: list[Deferred[None]]) -> None:
        if isinstance(result, Failure):  # a bug in applying the list: said, never swallowed
            log.failure("Reloading {path} failed", result, path=path)
        self._reading = False
        if self._again:
            self._read_again(path)
        for done in waiting:
            done.callback(None)

    def _reloaded(self, read: BlockFile | Failure, path: str) -> None:
        if isinstance(read, Failure):
            if not read.check(OSError, ValueError):
                log.failure("Reading {path} failed", read, path=path)
                return
            log.error(
                "Keeping the {count} blocked domain(s) and address(es) in force: {error}",
                count=len(self.blocked),
                error=read.value,
            )
            return
        warn_unmatchable(path, read)
        self.blocked = read.domains
        log.info(
            "Reloaded {count} blocked domain(s) and address(es) from {path}",
            count=len(self.blocked),
            path=path,
        )

    def __call__(self, url: str) -> None:
        simple = simple_host(url)
        if simple is None:
            parts = self._general_parts(url)
            host = (parts.hostname or "").rstrip(".")
        else:  # a plain host: no user, no % or \\ (see simple_host), nothing to refuse before its name
            host = simple[0].rstrip(".")
        address = ":" in host or ends_in_number(host)
        if address:  # compared as browsers read it: 2130706433, 0x7f.1 and 127.0.0.1 are one address
            named = canonical_host(host)
            if named is None:
                raise InvalidURL("the URL's host ends in a number but is no IP address a browser could open")
            host = named
        if host in self._own:
            # The same host loops unless the URL names another port than the service's (a link
            # to another service on the same machine); the default ports may be the service behind
            # a proxy (http redirecting to https), so they loop too.
            port = parts.port if simple is None else simple[1]
            if port is None or port in (80, 443) or port == self._own[host]:
                raise InvalidURL("a link to this service itself would loop")
        blocked = self.blocked
        if blocked and address:
            if host in blocked:
                raise InvalidURL("links to this address are not accepted here")
        elif blocked:
            labels = host.split(".")
            for start in range(len(labels)):
                if ".".join(labels[start:]) in blocked:
                    raise InvalidURL("links to this domain are not accepted here")

    @staticmethod
    def _general_parts(url: str) -> urllib.parse.SplitResult:
        """``url`` split, or :class:`InvalidURL` for a user before the host or a host a browser
        reads otherwise."""
        parts = urllib.parse.urlsplit(url)
        if "@" in parts.netloc:
            raise InvalidURL("a URL with a user name or password before the host is not accepted")
        host_and_port = parts.netloc.rsplit(":", 1)[0] if not parts.netloc.endswith("]") else parts.netloc
        if _PLAIN_HOST.fullmatch(host_and_port) is None:
            raise InvalidURL("the URL's host holds characters a browser would read differently (% or \\)")
        return parts
