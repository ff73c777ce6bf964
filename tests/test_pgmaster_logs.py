"""psycopg's own log records go to ``twisted.logger`` (review 35: they went to standard error)."""

from __future__ import annotations

import logging

import pytest

from goto_tw.pgmaster import route_psycopg_logs
from tests.conftest import LogCapture


def test_psycopg_records_are_twisted_events_and_pipeline_noise_is_debug(
    log_events: LogCapture, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    psycopg_log = logging.getLogger("psycopg")
    monkeypatch.setattr(psycopg_log, "handlers", [])  # as a fresh process has it; put back after
    monkeypatch.setattr(psycopg_log, "propagate", True)
    monkeypatch.setattr(psycopg_log, "level", logging.DEBUG)  # so that its info records are made
    route_psycopg_logs()
    route_psycopg_logs()  # once, however often
    assert len(psycopg_log.handlers) == 1 and not psycopg_log.propagate
    psycopg_log.warning("error ignored terminating %r: %s", "<psycopg.Pipeline [BAD]>", "server closed")
    psycopg_log.warning("something psycopg wants said")
    psycopg_log.error("something that went wrong")
    psycopg_log.info("something psycopg tells")
    events = [(event["log_level"].name, event.get("text")) for event in log_events.events]
    assert ("debug", "error ignored terminating '<psycopg.Pipeline [BAD]>': server closed") in events
    assert ("warn", "something psycopg wants said") in events
    assert ("error", "something that went wrong") in events
    assert ("info", "something psycopg tells") in events
    assert capsys.readouterr().err == "", "nothing to standard error"
