"""PyPy's young generation (the nursery): the size goto-tw ships with, and a warning at start-up when
a PyPy server runs with a smaller one that nobody chose.

PyPy sizes its nursery from ``/proc/cpuinfo``'s "cache size". Where that line gives a small cache (AMD
EPYC in a VM: 512 KB), it takes 1 MiB. A PyPy master taking durable adds then collects its nursery
and steps its major collector far more often. The likely reason: an add's objects live until its
group is synced (1-2 ms under load), so a collection finds them young and must make them old.
``PYPYLOG=gc-minor,gc-collect-step`` over a master's first 26 s (20 s of wrk ``-c50`` ``POST /add``,
then a 5 s round), with 1 MiB and with 4 MiB:

- minor collections: 16,472 and 5,274;
- major-collection steps: 875 and 198;
- time in both: 15% and 11% of the run.

With ``PYPY_GC_NURSERY=4M``, ``bench/run.py --go --python .venv-pypy/bin/python --only c --rounds 5``
was run twice each way, taking turns. Durable adds on the master:

- PyPy's 1 MiB: 12,842 and 11,939 a second, 0.65x Go both times, 66 and 71 us of CPU an add;
- 4M: 14,136 and 15,051 a second, 0.79x and 0.81x Go, 56 and 57 us an add.

Masters started by hand, each after 30 s of load (3 of each, 3 rounds of 5 s each): medians of 13.4k
and 16.6k a second. Peak RSS rose from 169-184 MiB to 179-197 MiB (shorter runs). 16M measured no
faster than 4M, for 226-231 MiB.

The units in ``contrib/systemd`` set :data:`RECOMMENDED_NURSERY`, and the benchmarks run PyPy
servers with it (``bench/_procs.give_servers_pypy_nursery``). A server started another way, on a PyPy that picked a smaller nursery, logs
:func:`warn_if_small_nursery`'s advice once. A ``PYPY_GC_NURSERY`` that is set, even to less, is an
operator's choice and is left alone. CPython has no nursery: nothing is checked there.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping

from twisted.logger import Logger

log = Logger()

_RECOMMENDED_MIB = 4
#: The nursery goto-tw is measured and shipped with, as ``PYPY_GC_NURSERY`` spells it.
RECOMMENDED_NURSERY = f"{_RECOMMENDED_MIB}M"
#: The same size in bytes (PyPy's ``M`` is MiB).
RECOMMENDED_NURSERY_BYTES = _RECOMMENDED_MIB * 1024 * 1024


def nursery_size() -> int | None:
    """PyPy's nursery in bytes, or ``None`` on an interpreter that does not say (CPython).

    PyPy's ``gc.get_stats()`` formats its figures for reading (``"1.0MB"``) and keeps the numbers
    in ``_s``. If a later PyPy stops doing so, this says ``None`` and nothing is warned.
    """
    get_stats = getattr(gc, "get_stats", None)  # CPython 3.11 has one too: a list, without ``_s``
    if get_stats is None:
        return None
    size = getattr(getattr(get_stats(), "_s", None), "nursery_size", None)
    return size if isinstance(size, int) else None


def warn_if_small_nursery(size: int | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Log once how to give PyPy a larger nursery, if it picked one smaller than
    :data:`RECOMMENDED_NURSERY_BYTES` by itself. Return whether it logged.

    ``size`` defaults to :func:`nursery_size` and ``environ`` to ``os.environ`` (tests pass their own).
    """
    if size is None:
        size = nursery_size()
    if environ is None:
        environ = os.environ
    if size is None or size >= RECOMMENDED_NURSERY_BYTES or "PYPY_GC_NURSERY" in environ:
        return False
    log.warn(
        "PyPy chose a {size_kib:,} KiB nursery for this CPU; set PYPY_GC_NURSERY={recommended} in the"
        " environment (the units in contrib/systemd do). A PyPy master's durable adds ran about a fifth"
        " faster with it, for about 12 MiB more memory (see goto_tw/nursery.py).",
        size_kib=size // 1024,
        recommended=RECOMMENDED_NURSERY,
    )
    return True
