"""PyPy's nursery: the size goto-tw ships with, and the start-up warning when PyPy picked less."""

from __future__ import annotations

import os
from typing import Any

import pytest
from twisted.logger import LogLevel, capturedLogs, formatEvent

from goto_tw import nursery
from goto_tw.nursery import (
    RECOMMENDED_NURSERY,
    RECOMMENDED_NURSERY_BYTES,
    nursery_size,
    warn_if_small_nursery,
)
from tests.interpreter import ON_PYPY, printed_by

MIB = 1024 * 1024


def warned(size: int | None, environ: dict[str, str] | None) -> tuple[bool, list[dict[str, Any]]]:
    """What :func:`warn_if_small_nursery` returns and the events it logs (``environ`` ``None``: its
    default, ``os.environ``)."""
    with capturedLogs() as events:
        said = warn_if_small_nursery(size, environ)
    return said, [event for event in events if event.get("log_namespace") == nursery.log.namespace]


def test_a_nursery_pypy_picked_below_the_recommended_size_is_warned_once_with_the_advice() -> None:
    said, events = warned(1 * MIB, {})
    assert said
    assert len(events) == 1
    assert events[0]["log_level"] == LogLevel.warn
    text = formatEvent(events[0])
    assert "1,024 KiB" in text
    assert f"PYPY_GC_NURSERY={RECOMMENDED_NURSERY}" in text


def test_a_nursery_the_operator_set_is_left_alone_even_if_smaller() -> None:
    assert warned(1 * MIB, {"PYPY_GC_NURSERY": "1M"}) == (False, [])


@pytest.mark.parametrize("size", [RECOMMENDED_NURSERY_BYTES, 16 * MIB])
def test_the_recommended_size_or_more_is_not_warned(size: int) -> None:
    assert warned(size, {}) == (False, [])


def test_just_below_the_recommended_size_is_warned() -> None:
    said, events = warned(RECOMMENDED_NURSERY_BYTES - 1, {})
    assert said and len(events) == 1


def test_an_interpreter_without_a_nursery_is_not_warned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nursery, "nursery_size", lambda: None)
    assert warned(None, {}) == (False, [])


def test_the_size_is_read_from_pypy_and_is_none_on_cpython() -> None:
    size = nursery_size()
    if ON_PYPY:
        assert isinstance(size, int) and size > 0
    else:
        assert size is None


def test_the_recommended_spelling_and_bytes_are_the_same_size() -> None:
    assert RECOMMENDED_NURSERY.endswith("M")
    assert int(RECOMMENDED_NURSERY[:-1]) * MIB == RECOMMENDED_NURSERY_BYTES


@pytest.mark.skipif(not ON_PYPY, reason="only PyPy reads PYPY_GC_NURSERY")
def test_pypy_reads_the_recommended_spelling_as_the_recommended_size() -> None:
    """The value the units set is one PyPy understands: a PyPy started with it has that nursery."""
    environ = {**os.environ, "PYPY_GC_NURSERY": RECOMMENDED_NURSERY}
    printed = printed_by("from goto_tw.nursery import nursery_size; print(nursery_size())", environ)
    assert int(printed) == RECOMMENDED_NURSERY_BYTES


def test_an_empty_value_the_operator_set_is_left_alone() -> None:
    """``PYPY_GC_NURSERY=`` (empty) leaves the size to PyPy: a choice too, so nothing is warned."""
    assert warned(1 * MIB, {"PYPY_GC_NURSERY": ""}) == (False, [])


def test_the_environment_checked_by_default_is_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """What twistd's ``makeService`` calls (no arguments) reads ``os.environ``: set there, even
    empty, nothing is warned; unset, it is."""
    monkeypatch.setenv("PYPY_GC_NURSERY", "")
    assert warned(1 * MIB, None) == (False, [])
    monkeypatch.delenv("PYPY_GC_NURSERY")
    said, events = warned(1 * MIB, None)
    assert said and len(events) == 1
