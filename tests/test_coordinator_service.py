"""The coordinator across real processes: crashes mid-edit, a coordinator that
is gone, stopped or swamped, start-up failures, and the destroy paths.

Crash tests stop the coordinator at an exact step with a crash point
(DICTDB_SHM_TEST_PAUSE, see dictdb_shm/crashpoints.py), SIGKILL it there,
and check that the next coordinator repairs everything.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys

import pytest

from conftest import ROOT, needs_private_shm, run_with_small_shm, wait_until
from dictdb_shm import CoordinatorError, DictDB, names
from dictdb_shm.coordinator import client
from dictdb_shm.engine import layout as L
from dictdb_shm.engine import semaphores
from dictdb_shm.engine.catalog import Catalog
from dictdb_shm.engine.segment import Segment
from proctools import (coordinator_pid, kill_coordinator, outcome, process_state,
                       spawn_paused, wait_stopped)

__all__ = ["spawn_paused"]       # a fixture
pytestmark = pytest.mark.slow

ADD_POINTS = ["catalog.add_table.recorded", "catalog.add_table.slot_written",
              "catalog.create_semaphore.0",
              "catalog.add_table.published", "catalog.add_table.settled"]
PUBLISHED = {"catalog.add_table.published", "catalog.add_table.settled"}
DROP_POINTS = ["catalog.remove_table.recorded", "catalog.remove_table.unpublished"]


def table_uids_in_shm(db: str) -> set[int]:
    uids = set()
    for entry in names.shm_entries(db):
        rest = entry[len("sem."):] if entry.startswith("sem.") else entry
        part = rest[len(names.prefix(db)):].split(".", 1)[0]
        if part.startswith("t"):
            uids.add(int(part[1:]))
    return uids


def assert_catalog_settled(db: str) -> None:
    cat = Catalog.attach(db)
    try:
        assert L.U64.unpack_from(cat.buf, L.CATALOG_SEQ_AT)[0] % 2 == 0
        assert L.U64.unpack_from(cat.buf, L.EDIT_KIND_AT)[0] == L.EDIT_NONE
        assert L.U64.unpack_from(cat.buf, L.SEMAPHORE_CREATION_AT)[0] == 0
        live = {e.uid for e in cat.entries()}
    finally:
        cat.close()
    assert table_uids_in_shm(db) <= live, "objects of a table that is not live were left"


def glibc_temp_files() -> set[str]:
    return {n for n in os.listdir(names.SHM_DIR) if names.GLIBC_SEMAPHORE_TEMP.fullmatch(n)}


def plant_glibc_temp_file(*, mtime_ns: int | None = None, uid: int | None = None) -> str:
    """A file exactly like the one glibc's sem_open leaves when killed before
    link(): /dev/shm/sem.XXXXXX, mode 0600, one sem_t of 32 bytes."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    while True:
        name = "sem." + "".join(secrets.choice(alphabet) for _ in range(6))
        path = os.path.join(names.SHM_DIR, name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileExistsError:
            continue
    os.write(fd, (1).to_bytes(8, "little") + (128).to_bytes(8, "little") + bytes(16))
    os.close(fd)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    if uid is not None:
        os.chown(path, uid, -1)
    return name


# ------------------------------------------------- A: a coordinator killed mid-edit
@pytest.mark.parametrize("point", ADD_POINTS)
def test_coordinator_killed_while_adding_a_table(db_name, spawn_paused, point):
    db = DictDB(db_name)
    db.create_table("keep").insert({"id": 1, "v": "kept"})
    kill_coordinator(db_name)
    before_temp = glibc_temp_files()
    w = spawn_paused("attempt", db_name, "create_table", "new")
    pid = wait_stopped(db_name)
    kill_coordinator(db_name, pid)
    kind, text = outcome(w)
    assert kind == "ERROR" and text.startswith("CoordinatorError"), text

    db.create_table("after")            # no coordinator runs: this starts one, which repairs
    expected = {"keep", "after"} | ({"new"} if point in PUBLISHED else set())
    assert set(db.list_tables()) == expected
    if point in PUBLISHED:
        new = db.get_table("new")
    else:
        new = db.create_table("new")
    new.insert({"id": 5})
    assert new.all() == [{"id": 5}]
    assert db.get_table("keep").get(1) == {"id": 1, "v": "kept"}
    assert_catalog_settled(db_name)
    assert glibc_temp_files() <= before_temp
    db.close()


@pytest.mark.parametrize("point", DROP_POINTS)
def test_coordinator_killed_while_dropping_a_table(db_name, spawn_paused, point):
    db = DictDB(db_name)
    db.create_table("victim").insert([{"id": i} for i in range(100)])
    db.create_table("keep").insert({"id": 1})
    victim_uid = db._att.catalog.find("victim").uid
    kill_coordinator(db_name)
    w = spawn_paused("attempt", db_name, "drop_table", "victim")
    pid = wait_stopped(db_name)
    kill_coordinator(db_name, pid)
    kind, text = outcome(w)
    assert kind == "ERROR" and text.startswith("CoordinatorError"), text

    db.create_table("after")
    assert sorted(db.list_tables()) == ["after", "keep"]
    assert victim_uid not in table_uids_in_shm(db_name)
    assert db.create_table("victim").count() == 0
    assert db.get_table("keep").get(1) == {"id": 1}
    assert_catalog_settled(db_name)
    db.close()


@pytest.mark.parametrize("point", ["catalog.create_semaphore.0"])
def test_semaphore_temp_file_leaked_by_a_kill_is_removed(db_name, spawn_paused, point):
    """glibc's window (temporary file written, not yet linked) is inside one C
    call, so a crash point cannot stop there: the coordinator stops just
    before the call, and the test leaves the file the kill would have left.
    Files that are not that leak stay: one written long before the creation
    began, and (as root) one of another user written inside the window."""
    db = DictDB(db_name)
    kill_coordinator(db_name)
    planted: list[str] = []
    try:
        old = plant_glibc_temp_file(mtime_ns=1_000_000_000)
        planted.append(old)
        w = spawn_paused("attempt", db_name, "create_table", "new")
        pid = wait_stopped(db_name)
        leaked = plant_glibc_temp_file()
        planted.append(leaked)
        foreign = plant_glibc_temp_file(uid=65534) if os.geteuid() == 0 else None
        planted.append(foreign or "")
        kill_coordinator(db_name, pid)
        outcome(w)
        db.create_table("after")
        left = glibc_temp_files()
        assert leaked not in left
        assert old in left
        if foreign:
            assert foreign in left
        assert db.list_tables() == ["after"]
        assert_catalog_settled(db_name)
    finally:
        for name in planted:
            if name and os.path.exists(os.path.join(names.SHM_DIR, name)):
                os.unlink(os.path.join(names.SHM_DIR, name))
    db.close()


def test_new_database_removes_what_an_earlier_one_of_its_name_left(db_name):
    """A destroy cut short (the catalog goes last, but a kill can land
    anywhere) can leave table objects without a catalog."""
    Segment.create(names.heap_segment(db_name, 7, 1), 4096)
    semaphores.create(names.drain_semaphore(db_name, 7), 1)
    assert len(names.shm_entries(db_name)) == 2
    db = DictDB(db_name)
    assert [e for e in names.shm_entries(db_name) if ".t7." in e] == []
    db.close()


def test_drop_table_starts_a_coordinator_when_none_runs(db_name):
    db = DictDB(db_name)
    db.create_table("a")
    db.create_table("b")
    kill_coordinator(db_name)
    db.drop_table("a")
    assert db.list_tables() == ["b"]
    assert client.coordinator_running(db_name)
    db.close()


def test_private_database_adopted_by_create_table_stays_private(spawn):
    creator = spawn("create_private", "sleep")
    name = creator.expect("RESULT")
    attached = DictDB.attach(name)
    kill_coordinator(name)
    attached.create_table("u")                        # starts a coordinator
    assert sorted(attached.list_tables()) == ["t", "u"]
    assert client.status(name)["private"] is True
    creator.kill()                                    # the new coordinator must notice
    wait_until(lambda: not names.shm_entries(name), 15, f"private database {name} to go")
    assert not client.coordinator_running(name)


# ------------------------------------------ D: stopped and swamped coordinators
def test_idle_connections_do_not_delay_others(db_name, spawn):
    db = DictDB(db_name)
    db.create_table("t")
    path = db._att.catalog.socket_path()
    idle = []
    try:
        for _ in range(20):        # served one after another, these would take minutes
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(30)
            s.connect(path)
            idle.append(s)
        w = spawn("attempt", db_name, "create_table", "u")
        assert outcome(w, timeout=60) == ("RESULT", "ok")
        db.create_table("v")
        assert sorted(db.list_tables()) == ["t", "u", "v"]
    finally:
        for s in idle:
            s.close()
    db.close()


def test_stopped_coordinator_fails_attach_and_create_table(db_name, spawn):
    db = DictDB(db_name)
    db.create_table("t")
    pid = coordinator_pid(db_name)
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: process_state(pid) == "T", 10, "the coordinator to stop")
        w = spawn("attempt", db_name, "read", "t")
        # Less than the start timeout (30 s): a stopped coordinator is not
        # one that is still starting, and is reported as soon as it is silent.
        kind, text = outcome(w, timeout=client.START_TIMEOUT - 5)
        assert kind == "ERROR" and text.startswith("CoordinatorError"), text
        assert str(pid) in text
        with pytest.raises(CoordinatorError, match=str(pid)):
            db.create_table("u")
    finally:
        os.kill(pid, signal.SIGCONT)
    db.create_table("u")
    db.close()


