"""PyPy's JIT counters: a busy server keeps them from decaying, so the paths it takes a few hundred
times a second get compiled.

PyPy compiles a loop, or a bridge from a guard that keeps failing, once a counter for it reaches a
threshold (1,039 runs of a loop, 1,619 calls of a function, 200 failures of a guard). To keep rare paths
from ever being compiled, every 32nd minor collection, and whenever a loop or a function reaches its
threshold, shrinks all the counters by ``decay`` thousandths (40: 4%; ``invoke_after_minor_collection``
and ``decay_all_counters`` in RPython's ``rpython/jit/metainterp/counter.py``). How often that happens
depends on how fast the process allocates, not on time: a slave answering 40,000 cached redirects a
second collects its nursery (4 MiB) dozens of times a second. Its misses and unknown keys (hundreds a
second, spread over the guards of the batches to the master and of the answers coming back) then stay
below the threshold, as the measurements below point to: each one runs in PyPy's interpreter, after
the compiled code it left has been unwound guard by guard (the "blackhole" interpreter). A master's
look-ups for its slaves fare the same.

Measured on a PyPy slave and master on one CPU (scratch pairs side by side, taking turns, wrk ``-c50``
of 4 s rounds of all hits, then of the ``m`` mix: 1% misses and 1% unknown keys):

- ``perf`` of the slave, PyPy's functions named from the debug records in Debian's stripped
  ``libpypy``: the mix added 8.4 us a request, 5.0 of them in PyPy's runtime (2.0 its interpreter,
  0.9 tracing and the blackhole interpreter, 0.9 the collector, the rest spread thin), 2.0 in the
  kernel and about 1 in compiled code;
- the mix's share of the all-hits rate and the CPU a request it added to the slave, medians of 6
  paired rounds: decay 40 (PyPy's default) 0.73 and 6.2 us; ``decay=0`` 0.90 and 1.1 us;
  ``trace_eagerness=20`` (bridges after 20 failures) 0.90 and 2.5 us; both 0.84 and 2.2 us. The
  slave's RSS after those rounds: 184 MiB with decay 40, 187 MiB with ``decay=0``;
- the same with master and slave both set, as shipped (another 6 rounds): decay 40: 0.73, the slave
  +6.1 us and the master +2.4; ``decay=5``: 0.83, +2.7 and +1.4; ``decay=0``: 0.99, +0.5 and +0.2.

So a PyPy server sets ``decay=0`` at start-up (:func:`keep_counters`): a path it takes often enough
is compiled, however much it allocates meanwhile. Nothing ages a counter any more: a path taken
once an hour reaches 200 in about eight days and is compiled then, and what PyPy compiles is bounded
only by the paths it takes (its ``loop_longevity`` frees a loop nobody entered during the last 1,000
compilations, counted in compilations, not time; a bridge lives as long as its loop). The RSS above
is after minutes, not days. ``GOTO_PYPY_JIT_DECAY`` in the environment sets another
decay (0 to 1000), or, empty, leaves PyPy's own (the default, or a ``--jit decay=N`` on its command
line). CPython has no JIT: nothing is done there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from twisted.logger import Logger

log = Logger()

#: The environment variable that overrides :data:`RECOMMENDED_DECAY` (empty: PyPy's own decay).
DECAY_VARIABLE = "GOTO_PYPY_JIT_DECAY"
#: The decay goto-tw runs PyPy with: none.
RECOMMENDED_DECAY = 0
#: PyPy's bounds for ``decay`` (it clamps what lies outside them; we refuse it instead).
MAX_DECAY = 1000


def _pypy_set_param() -> Callable[[str], None] | None:
    """PyPy's ``pypyjit.set_param``, or ``None`` on an interpreter without a JIT (CPython)."""
    try:
        import pypyjit  # type: ignore[import-not-found]
    except ImportError:
        return None
    set_param: Callable[[str], None] = pypyjit.set_param
    return set_param


def keep_counters(
    environ: Mapping[str, str] | None = None, set_param: Callable[[str], None] | None = None
) -> int | None:
    """Set PyPy's JIT ``decay`` to :data:`RECOMMENDED_DECAY`, or to what ``GOTO_PYPY_JIT_DECAY``
    says; return the decay set, or ``None`` if nothing was set (CPython, an empty variable, or a
    value that is not a whole number from 0 to 1000, which is logged once and ignored).

    ``environ`` defaults to ``os.environ`` and ``set_param`` to ``pypyjit.set_param`` (tests pass
    their own).
    """
    if set_param is None:
        set_param = _pypy_set_param()
        if set_param is None:
            return None
    if environ is None:
        environ = os.environ
    chosen = environ.get(DECAY_VARIABLE)
    if chosen is None:
        decay = RECOMMENDED_DECAY
    elif chosen.strip() == "":
        return None  # the operator leaves it to PyPy
    else:
        text = chosen.strip().lstrip("0") or "0"  # int() refuses more than 4,300 digits
        if (
            not (text.isascii() and text.isdigit())
            or len(text) > len(str(MAX_DECAY))
            or int(text) > MAX_DECAY
        ):
            log.warn(
                "Ignoring {variable}={value!r}: it takes a whole number from 0 to {most}; PyPy keeps"
                " its own decay",
                variable=DECAY_VARIABLE,
                value=chosen[:40],
                most=MAX_DECAY,
            )
            return None
        decay = int(text)
    set_param(f"decay={decay}")
    log.info("PyPy's JIT counters decay by {decay} (see goto_tw/jitcounters.py)", decay=decay)
    return decay
