"""The PostgreSQL store's schema: numbered migrations, applied at start under an advisory lock.

Every master runs :func:`migrate` when it starts. The migrations run in one transaction that first
takes a transaction-scoped advisory lock, so two masters starting at once apply each migration
exactly once (the second waits, then finds the schema current). A database whose schema is newer
than this program knows is refused rather than written with wrong assumptions.

Later issues add columns or tables (clicks, disabled links, custom keys' origin) as new entries of
:data:`MIGRATIONS`; an entry is never edited once released.
"""

from __future__ import annotations

from typing import Any

#: The advisory lock every migration holds (``'goto'`` in ASCII): one migrator at a time.
MIGRATION_LOCK = 0x676F746F

#: (version, SQL) in order. The URL is unique through its hash (a btree entry cannot hold a 4 KiB
#: URL); keys are base 62 of ``goto_key_index`` values, handed out by the database to every master.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        -- convert_to is only STABLE (encodings); with 'UTF8' fixed its result never changes.
        CREATE FUNCTION goto_url_hash(url text) RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE
            AS $$ SELECT sha256(convert_to(url, 'UTF8')) $$;
        CREATE SEQUENCE goto_key_index AS bigint MINVALUE 0 START 0;
        CREATE TABLE goto_links (
            -- the order pairs were stored in (export writes the data file in it)
            id bigint GENERATED ALWAYS AS IDENTITY,
            key text PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 64),
            url text NOT NULL CHECK (length(url) BETWEEN 1 AND 4096),
            url_hash bytea GENERATED ALWAYS AS (goto_url_hash(url)) STORED,
            created timestamptz NOT NULL DEFAULT now(),
            -- false only for a URL imported under a second key (a data file may hold such pairs):
            -- the key keeps working, and adding the URL answers its canonical key.
            canonical boolean NOT NULL DEFAULT true
        );
        CREATE UNIQUE INDEX goto_links_url_hash ON goto_links (url_hash) WHERE canonical;
        """,
    ),
)

#: The schema version this program writes.
LATEST_VERSION = MIGRATIONS[-1][0]


class SchemaTooNew(Exception):
    """The database was migrated by a newer goto-tw; this one must not write to it."""


def migrate(connection: Any) -> tuple[int, int]:
    """Bring the schema to :data:`LATEST_VERSION`; return (version found, version now).

    ``connection`` is a psycopg connection (not in autocommit mode); the work is committed here.
    """
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        connection.execute("CREATE TABLE IF NOT EXISTS goto_schema (version integer NOT NULL)")
        row = connection.execute("SELECT max(version) FROM goto_schema").fetchone()
        found = int(row[0]) if row is not None and row[0] is not None else 0
        if found > LATEST_VERSION:
            raise SchemaTooNew(
                f"the database schema is version {found}, newer than this goto-tw knows ({LATEST_VERSION})"
            )
        for version, sql in MIGRATIONS:
            if version > found:
                connection.execute(sql)
                connection.execute("INSERT INTO goto_schema (version) VALUES (%s)", (version,))
    return found, LATEST_VERSION
