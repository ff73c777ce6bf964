"""bench/master_clicks.py: its master counts what a call carries, and both scenarios give a figure a round."""

from __future__ import annotations

import tempfile

from bench.master_clicks import Master, _bodies, _request, run


def test_a_call_is_counted_by_the_master() -> None:
    """The benchmark's call is one a master takes: acknowledged, and every click in the totals."""
    with tempfile.TemporaryDirectory() as directory:
        master = Master(directory, links=50)
        try:
            master.call(_request(_bodies(keys=20, calls=1, links=50)[0]))
            assert master.book is not None
            assert master.book.total() == sum(1 + offset % 7 for offset in range(20))
        finally:
            master.close()


def test_each_scenario_gives_a_figure_a_round() -> None:
    for name in ("call", "parse"):
        figures = run(name, keys=10, calls=2, rounds=2, links=30)
        assert len(figures) == 2 and all(figure > 0 for figure in figures)
