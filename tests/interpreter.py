"""A fresh process of the interpreter running the tests, for settings that change a whole process
(PyPy's JIT and nursery)."""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ON_PYPY = platform.python_implementation() == "PyPy"

#: The checkout's root, so that the child imports this checkout's ``goto_tw``.
ROOT = Path(__file__).resolve().parent.parent


def printed_by(code: str, env: Mapping[str, str]) -> str:
    """What ``code`` prints (stripped), run by this interpreter in a new process with exactly
    ``env`` as its environment; a failure of the child fails the test (``CalledProcessError``)."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    return done.stdout.strip()
