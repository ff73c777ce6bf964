"""Time as text, formatted once per second."""

from __future__ import annotations

from twisted.internet.task import Clock

from goto_tw.timestamps import PerSecond


def test_formats_once_per_second() -> None:
    """Within one second the text is formatted once; the next second formats again."""
    calls: list[float] = []

    def format_time(now: float) -> str:
        calls.append(now)
        return f"t{int(now)}"

    clock = Clock()
    clock.advance(10.2)
    text = PerSecond(clock, format_time)
    assert [text.now() for _ in range(5)] == ["t10"] * 5
    clock.advance(0.5)
    assert text.now() == "t10"
    clock.advance(0.5)
    assert text.now() == "t11"
    assert calls == [10.2, 11.2]
