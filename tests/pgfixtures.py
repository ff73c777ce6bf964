"""pytest fixtures for a real PostgreSQL: one throwaway cluster per session, a fresh database per test.

Without PostgreSQL the tests that use them skip, saying why; with ``GOTO_REQUIRE_POSTGRES=1`` (CI)
they fail instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.pgcluster import MISSING_REASON, Cluster, driver_available, find_bin_dir, required


def import_psycopg() -> ModuleType:
    """``psycopg`` for a test module's top; without it (or without libpq) the whole module skips,
    saying why, or fails under ``GOTO_REQUIRE_POSTGRES=1``."""
    try:
        import psycopg
    except ImportError as exc:
        if required():
            raise
        pytest.skip(f"{MISSING_REASON}: {exc}", allow_module_level=True)
    return psycopg


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A PostgreSQL server on a unix socket in a temp dir, started once and removed at the end."""
    bin_dir = find_bin_dir()
    if bin_dir is None or not driver_available():
        if required():
            pytest.fail(f"GOTO_REQUIRE_POSTGRES=1: {MISSING_REASON}")
        pytest.skip(MISSING_REASON)
    cluster = Cluster(bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_uri(pg_cluster: Cluster) -> str:
    """The URI of an empty database of this test's own on the session's cluster."""
    return pg_cluster.new_database()
