"""twistd with vmprof on a signal, for bench/profile.py on PyPy (py-spy cannot read PyPy's frames).

Usage (bench/profile.py builds it): VENV/bin/python bench/_vmprof_twistd.py OUT.prof PERIOD TWISTD-ARGS...

It runs ``twistd TWISTD-ARGS`` in this process. SIGUSR1 starts vmprof sampling into OUT.prof (CPU
time, one sample per PERIOD seconds of it); SIGUSR2 stops it, closes the file and then creates
OUT.prof.done, so the profile covers exactly the load run between the two signals, not start-up,
warm-up or the cache fill. Twisted's reactor does not use either signal. Needs the ``vmprof``
package in the servers' venv (PyPy has ``_vmprof`` built in; the package adds the API and reader).
Runs on the servers' interpreter: Python 3.9 syntax.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from types import FrameType
from typing import Any


def main() -> None:
    out_path = sys.argv[1]
    period = float(sys.argv[2])
    vmprof: Any = importlib.import_module("vmprof")
    state: dict[str, int] = {}  # the profile's file descriptor while sampling

    def start(signum: int, frame: FrameType | None) -> None:
        if "fd" not in state:
            state["fd"] = os.open(out_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            vmprof.enable(state["fd"], period=period, native=False)

    def stop(signum: int, frame: FrameType | None) -> None:
        fd = state.pop("fd", None)
        if fd is not None:
            vmprof.disable()
            os.close(fd)
            with open(out_path + ".done", "w"):
                pass

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", *sys.argv[3:]]
    run()


if __name__ == "__main__":
    # This script's directory is bench/, whose module names (profile, run) would shadow the standard
    # library's in the server: off the path before twistd imports anything.
    del sys.path[0]
    main()
