"""End to end, issue 11: schemathesis tests the JSON API of a real master and a real slave against
the OpenAPI document they serve (no 5xx, every answer conforms: schemathesis' own checks).

Bounded: a few dozen examples per operation and a deadline per example, so each run takes seconds.
One master and one slave serve the whole module (each operation is a test of its own).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from goto_tw.openapi import openapi_document

from .harness import GotoProcess, GotoProcesses, add_url, get

try:
    import schemathesis
except ImportError:  # PyPy 3.9 may have no schemathesis that installs: see the marker in pyproject.toml
    schemathesis = None  # type: ignore[assignment]

pytestmark = pytest.mark.skipif(
    schemathesis is None,
    reason="schemathesis is not importable on this interpreter (the test extra installs it where it can)",
)

API_KEY = "schemathesis-key-0123456789"
#: Examples per operation, and the longest one example may take (milliseconds).
MAX_EXAMPLES = 30
DEADLINE_MS = 3000
OPERATIONS = [
    (path, method)
    for path, item in openapi_document()["paths"].items()
    for method in item
    if method in ("get", "post", "delete")
]


#: URLs every instance stores (no block file here, and not its own host ``localhost``): the document
#: describes any http(s) URL, most of which a generator's strings are not; they would be 400s.
GENERATED_URL = r"^https?://[a-z0-9]{1,20}(\.[a-z0-9]{1,20}){0,3}\.[a-z]{2,10}(/[A-Za-z0-9._~%-]{0,40}){0,5}$"


def narrowed_for_generation(document: dict[str, Any]) -> dict[str, Any]:
    """The document with new links' URLs narrowed to :data:`GENERATED_URL`, so that schemathesis'
    positive examples are links the server must accept (its checks then hold it to that)."""
    narrowed = copy.deepcopy(document)
    narrowed["components"]["schemas"]["NewLink"]["properties"]["url"]["pattern"] = GENERATED_URL
    return narrowed


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, GotoProcess]]:
    """A master (--rpc, an API key) with a few links, and a slave of it with the same key."""
    workdir = tmp_path_factory.mktemp("openapi")
    keys = workdir / "api-keys"
    keys.write_text(API_KEY + "\n")
    fleet = GotoProcesses(workdir)
    try:
        master = fleet.start(
            "--rpc", "--api-keys-file", str(keys), data_file=workdir / "d.json", name="master"
        )
        for number in range(5):
            assert add_url(master.base_url, f"https://seed.example/{number}").status == 200
        slave = fleet.start(
            "--master", f"127.0.0.1:{master.port}", "--api-keys-file", str(keys), data_file=None, name="slave"
        )
        yield {"master": master, "slave": slave}
    finally:
        fleet.stop_all()


@pytest.mark.parametrize("role", ["master", "slave"])
@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_the_api_conforms_to_its_openapi_document(
    processes: dict[str, GotoProcess], role: str, path: str, method: str
) -> None:
    """One operation of the document the process serves, exercised by schemathesis with an API key:
    no 5xx, every status, header and body as documented."""
    target = processes[role]
    reply = get(f"{target.base_url}/api/v1/openapi.json")
    assert reply.status == 200 and reply.headers["Content-Type"] == "application/json"
    document = json.loads(reply.body)
    assert document == openapi_document()
    schema = schemathesis.openapi.from_dict(narrowed_for_generation(document))
    # The process's address in the schema's own configuration too: checks that send requests of
    # their own (schemathesis 4.4, on PyPy, sends the unauthenticated twin without call's base_url)
    # find it there.
    schema.config.update(base_url=target.base_url)
    # Valid data may still meet a state it cannot change: a custom key taken by an earlier example
    # (409), a key disabled by one (410), the rate limit (429). Newer schemathesis releases accept
    # 409 and 429 by default; name the list, so every release checks the same thing.
    schema.config.checks.positive_data_acceptance.expected_statuses = [
        "2xx",
        "3xx",
        "401",
        "403",
        "404",
        "409",
        "410",
        "429",
        "5xx",
    ]
    operation = schema[path][method.upper()]

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=DEADLINE_MS,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def exercise(case: Any) -> None:
        case.call_and_validate(base_url=target.base_url, headers={"Authorization": f"Bearer {API_KEY}"})

    exercise()


def test_every_operation_is_exercised() -> None:
    """The document holds the five operations the API has (so none escapes the test above)."""
    assert sorted(OPERATIONS) == sorted(
        [
            ("/api/v1/links", "post"),
            ("/api/v1/links", "get"),
            ("/api/v1/links/{key}", "get"),
            ("/api/v1/links/{key}", "delete"),
            ("/api/v1/openapi.json", "get"),
        ]
    )
