"""Operational drills: scripts that run real ``twistd goto`` processes on loopback and check a property.

Each drill is a runnable script (``python drills/crash.py [--quick]``) that prints its figures and
exits non-zero when the property it checks does not hold; ``tests/e2e/test_drills.py`` runs each one
in its ``--quick`` mode. See ``drills/README.md``.
"""
