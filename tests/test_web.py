"""The web front end, driven through ``treq.testing.StubTreq``: no sockets, no reactor."""

from __future__ import annotations

import pytest
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.web.client import ResponseNeverReceived
from zope.interface import implementer

from goto_tw.errors import StoreUnavailable
from goto_tw.interfaces import IURLStore
from goto_tw.store import URLStore
from goto_tw.web import GotoRoot
from tests.conftest import LogCapture
from tests.fakes import ManualLog
from tests.helpers import failure_of, has_fired, result_of
from tests.stub_client import Client

HOST = "go.example:8080"


@pytest.fixture
def store() -> URLStore:
    return URLStore()


@pytest.fixture
def client(store: URLStore) -> Client:
    return Client(GotoRoot(store, HOST))


def test_root_and_bare_add_show_the_form(client: Client) -> None:
    """GET / and GET /add without url show the HTML form that POSTs to /add."""
    for path in ("/", "/add", "/add?url="):
        status, headers, body = client.request("GET", path)
        assert status == 200
        assert headers.getRawHeaders("content-type") == ["text/html; charset=utf-8"]
        assert b'<form method="POST" action="/add">' in body
        assert b'name="url"' in body


def test_add_answers_the_short_url(client: Client, store: URLStore) -> None:
    """GET /add?url= stores the URL and answers http://HOST/KEY in plain text, as goto does."""
    status, headers, body = client.request("GET", "/add?url=http%3A%2F%2Fexample.com%2Fa%3Fb%3Dc")
    assert (status, body) == (200, b"http://go.example:8080/0\n")
    assert headers.getRawHeaders("content-type") == ["text/plain; charset=utf-8"]
    assert result_of(store.get("0")) == "http://example.com/a?b=c"


def test_form_post_adds(client: Client) -> None:
    """POST /add with a form body (what the HTML form sends) stores the URL."""
    status, _, body = client.request(
        "POST",
        "/add",
        data={"url": "https://example.org/"},
    )
    assert (status, body) == (200, b"http://go.example:8080/0\n")


def test_key_redirects(client: Client, store: URLStore) -> None:
    """GET /KEY answers 302 to the long URL; HEAD answers the same status and Location."""
    key = result_of(store.put("https://example.org/x?y=1"))
    for method in ("GET", "HEAD"):
        status, headers, body = client.request(method, f"/{key}")
        assert status == 302
        assert headers.getRawHeaders("location") == ["https://example.org/x?y=1"]
        assert body == b""


@pytest.mark.parametrize("path", ["/zz", "/nokey", "/a.b", "/_goto", "/0/extra", "/%C3%A4"])
def test_unknown_or_impossible_keys_are_404(client: Client, path: str) -> None:
    """An unknown key answers 404 with a short plain message (goto's 500 was a bug)."""
    status, headers, body = client.request("GET", path)
    assert status == 404
    assert headers.getRawHeaders("content-type") == ["text/plain; charset=utf-8"]
    assert 0 < len(body) < 100


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("url=ftp%3A%2F%2Fx", b"http"),
        ("url=http%3A%2F%2Fa%20b", b"white space"),
        ("url=http%3A%2F%2Fa%2F%0D%0AX%3A%201", b"white space"),
        ("url=%FF%FE", b"UTF-8"),
        ("url=http%3A%2F%2Fa%2F" + "x" * 5000, b"longer"),
        ("url=%3Cscript%3Ealert(1)%3C%2Fscript%3E", b"http"),
    ],
)
def test_bad_urls_answer_400_and_store_nothing(
    client: Client, store: URLStore, query: str, reason: bytes
) -> None:
    """A refused URL answers 400 with a short reason, stores nothing, and the server keeps serving."""
    status, headers, body = client.request("GET", f"/add?{query}")
    assert status == 400
    assert reason in body
    assert headers.getRawHeaders("content-type") == ["text/plain; charset=utf-8"]
    assert headers.getRawHeaders("x-content-type-options") == ["nosniff"]
    assert store.count() == 0
    assert client.request("GET", "/add?url=http%3A%2F%2Fok%2F")[0] == 200


