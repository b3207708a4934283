"""Names that reach the file system: one rule for database names, one for
table names, applied by every entry point (including the command line)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

from conftest import ROOT
from dictdb_shm import DictDB, InvalidNameError, names
from dictdb_shm.coordinator import client
from dictdb_shm.engine.catalog import Catalog

BAD_DB_NAMES = ["", "ok\n", "\nok", "a.b", ".", "..", "a/b", "../x", "a\x00b", "a b",
                "tab\t", "bell\x07", "é", "-lead", "x" * 49, None, 5]


@pytest.mark.parametrize("bad", BAD_DB_NAMES)
def test_database_name_rule(bad):
    with pytest.raises(InvalidNameError):
        names.check_db_name(bad)


def test_good_database_names():
    for good in ("a", "A-1_b", "x" * 48, names.private_db_name()):
        assert names.check_db_name(good) == good


ENTRY_POINTS = {
    "DictDB": lambda n: DictDB(n),
    "DictDB.attach": lambda n: DictDB.attach(n),
    "ensure_running": lambda n: client.ensure_running(n, create=True),
    "request": lambda n: client.request(n, "ping"),
    "destroy": lambda n: client.destroy(n),
    "status": lambda n: client.status(n),
    "Catalog.attach": lambda n: Catalog.attach(n),
    "shm_entries": lambda n: names.shm_entries(n),
    "socket path": lambda n: names.coordinator_socket(n),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("bad", ["ok\n", "db.t1", "../elsewhere/notes"])
def test_every_entry_point_checks_the_database_name(entry, bad):
    with pytest.raises(InvalidNameError):
        ENTRY_POINTS[entry](bad)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dictdb_shm.coordinator", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def test_stop_with_a_table_prefix_removes_nothing(db_name):
    """``stop DB.t1`` once matched the objects of table 1 of DB."""
    db = DictDB(db_name)
    db.create_table("t1").insert([{"id": i} for i in range(10)])
    before = sorted(names.shm_entries(db_name))
    done = _cli("stop", f"{db_name}.t1")
    assert done.returncode == 1
    assert "invalid database name" in done.stderr and done.stderr.count("\n") == 1
    assert sorted(names.shm_entries(db_name)) == before
    assert db.get_table("t1").count() == 10
    db.close()


def test_stop_with_a_path_deletes_nothing_outside():
    """``stop ../target/notes`` once unlinked <runtime>/../target/notes.log."""
    with tempfile.TemporaryDirectory() as top:
        runtime = os.path.join(top, "runtime")
        os.mkdir(runtime, 0o700)
        target = os.path.join(top, "target")
        os.mkdir(target)
        victims = [os.path.join(target, f"notes.{ext}") for ext in ("log", "sock", "lock")]
        for path in victims:
            with open(path, "w") as f:
                f.write("keep me")
        done = _cli("stop", "../target/notes", env={"DICTDB_SHM_RUNTIME_DIR": runtime})
        assert done.returncode == 1 and "invalid database name" in done.stderr
        assert all(os.path.exists(p) for p in victims)


@pytest.mark.parametrize("command", ["serve", "status"])
def test_other_commands_refuse_bad_names(command):
    done = _cli(command, "bad.name")
    assert done.returncode == 1
    assert "invalid database name" in done.stderr


BAD_TABLE_NAMES = ["", "   ", ".", "..", "/", "a/b", "../up", "a\x00b", "line\nbreak",
                   "tab\tin", "esc\x1b[31m", "del\x7f", "c1\x85", "sep\u2028", "\ud800",
                   "x" * 201, 7, None]


@pytest.mark.parametrize("bad", BAD_TABLE_NAMES)
def test_table_name_rule(bad):
    with pytest.raises(InvalidNameError):
        names.check_table_name(bad)


@pytest.mark.parametrize("bad", [".", "..", "a/b", "x\ny"])
def test_coordinator_enforces_the_table_name_rule_itself(db_name, bad):
    """A client that skips DictDB's check still cannot make such a table."""
    db = DictDB(db_name)
    with pytest.raises(InvalidNameError):
        client.request(db_name, "create_table", bad, {"pk": "id", "schema": None})
    with pytest.raises(InvalidNameError):
        db.create_table(bad)
    assert db.list_tables() == []
    db.close()


def test_good_table_names(db_name):
    db = DictDB(db_name)
    good = ["users", "my table", "a.b", "...", ".hidden", "é-ü", "x" * 200]
    for name in good:
        db.create_table(name)
    assert sorted(db.list_tables()) == sorted(good)
    db.close()
