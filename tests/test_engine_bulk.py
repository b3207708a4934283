"""engine/bulk.py: a table built whole reads back exactly as the same records
inserted one write at a time -- rows, point reads, next_pk, and indexes
(checked against a scan) -- takes ordinary writes afterwards, refuses
duplicate keys without changing anything, and a heap image compacted from
a used table rebuilds it."""

from __future__ import annotations

import pytest

from dictdb_shm import DictDB, DuplicateKeyError
from dictdb_shm.engine import bulk

ROWS = [{"id": i, "name": f"n{i}", "age": i % 7, "tags": ("t", i)} for i in range(1, 3001)]
INDEXES = {"age": "sorted", "name": "hash"}


@pytest.fixture
def db():
    d = DictDB()
    yield d
    d.destroy()


def store_of(db: DictDB, name: str):
    att = db._attachment()
    return att.table(att.catalog.find(name))


def bulk_table(db: DictDB, name: str, rows: list[dict], indexes: dict, pk: str = "id"):
    db.create_table(name, primary_key=pk)
    lock, store = store_of(db, name)
    with lock.write_lock():
        assert store.bulk_load(rows, pk, indexes)
    return db.get_table(name)


def check_indexes_against_scan(t, fields, probes) -> None:
    for field in fields:
        for value in probes:
            by_index = t.select(where=t[field] == value)
            by_scan = [r for r in t.all() if r.get(field) == value]
            key = t.primary_key
            assert sorted(r[key] for r in by_index) == sorted(r[key] for r in by_scan)
    if "age" in fields:
        got = t.select(where=t.age.between(2, 4))
        assert sorted(r["id"] for r in got) == sorted(
            r["id"] for r in t.all() if 2 <= r["age"] <= 4)


def test_a_bulk_built_table_equals_the_same_rows_inserted(db):
    db.create_table("ins")
    ins = db.get_table("ins")
    ins.insert([dict(r) for r in ROWS])
    for field, kind in INDEXES.items():
        ins.create_index(field, kind)
    built = bulk_table(db, "bulk", [dict(r) for r in ROWS], INDEXES)
    assert built.all() == ins.all()                          # tuples read back as lists
    assert built.get(17) == ins.get(17) == {"id": 17, "name": "n17", "age": 3,
                                            "tags": ["t", 17]}
    assert built.get(0) is None and built.get(99999) is None
    assert built.indexed_fields() == list(INDEXES)
    check_indexes_against_scan(built, list(INDEXES), [0, 3, 6, 7, "n5", "n2999"])
    assert built.insert({"name": "next"}) == len(ROWS) + 1  # next_pk follows the keys


def test_writes_after_a_bulk_build(db):
    t = bulk_table(db, "t", [dict(r) for r in ROWS], {"age": "hash"})
    t.update({"age": 100}, where=t.id < 11)
    t.delete(where=t.id > 2990)
    t.insert([{"id": 10_000 + i, "age": 100} for i in range(5000)])   # grows every segment
    assert len(t) == len(ROWS) - 10 + 5000
    assert len(t.select(where=t.age == 100)) == 10 + 5000
    check_indexes_against_scan(t, ["age"], [0, 1, 100])


def test_keys_of_every_kind_and_duplicates(db):
    rows = [{"k": "a"}, {"k": b"b"}, {"k": -5}, {"k": 2**63}, {"k": True}]
    t = bulk_table(db, "mixed", rows, {}, pk="k")
    for r in rows:
        assert t.get(r["k"]) == r
    db.create_table("dup")
    lock, store = store_of(db, "dup")
    for dup in ([{"id": 1}, {"id": 2}, {"id": 1}], [{"id": "x"}, {"id": "x"}]):
        with lock.write_lock(), pytest.raises(DuplicateKeyError, match="already has"):
            store.bulk_load(dup, "id", {})
    assert len(db.get_table("dup")) == 0
    with lock.write_lock():
        assert not store.bulk_load([{"id": 1}, {"other": 2}], "id", {})   # a key missing
    assert len(db.get_table("dup")) == 0


def test_a_compacted_image_rebuilds_a_used_table(db):
    db.create_table("src")
    src = db.get_table("src")
    src.insert([dict(r) for r in ROWS])
    src.create_index("age", "sorted")
    src.update({"name": "changed"}, where=src.age == 2)         # superseded versions
    src.delete(where=src.id > 2000)                             # markers
    lock, store = store_of(db, "src")
    with lock.read_lock():
        heap, log, desc, indexes = store.committed_image()
    walked = bulk.compact_image(heap, desc.next_pk)
    image = bulk.compact_image(heap, desc.next_pk, log)        # the headers read by numpy
    assert image.count == walked.count == len(src)
    assert image.heap == walked.heap
    for field in ("hashes", "offsets"):
        assert [int(v) for v in getattr(image, field)] == list(getattr(walked, field))
    assert [int(v) for v in image.int_keys] == list(walked.int_keys)
    torn = bytearray(log)
    torn[8:16] = (int.from_bytes(torn[8:16], "little") + 8).to_bytes(8, "little")
    assert bulk._compact_by_log(heap, bytes(torn), desc.next_pk) is None    # log and heap disagree
    db.create_table("copy")
    lock2, store2 = store_of(db, "copy")
    with lock2.write_lock():
        store2.load_image(bulk.build(image, indexes, "copy"))
    copy = db.get_table("copy")
    assert copy.all() == src.all()
    check_indexes_against_scan(copy, ["age"], [0, 2, 5])
    assert copy.insert({"x": 1}) == src.insert({"x": 1}) == 3001   # next_pk kept


def test_directory_entries_that_run_past_the_last_slot_wrap_to_the_first():
    """Keys whose home slots crowd the end of the directory continue their
    probe paths from slot 0, as linear probing does, and every key is found."""
    from dictdb_shm.engine import records as R
    cap, shift = 8, 61                               # home slot: the top 3 bits
    hashes = [(7 << 61) | i for i in range(1, 5)] + [(3 << 61) | 9, (0 << 61) | 5]
    offsets = [8 * i for i in range(len(hashes))]
    image = bulk.HeapImage(b"", hashes, offsets, R.INT_ENTRY, 1)
    words = [int(w) for w in bulk._fill_directory(cap, image, "t")]
    assert sum(1 for i in range(cap) if words[2 * i + 1]) == len(hashes)
    for h, off in zip(hashes, offsets):
        assert R.probe(words, b"", shift, cap - 1, h, b"", R.INT_ENTRY)[1] == off