def test_add_waits_for_the_record_to_be_durable() -> None:
    """The client gets its short URL only once the data file has the record."""
    log = ManualLog()
    client = Client(GotoRoot(URLStore(log=log), HOST))
    response = client.start("GET", "/add?url=http%3A%2F%2Fa%2F")
    client.stub.flush()
    assert not has_fired(response)
    log.complete_all()
    assert client.finish(response)[0] == 200


def test_failed_write_answers_503_with_retry_after() -> None:
    """A disk failure answers 503 with Retry-After and a short message."""
    log = ManualLog()
    client = Client(GotoRoot(URLStore(log=log), HOST))
    response = client.start("GET", "/add?url=http%3A%2F%2Fa%2F")
    client.stub.flush()
    log.fail_all()
    status, headers, body = client.finish(response)
    assert status == 503
    assert headers.getRawHeaders("retry-after") == ["5"]
    assert b"disk full" in body


@implementer(IURLStore)
class BrokenStore:
    """A store with a bug: it raises something no one expected."""

    def get(self, key: str) -> Deferred[str]:
        return fail(RuntimeError("secret internal detail"))

    def put(self, url: str) -> Deferred[str]:
        return fail(RuntimeError("secret internal detail"))

    def count(self) -> int:
        return 0

    def lookup(self, key: str) -> str | None:
        return None


def test_unexpected_errors_are_500_without_details(log_events: LogCapture) -> None:
    """A bug answers a plain 500 that leaks nothing; the traceback goes to the log."""
    client = Client(GotoRoot(BrokenStore(), HOST))
    status, _, body = client.request("GET", "/abc")
    assert status == 500
    assert b"secret" not in body
    assert any("secret internal detail" in str(event.get("log_failure")) for event in log_events.events)


def test_store_unavailable_on_redirect_is_503() -> None:
    """A lookup the store cannot answer now (slave without master) is a 503, not a 404."""

    @implementer(IURLStore)
    class Unavailable(BrokenStore):
        def get(self, key: str) -> Deferred[str]:
            return fail(StoreUnavailable("the master is unreachable"))

    status, headers, _ = Client(GotoRoot(Unavailable(), HOST)).request("GET", "/abc")
    assert status == 503
    assert headers.getRawHeaders("retry-after") == ["5"]


def test_client_that_leaves_cancels_the_lookup() -> None:
    """When the client disconnects before the answer, the pending store call is cancelled."""
    cancelled: list[bool] = []

    @implementer(IURLStore)
    class Slow(BrokenStore):
        def get(self, key: str) -> Deferred[str]:
            return Deferred(lambda d: cancelled.append(True))

    client = Client(GotoRoot(Slow(), HOST))
    response = client.start("GET", "/abc")
    client.stub.flush()
    response.cancel()
    client.stub.flush()
    assert cancelled == [True]
    failure = failure_of(response)
    never = failure.value
    assert isinstance(never, ResponseNeverReceived), failure
    assert [reason.type for reason in never.reasons] == [CancelledError]


def test_head_add_stores_nothing(client: Client, store: URLStore) -> None:
    """HEAD is safe: a link checker probing /add?url=... must not create a link."""
    status, _, body = client.request("HEAD", "/add?url=http%3A%2F%2Fhead.example%2F")
    assert (status, body) == (200, b"")
    assert store.count() == 0


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/", "GET, HEAD"),
        ("DELETE", "/add", "GET, HEAD, POST"),
        ("PUT", "/abc", "GET, HEAD"),
    ],
)
def test_unsupported_methods_are_plain_405_with_allow(
    client: Client, method: str, path: str, allow: str
) -> None:
    """A method a resource does not support is a short plain 405 naming the allowed ones."""
    status, headers, body = client.request(method, path)
    assert status == 405
    assert headers.getRawHeaders("allow") == [allow]
    assert headers.getRawHeaders("content-type") == ["text/plain; charset=utf-8"]
    assert method.encode() in body
