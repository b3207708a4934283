"""Another local user must not be able to catch our sockets, logs or data.

Most tests act as another user (uid 65534) in a forked child, or give our
objects to that uid with chown, so they need root and are skipped without it.
"""

from __future__ import annotations

import os
import stat
import tempfile

import posix_ipc
import pytest

from conftest import wait_until
from dictdb_shm import DictDB, names
from dictdb_shm.errors import OwnershipError
from dictdb_shm.coordinator import client
from dictdb_shm.engine import layout as L
from proctools import OTHER_UID, as_other_user, kill_coordinator, needs_root, outcome


@pytest.fixture
def runtime(monkeypatch):
    """A fresh runtime directory of ours (mode 0700) for this test only."""
    with tempfile.TemporaryDirectory(prefix="dictdb_rt_") as top:
        path = os.path.join(top, "rt")
        os.mkdir(path, 0o700)
        monkeypatch.setenv("DICTDB_SHM_RUNTIME_DIR", path)
        yield path


def _given_away(path: str, uid: int = OTHER_UID, mode: int = 0o666) -> tuple[int, int]:
    st = os.lstat(path)
    os.chown(path, uid, -1)
    os.chmod(path, mode)
    return st.st_uid, stat.S_IMODE(st.st_mode)


# ------------------------------------------------------------ runtime directory
@needs_root
def test_runtime_dir_of_another_user_is_refused_and_left_alone(db_name, monkeypatch):
    with tempfile.TemporaryDirectory() as top:
        squat = os.path.join(top, "rt")
        os.mkdir(squat)
        _given_away(squat, mode=0o777)
        monkeypatch.setenv("DICTDB_SHM_RUNTIME_DIR", squat)
        with pytest.raises(OwnershipError) as info:
            names.runtime_dir()
        assert isinstance(info.value, PermissionError)
        assert squat in str(info.value) and "DICTDB_SHM_RUNTIME_DIR" in str(info.value)
        with pytest.raises(OwnershipError):
            DictDB(db_name)
        st = os.lstat(squat)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (OTHER_UID, 0o777)
        assert os.listdir(squat) == []
        assert not client.catalog_exists(db_name)


def test_runtime_dir_that_is_a_link_or_open_to_others_is_refused(monkeypatch):
    with tempfile.TemporaryDirectory() as top:
        real = os.path.join(top, "real")
        os.mkdir(real, 0o700)
        link = os.path.join(top, "link")
        os.symlink(real, link)
        monkeypatch.setenv("DICTDB_SHM_RUNTIME_DIR", link)
        with pytest.raises(OwnershipError, match="symbolic link"):
            names.runtime_dir()
        loose = os.path.join(top, "loose")
        os.mkdir(loose)
        os.chmod(loose, 0o755)
        monkeypatch.setenv("DICTDB_SHM_RUNTIME_DIR", loose)
        with pytest.raises(OwnershipError, match="0755"):
            names.runtime_dir()
        assert stat.S_IMODE(os.stat(loose).st_mode) == 0o755


def test_runtime_dir_prefers_xdg_runtime_dir_when_ours(monkeypatch):
    monkeypatch.delenv("DICTDB_SHM_RUNTIME_DIR", raising=False)
    with tempfile.TemporaryDirectory() as xdg:
        monkeypatch.setenv("XDG_RUNTIME_DIR", xdg)
        path = names.runtime_dir()
        assert path == os.path.join(xdg, "dictdb_shm")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
        monkeypatch.setenv("DICTDB_SHM_RUNTIME_DIR", os.path.join(xdg, "override"))
        assert names.runtime_dir() == os.path.join(xdg, "override")
        if os.geteuid() == 0:
            monkeypatch.delenv("DICTDB_SHM_RUNTIME_DIR")
            foreign = os.path.join(xdg, "foreign")
            os.mkdir(foreign, 0o700)
            os.chown(foreign, OTHER_UID, -1)
            monkeypatch.setenv("XDG_RUNTIME_DIR", foreign)
            assert names.runtime_dir() == os.path.join(tempfile.gettempdir(),
                                                       f"dictdb_shm-{os.geteuid()}")


def test_processes_with_different_runtime_dirs_share_one_coordinator(db_name, spawn,
                                                                      monkeypatch):
    """The worker (started without XDG_RUNTIME_DIR) finds the socket through
    the catalog header, and no second coordinator starts."""
    with tempfile.TemporaryDirectory() as xdg:
        monkeypatch.delenv("DICTDB_SHM_RUNTIME_DIR", raising=False)
        monkeypatch.setenv("XDG_RUNTIME_DIR", xdg)
        db = DictDB(db_name)
        sock = db._att.catalog.socket_path()
        assert sock.startswith(xdg)
        pid = client.status(db_name)["coordinator_pid"]
        w = spawn("attempt", db_name, "create_table", "from_worker")
        assert outcome(w) == ("RESULT", "ok")
        assert db.list_tables() == ["from_worker"]
        assert client.status(db_name)["coordinator_pid"] == pid
        db.destroy()
        assert not os.path.exists(sock)


