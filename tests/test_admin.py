"""goto-admin import/export between the data file and a real PostgreSQL: identical, re-runnable."""

from __future__ import annotations

import fcntl
import os

import pytest

from goto_tw.admin import main
from goto_tw.keys import key_for_index
from goto_tw.persistence import encode_record, load_records
from goto_tw.pgdb import connect
from goto_tw.pgschema import migrate
from goto_tw.pgstore import write_batch
from tests.pgfixtures import import_psycopg

psycopg = import_psycopg()


def _write(path, pairs) -> None:
    path.write_bytes(b"".join(encode_record(key, url) for key, url in pairs))


def test_import_then_export_is_identical_and_safe_to_rerun(tmp_path, pg_uri, capsys):
    """Keys and URLs survive file -> database -> file unchanged; a second import adds nothing; a URL
    held under two keys keeps both; new adds get keys past every imported one."""
    pairs = [(key_for_index(i), f"https://example.com/{i}") for i in range(3000) if i != 39]
    pairs.append(("ZZZ", "https://example.com/5"))  # the file holds this URL under a second key
    source = tmp_path / "store.json"
    _write(source, pairs)
    assert main(["import", str(source), pg_uri]) == 0
    assert "imported 3000 links, 0 already there" in capsys.readouterr().out
    assert main(["import", str(source), pg_uri]) == 0
    assert "imported 0 links, 3000 already there" in capsys.readouterr().out
    exported = tmp_path / "out.json"
    assert main(["export", pg_uri, str(exported)]) == 0
    assert dict(load_records(str(exported))) == dict(pairs)
    assert exported.read_bytes() == source.read_bytes(), "the same records, in the file's order"
    with connect(pg_uri) as connection, connection.transaction():
        keys = write_batch(connection, ["https://example.com/5", "https://example.com/new"])
    assert keys["https://example.com/5"] == (key_for_index(5), False), "found, not made"
    new_key, new = keys["https://example.com/new"]
    assert new and new_key not in dict(pairs)


def test_import_refuses_a_key_pointing_elsewhere(tmp_path, pg_uri, capsys):
    """A key already in the database with another URL stops the import; nothing is changed."""
    with psycopg.connect(pg_uri) as connection:
        migrate(connection)
        connection.execute("INSERT INTO goto_links (key, url) VALUES ('1', 'https://other.example/')")
        connection.commit()
    source = tmp_path / "store.json"
    _write(source, [("0", "https://example.com/0"), ("1", "https://example.com/1")])
    assert main(["import", str(source), pg_uri]) == 1
    assert "point elsewhere" in capsys.readouterr().err
    with psycopg.connect(pg_uri) as connection:
        assert connection.execute("SELECT count(*) FROM goto_links").fetchone() == (1,)


def test_export_refuses_a_file_a_master_holds(tmp_path, pg_uri, capsys):
    """Export never replaces a data file that a running master has locked."""
    with psycopg.connect(pg_uri) as connection:
        migrate(connection)
    target = tmp_path / "store.json"
    target.write_bytes(b"")
    fd = os.open(target, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert main(["export", pg_uri, str(target)]) == 1
        assert "in use" in capsys.readouterr().err
    finally:
        os.close(fd)


def test_import_of_a_corrupt_file_changes_nothing(tmp_path, pg_uri, capsys):
    """A record the loader would refuse stops the import, naming the line."""
    source = tmp_path / "store.json"
    source.write_bytes(encode_record("0", "https://ok.example/") + b'{"key":"1","url":"javascript:x"}\n')
    assert main(["import", str(source), pg_uri]) == 1
    assert "line 2" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["import", "x.json", "mysql://x"], ["export", "nonsense", "x.json"]])
def test_admin_refuses_a_non_postgresql_uri(argv):
    """The database argument must be a PostgreSQL URI."""
    with pytest.raises(SystemExit):
        main(argv)


def test_import_refuses_a_file_with_disabled_links(tmp_path, pg_uri, capsys):
    """A PostgreSQL store cannot keep a link disabled yet: importing a file with tombstones would bring
    a link an operator disabled (a phishing link) back to life, so nothing is imported."""
    from goto_tw.tombstones import encode_tombstone

    source = tmp_path / "store.json"
    _write(source, [("0", "https://example.com/0"), ("1", "https://phish.example/")])
    with open(source, "ab") as data:
        data.write(encode_tombstone("1", 1_795_000_000))
    assert main(["import", str(source), pg_uri]) == 1
    assert "disabled link" in capsys.readouterr().err
    with psycopg.connect(pg_uri) as connection:
        migrate(connection)
        assert connection.execute("SELECT count(*) FROM goto_links").fetchone() == (0,)


def test_an_imported_custom_key_is_never_the_answer_to_adds_of_its_url(tmp_path, pg_uri, capsys):
    """Review 35 (final read): a URL the file held under a custom key only was imported with that key
    as its canonical one, so every later add of the URL on PostgreSQL answered the key someone chose
    (the squatting a file master no longer allows). The custom key keeps working; an add of its URL
    gets a key of its own."""
    from goto_tw.persistence import encode_custom_record

    source = tmp_path / "store.json"
    source.write_bytes(
        encode_record("0", "https://example.com/plain")
        + encode_custom_record("this-story-is-fake", "https://news.example/story", 1_790_000_000)
    )
    assert main(["import", str(source), pg_uri]) == 0
    with connect(pg_uri) as connection, connection.transaction():
        keys = write_batch(connection, ["https://news.example/story", "https://example.com/plain"])
        url = connection.execute("SELECT url FROM goto_links WHERE key = 'this-story-is-fake'").fetchone()
    new_key, new = keys["https://news.example/story"]
    assert new and new_key != "this-story-is-fake"
    assert keys["https://example.com/plain"] == ("0", False)
    assert url == ("https://news.example/story",)


def test_an_import_says_what_it_repaired_in_the_data_file(tmp_path, capsys):
    """Review 39: the import loads the file as a master's start-up does, which cuts a torn last line
    off; the loader's warning went to no observer, so the file changed without a word (here the
    import fails after, for want of a database, and said only that)."""
    data = tmp_path / "store.json"
    whole = b'{"key":"0","url":"https://a.example/"}\n{"key":"1","url":"https://b.example/"}\n'
    data.write_bytes(whole + b'{"key":"2","url":"https://c.exa')
    assert main(["import", str(data), "postgresql://nobody@127.0.0.1:1/x"]) == 1
    err = capsys.readouterr().err
    assert "goto-admin: Data file" in err and "cutting it off" in err, err
    assert data.read_bytes() == whole
