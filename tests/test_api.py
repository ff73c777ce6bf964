"""The JSON API: creating and reading links, and every bad request answered as a 4xx problem."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from goto_tw.metrics import Metrics
from goto_tw.store import URLStore
from goto_tw.tap import make_root
from tests.fakes import ManualLog
from tests.stub_client import Client

HOST = "go.example"
JSON = {"content-type": "application/json"}


@pytest.fixture
def store() -> URLStore:
    return URLStore()


@pytest.fixture
def client(store: URLStore) -> Client:
    return Client(make_root(store, HOST, Metrics("master")))


def problem(headers: Any, body: bytes) -> dict[str, Any]:
    assert headers.getRawHeaders("content-type") == ["application/problem+json"]
    document: dict[str, Any] = json.loads(body)
    assert set(document) == {"type", "title", "status", "detail"}
    return document


def test_create_answers_201_with_location_and_the_link(client: Client, store: URLStore) -> None:
    """POST /api/v1/links stores the URL: 201, Location of the new resource, key/url/short_url."""
    status, headers, body = client.request(
        "POST", "/api/v1/links", data=b'{"url": "https://a.example/x"}', headers=JSON
    )
    assert status == 201
    assert headers.getRawHeaders("content-type") == ["application/json"]
    assert headers.getRawHeaders("location") == ["/api/v1/links/0"]
    assert json.loads(body) == {"key": "0", "url": "https://a.example/x", "short_url": "http://go.example/0"}
    assert store.count() == 1


def test_create_reports_the_url_as_stored(client: Client) -> None:
    """A non-ASCII URL is answered in the ASCII form it is stored and redirected to."""
    _, _, body = client.request(
        "POST", "/api/v1/links", data=json.dumps({"url": "https://bücher.example/"}).encode(), headers=JSON
    )
    assert json.loads(body)["url"] == "https://xn--bcher-kva.example/"


def test_charset_and_json_suffix_types_are_accepted(client: Client) -> None:
    """application/json with parameters, and +json media types, are JSON too."""
    for number, content_type in enumerate(("application/json; charset=utf-8", "application/vnd.goto+json")):
        status, _, _ = client.request(
            "POST",
            "/api/v1/links",
            data=b'{"url": "https://a.example/%d"}' % number,
            headers={"content-type": content_type},
        )
        assert status == 201


def test_read_answers_key_and_url(client: Client, store: URLStore) -> None:
    """GET /api/v1/links/KEY answers {"key", "url"}."""
    client.request("POST", "/api/v1/links", data=b'{"url": "https://a.example/"}', headers=JSON)
    status, _, body = client.request("GET", "/api/v1/links/0")
    assert (status, json.loads(body)) == (200, {"key": "0", "url": "https://a.example/"})


@pytest.mark.parametrize("path", ["/api/v1/links/zz", "/api/v1/links/add", "/api/v1/links/a.b"])
def test_unknown_link_is_a_404_problem(client: Client, path: str) -> None:
    """An unknown or impossible key is a 404 problem document."""
    status, headers, body = client.request("GET", path)
    assert status == 404
    assert problem(headers, body)["status"] == 404


@pytest.mark.parametrize(
    ("body", "headers", "status", "detail"),
    [
        (b'{"url": "https://a/"}', {"content-type": "text/plain"}, 415, "application/json"),
        (b'{"url": "https://a/"}', {}, 415, "application/json"),
        (b'{"url": ', JSON, 400, "not valid JSON"),
        (b"\xff\xfe{}", JSON, 400, "not valid JSON"),
        # CPython's json gives up on this nesting (RecursionError); PyPy's parses it: a list, not an object.
        pytest.param(
            b"[" * 5000 + b"]" * 5000, JSON, 400, r'not valid JSON|"url" string', id="deeply-nested"
        ),
        (b'["https://a/"]', JSON, 400, '"url" string'),
        (b'{"link": "https://a/"}', JSON, 400, '"url" string'),
        (b'{"url": 42}', JSON, 400, '"url" string'),
        (b'{"url": "ftp://a/"}', JSON, 400, "http"),
        # Review 34: null is not "no key" (the OpenAPI document says a string, schemathesis found it).
        (b'{"url": "https://a/", "key": null}', JSON, 400, "custom key"),
        (b'{"url": "https://a/", "key": 7}', JSON, 400, "custom key"),
        (b'{"url": "' + b"x" * 20_000 + b'"}', JSON, 413, "larger than"),
    ],
)
def test_bad_requests_are_4xx_problems_and_store_nothing(
    client: Client, store: URLStore, body: bytes, headers: dict[str, str], status: int, detail: str
) -> None:
    """Wrong content type, malformed JSON, a missing field, a bad URL, a huge body: 4xx, never 500."""
    answered, answered_headers, answer = client.request("POST", "/api/v1/links", data=body, headers=headers)
    assert answered == status
    document = problem(answered_headers, answer)
    assert document["status"] == status
    assert re.search(detail, document["detail"])
    assert store.count() == 0


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PATCH", "/api/v1/links/0", "DELETE, GET, HEAD"),
        ("PUT", "/api/v1/links", "GET, HEAD, POST"),
    ],
)
def test_wrong_methods_are_405_with_allow(client: Client, method: str, path: str, allow: str) -> None:
    """A method the resource does not support is a 405 problem naming the allowed ones."""
    status, headers, body = client.request(method, path)
    assert status == 405
    assert headers.getRawHeaders("allow") == [allow]
    problem(headers, body)


def test_store_unavailable_is_a_503_problem_with_retry_after() -> None:
    """A failed write is a 503 problem with Retry-After, like the form's."""
    log = ManualLog()
    client = Client(make_root(URLStore(log=log), HOST, Metrics("master")))
    response = client.start("POST", "/api/v1/links", data=b'{"url": "https://a/"}', headers=JSON)
    client.stub.flush()
    log.fail_all()
    status, headers, body = client.finish(response)
    assert status == 503
    assert headers.getRawHeaders("retry-after") == ["5"]
    assert problem(headers, body)["status"] == 503


