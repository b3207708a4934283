"""Change tracking as DictDB offers it, database-wide: every process's writes
count, clear_dirty_tracking() from any process clears them for all, and a
compaction that moved unreported records makes the changes unknown (every
record dirty) rather than wrong."""

from __future__ import annotations

from dictdb_shm import DictDB


def test_changes_of_other_processes_count(db_name, spawn):
    db = DictDB(db_name)
    db.create_table("t")
    t = db.get_table("t")
    assert not t.has_changes()
    t.insert([{"v": i} for i in range(3)])
    t.clear_dirty_tracking()
    assert not t.has_changes() and t.get_dirty_records() == [] and t.get_deleted_pks() == []
    w = spawn("insert_one", db_name, "t", '{"v": "theirs"}')
    w.expect("RESULT")
    w.finish()
    t.update({"v": 10}, where=t.v == 0)
    t.delete(where=t.v == 1)
    assert t.has_changes()
    assert sorted(r["id"] for r in t.get_dirty_records()) == [1, 4]
    assert t.get_deleted_pks() == [2]
    other = DictDB.attach(db_name).get_table("t")         # another handle sees the same
    assert other.has_changes()
    other.clear_dirty_tracking()
    assert not t.has_changes()
    db.close()


def test_delete_then_reinsert_is_an_upsert_not_a_delete():
    with DictDB() as db:
        db.create_table("t")
        t = db.get_table("t")
        t.insert({"id": 1, "v": "a"})
        t.clear_dirty_tracking()
        t.delete(where=t.id == 1)
        t.insert({"id": 1, "v": "b"})
        assert t.get_dirty_records() == [{"id": 1, "v": "b"}]
        assert t.get_deleted_pks() == []


def test_a_compaction_with_unreported_changes_marks_everything_dirty():
    with DictDB() as db:
        db.create_table("t")
        t = db.get_table("t")
        t.insert([{"v": i} for i in range(10)])
        t.clear_dirty_tracking()
        t.update({"v": -1}, where=t.v < 5)
        with t.lock.write_lock():
            t._store.compact()
        assert t.has_changes()
        assert len(t.get_dirty_records()) == 10
        t.clear_dirty_tracking()
        assert not t.has_changes()
        with t.lock.write_lock():                        # nothing to report: still exact
            t._store.compact()
        assert not t.has_changes()
        t.insert({"v": "new"})
        assert [r["v"] for r in t.get_dirty_records()] == ["new"]
