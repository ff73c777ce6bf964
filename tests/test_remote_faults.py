"""Issue 13, unknown keys through a slave: a master's fault, alone or among a multicall's
answers, reaches each waiter once with the same store error whichever way its body came (handed over
whole, as goto_tw.masterhttp does, or streamed, as through any ``IAgent``) and whichever reader read
it (rpcwire's fault readers, or the library's, which they replace); the metrics label every outcome."""

from __future__ import annotations

import xmlrpc.client as xmlrpclib
from typing import Any
from unittest import mock

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from goto_tw import rpcwire
from goto_tw.errors import GotoError
from goto_tw.metrics import Metrics
from goto_tw.remote import RemoteStore
from tests.conftest import LogCapture
from tests.test_remote import Answer as AnswerResource
from tests.test_remote import Link, _at_rpc2

RPC_URL = "http://master.test:8081/RPC2"

_LONE_FAULT = xmlrpclib.dumps(xmlrpclib.Fault(404, "no link under 'zz' & <no> other"), methodresponse=True)
_MIXED = xmlrpclib.dumps(
    (
        [
            ["https://a.example/?q=1&r=<2>"],
            {"faultCode": 404, "faultString": "no link under 'b&amp;c' <here>"},
            {"faultCode": 410, "faultString": "the link 'c' was disabled"},
            {"faultCode": 8002, "faultString": "error"},
            {"faultCode": 8001, "faultString": "no such method"},
            [""],
        ],
    ),
    methodresponse=True,
)
# (answer body, the keys looked up in one reactor turn: one call, or a multicall of them all)
_CASES = {"lone fault": (_LONE_FAULT, ["zz"]), "faults in a batch": (_MIXED, ["a", "b", "c", "d", "e", "f"])}


class _Whole:
    """A 200 handed over whole, as goto_tw.masterhttp hands it over (``body`` is bytes)."""

    code = 200

    def __init__(self, body: bytes) -> None:
        self.body = body


class _WholePoster:
    """An HTTP client that answers every post at once with ``body``, handed over whole."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def post(self, url: str, /, *, data: bytes, headers: Headers) -> Deferred[Any]:
        answer: Deferred[Any] = Deferred()
        answer.callback(_Whole(self.body))
        return answer


def _fired(deferred: Deferred[Any]) -> list[Any]:
    """Every result ``deferred`` was seen with (a Deferred fires once: more is a bug's AlreadyCalled)."""
    seen: list[Any] = []
    deferred.addBoth(lambda result: seen.append(result))
    return seen


def _what_each_waiter_got(results: list[Any]) -> tuple[Any, ...]:
    assert len(results) == 1, results
    result = results[0]
    if not isinstance(result, Failure):
        return ("value", result)
    error = result.value
    assert isinstance(error, GotoError), result
    return (type(error).__name__, str(error), error.http_status, error.retry_after, error.detail)


def _labels(metrics: Metrics) -> dict[tuple[str, str], float]:
    return {
        (sample.labels["method"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
        if sample.name == "goto_rpc_call_seconds_count"
    }


def _observe(path: str, body: str, keys: list[str], log_events: LogCapture) -> tuple[Any, ...]:
    """What each waiter got, the metrics and the log lines when the master answers ``body``."""
    metrics = Metrics("slave")
    del log_events.events[:]
    if path == "whole":
        clock = Clock()
        store = RemoteStore(_WholePoster(body.encode()), RPC_URL, clock, timeout=5.0, metrics=metrics)
        asked = [_fired(store.get(key)) for key in keys]
        clock.advance(0)
    else:
        link = Link(_at_rpc2(AnswerResource(200, body.encode())), metrics=metrics)
        asked = [_fired(link.remote.get(key)) for key in keys]
        link.settle()
    return tuple(map(_what_each_waiter_got, asked)), _labels(metrics), log_events.messages()


@pytest.mark.parametrize("case", sorted(_CASES))
def test_a_fault_reaches_each_waiter_as_the_library_path_would_on_either_read_path(
    case: str, log_events: LogCapture
) -> None:
    """The fault readers and the Failure returned (not raised) by _decode_response: a body handed
    over whole and one streamed, each read by rpcwire and by the library (rpcwire declining), give
    every waiter the same single answer, the same metrics and the same (no) log lines."""
    body, keys = _CASES[case]
    seen = {}
    for path in ("whole", "streamed"):
        seen[path, "rpcwire"] = _observe(path, body, keys, log_events)
        with mock.patch.object(rpcwire, "loads", return_value=None):
            seen[path, "library"] = _observe(path, body, keys, log_events)
    reference = seen["streamed", "library"]
    assert all(observed == reference for observed in seen.values()), seen
    answers, labels, lines = reference
    if case == "lone fault":
        assert answers == (
            (
                "KeyNotFound",
                "no link under 'zz' & <no> other",
                404,
                None,
                "the master's fault 404: \"no link under 'zz' & <no> other\"",
            ),
        )
        assert labels == {("Store.Get", "ok"): 1.0}
    else:
        assert [answer[0] for answer in answers] == [
            "value",
            "KeyNotFound",
            "KeyDisabled",
            "MasterFailed",  # fault 8002, a bug on the master: a 503 here, no master to pass over
            "NotKept",
            "value",
        ]
        assert answers[0] == ("value", "https://a.example/?q=1&r=<2>") and answers[-1] == ("value", "")
        assert labels == {("system.multicall", "ok"): 1.0}
    assert lines == []


class _Scripted:
    """An HTTP client whose n-th post gets the n-th of ``answers``: a body handed over whole, or a
    transport error."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers

    def post(self, url: str, /, *, data: bytes, headers: Headers) -> Deferred[Any]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception) and not isinstance(answer, xmlrpclib.Fault):
            return fail(answer)
        done: Deferred[Any] = Deferred()
        done.callback(_Whole(xmlrpclib.dumps(answer, methodresponse=True).encode()))
        return done


def test_each_outcome_of_a_request_has_its_label_in_the_metrics() -> None:
    """``ok`` for an answer (a value, or a definite "no" such as an unknown key), ``unreachable``
    when the master did not answer (a refused connection, a refused RPC secret), ``error`` when it
    answered a failure of its own: the labels the isinstance checks in _observe choose."""
    metrics = Metrics("slave")
    clock = Clock()
    poster = _Scripted(
        [
            ("https://a.example/",),
            xmlrpclib.Fault(404, "no link"),
            ConnectionRefusedError("111: Connection refused"),
            xmlrpclib.Fault(401, "wrong secret"),
            xmlrpclib.Fault(8002, "error"),
            xmlrpclib.Fault(503, "the disk is full"),
        ]
    )
    store = RemoteStore(poster, RPC_URL, clock, timeout=5.0, gather_pause=0, metrics=metrics)
    outcomes = []
    for key in "abcdef":
        outcomes.append(_fired(store.get(key)))
        clock.advance(0)
    assert [len(seen) for seen in outcomes] == [1] * 6
    assert [
        type(seen[0]).__name__ if not isinstance(seen[0], Failure) else type(seen[0].value).__name__
        for seen in outcomes
    ] == ["str", "KeyNotFound", "MasterUnreachable", "MasterRefused", "MasterFailed", "StoreUnavailable"]
    assert _labels(metrics) == {
        ("Store.Get", "ok"): 2.0,
        ("Store.Get", "unreachable"): 2.0,
        ("Store.Get", "error"): 2.0,
    }
