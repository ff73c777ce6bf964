"""The OpenAPI 3.1 document of the JSON API, served at ``/api/v1/openapi.json`` by master and slave.

One document describes what :mod:`goto_tw.api` answers: every operation, field, status and problem.
The test suite runs schemathesis against real processes from it (tests/e2e/test_openapi.py), so the
document and the code cannot drift apart silently. ``/_goto/`` (health, metrics) is operations, not
API, and is left out. What not every server has is optional: a custom ``key`` when creating (not on
PostgreSQL), ``clicks`` and ``created`` when reading (left out by a server that keeps none).

A URL is described by its real bounds (the schemes, the length), not by a pattern: no pattern says
which hosts a block list refuses, and a narrower one made clients refuse links the server stores.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.server import NOT_DONE_YET, Request

from goto_tw.api import DEFAULT_PAGE, MAX_JSON_BODY_BYTES, MAX_PAGE
from goto_tw.keys import KEY_PATTERN, RESERVED_SEGMENTS
from goto_tw.urls import MAX_URL_LENGTH
from goto_tw.web import PlainResource, write_json_body, write_problem

#: The path the document is served at.
OPENAPI_PATH = "/api/v1/openapi.json"

_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_KEY = {"type": "string", "pattern": f"^{KEY_PATTERN}$", "description": "The short link's key."}
#: A key a person may choose: as a key, but never a path the service answers itself (``goto_tw.keys``).
_CUSTOM_KEY = {
    "type": "string",
    "pattern": "^[0-9A-Za-z-][0-9A-Za-z_-]{0,63}$",
    "not": {"enum": sorted(RESERVED_SEGMENTS)},
    "description": "A custom key (optional): 1 to 64 letters, digits, - or _, not starting with _, "
    "not a path the service answers itself.",
}


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/problem+json": {"schema": _PROBLEM}},
    }
    if headers:
        answer["headers"] = headers
    return answer


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Whole seconds to wait before trying again.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}
_UNAUTHORIZED = _problem(
    "A missing or wrong API key (Authorization: Bearer KEY).",
    {"WWW-Authenticate": {"description": "Bearer, with the realm.", "schema": {"type": "string"}}},
)
_NOT_ALLOWED = _problem(
    "The method is not allowed here; Allow lists those that are.",
    {"Allow": {"description": "The methods allowed.", "schema": {"type": "string"}}},
)
_UNAVAILABLE = _problem(
    "The store cannot answer now (master unreachable or refusing this slave's RPC secret, disk failing).",
    _RETRY_AFTER,
)


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def openapi_document() -> dict[str, Any]:
    """The document, as a JSON-ready dict."""
    link = {"$ref": "#/components/schemas/Link"}
    key_parameter = {"name": "key", "in": "path", "required": True, "schema": _KEY}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "goto",
            "version": "1",
            "description": "A URL shortener's JSON API: create, read, list and disable short links. "
            "Errors are RFC 9457 problem documents.",
        },
        "paths": {
            "/api/v1/links": {
                "post": {
                    "operationId": "createLink",
                    "summary": "Shorten a URL (anonymous unless the instance runs with --private).",
                    "security": [{}, {"bearer": []}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewLink"}}},
                    },
                    "responses": {
                        "200": _json(link, "The URL was already stored: its existing link."),
                        "201": _json(
                            link,
                            "Created.",
                            {
                                "Location": {
                                    "description": "The link's API URL.",
                                    "schema": {"type": "string"},
                                }
                            },
                        ),
                        "400": _problem(
                            "Not a JSON object with a url string, or a URL refused (not http(s), too "
                            "long, blocked, this service's own host, credentials before the host), or "
                            "an invalid custom key."
                        ),
                        "401": _UNAUTHORIZED,
                        "403": _problem(
                            "Adding needs an API key this server cannot check (a slave started without "
                            "--private, of a private master)."
                        ),
                        "405": _NOT_ALLOWED,
                        "409": _problem("The custom key is taken (by another URL, or by a disabled link)."),
                        "413": _problem(f"The body is larger than {MAX_JSON_BODY_BYTES} bytes."),
                        "415": _problem("The body is not application/json."),
                        "429": _problem("Too many links added from this address.", _RETRY_AFTER),
                        "503": _UNAVAILABLE,
                    },
                },
                "get": {
                    "operationId": "listLinks",
                    "summary": "A page of links in a stable order (the master's; a slave answers 404).",
                    "security": [{"bearer": []}],
                    "parameters": [
                        {
                            "name": "after",
                            "in": "query",
                            "required": False,
                            "description": "Start after this key (the previous page's last).",
                            "schema": _KEY,
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_PAGE,
                                "default": DEFAULT_PAGE,
                            },
                        },
                    ],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/LinkPage"}, "A page of links."),
                        "400": _problem(
                            f"limit is not a whole number from 1 to {MAX_PAGE}, or after is not a key."
                        ),
                        "401": _UNAUTHORIZED,
                        "404": _problem("Asked of a slave: links are listed by the master."),
                        "405": _NOT_ALLOWED,
                    },
                },
            },
            "/api/v1/links/{key}": {
                "parameters": [key_parameter],
                "get": {
                    "operationId": "getLink",
                    "summary": "The URL stored under a key.",
                    "security": [{}],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/StoredLink"}, "The link."),
                        "404": _problem("No link is stored under this key."),
                        "405": _NOT_ALLOWED,
                        "410": _problem("The link was disabled."),
                        "503": _UNAVAILABLE,
                    },
                },
                "delete": {
                    "operationId": "disableLink",
                    "summary": "Disable a link everywhere: from then on it answers 410 (idempotent).",
                    "security": [{"bearer": []}],
                    "responses": {
                        "200": _json(link, "The link, disabled."),
                        "401": _UNAUTHORIZED,
                        "404": _problem("No link is stored under this key, or asked of a slave."),
                        "405": _NOT_ALLOWED,
                        "503": _UNAVAILABLE,
                    },
                },
            },
            OPENAPI_PATH: {
                "get": {
                    "operationId": "getOpenAPI",
                    "summary": "This document.",
                    "security": [{}],
                    "responses": {
                        "200": _json({"type": "object"}, "The OpenAPI document."),
                        "405": _NOT_ALLOWED,
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API key."}},
            "schemas": {
                "NewLink": {
                    "type": "object",
                    "required": ["url"],
                    "properties": {
                        "url": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_URL_LENGTH,
                            "description": "An absolute http or https URL with a host (an IRI is stored in "
                            "its ASCII form, which may not be longer either). Refused (400): another scheme, "
                            "white space or control characters, a malformed URL (a bad port), a user or "
                            "password before the host, a blocked domain, this service's own host.",
                        },
                        "key": _CUSTOM_KEY,
                    },
                },
                "Link": {
                    "type": "object",
                    "required": ["key", "url", "short_url"],
                    "properties": {
                        "key": _KEY,
                        "url": {"type": "string"},
                        "short_url": {"type": "string"},
                        "disabled": {
                            "type": ["integer", "null"],
                            "description": "When the link was disabled (seconds since the epoch), or null.",
                        },
                        "clicks": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "How many times the short link was followed (left out by a server that counts none).",
                        },
                        "created": {
                            "type": ["string", "null"],
                            "format": "date-time",
                            "description": "When the link was made (RFC 3339), or null when unknown.",
                        },
                    },
                },
                "StoredLink": {
                    "type": "object",
                    "required": ["key", "url"],
                    "properties": {
                        "key": _KEY,
                        "url": {"type": "string"},
                        "short_url": {"type": "string"},
                        "clicks": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "How many times the short link was followed (left out by a server that counts none).",
                        },
                        "created": {
                            "type": ["string", "null"],
                            "format": "date-time",
                            "description": "When the link was made (RFC 3339), or null when unknown.",
                        },
                    },
                },
                "LinkPage": {
                    "type": "object",
                    "required": ["links"],
                    "properties": {
                        "links": {"type": "array", "items": {"$ref": "#/components/schemas/Link"}},
                        "next": {
                            "type": "string",
                            "description": "The next page's path, if there may be one.",
                        },
                    },
                },
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer", "minimum": 400, "maximum": 599},
                        "detail": {"type": "string"},
                    },
                },
            },
        },
    }


class OpenAPIResource(PlainResource):
    """``GET /api/v1/openapi.json``: the document, encoded once."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self._body = json.dumps(openapi_document(), separators=(",", ":")).encode("utf-8") + b"\n"

    def render_GET(self, request: Request) -> int:
        if request.postpath not in ([], [b""]):
            write_problem(request, 404, "no such API resource")
            return NOT_DONE_YET
        write_json_body(request, 200, self._body, b"application/json")
        return NOT_DONE_YET
