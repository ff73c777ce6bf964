"""Shared fixtures: capturing what the code logs through ``twisted.logger``; Hypothesis's settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import settings
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from zope.interface import implementer

# No per-example deadline: Hypothesis's default (200 ms) is a timed assertion, which a loaded machine or
# PyPy's warming JIT fails at random; the tests assert what the code does, never how fast.
settings.register_profile("goto", deadline=None)
settings.load_profile("goto")


@implementer(ILogObserver)
class LogCapture:
    """The events logged while a test runs, with their formatted text."""

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        self.events.append(event)

    def messages(self) -> list[str]:
        """Return every event as the line a log reader would see."""
        return [formatEvent(event) for event in self.events]


@pytest.fixture
def log_events() -> Iterator[LogCapture]:
    """Capture ``twisted.logger`` events for the duration of one test."""
    capture = LogCapture()
    globalLogPublisher.addObserver(capture)
    try:
        yield capture
    finally:
        globalLogPublisher.removeObserver(capture)


# A real PostgreSQL for the tests of the PostgreSQL store (skips, saying why, where there is none).
from tests.pgfixtures import pg_cluster, pg_uri  # noqa: E402, F401
