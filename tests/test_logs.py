"""JSON log lines for log shippers."""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from goto_tw.logs import JSONLinesObserver


def test_each_event_is_one_json_line_with_its_fields() -> None:
    """An event becomes one JSON object: time, level, namespace, message, then its plain fields."""
    out = io.StringIO()
    log = Logger(namespace="goto.test", observer=JSONLinesObserver(out))
    log.info("{client} said {status}", client="192.0.2.1", status=302, opaque=object())
    [line] = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "info"
    assert record["namespace"] == "goto.test"
    assert record["message"] == "192.0.2.1 said 302"
    assert (record["client"], record["status"]) == ("192.0.2.1", 302)
    assert "opaque" not in record
    assert record["time"].endswith("+00:00")


def test_failures_carry_their_traceback() -> None:
    """An error with a failure keeps the traceback, inside the one JSON line."""
    out = io.StringIO()
    log = Logger(namespace="goto.test", observer=JSONLinesObserver(out))
    try:
        raise ValueError("boom")
    except ValueError:
        log.failure("It broke", Failure(), LogLevel.error)
    [line] = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "error"
    assert "ValueError: boom" in record["failure"]
