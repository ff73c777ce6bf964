"""Which URLs may not be shortened: blocked domains (``--block-file``), the service's own host
(a short link to a short link loops), and URLs with credentials before the host
(``https://bank.example@evil.example/``, a classic phishing form). Refusals are 400 with a reason.

The block file holds one domain per line (``#`` comments); a domain blocks itself and its
subdomains. It is read at start and again on SIGHUP; a file that cannot be read keeps the list in
force.
"""

from __future__ import annotations

import re
import urllib.parse

import hyperlink
from twisted.logger import Logger

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


def read_domains(path: str) -> frozenset[str]:
    """The domains of a block file (lower case, no trailing dot), or ``OSError``/``ValueError``."""
    with open(path, "rb") as block_file:
        data = block_file.read(MAX_BLOCK_FILE_BYTES + 1)
    if len(data) > MAX_BLOCK_FILE_BYTES:
        raise ValueError(f"{path} is larger than {MAX_BLOCK_FILE_BYTES} bytes")
    domains = set()
    unmatchable: list[tuple[int, str]] = []
    for number, raw in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip().lower().rstrip(".")
        if not line:
            continue
        with_path = " " in line or "/" in line
        domain = None if with_path else _blockable(line.strip("[]"))
        if domain is None and (with_path or ":" in line):  # a port, a path: meant to block something
            raise ValueError(f"{path}, line {number}: not a domain (a port or a path after it?)")
        if domain is None:
            unmatchable.append((number, line))
        else:
            domains.add(domain)
    if unmatchable:
        # No URL the service accepts has such a host (browsers refuse it too): nothing to block.
        number, line = unmatchable[0]
        log.warn(
            "Ignoring {count} line(s) of {path} that no URL can match, neither a domain nor an IP "
            "address (the first, line {number}: {line!r})",
            count=len(unmatchable),
            path=path,
            number=number,
            line=line[:80],
        )
    return frozenset(domains)


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
    return canonical_host(line)


class LinkPolicy:
    """``check(url)`` raises :class:`InvalidURL` for a URL this service will not shorten."""

    def __init__(self, own_hosts: frozenset[str] = frozenset(), block_path: str | None = None) -> None:
        """``own_hosts``: this service's ``HOST`` or ``HOST:PORT`` (``--host``): a link to it would loop."""
        self._own: dict[str, int | None] = {}
        for own in own_hosts:
            origin = urllib.parse.urlsplit(f"http://{own}")
            name = (origin.hostname or "").rstrip(".").lower()
            self._own[canonical_host(name) or name] = origin.port
        self._path = block_path
        self.blocked: frozenset[str] = read_domains(block_path) if block_path else frozenset()

    def reload(self) -> None:
        """Read the block file again (SIGHUP); keep the list in force if it is unusable."""
        if self._path is None:
            return
        try:
            self.blocked = read_domains(self._path)
        except (OSError, ValueError) as exc:
            log.error(
                "Keeping the {count} blocked domain(s) and address(es) in force: {error}",
                count=len(self.blocked),
                error=exc,
            )
            return
        log.info(
            "Reloaded {count} blocked domain(s) and address(es) from {path}",
            count=len(self.blocked),
            path=self._path,
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
