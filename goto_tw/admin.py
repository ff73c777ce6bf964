"""``goto-admin``: move links between the data file and PostgreSQL, keys and URLs unchanged.

    goto-admin import store.json postgresql://goto@db/goto    # data file -> database
    goto-admin export postgresql://goto@db/goto store.json    # database -> data file

Both are safe to re-run. ``import`` reads the file as a master's start-up does (locked, every record
checked, a crash's tail repaired as start-up repairs it: said on standard error, as every warning
of the loader is), copies it in one transaction (``COPY``), adds the pairs the database lacks, skips those it
already has, and refuses (changing nothing) when a key there points to another URL; the key sequence
then moves past every imported key, so masters never hand one out again. A URL the file holds under
several keys keeps every key; adds of it answer the first that is not a custom key (a key someone
chose is never handed to everyone who adds its URL, as on a file master), and a URL held under
custom keys only gets a key of its own at its next add. ``export`` writes a new file beside the
target and renames it into place (refusing a file a running master holds), oldest pairs first.

Clicks, custom-key and disabled-link data (issues 10 and 11) are not moved yet; a data file with
disabled links is refused (importing would bring them back to life).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import time
from collections.abc import Sequence

from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher
from zope.interface import provider

from goto_tw.keybound import CorruptKeyBound
from goto_tw.persistence import CorruptDataFile, encode_record, open_data_file
from goto_tw.pgdb import connect
from goto_tw.pgschema import migrate

#: Rows sent to ``COPY`` per write, and fetched per round trip on export.
CHUNK = 20_000


class AdminError(Exception):
    """What went wrong, in words for the operator; nothing was imported or exported."""


@provider(ILogObserver)
def _warnings_to_stderr(event: LogEvent) -> None:
    """A ``twisted.logger`` observer: what the loader warns of (a crash's tail it repaired) is
    printed, not lost (goto-admin starts no logging of its own)."""
    level = event.get("log_level")
    if level in (LogLevel.warn, LogLevel.error, LogLevel.critical):
        print(f"goto-admin: {formatEvent(event)}", file=sys.stderr)


def _is_database(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def import_file(path: str, uri: str) -> tuple[int, int]:
    """Copy the data file at ``path`` into the database at ``uri``; return (added, already there)."""
    if not os.path.exists(path):
        raise AdminError(f"{path}: no such data file")
    try:
        data = open_data_file(path)
    except (CorruptDataFile, CorruptKeyBound, OSError) as exc:
        raise AdminError(f"cannot load the data file: {exc}") from None
    if data.disabled:
        data.record_file.close()
        raise AdminError(
            f"{path} holds {len(data.disabled)} disabled link(s), which a PostgreSQL store cannot keep "
            "disabled yet: importing would bring them back to life (nothing was imported)"
        )
    try:
        urls = data.urls
        next_index = data.next_index
        connection = connect(uri, statement_timeout_ms=0)
        try:
            migrate(connection)
            with connection.transaction():
                connection.execute(
                    "CREATE TEMP TABLE goto_import (key text, url text, ord bigint, custom boolean) "
                    "ON COMMIT DROP"
                )
                custom = urls.custom_created
                with connection.cursor().copy("COPY goto_import (key, url, ord, custom) FROM STDIN") as copy:
                    lines: list[str] = []
                    for number, key in enumerate(urls):
                        url = urls[key].replace("\\", "\\\\")
                        lines.append(f"{key}\t{url}\t{number}\t{'t' if key in custom else 'f'}\n")
                        if len(lines) >= CHUNK:
                            copy.write("".join(lines))
                            lines = []
                    if lines:
                        copy.write("".join(lines))
                clash = connection.execute(
                    "SELECT i.key, i.url, l.url FROM goto_import i JOIN goto_links l USING (key) "
                    "WHERE l.url <> i.url LIMIT 5"
                ).fetchall()
                if clash:
                    shown = "; ".join(f"{key}: file {new!r}, database {old!r}" for key, new, old in clash)
                    raise AdminError(
                        f"keys already in the database point elsewhere, nothing imported ({shown})"
                    )
                added = connection.execute(
                    """
                    INSERT INTO goto_links (key, url, canonical)
                    SELECT key, url, first AND NOT custom AND NOT EXISTS (
                        SELECT 1 FROM goto_links l WHERE l.canonical AND l.url_hash = goto_url_hash(i.url))
                    FROM (
                        SELECT key, url, ord, custom,
                               row_number() OVER (PARTITION BY url ORDER BY custom, ord) = 1 AS first
                        FROM goto_import g WHERE NOT EXISTS (SELECT 1 FROM goto_links l WHERE l.key = g.key)
                    ) AS i
                    ORDER BY ord
                    """
                ).rowcount
                connection.execute(
                    "SELECT setval('goto_key_index', GREATEST(%s, (SELECT last_value FROM goto_key_index)))",
                    (max(next_index - 1, 0),),
                )
        finally:
            connection.close()
    finally:
        data.record_file.close()
    return added, len(urls) - added


def export_file(uri: str, path: str) -> int:
    """Write every pair of the database at ``uri`` to a data file at ``path``; return how many."""
    target = os.path.abspath(path)
    holder = _lock_existing(target)
    temporary = f"{target}.export-{os.getpid()}"
    count = 0
    try:
        connection = connect(uri, statement_timeout_ms=0)
        try:
            with (
                connection.transaction(),
                connection.cursor(name="goto_export") as cursor,
                open(temporary, "wb") as output,
            ):
                cursor.execute("SELECT key, url FROM goto_links ORDER BY id")
                while True:
                    rows = cursor.fetchmany(CHUNK)
                    if not rows:
                        break
                    output.write(b"".join(encode_record(key, url) for key, url in rows))
                    count += len(rows)
                output.flush()
                os.fsync(output.fileno())
        finally:
            connection.close()
        os.replace(temporary, target)
        directory = os.open(os.path.dirname(target), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    finally:
        if holder is not None:
            os.close(holder)
    return count


def _lock_existing(path: str) -> int | None:
    """Lock an existing data file as a master does, so a running master's file is never replaced."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise AdminError(f"{path} is in use (a master runs on it): stop it first") from None
    return fd


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="goto-admin", description="Move goto-tw links between a data file and PostgreSQL."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    importing = commands.add_parser("import", help="data file -> PostgreSQL (safe to re-run)")
    importing.add_argument("file")
    importing.add_argument("database", help="postgresql://USER@HOST/DB (password from PGPASSFILE)")
    exporting = commands.add_parser("export", help="PostgreSQL -> data file (replaced atomically)")
    exporting.add_argument("database")
    exporting.add_argument("file")
    arguments = parser.parse_args(argv)
    if not _is_database(arguments.database):
        parser.error(f"not a PostgreSQL URI: {arguments.database!r}")
    started = time.monotonic()
    globalLogPublisher.addObserver(_warnings_to_stderr)
    try:
        if arguments.command == "import":
            added, present = import_file(arguments.file, arguments.database)
            print(f"imported {added} links, {present} already there, in {time.monotonic() - started:.1f} s")
        else:
            count = export_file(arguments.database, arguments.file)
            print(f"exported {count} links in {time.monotonic() - started:.1f} s")
    except AdminError as exc:
        print(f"goto-admin: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # psycopg's errors: connection refused, permission denied...
        print(f"goto-admin: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    finally:
        globalLogPublisher.removeObserver(_warnings_to_stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