@pytest.mark.parametrize(
    "path", ["/api", "/api/", "/api/v1", "/api/v1/", "/api/nothing", "/api/v1/nothing/x"]
)
@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
def test_api_paths_without_a_resource_are_404_problems(client: Client, path: str, method: str) -> None:
    """Items 19, 20: /api and /api/v1 only hold children: 404 (not 405 allowing HEAD), as a problem."""
    status, headers, body = client.request(method, path)
    assert status == 404
    assert headers.getRawHeaders("allow") is None
    if method == "HEAD":
        assert headers.getRawHeaders("content-type") == ["application/problem+json"]
    else:
        assert problem(headers, body)["status"] == 404


@pytest.mark.parametrize("path", ["/_goto", "/_goto/"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_ops_folder_itself_is_404(client: Client, path: str, method: str) -> None:
    """Item 20: /_goto answers 404 like any path with nothing there, not a 405 with an empty Allow."""
    status, headers, _ = client.request(method, path)
    assert status == 404
    assert headers.getRawHeaders("allow") is None
    assert headers.getRawHeaders("content-type") == ["text/plain; charset=utf-8"]


def test_an_unexpected_error_under_the_api_is_a_500_problem() -> None:
    """Item 19: a bug behind the API answers a problem document too, with nothing internal in it."""
    from twisted.internet.defer import fail

    class Broken(URLStore):
        def get(self, key: str) -> Any:
            return fail(RuntimeError("secret internal detail"))

    client = Client(make_root(Broken(), HOST, Metrics("master")))
    status, headers, body = client.request("GET", "/api/v1/links/abc")
    assert status == 500
    assert problem(headers, body)["status"] == 500
    assert b"secret" not in body


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/v1/links"), ("DELETE", "/api/v1/links/0")])
def test_without_keys_the_refusal_says_no_key_would_do(client: Client, method: str, path: str) -> None:
    """A new user's trial (stop 41): a process started without --api-keys-file answered "this needs
    an API key: Authorization: Bearer KEY", and its user went looking for a key that could not exist."""
    status, headers, body = client.request(
        method, path, headers={"authorization": "Bearer some-key-or-other"}
    )
    assert status == 401
    assert problem(headers, body)["detail"] == (
        "this needs an API key, and this server takes none: it was started without --api-keys-file"
    )
