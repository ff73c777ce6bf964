"""A synchronous HTTP client over ``treq.testing.StubTreq``: resources tested without sockets."""

from __future__ import annotations

from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.web.resource import IResource

from tests.helpers import result_of


class Client:
    """A synchronous HTTP client over StubTreq, answering (status, headers, body)."""

    def __init__(self, root: IResource) -> None:
        self.stub: Any = StubTreq(root)  # its methods are generated, so untyped

    def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any, bytes]:
        response = self.start(method, path, **kwargs)
        self.stub.flush()
        return self.finish(response)

    def start(self, method: str, path: str, **kwargs: Any) -> Deferred[Any]:
        response: Deferred[Any] = self.stub.request(
            method, "http://go.example:8080" + path, allow_redirects=False, **kwargs
        )
        return response

    def finish(self, response: Deferred[Any]) -> tuple[int, Any, bytes]:
        self.stub.flush()
        answered = result_of(response)
        body = self.stub.content(answered)
        self.stub.flush()
        return answered.code, answered.headers, result_of(body)
