"""The TableStore on its own terms: undo, growth, space reclaimed, stats."""

from __future__ import annotations

import pytest

from dictdb_shm import DictDB, DuplicateKeyError
from dictdb_shm import names
from dictdb_shm.engine import DELETE, INSERT, PUT


def stats(t):
    return t._store.read(lambda s: s.stats())


def segments(t):
    tp = names.table_prefix(t._db.name, t._store.uid)
    return sorted(e for e in names.shm_entries(t._db.name) if e.startswith(tp) and
                  not e.startswith("sem."))


def test_failure_while_applying_is_undone(table):
    """A duplicate found half-way through a batch rolls back what was applied:
    directory entries, superseded flags and the heap tail."""
    table.insert([{"id": i, "v": "old"} for i in range(100)])
    before = table.copy()
    before_stats = stats(table)
    store = table._store
    with table._lock.write_lock():
        with pytest.raises(DuplicateKeyError):
            store.apply([(i, {"id": i, "v": "new"}, PUT) for i in range(50)] +
                        [(1000, {"id": 1000}, INSERT), (5, {"id": 5}, INSERT)])
    assert table.copy() == before
    assert stats(table) == before_stats
    assert table.get(1000) is None and table.get(7)["v"] == "old"
    table.update({"v": "newer"}, where=table.id < 10)
    assert table.get(3)["v"] == "newer" and table.count() == 100


def test_undo_restores_deleted_and_reinserted_keys(table):
    table.insert([{"id": i} for i in range(10)])
    table.delete(where=table.id < 5)
    before = table.copy()
    with table._lock.write_lock():
        with pytest.raises(DuplicateKeyError):
            table._store.apply([(1, {"id": 1, "back": True}, INSERT),
                                (7, None, DELETE),
                                (8, {"id": 8, "x": 1}, PUT),
                                (9, {"id": 9}, INSERT)])
    assert table.copy() == before
    assert table.get(1) is None and table.get(7) == {"id": 7}


def test_rewriting_in_place_forever_stays_bounded(table):
    table.insert([{"id": i, "v": 0, "pad": "p" * 200} for i in range(200)])
    caps = set()
    for round_no in range(1, 301):
        table.update({"v": round_no})
        caps.add(stats(table)["heap_capacity"])
    s = stats(table)
    assert s["live"] == 200 and table.get(199)["v"] == 300
    live = s["live_bytes"]
    assert max(caps) <= 4 * live + (1 << 16), (caps, live)
    assert len(segments(table)) == 2        # old segments are unlinked


def test_deletes_are_reclaimed(table):
    for round_no in range(20):
        table.insert([{"id": round_no * 1000 + i, "pad": "x" * 100} for i in range(1000)])
        table.delete(where=table.id < round_no * 1000 + 1000)
    s = stats(table)
    assert s["live"] == 0 and table.count() == 0
    assert s["heap_capacity"] <= 1 << 20
    assert s["directory_capacity"] <= 1 << 13


def test_growth_keeps_every_record(table):
    for start in range(0, 60_000, 10_000):
        table.insert([{"id": i, "sq": i * i} for i in range(start, start + 10_000)])
    s = stats(table)
    assert s["live"] == 60_000 and s["directory_capacity"] >= 60_000 / 0.7
    assert all(table.get(i)["sq"] == i * i for i in range(0, 60_000, 997))
    assert table.select(where=table.id == 59_999) == [{"id": 59_999, "sq": 59_999 ** 2}]


def test_string_and_bytes_keys(db_name):
    db = DictDB(db_name)
    db.create_table("kv", primary_key="k")
    kv = db.get_table("kv")
    kv.insert([{"k": f"key-{i}", "v": i} for i in range(3000)])
    kv.insert({"k": b"\x00raw", "v": "bytes"})
    assert kv.get("key-2999")["v"] == 2999 and kv.get(b"\x00raw")["v"] == "bytes"
    assert kv.get("key-3000") is None
    kv.delete(where=kv.k == "key-5")
    assert kv.get("key-5") is None and kv.count() == 3000
    db.close()
