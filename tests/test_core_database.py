"""Database lifecycle, ownership and hygiene: a process that detaches, exits or
is killed never removes data; a named database lives until destroy(), a
private one until its creator leaves; destroy() leaves nothing in /dev/shm;
shared objects are owner-only; handles of a database that is gone raise."""

from __future__ import annotations

import json
import os
import pickle
import signal
import stat
import subprocess
import sys

import pytest

from conftest import ROOT, wait_until
from dictdb_shm import (DatabaseClosedError, DatabaseNotFoundError, DictDB, DictDBError,
                        DuplicateTableError, InvalidNameError, Table, TableNotFoundError)
from dictdb_shm import names
from dictdb_shm.coordinator import client
from dictdb_shm.procinfo import is_alive


def test_create_attach_and_catalog_agree(db_name, spawn):
    db = DictDB(db_name)
    db.create_table("users", primary_key="uid")
    db.create_table("orders")
    other = DictDB.attach(db_name)
    assert sorted(other.list_tables()) == ["orders", "users"]
    assert other.get_table("users").primary_key_name() == "uid"
    with pytest.raises(DuplicateTableError):
        other.create_table("users")
    other.drop_table("orders")
    assert db.list_tables() == ["users"]
    with pytest.raises(TableNotFoundError):
        db.get_table("orders")
    with pytest.raises(TableNotFoundError):
        db.drop_table("orders")
    w = spawn("read_all", db_name, "users")
    assert json.loads(w.expect("RESULT")) == []
    w.finish()
    other.close()
    db.close()


def test_dropped_table_handle_raises_and_name_can_be_reused(db_name):
    db = DictDB(db_name)
    db.create_table("t")
    t = db.get_table("t")
    t.insert({"id": 1})
    db.drop_table("t")
    with pytest.raises(TableNotFoundError):
        t.get(1)
    with pytest.raises(TableNotFoundError):
        t.insert({"id": 2})
    db.create_table("t")
    assert db.get_table("t").count() == 0
    db.close()


def test_attach_missing_database():
    with pytest.raises(DatabaseNotFoundError) as info:
        DictDB.attach("no-such-database-here")
    assert isinstance(info.value, DictDBError)
    assert "DictDB(name)" in str(info.value)


@pytest.mark.parametrize("bad", ["", "has space", "slash/name", "dot.name", "x" * 49, 5])
def test_bad_database_names(bad):
    with pytest.raises(InvalidNameError):
        DictDB(bad)


@pytest.mark.parametrize("bad", ["", "   ", "a\x00b", "x" * 201, 7])
def test_bad_table_names(db_name, bad):
    db = DictDB(db_name)
    with pytest.raises(InvalidNameError):
        db.create_table(bad)
    assert db.list_tables() == []
    db.close()


def test_context_manager_closes_and_data_stays(db_name):
    with DictDB(db_name) as db:
        db.create_table("t")
        db.get_table("t").insert({"id": 1})
    with pytest.raises(DatabaseClosedError):
        db.list_tables()
    again = DictDB.attach(db_name)
    assert again.get_table("t").get(1) == {"id": 1}
    again.close()


def test_destroy_leaves_nothing(db_name):
    db = DictDB(db_name)
    db.create_table("a")
    db.get_table("a").insert([{"x": i} for i in range(5000)])
    info = client.status(db_name)
    pid = info["coordinator_pid"]
    assert pid and names.shm_entries(db_name)
    db.destroy()
    assert names.shm_entries(db_name) == []
    wait_until(lambda: not is_alive(pid, 0), 10, "the coordinator to exit")
    assert not os.path.exists(names.coordinator_socket(db_name))
    with pytest.raises(DatabaseNotFoundError):
        DictDB.attach(db_name)


def test_shared_objects_are_owner_only(db_name):
    db = DictDB(db_name)
    db.create_table("t")
    db.get_table("t").insert({"id": 1})
    entries = names.shm_entries(db_name)
    assert any(e.startswith("sem.") for e in entries) and len(entries) >= 4
    for entry in entries:
        mode = stat.S_IMODE(os.stat(os.path.join(names.SHM_DIR, entry)).st_mode)
        assert mode == 0o600, f"{entry} has mode {oct(mode)}"
    sock = names.coordinator_socket(db_name)
    assert stat.S_IMODE(os.stat(sock).st_mode) & 0o077 == 0
    db.close()


def test_creator_leaves_while_others_keep_working(db_name, spawn):
    w = spawn("create_and_leave", db_name)
    assert w.expect("RESULT") == "left"
    w.finish()
    db = DictDB.attach(db_name)
    notes = db.get_table("notes")
    assert notes.get(1) == {"id": 1, "text": "from the creator"}
    notes.insert({"id": 2, "text": "later"})
    w = spawn("read_all", db_name, "notes")
    assert [r["id"] for r in json.loads(w.expect("RESULT"))] == [1, 2]
    w.finish()
    db.close()


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_attached_process_leaving_removes_nothing(db_name, spawn, how):
    db = DictDB(db_name)
    db.create_table("t")
    db.get_table("t").insert({"id": 1})
    before = sorted(names.shm_entries(db_name))
    w = spawn("attach_read_exit", db_name, "t", how)
    assert w.expect("RESULT") == "1"
    if how == "kill":
        w.kill()
    else:
        w.finish()
    assert sorted(names.shm_entries(db_name)) == before
    assert db.get_table("t").get(1) == {"id": 1}
    db.close()


