"""The OpenAPI document describes the URLs the server really stores (a new user's trial, stop 36:
it said at most 2,048 characters where the server takes 4,096, and carried a pattern that refused
query strings, ports and capitals, so a client validating against it refused valid links)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from goto_tw.openapi import openapi_document
from goto_tw.urls import MAX_URL_LENGTH, validate_url


def _url_schema() -> dict[str, Any]:
    schema: dict[str, Any] = openapi_document()["components"]["schemas"]["NewLink"]["properties"]["url"]
    return schema


def _conforms(schema: dict[str, Any], value: str) -> bool:
    """What the string keywords the document may use say of ``value``."""
    if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", len(value)):
        return False
    return "pattern" not in schema or re.search(schema["pattern"], value) is not None


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/a?b=c",
        "http://localhost:9999/x",
        "HTTPS://Example.COM/Path#top",
        "https://a-very-long-label-of-a-host-name.example.org/",
        "https://e.example/" + "a" * (MAX_URL_LENGTH - len("https://e.example/")),
    ],
)
def test_urls_the_server_stores_conform_to_the_document(url: str) -> None:
    assert validate_url(url)
    assert _conforms(_url_schema(), url)


def test_the_document_states_the_servers_length_bound() -> None:
    schema = _url_schema()
    assert schema["maxLength"] == MAX_URL_LENGTH
    assert not _conforms(schema, "https://e.example/" + "a" * MAX_URL_LENGTH)
    assert not _conforms(schema, "")


def test_no_description_speaks_of_the_projects_issues() -> None:
    """Every description is for the API's users ("Issue 10; optional." was published)."""

    def descriptions(node: object) -> list[str]:
        if isinstance(node, dict):
            found = [node["description"]] if isinstance(node.get("description"), str) else []
            return found + [text for value in node.values() for text in descriptions(value)]
        if isinstance(node, list):
            return [text for value in node for text in descriptions(value)]
        return []

    texts = descriptions(openapi_document())
    assert texts and not [text for text in texts if re.search(r"\bissue\b", text, re.IGNORECASE)]
