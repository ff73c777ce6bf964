"""Work around a PyPy 7.3.11 ctypes bug that stops psycopg's pure-Python build from connecting.

psycopg hands libpq ``py_object(weakref.ref(pgconn))`` for its notice callback. PyPy before 7.3.12
keeps every ``py_object`` value through a weak reference, and a weak reference to a weak reference
raises ``TypeError: cannot create weak reference to 'weakref' object`` (pypy/pypy#3882); Debian 12's
``pypy3`` is 7.3.11. :func:`apply` makes PyPy's container hold such a value strongly instead: the
value is the small weakref object, not the connection, so nothing large is kept alive. It changes
nothing on CPython or on a PyPy that does not have the bug.
"""

from __future__ import annotations

import platform
import weakref
from typing import Any


def apply() -> None:
    """Patch PyPy's ``py_object`` container once, if this interpreter has the bug."""
    if platform.python_implementation() != "PyPy":
        return
    try:
        from _ctypes import primitive  # type: ignore[attr-defined]  # PyPy's pure-Python ctypes
    except ImportError:
        return
    container_class: Any = type(getattr(primitive, "pyobj_container", None))
    original = getattr(container_class, "add", None)
    if original is None or getattr(original, "_goto_patched", False):
        return
    try:
        primitive.pyobj_container.get(primitive.pyobj_container.add(weakref.ref(apply)))
        return  # no bug here
    except TypeError:
        pass

    def add(self: Any, obj: Any) -> int:
        number = len(self.objs)
        try:
            self.objs.append(weakref.ref(obj))
        except TypeError:  # not weakly referenceable (a weakref itself): keep it strongly
            self.objs.append(lambda: obj)
        return number

    add._goto_patched = True  # type: ignore[attr-defined]
    container_class.add = add