@pytest.mark.parametrize("how", ["exit", "sleep"])
def test_private_database_goes_with_its_creator(spawn, how):
    w = spawn("create_private", how)
    name = w.expect("RESULT")
    attached = DictDB.attach(name)
    assert attached.get_table("t").count() == 1
    if how == "sleep":
        w.kill()                                   # SIGKILL: the coordinator notices
    else:
        w.send("bye")
        w.finish()
    wait_until(lambda: not names.shm_entries(name), 15, f"private database {name} to go")
    with pytest.raises(DatabaseNotFoundError):
        DictDB.attach(name)


def test_private_database_in_process():
    db = DictDB()
    assert db.is_private and db.name.startswith(f"p{os.getpid()}-")
    db.create_table("t")
    assert names.shm_entries(db.name)
    db.close()
    assert names.shm_entries(db.name) == []


def test_standalone_table_is_private():
    t = Table("people", primary_key="pid")
    t.insert({"pid": 3, "name": "Lin"})
    db_name = t._db.name
    assert t.get(3) == {"pid": 3, "name": "Lin"}
    t._db.close()
    assert names.shm_entries(db_name) == []


def test_handles_pickle_as_names(db_name):
    db = DictDB(db_name)
    db.create_table("t")
    t = db.get_table("t")
    t.insert({"id": 5})
    assert len(pickle.dumps(t)) < 200
    t2 = pickle.loads(pickle.dumps(t))
    assert t2.get(5) == {"id": 5}
    db2 = pickle.loads(pickle.dumps(db))
    assert db2.list_tables() == ["t"]
    db.close()


def test_coordinator_restarts_for_an_orphaned_database(db_name):
    db = DictDB(db_name)
    db.create_table("t")
    db.get_table("t").insert({"id": 1})
    pid = client.status(db_name)["coordinator_pid"]
    os.kill(pid, 9)
    wait_until(lambda: not client.coordinator_running(db_name), 10, "the coordinator to die")
    again = DictDB.attach(db_name)                 # starts a new coordinator
    assert client.status(db_name)["coordinator_pid"] not in (None, pid)
    again.create_table("u")
    assert sorted(again.list_tables()) == ["t", "u"]
    assert again.get_table("t").get(1) == {"id": 1}
    again.close()
    db.close()


def test_private_database_swept_when_creator_and_coordinator_were_killed(spawn):
    w = spawn("create_private", "sleep")
    name = w.expect("RESULT")
    coordinator = client.status(name)["coordinator_pid"]
    os.kill(coordinator, 9)
    wait_until(lambda: not client.coordinator_running(name), 10, "the coordinator to die")
    w.kill()
    assert names.shm_entries(name)                 # nobody left to remove it...
    fresh = DictDB()                               # ...until the next private database
    assert names.shm_entries(name) == []
    fresh.close()


# ------------------------------------------- handles of a database that is gone
def _uses(db, t):
    """Every kind of use of an old handle, each of which must raise."""
    return {
        "get": lambda: t.get(1),
        "select": lambda: t.select(where=t.v == 1),
        "count": lambda: t.count(),
        "insert": lambda: t.insert({"id": 99}),
        "big insert": lambda: t.insert([{"id": i, "blob": "x" * 200}
                                        for i in range(1000, 21000)]),
        "update": lambda: t.update({"v": 2}),
        "lock": lambda: t.lock.acquire_write(timeout=1),
        "list_tables": lambda: db.list_tables(),
        "get_table": lambda: db.get_table("t"),
    }


@pytest.mark.parametrize("how", ["destroy", "stop", "sigterm"])
def test_handles_of_a_destroyed_database_raise_and_create_nothing(db_name, spawn, how):
    db = DictDB(db_name)
    t = db.create_table("t")
    t.insert([{"id": i, "v": i} for i in range(100)])
    if how == "destroy":
        spawn("destroy_database", db_name).expect("RESULT")
    elif how == "stop":
        subprocess.run([sys.executable, "-m", "dictdb_shm.coordinator", "stop", db_name],
                       check=True, timeout=60, cwd=ROOT)
    else:
        pid = db._att.catalog.coordinator()[0]
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not is_alive(pid, 0), 30, "the coordinator to exit")
    wait_until(lambda: names.shm_entries(db_name) == [], 30, "the objects to go")
    for what, use in _uses(db, t).items():
        with pytest.raises((DatabaseClosedError, DatabaseNotFoundError)):
            use()
        assert names.shm_entries(db_name) == [], f"{what} created {names.shm_entries(db_name)}"
    # The name made again is another database: the old handle still refuses.
    fresh = DictDB(db_name)
    fresh.create_table("t").insert({"id": 1, "v": "new"})
    for what, use in _uses(db, t).items():
        with pytest.raises((DatabaseClosedError, DatabaseNotFoundError)):
            use()
    assert fresh.get_table("t").all() == [{"id": 1, "v": "new"}]
    fresh.close()


def test_handles_of_a_removed_private_database_raise_dictdb_errors(spawn):
    creator = spawn("create_private", "stdin")
    name = creator.expect("RESULT")
    db = DictDB.attach(name)
    t = db.get_table("t")
    assert t.count() == 1
    creator.send("")                    # the creator exits: the database goes
    creator.finish()
    wait_until(lambda: names.shm_entries(name) == [], 30, "the private database to go")
    for what, use in _uses(db, t).items():
        with pytest.raises(DictDBError):
            use()
    assert names.shm_entries(name) == []
