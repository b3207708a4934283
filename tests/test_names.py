"""Names that reach the file system: one rule for database names, one for
table names, applied by every entry point (including the command line); the
OS object names derived from them; the runtime directory."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile

import pytest

from conftest import ROOT
from dictdb_shm import DictDB, InvalidNameError, OwnershipError, names
from dictdb_shm.coordinator import client
from dictdb_shm.engine.catalog import Catalog
from dictdb_shm.engine.segment import Segment, unlink

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


@pytest.mark.parametrize("good, bad", [("x" * 200, "x" * 201), ("é" * 100, "é" * 100 + "a")])
def test_table_names_are_limited_in_utf8_bytes(good, bad):
    assert names.check_table_name(good) == good
    with pytest.raises(InvalidNameError, match="too long"):
        names.check_table_name(bad)


# ------------------------------------------------------------ object names
def test_every_object_name_of_a_database_carries_its_prefix():
    db = "shop"
    p = names.prefix(db)
    assert p == "dictdb_shop."
    posix = [names.catalog_segment(db), names.heap_segment(db, 3, 1),
             names.directory_segment(db, 3, 2), names.index_segment(db, 3, 4),
             names.drain_semaphore(db, 3)]
    assert posix == ["/dictdb_shop.catalog", "/dictdb_shop.t3.heap1", "/dictdb_shop.t3.dir2",
                     "/dictdb_shop.t3.idx4", "/dictdb_shop.t3.r"]
    assert all(n.startswith("/" + p) for n in posix)
    assert names.shm_path(posix[1]) == "/dev/shm/dictdb_shop.t3.heap1"
    assert names.semaphore_path(posix[4]) == "/dev/shm/sem.dictdb_shop.t3.r"


def test_one_table_prefix_never_matches_another_tables_objects():
    assert not names.heap_segment("db", 10, 1)[1:].startswith(names.table_prefix("db", 1))
    assert names.heap_segment("db", 1, 10)[1:].startswith(names.table_prefix("db", 1))
    assert not names.catalog_segment("db-2")[1:].startswith(names.prefix("db"))


def test_shm_entries_lists_one_database_only(db_name):
    mine = names.heap_segment(db_name, 1, 1)
    neighbour = names.heap_segment(db_name + "_x", 1, 1)   # a name that extends ours
    Segment.create(mine, 4096)
    Segment.create(neighbour, 4096)
    try:
        assert names.shm_entries(db_name) == [mine[1:]]
        assert names.shm_entries(db_name + "_x") == [neighbour[1:]]
    finally:
        unlink(mine)
        unlink(neighbour)


def test_private_names_are_valid_unique_and_found_by_the_sweep():
    a, b = names.private_db_name(), names.private_db_name()
    assert a != b and names.check_db_name(a) == a
    assert a.startswith(f"p{os.getpid()}-")
    assert names.catalog_segment(a).startswith("/dictdb_p")     # what the sweep lists


# ------------------------------------------------------- runtime directory
@pytest.fixture
def empty_top():
    with tempfile.TemporaryDirectory(prefix="dictdb_names_") as top:
        yield top


def test_runtime_dir_is_made_0700_whatever_the_umask(empty_top, monkeypatch):
    path = os.path.join(empty_top, "rt")
    monkeypatch.setenv("DICTDB_SHM_RUNTIME_DIR", path)
    old = os.umask(0o777)
    try:
        assert names.runtime_dir() == path
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert names.coordinator_socket("shop") == os.path.join(path, "shop.sock")
    assert names.coordinator_log("shop") == os.path.join(path, "shop.log")
    assert names.semaphore_creation_lockfile() == os.path.join(path, "semaphores.lock")


def test_runtime_dir_that_cannot_be_made_or_is_a_file_is_refused(empty_top, monkeypatch):
    monkeypatch.setenv("DICTDB_SHM_RUNTIME_DIR", os.path.join(empty_top, "no", "such"))
    with pytest.raises(OwnershipError, match="cannot create the runtime directory") as info:
        names.runtime_dir()
    assert "DICTDB_SHM_RUNTIME_DIR" in str(info.value)
    a_file = os.path.join(empty_top, "file")
    open(a_file, "w").close()
    monkeypatch.setenv("DICTDB_SHM_RUNTIME_DIR", a_file)
    with pytest.raises(OwnershipError, match="is not a directory"):
        names.runtime_dir()


def test_runtime_dir_falls_back_to_the_temp_dir(empty_top, monkeypatch):
    monkeypatch.delenv("DICTDB_SHM_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", empty_top)
    monkeypatch.setattr(tempfile, "tempdir", None)          # re-read TMPDIR
    expected = os.path.join(empty_top, f"dictdb_shm-{os.geteuid()}")
    for xdg in ("relative/path", os.path.join(empty_top, "missing")):
        monkeypatch.setenv("XDG_RUNTIME_DIR", xdg)
        assert names.runtime_dir() == expected
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert names.runtime_dir() == expected
    assert stat.S_IMODE(os.stat(expected).st_mode) == 0o700