# ------------------------------------------------------ E: start-up failures
@needs_private_shm
@pytest.mark.parametrize("private", [True, False])
def test_full_dev_shm_fails_fast_and_leaves_nothing(private):
    """A 1 MiB tmpfs over /dev/shm in a private mount namespace: too small for
    a catalog.  The real /dev/shm is untouched."""
    script = (
        "import json, os\n"
        "from dictdb_shm import DictDB, DatabaseFullError\n"
        f"name = None if {private} else 'fullshm'\n"
        "try:\n"
        "    DictDB(name)\n"
        "    result = {'error': None}\n"
        "except DatabaseFullError as exc:\n"
        "    result = {'error': 'DatabaseFullError', 'text': str(exc)}\n"
        "result['runtime'] = sorted(os.listdir(os.environ['DICTDB_SHM_RUNTIME_DIR']))\n"
        "result['shm'] = sorted(os.listdir('/dev/shm'))\n"
        "print(json.dumps(result))\n")
    result = run_with_small_shm(script, "1m", timeout=60)
    assert result["error"] == "DatabaseFullError", result
    assert result["runtime"] == [] and result["shm"] == [], result


# ------------------------------------------------------- F: the destroy paths
def _destroy_by(how: str, db_name: str) -> None:
    if how == "destroy":
        client.destroy(db_name)
    elif how == "stop":
        subprocess.run([sys.executable, "-m", "dictdb_shm.coordinator", "stop", db_name],
                       check=True, timeout=60, cwd=ROOT)
    elif how == "sigterm":
        pid = coordinator_pid(db_name)
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: process_state(pid) == "gone", 30, "the coordinator to exit")
    elif how == "no-coordinator":
        kill_coordinator(db_name)
        client.destroy(db_name)


@pytest.mark.parametrize("how", ["destroy", "stop", "sigterm", "no-coordinator"])
def test_destroy_marks_the_catalog_before_unlinking(db_name, how):
    db = DictDB(db_name)
    db.create_table("a").insert({"id": 1})
    db.create_table("b")
    old = Catalog.attach(db_name)          # a mapping that outlives the unlink
    slots = [e.index for e in old.entries()]
    _destroy_by(how, db_name)
    assert names.shm_entries(db_name) == []
    assert old.is_destroyed()
    for index in slots:
        seq_at = L.slot_offset(index) + L.STORE_REGION + L.STORE_SEQ
        assert L.U64.unpack_from(old.buf, seq_at)[0] == L.SEQ_DROPPED
    old.close()


def test_destroy_does_not_wait_forever_for_a_stuck_writer(db_name, spawn):
    db = DictDB(db_name)
    db.create_table("t")
    holder = spawn("hold_lock", db_name, "t", "write")
    holder.expect("READY")
    old = Catalog.attach(db_name)
    db.destroy()
    assert old.is_destroyed()
    assert names.shm_entries(db_name) == []
    old.close()
