"""bench/master_clicks.py: its master counts what a call carries, and both scenarios give a figure a round."""

from __future__ import annotations

import tempfile

from bench.master_clicks import Master, _bodies, _request, run


def test_a_call_is_counted_by_the_master() -> None:
    """The benchmark's calls are ones a master takes: acknowledged, and every click of every key (each
    a stored link's, all of them) in the totals."""
    with tempfile.TemporaryDirectory() as directory:
        master = Master(directory, links=50)
        try:
            for body in _bodies(keys=50, calls=2, links=50):
                master.call(_request(body))
            assert master.book is not None
            assert master.book.total() == 2 * sum(1 + offset % 7 for offset in range(50))
        finally:
            master.close()


def test_each_scenario_gives_a_figure_a_round() -> None:
    for name in ("call", "parse"):
        figures = run(name, keys=10, calls=2, rounds=2, links=30)
        assert len(figures) == 2 and all(figure > 0 for figure in figures)