def test_coordinator_log_is_never_opened_through_a_link(runtime, db_name):
    with tempfile.NamedTemporaryFile("w", delete=False) as target:
        target.write("secret\n")
    try:
        os.symlink(target.name, os.path.join(runtime, f"{db_name}.log"))
        with pytest.raises(OwnershipError, match=f"{db_name}.log"):
            DictDB(db_name)
        with open(target.name) as f:
            assert f.read() == "secret\n"
        assert not client.coordinator_running(db_name)
    finally:
        os.unlink(target.name)


# ---------------------------------------------------- objects under /dev/shm
@needs_root
def test_catalog_made_by_another_user_is_not_adopted(db_name, spawn):
    path = names.shm_path(names.catalog_segment(db_name))

    def squat() -> None:
        os.umask(0)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        os.ftruncate(fd, L.CATALOG_SIZE)
        os.close(fd)

    assert as_other_user(squat) == {"value": None}
    try:
        for action in ("open", "read"):
            w = spawn("attempt", db_name, action, "t")
            kind, text = outcome(w)
            assert kind == "ERROR" and text.startswith("OwnershipError"), text
            assert "belongs to another user" in text
        with pytest.raises(OwnershipError):
            DictDB(db_name)
        assert not client.coordinator_running(db_name)
        assert os.stat(path).st_uid == OTHER_UID
    finally:
        os.unlink(path)


@needs_root
@pytest.mark.parametrize("kind", ["segment", "semaphore"])
def test_table_object_of_another_user_is_refused(db_name, spawn, kind):
    db = DictDB(db_name)
    db.create_table("t").insert([{"id": i, "secret": "s3cr3t"} for i in range(10)])
    uid = db._att.catalog.find("t").uid
    prefix = names.table_prefix(db_name, uid)
    wanted = ("sem." + prefix) if kind == "semaphore" else (prefix + "heap")
    entry = next(e for e in names.shm_entries(db_name) if e.startswith(wanted))
    path = os.path.join(names.SHM_DIR, entry)
    owner, mode = _given_away(path)
    try:
        w = spawn("attempt", db_name, "read", "t")
        result, text = outcome(w)
        assert result == "ERROR" and text.startswith("OwnershipError"), text
        assert path in text
    finally:
        os.chown(path, owner, -1)
        os.chmod(path, mode)
    w = spawn("attempt", db_name, "read", "t")
    assert outcome(w) == ("RESULT", "ok")
    db.close()


@needs_root
def test_semaphore_name_taken_by_another_user_fails_create_table(db_name):
    db = DictDB(db_name)
    next_uid = L.U64.unpack_from(db._att.catalog.buf, L.NEXT_UID_AT)[0]
    sem_name = names.drain_semaphore(db_name, next_uid)

    def squat() -> None:
        os.umask(0)
        posix_ipc.Semaphore(sem_name, posix_ipc.O_CREX, 0o666, 1).close()

    assert as_other_user(squat) == {"value": None}
    try:
        with pytest.raises(OwnershipError, match=names.semaphore_path(sem_name)):
            db.create_table("t")
        assert db.list_tables() == []
        assert os.stat(names.semaphore_path(sem_name)).st_uid == OTHER_UID
    finally:
        posix_ipc.unlink_semaphore(sem_name)
    db.create_table("t").insert({"id": 1})
    db.close()


def _orphaned_private_database(spawn) -> str:
    w = spawn("create_private", "sleep")
    name = w.expect("RESULT")
    kill_coordinator(name)
    w.kill()
    assert names.shm_entries(name)
    return name


@needs_root
def test_sweep_run_by_another_user_skips_our_databases(spawn):
    name = _orphaned_private_database(spawn)
    try:
        result = as_other_user(client.sweep_orphaned_private)
        assert result == {"value": []}, result
        assert names.shm_entries(name)
    finally:
        client.destroy(name)


@needs_root
def test_sweep_leaves_private_databases_of_other_users(spawn):
    name = _orphaned_private_database(spawn)
    given = {e: _given_away(os.path.join(names.SHM_DIR, e), mode=0o600)
             for e in names.shm_entries(name)}
    try:
        assert name not in client.sweep_orphaned_private()
        assert sorted(names.shm_entries(name)) == sorted(given)
    finally:
        for entry, (owner, mode) in given.items():
            os.chown(os.path.join(names.SHM_DIR, entry), owner, -1)
    assert name in client.sweep_orphaned_private()
    assert names.shm_entries(name) == []


@needs_root
def test_another_user_is_told_at_once_that_the_database_is_not_theirs(db_name):
    db = DictDB(db_name)
    db.create_table("t")
    with tempfile.TemporaryDirectory() as top:
        theirs = os.path.join(top, "rt")
        os.mkdir(theirs, 0o700)
        os.chown(theirs, OTHER_UID, OTHER_UID)
        env = {"DICTDB_SHM_RUNTIME_DIR": theirs}
        for call in (lambda: DictDB.attach(db_name), lambda: DictDB(db_name),
                     lambda: client.request(db_name, "ping")):
            result = as_other_user(lambda: call() and None, env=env)
            assert result.get("error") == "OwnershipError", result
            assert result["is_permission"] and "belongs to another user" in result["text"]
        assert os.listdir(theirs) == []
    wait_until(lambda: client.coordinator_running(db_name), 5, "our coordinator")
    db.close()
