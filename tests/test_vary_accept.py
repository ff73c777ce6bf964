"""Every ``/add`` answer says ``Vary: Accept`` (its form, an HTML page or plain text, follows the
client's ``Accept``), on the fast path and the general path alike, byte for byte; a redirect, which
does not depend on ``Accept``, does not say it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from twisted.internet.task import Clock

from goto_tw.store import URLStore
from tests.test_fix_http import BROWSER_ACCEPT, limited_site
from tests.wire import Connection, exchange, goto_site

VARY_ACCEPT = re.compile(rb"\r\nVary: Accept\r\n")


def head_of(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n", 1)[0] + b"\r\n"


ADDS = {
    "plain add": b"GET /add?url=https%3A%2F%2Fv.example%2F HTTP/1.1\r\nHost: x\r\n\r\n",
    "browser add": b"GET /add?url=https%3A%2F%2Fv.example%2F HTTP/1.1\r\nHost: x\r\nAccept: "
    + BROWSER_ACCEPT
    + b"\r\n\r\n",
    "refused URL": b"GET /add?url=ftp%3A%2F%2Fx HTTP/1.1\r\nHost: x\r\n\r\n",
    "refused URL, browser": b"GET /add?url=ftp%3A%2F%2Fx HTTP/1.1\r\nHost: x\r\nAccept: "
    + BROWSER_ACCEPT
    + b"\r\n\r\n",
    "not UTF-8": b"GET /add?url=%FF HTTP/1.1\r\nHost: x\r\n\r\n",
    "the form": b"GET /add HTTP/1.1\r\nHost: x\r\n\r\n",
    "HEAD": b"HEAD /add?url=https%3A%2F%2Fv.example%2F HTTP/1.1\r\nHost: x\r\n\r\n",
    "form POST": b"POST /add HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 30\r\n\r\nurl=https%3A%2F%2Fv.example%2F",
}


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("request_bytes", ADDS.values(), ids=ADDS.keys())
def test_every_add_answer_says_vary_accept(fast: bool, request_bytes: bytes) -> None:
    site, _ = goto_site(URLStore(), fast=fast)
    answer = exchange(site, request_bytes)
    assert VARY_ACCEPT.search(head_of(answer)), answer[:400]


@pytest.mark.parametrize("accept", [b"*/*", BROWSER_ACCEPT])
def test_a_rate_limited_add_says_vary_accept_on_both_paths(accept: bytes) -> None:
    """The 429 of the fast path's gate and of twisted.web's ``LimitAdds`` (an HTTP/1.0 add takes the
    general path) both say it."""
    for request_bytes in (
        b"GET /add?url=https://b.example/%d HTTP/1.1\r\nHost: x\r\nAccept: " + accept + b"\r\n\r\n",
        b"GET /add?url=https://b.example/%d HTTP/1.0\r\nAccept: " + accept + b"\r\n\r\n",
    ):
        site = limited_site(1, Clock())
        answers = []
        for number in (1, 2):
            connection = Connection(site)
            connection.send(request_bytes.replace(b"/%d ", b"/%d " % number))
            answers.append(connection.received())
        assert answers[1].split(b" ", 2)[1] == b"429", answers[1]
        assert VARY_ACCEPT.search(head_of(answers[1])), answers[1][:400]


def test_the_fast_paths_429_is_twisted_webs_byte_for_byte() -> None:
    """The fast path's 429 for a plain add equals the general path's (``Connection: close`` sends an
    add to twisted.web), the Date aside."""
    answers = []
    for close in (b"", b"Connection: close\r\n"):
        site = limited_site(1, Clock())
        for number in (1, 2):
            connection = Connection(site)
            connection.send(
                b"GET /add?url=https://b.example/%d HTTP/1.1\r\nHost: x\r\n%s\r\n" % (number, close)
            )
            answer = connection.received()
        answers.append(re.sub(rb"Date: [^\r]*", b"Date: -", answer.replace(b"Connection: close\r\n", b"")))
    assert answers[0] == answers[1]


@pytest.mark.parametrize("fast", [True, False])
def test_a_redirect_does_not_say_vary(fast: bool) -> None:
    site, _ = goto_site(URLStore({"abc": "https://a.example/"}), fast=fast)
    answer = exchange(site, b"GET /abc HTTP/1.1\r\nHost: x\r\nAccept: " + BROWSER_ACCEPT + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 302") and b"Vary" not in answer


class KeyThatIsNoText(URLStore):
    """A store whose put answers a key that cannot be sent (a bug)."""

    def put(self, url: str) -> Any:
        from twisted.internet.defer import succeed

        return succeed("\udcff")


def test_the_500_of_an_add_is_the_same_on_both_paths(log_events: Any) -> None:
    """Review 40: the fast path's 500 for an add (its answer could not be made) had no Vary: Accept;
    the general path's had."""
    answers = []
    for fast in (True, False):
        site, _ = goto_site(KeyThatIsNoText(), fast=fast)
        answer = exchange(site, b"GET /add?url=https%3A%2F%2Fv.example%2F HTTP/1.1\r\nHost: x\r\n\r\n")
        answers.append(re.sub(rb"Date: [^\r]*", b"Date: -", answer))
    assert answers[0].startswith(b"HTTP/1.1 500") and answers[0] == answers[1]
