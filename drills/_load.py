"""The add load the crash drills share: client threads adding unique URLs, and what they saw.

Moved from ``drills/crash.py`` unchanged, so that its PostgreSQL mode (``drills/crash_pg.py``)
uses the same clients without an import cycle.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from drills._common import DEFAULT_HOST, KeepAliveClient

#: How adds are sent, in turn, by every client.
METHODS = ("GET /add", "POST /add", "POST /api/v1/links")
#: Seconds a client waits before retrying after a 503 or a connection error.
RETRY_PAUSE = 0.02
#: Tries of one URL before a client gives up on it (counted as abandoned, never as acknowledged).
MAX_TRIES_PER_URL = 500

_SHORT_URL = re.compile(rf"http://{re.escape(DEFAULT_HOST)}/([0-9A-Za-z]+)\n")


@dataclass(frozen=True)
class Ack:
    """One acknowledged add: the URL, the key answered, who answered it and when."""

    url: str
    key: str
    target: str
    method: str
    at: float
    #: How many tries the URL took, and when the first one was sent.
    tries: int
    first_try_at: float


@dataclass
class Ledger:
    """What every client saw, shared between the client threads (under ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acks: list[Ack] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    unavailable: Counter[str] = field(default_factory=Counter)
    connection_errors: Counter[str] = field(default_factory=Counter)
    abandoned: int = 0
    #: Answers that are neither an acknowledgement, nor a 503: ``(target, method, status, body)``.
    unexpected: list[tuple[str, str, int, bytes]] = field(default_factory=list)
    #: Keys a DELETE was sent for (answered or not), and those whose disabling the master acknowledged.
    disable_tried: set[str] = field(default_factory=set)
    disabled: dict[str, str] = field(default_factory=dict)
    disable_errors: int = 0


class AddClient(threading.Thread):
    """Adds unique URLs to one server without pause until told to stop (or its deadline passes)."""

    def __init__(
        self, number: int, target: str, port: int, ledger: Ledger, stop: threading.Event, deadline: float
    ) -> None:
        super().__init__(name=f"client-{number}-{target}", daemon=True)
        self.number = number
        self.target = target
        self.ledger = ledger
        self.stop_event = stop
        self.deadline = deadline
        self.client = KeepAliveClient(port)

    def run(self) -> None:
        ledger = self.ledger
        count = 0
        pending: str | None = None
        tries = 0
        first_try_at = 0.0
        try:
            while not self.stop_event.is_set() and time.monotonic() < self.deadline:
                if pending is None:
                    count += 1
                    pending = f"https://crash.test/c{self.number}/{count}?via={self.target}"
                    tries = 0
                    first_try_at = time.monotonic()
                method = METHODS[(count + tries) % len(METHODS)]
                tries += 1
                with ledger.lock:
                    ledger.attempts[self.target] += 1
                try:
                    status, body = self._add(method, pending)
                except (OSError, http.client.HTTPException):
                    with ledger.lock:
                        ledger.connection_errors[self.target] += 1
                    pending = self._retry_later(pending, tries)
                    continue
                try:
                    key = _key_in_answer(method, status, body, pending)
                except ValueError:
                    with ledger.lock:
                        ledger.unexpected.append((self.target, method, status, body[:200]))
                    pending = None
                    continue
                if key is not None:
                    with ledger.lock:
                        ledger.acks.append(
                            Ack(pending, key, self.target, method, time.monotonic(), tries, first_try_at)
                        )
                    pending = None
                elif status == 503:
                    with ledger.lock:
                        ledger.unavailable[self.target] += 1
                    pending = self._retry_later(pending, tries)
                else:
                    with ledger.lock:
                        ledger.unexpected.append((self.target, method, status, body[:200]))
                    pending = None
        except Exception as exc:  # a bug in the drill: make it fail loudly, not go quiet
            with ledger.lock:
                ledger.unexpected.append((self.target, "client crashed", 0, repr(exc).encode()))
        finally:
            self.client.close()

    def _retry_later(self, url: str, tries: int) -> str | None:
        self.stop_event.wait(RETRY_PAUSE)
        if tries >= MAX_TRIES_PER_URL:
            with self.ledger.lock:
                self.ledger.abandoned += 1
            return None
        return url

    def _add(self, method: str, url: str) -> tuple[int, bytes]:
        if method == "GET /add":
            query = urllib.parse.urlencode({"url": url})
            status, _, body = self.client.request("GET", f"/add?{query}")
        elif method == "POST /add":
            form = urllib.parse.urlencode({"url": url}).encode("ascii")
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            status, _, body = self.client.request("POST", "/add", form, headers)
        else:
            document = json.dumps({"url": url}).encode("ascii")
            headers = {"Content-Type": "application/json"}
            status, _, body = self.client.request("POST", "/api/v1/links", document, headers)
        return status, body


def _key_in_answer(method: str, status: int, body: bytes, url: str) -> str | None:
    """The key an acknowledging answer (200 or 201) holds, or ``None`` for any other answer.

    A 200 or 201 that does not hold the short URL of ``url`` raises ``ValueError``.
    """
    if method == "POST /api/v1/links":
        if status not in (200, 201):  # 200: the URL was already stored (a retry after a kill)
            return None
        document = json.loads(body)
        key = document.get("key") if isinstance(document, dict) else None
        if (
            not isinstance(key, str)
            or document.get("url") != url
            or document.get("short_url") != f"http://{DEFAULT_HOST}/{key}"
        ):
            raise ValueError(f"{status} answer does not match the add of {url!r}")
        return key
    if status != 200:
        return None
    match = _SHORT_URL.fullmatch(body.decode("ascii", "replace"))
    if match is None:
        raise ValueError(f"200 answer to the add of {url!r} is not a short URL")
    return match.group(1)


def key_conflicts(acks: list[Ack]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Across every acknowledgement: keys answered for two URLs, and URLs answered two keys."""
    urls_of_key: defaultdict[str, set[str]] = defaultdict(set)
    keys_of_url: defaultdict[str, set[str]] = defaultdict(set)
    for ack in acks:
        urls_of_key[ack.key].add(ack.url)
        keys_of_url[ack.url].add(ack.key)
    conflicting = {key: urls for key, urls in urls_of_key.items() if len(urls) > 1}
    two_keys = {url: keys for url, keys in keys_of_url.items() if len(keys) > 1}
    return conflicting, two_keys


def lookup_all(port: int, acks: list[Ack], threads: int = 2, expect: int = 302) -> list[tuple[Ack, str]]:
    """``GET /KEY`` for every ack on ``port``; return the acks that did not redirect to their URL
    (with ``expect=410``: those that did not answer 410 Gone)."""
    wrong: list[tuple[Ack, str]] = []
    lock = threading.Lock()

    def work(part: list[Ack]) -> None:
        client = KeepAliveClient(port)
        try:
            for ack in part:
                try:
                    status, headers, _ = client.request("GET", f"/{ack.key}")
                except (OSError, http.client.HTTPException) as exc:
                    outcome = f"error {exc!r}"
                else:
                    location = headers.get("Location")
                    if expect == 302 and status == 302 and location == ack.url:
                        continue
                    if expect == 410 and status == 410:
                        continue
                    outcome = f"{status} Location={location!r}"
                with lock:
                    wrong.append((ack, outcome))
        finally:
            client.close()

    workers = [threading.Thread(target=work, args=(acks[i::threads],), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=600)
    return wrong


def wait_for_acks_after(ledger: Ledger, since: float, targets: set[str], timeout: float) -> None:
    """Wait (at most ``timeout`` seconds) until every target has acknowledged an add after ``since``."""
    deadline = time.monotonic() + timeout

    def seen() -> set[str]:
        with ledger.lock:
            return {ack.target for ack in ledger.acks if ack.at > since}

    while seen() != targets and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # a little more load on the final master
