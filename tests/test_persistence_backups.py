"""BackupManager run by the coordinator: backups go on after the process
that started them exits, until stop() from any process; full backups plus
deltas (of every process's writes) replay to the live state; failures reach
on_backup_failure in the registering process; notify_change is debounced;
old backups are removed past ``keep``; a schedule outlives its coordinator."""

from __future__ import annotations

import os
import time

import pytest

from conftest import wait_until
from dictdb_shm import BackupManager, CorruptionError, DictDB, apply_delta
from dictdb_shm.persistence.backups import DELTA_PREFIX, FULL_PREFIX, backup_files
from proctools import kill_coordinator


@pytest.fixture
def db(db_name):
    """The named database ``db_name`` with an empty table "t"."""
    d = DictDB(db_name)
    d.create_table("t")
    yield d
    d.close()


def contents(d: DictDB) -> dict:
    return {n: sorted(d.get_table(n).all(), key=lambda r: r["id"]) for n in sorted(
        d.list_tables())}


def replay(directory: str, fmt: str = "json") -> DictDB:
    full = backup_files(directory, FULL_PREFIX)[-1]
    restored = DictDB.load(os.path.join(directory, full), fmt)
    stamp = full[len(FULL_PREFIX):]
    for name in backup_files(directory, DELTA_PREFIX):
        if name[len(DELTA_PREFIX):] > stamp:
            apply_delta(restored, os.path.join(directory, name))
    return restored


@pytest.mark.parametrize("fmt", ["json", "pickle"])
def test_full_backup_plus_deltas_replays_to_the_live_state(db, tmp_path, spawn, fmt):
    t = db.get_table("t")
    t.insert([{"v": i} for i in range(20)])
    bm = BackupManager(db, tmp_path, file_format=fmt, incremental=True,
                       max_deltas_before_full=5, backup_interval=3600)
    bm.backup_now()                                      # the first one is full
    assert bm.deltas_since_full == 0
    t.update({"v": -1}, where=t.v < 5)
    t.delete(where=t.v > 15)
    w = spawn("insert_one", db.name, "t", '{"v": "from another process"}')
    w.expect("RESULT")
    w.finish()
    db.create_table("made")
    db.get_table("made").insert({"x": b"\x01" if fmt == "pickle" else "x"})
    bm.backup_now()
    db.drop_table("made")
    t.upsert({"id": 3, "v": 333})
    bm.backup_now()
    assert bm.deltas_since_full == 2
    assert len(backup_files(str(tmp_path), DELTA_PREFIX)) == 2
    restored = replay(str(tmp_path), fmt)
    try:
        assert contents(restored) == contents(db)
    finally:
        restored.destroy()
    bm.backup_delta()                                    # nothing changed: no file
    assert len(backup_files(str(tmp_path), DELTA_PREFIX)) == 2


def test_backups_go_on_after_their_starter_exits_until_stopped(db, tmp_path, spawn):
    db.get_table("t").insert({"v": 1})
    w = spawn("start_backups", db.name, str(tmp_path), 0.2, "json")
    w.expect("RESULT")
    w.finish()                                           # the starter is gone
    wait_until(lambda: len(backup_files(str(tmp_path), FULL_PREFIX)) >= 3, 60,
               "backups after the starter exited")
    loaded = DictDB.load(tmp_path / backup_files(str(tmp_path), FULL_PREFIX)[-1])
    assert loaded.get_table("t").all() == [{"v": 1, "id": 1}]
    loaded.destroy()
    BackupManager(db, tmp_path, backup_interval=0.2).stop()      # any process may stop it
    settled = len(backup_files(str(tmp_path), FULL_PREFIX))
    time.sleep(1.0)
    assert len(backup_files(str(tmp_path), FULL_PREFIX)) <= settled + 1


def test_a_schedule_outlives_its_coordinator(db, tmp_path):
    bm = BackupManager(db, tmp_path, backup_interval=0.2)
    bm.start()
    wait_until(lambda: backup_files(str(tmp_path), FULL_PREFIX), 60, "a first backup")
    kill_coordinator(db.name)
    before = len(backup_files(str(tmp_path), FULL_PREFIX))
    DictDB.attach(db.name).close()                       # starts a new coordinator
    wait_until(lambda: len(backup_files(str(tmp_path), FULL_PREFIX)) >= before + 2, 60,
               "backups by the new coordinator")
    bm.stop()


def test_failures_reach_the_registering_process(db, tmp_path):
    seen = []
    target = tmp_path / "backups"
    bm = BackupManager(db, target, on_backup_failure=lambda e, n: seen.append((e, n)))
    bm.backup_full()
    os.rename(target, tmp_path / "moved")
    target.write_text("a file where the directory was")
    bm.backup_now()
    bm.backup_now()
    assert [n for _, n in seen] == [1, 2]
    assert "backups" in str(seen[0][0]) and bm.consecutive_failures == 2
    target.unlink()
    os.rename(tmp_path / "moved", target)
    bm.backup_now()
    assert bm.consecutive_failures == 0


def test_failures_of_scheduled_backups_call_back_too(db, tmp_path):
    seen = []
    target = tmp_path / "backups"
    bm = BackupManager(db, target, backup_interval=0.1,
                       on_backup_failure=lambda e, n: seen.append(n))
    target.rmdir()
    target.write_text("not a directory")
    bm.start()
    wait_until(lambda: seen and seen[-1] >= 2, 60, "the failure callback")
    bm.stop()


def test_notify_change_is_debounced(db, tmp_path):
    bm = BackupManager(db, tmp_path, min_backup_interval=3600)
    bm.backup_now()
    bm.notify_change()                                   # too soon: nothing
    eager = BackupManager(db, tmp_path / "eager", min_backup_interval=0)
    eager.notify_change()
    wait_until(lambda: backup_files(str(tmp_path / "eager"), FULL_PREFIX), 60,
               "the notified backup")
    assert len(backup_files(str(tmp_path), FULL_PREFIX)) == 1


def test_keep_removes_old_backups(db, tmp_path):
    t = db.get_table("t")
    bm = BackupManager(db, tmp_path, incremental=True, max_deltas_before_full=1, keep=2)
    for i in range(8):
        t.insert({"v": i})
        bm.backup_now()                                  # full, delta, full, delta, ...
    fulls = backup_files(str(tmp_path), FULL_PREFIX)
    assert len(fulls) == 2
    oldest = fulls[0][len(FULL_PREFIX):]
    assert all(d[len(DELTA_PREFIX):] > oldest for d in backup_files(str(tmp_path),
                                                                      DELTA_PREFIX))
    restored = replay(str(tmp_path))
    assert contents(restored) == contents(db)
    restored.destroy()


def test_a_bad_delta_is_refused(tmp_path):
    path = tmp_path / "dictdb_delta_1_000001.json"
    path.write_text('{"type": "full", "tables": {}}')
    with DictDB() as d:
        with pytest.raises(CorruptionError, match="not a delta"):
            apply_delta(d, path)
        path.write_text('{"type": "delta", "tables": {"t": {"upserts": 5}}}')
        with pytest.raises(CorruptionError, match=str(path)):
            apply_delta(d, path)
