"""PyPy's JIT counters: a server keeps them from decaying, unless the operator says otherwise."""

from __future__ import annotations

import os
from typing import Any

import pytest
from twisted.logger import LogLevel, capturedLogs, formatEvent

from goto_tw import jitcounters
from goto_tw.jitcounters import DECAY_VARIABLE, RECOMMENDED_DECAY, keep_counters
from tests.interpreter import ON_PYPY, printed_by


def kept(environ: dict[str, str] | None) -> tuple[int | None, list[str], list[dict[str, Any]]]:
    """What :func:`keep_counters` returns, the parameters it set and the events it logged."""
    set_params: list[str] = []
    with capturedLogs() as events:
        decay = keep_counters(environ, set_params.append)
    ours = [event for event in events if event.get("log_namespace") == jitcounters.log.namespace]
    return decay, set_params, ours


def said(events: list[dict[str, Any]]) -> list[tuple[LogLevel, str]]:
    return [(event["log_level"], formatEvent(event)) for event in events]


def set_and_logged(decay: int) -> tuple[int, list[str], list[tuple[LogLevel, str]]]:
    """What :func:`keep_counters` gives back, sets and logs (the decay, at info) when it sets ``decay``."""
    return (
        decay,
        [f"decay={decay}"],
        [(LogLevel.info, f"PyPy's JIT counters decay by {decay} (see goto_tw/jitcounters.py)")],
    )


def test_without_a_choice_the_decay_is_turned_off_and_logged() -> None:
    assert RECOMMENDED_DECAY == 0
    decay, set_params, events = kept({})
    assert (decay, set_params, said(events)) == set_and_logged(0)


@pytest.mark.parametrize(
    ("value", "decay"),
    [("0", 0), ("12", 12), (" 40 ", 40), ("10\n", 10), ("1000", 1000), ("0040", 40), ("0" * 5000 + "12", 12)],
)
def test_the_operators_decay_is_set_instead(value: str, decay: int) -> None:
    got, set_params, events = kept({DECAY_VARIABLE: value})
    assert (got, set_params, said(events)) == set_and_logged(decay)


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_value_leaves_pypys_own_decay(value: str) -> None:
    """Empty: PyPy's default, or a ``--jit decay=N`` given to the interpreter, is left as it is."""
    assert kept({DECAY_VARIABLE: value}) == (None, [], [])


@pytest.mark.parametrize("value", ["abc", "-1", "1001", "4.5", "1e3", "\u0663", "0x10", "1 0"])
def test_a_value_that_is_no_decay_is_logged_once_and_ignored(value: str) -> None:
    decay, set_params, events = kept({DECAY_VARIABLE: value})
    assert (decay, set_params) == (None, [])
    assert len(events) == 1
    assert events[0]["log_level"] == LogLevel.warn
    text = formatEvent(events[0])
    assert DECAY_VARIABLE in text
    assert repr(value) in text
    assert "\n" not in text


def test_a_long_bad_value_is_shown_cut_short() -> None:
    decay, set_params, events = kept({DECAY_VARIABLE: "x" * 5000})
    assert (decay, set_params) == (None, [])
    assert len(formatEvent(events[0])) < 300


@pytest.mark.parametrize("value", ["9" * 5000, "1" + "0" * 4400, "10000"])
def test_a_number_too_long_is_logged_and_ignored_not_raised(value: str) -> None:
    """``int()`` refuses more than 4,300 digits (CPython 3.11, PyPy 3.9): still a value that is no decay."""
    decay, set_params, events = kept({DECAY_VARIABLE: value})
    assert (decay, set_params, len(events)) == (None, [], 1)


def test_an_interpreter_without_a_jit_sets_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jitcounters, "_pypy_set_param", lambda: None)
    with capturedLogs() as events:
        assert keep_counters({}) is None
    assert list(events) == []


def test_the_environment_read_by_default_is_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """What twistd's ``makeService`` calls (no arguments) reads ``os.environ``."""
    set_params: list[str] = []
    monkeypatch.setenv(DECAY_VARIABLE, "7")
    assert keep_counters(None, set_params.append) == 7
    monkeypatch.delenv(DECAY_VARIABLE)
    assert keep_counters(None, set_params.append) == 0
    assert set_params == ["decay=7", "decay=0"]


def run_keep_counters(environ: dict[str, str]) -> str:
    """``keep_counters()`` in a fresh interpreter like this one's (it changes the whole process's JIT),
    as ``makeService`` calls it; what it returned."""
    return printed_by(
        "from goto_tw.jitcounters import keep_counters; print(keep_counters())",
        {**without_decay_variable(), **environ},
    )


def without_decay_variable() -> dict[str, str]:
    """This environment without an inherited ``GOTO_PYPY_JIT_DECAY``."""
    return {k: v for k, v in os.environ.items() if k != DECAY_VARIABLE}


def test_the_interpreters_own_jit_takes_the_setting_or_there_is_none() -> None:
    """PyPy's ``pypyjit.set_param`` accepts what is set (a bad spelling would raise there); CPython
    has no ``pypyjit`` and nothing is set."""
    expected = "0" if ON_PYPY else "None"
    assert run_keep_counters({}) == expected
    if ON_PYPY:
        assert run_keep_counters({DECAY_VARIABLE: "1000"}) == "1000"


#: A loop whose one guard fails every 40,000th run (400 times in all) while it allocates enough for
#: hundreds of minor collections: the guard's counter reaches 200 only if nothing decays it.
RARE_GUARD = """
import pypyjit
from goto_tw.jitcounters import keep_counters
bridges = []
pypyjit.set_compile_hook(lambda info: bridges.append(info.type == "bridge"))
keep_counters()
ring = [None] * 1024
for i in range(16_000_000):
    ring[i & 1023] = [i, i, i, i]
    if i % 40_000 == 0:
        str(i)
print(sum(bridges))
"""


@pytest.mark.skipif(not ON_PYPY, reason="CPython has no JIT")
@pytest.mark.parametrize(("environ", "bridges"), [({}, "1"), ({DECAY_VARIABLE: "1000"}, "0")])
def test_pypy_compiles_a_rarely_failing_guard_only_without_decay(
    environ: dict[str, str], bridges: str
) -> None:
    """The setting reaches PyPy's counters: what the module's docstring promises, on a small scale.
    The nursery is pinned (1 MiB) so that the collections, hence the decays, do not depend on the CPU."""
    printed = printed_by(RARE_GUARD, {**without_decay_variable(), "PYPY_GC_NURSERY": "1M", **environ})
    assert printed == bridges
