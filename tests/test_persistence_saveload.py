"""db.save / DictDB.load: round trips in both formats, DictDB's JSON layout
both ways, path-like paths, kept indexes, named and private loads, atomic
files, and saves that are one instant of every table while two other
processes write."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib

import pytest

from dictdb_shm import (DatabaseExistsError, DictDB, InvalidArgumentError,
                        UnstorableValueError)
from dictdb_shm.coordinator import client
from dictdb_shm.persistence import atomic

ROWS = [{"name": "Ada", "age": 36, "tags": ["a", "b"], "meta": {"x": 1.5, "y": None}},
        {"name": "Bob", "age": 17, "tags": [], "meta": {}},
        {"name": "Cy", "age": 52, "ok": True}]


@pytest.fixture
def db():
    d = DictDB()
    d.create_table("people")
    d.get_table("people").insert([dict(r) for r in ROWS])
    d.create_table("stock", primary_key="sku", schema={"sku": str, "n": int})
    d.get_table("stock").insert([{"sku": "a1", "n": 5}, {"sku": "b2", "n": 0}])
    yield d
    d.close()


def contents(d: DictDB) -> dict:
    return {name: sorted(d.get_table(name).all(), key=lambda r: str(r[d.get_table(
        name).primary_key])) for name in sorted(d.list_tables())}


@pytest.mark.parametrize("fmt", ["json", "pickle"])
def test_round_trip_keeps_records_schemas_and_indexes(db, tmp_path, fmt):
    db.get_table("people").create_index("age", "sorted")
    db.get_table("stock").create_index("n")
    path = tmp_path / f"save.{fmt}"                      # a PathLike
    db.save(path, fmt)
    loaded = DictDB.load(path, fmt)
    try:
        assert loaded.is_private and loaded.name != db.name
        assert contents(loaded) == contents(db)
        assert loaded.get_table("stock").schema == {"sku": str, "n": int}
        assert loaded.get_table("people").indexed_fields() == ["age"]
        assert loaded.get_table("stock").indexed_fields() == ["n"]
        people = loaded.get_table("people")
        assert [r["name"] for r in people.select(where=people.age > 30, order_by="age")] \
            == ["Ada", "Cy"]
        # auto keys continue after the loaded ones
        assert people.insert({"name": "Dee"}) == 4
    finally:
        loaded.destroy()


def test_the_json_file_has_dictdbs_layout(db, tmp_path):
    path = str(tmp_path / "s.json")
    db.save(path)
    doc = json.load(open(path))
    people = doc["tables"]["people"]
    assert people["primary_key"] == "id" and people["schema"] is None
    assert sorted(r["name"] for r in people["records"]) == ["Ada", "Bob", "Cy"]
    assert doc["tables"]["stock"]["schema"] == {"sku": "str", "n": "int"}
    # DictDB's loader reads exactly these keys and these type names
    for t in doc["tables"].values():
        assert {"primary_key", "schema", "records"} <= set(t)
        assert all(v in ("int", "str", "float", "bool", "list", "dict")
                   for v in (t["schema"] or {}).values())


def test_a_file_written_by_dictdb_loads(tmp_path):
    # DictDB writes indent=4 JSON, schema by type names, records with their keys.
    doc = {"tables": {"users": {"primary_key": "id", "schema": {"id": "int", "name": "str",
                                                                 "tags": "list"},
                                "records": [{"id": 1, "name": "Ada", "tags": ["x"]},
                                            {"id": 7, "name": "Bob", "tags": []}]},
                      "notes": {"primary_key": "key", "schema": None,
                                "records": [{"key": "k1", "text": "hi", "n": 2.5}]}}}
    path = tmp_path / "from_dictdb.json"
    path.write_text(json.dumps(doc, indent=4))
    d = DictDB.load(str(path))
    try:
        assert d.get_table("users").get(7) == {"id": 7, "name": "Bob", "tags": []}
        assert d.get_table("users").schema == {"id": int, "name": str, "tags": list}
        assert d.get_table("notes").all() == [{"key": "k1", "text": "hi", "n": 2.5}]
    finally:
        d.destroy()


def test_load_with_a_name_makes_that_named_database(db, tmp_path, db_name):
    path = tmp_path / "s.pickle"
    db.save(path, "pickle")
    loaded = DictDB.load(path, "pickle", name=db_name)
    assert not loaded.is_private and loaded.name == db_name
    assert contents(DictDB.attach(db_name)) == contents(db)
    with pytest.raises(DatabaseExistsError):
        DictDB.load(path, "pickle", name=db_name)
    loaded.close()


def test_bytes_need_pickle(tmp_path):
    with DictDB() as d:
        d.create_table("blobs")
        d.get_table("blobs").insert({"data": b"\x00\xff"})
        with pytest.raises(UnstorableValueError, match="pickle"):
            d.save(tmp_path / "b.json")
        assert not os.listdir(tmp_path)               # no file, no temporary file
        d.save(tmp_path / "b.pkl", "pickle")
        loaded = DictDB.load(tmp_path / "b.pkl", "pickle")
        assert loaded.get_table("blobs").get(1) == {"id": 1, "data": b"\x00\xff"}
        loaded.destroy()


def test_bad_arguments(db, tmp_path):
    with pytest.raises(InvalidArgumentError):
        db.save(tmp_path / "x", "yaml")
    with pytest.raises(ValueError):
        DictDB.load(tmp_path / "x", "csv")
    with pytest.raises(TypeError):
        db.save(42)


def test_a_failed_save_keeps_the_old_file(db, tmp_path, monkeypatch):
    path = tmp_path / "s.json"
    db.save(path)
    before = path.read_bytes()
    db.get_table("people").insert({"name": "new"})

    def broken(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(atomic.os, "fsync", broken)
    with pytest.raises(OSError, match="No space left"):
        db.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["s.json"]


def test_async_variants(db, tmp_path):
    async def go():
        await db.async_save(str(tmp_path / "a.json"))
        return await DictDB.async_load(pathlib.Path(tmp_path / "a.json"))
    loaded = asyncio.run(go())
    try:
        assert contents(loaded) == contents(db)
    finally:
        loaded.destroy()


@pytest.mark.slow
def test_saves_are_one_instant_while_two_processes_write(db_name, spawn, tmp_path):
    """One process inserts batches into "a"; another waits for each batch in
    "a" and then inserts the same keys into "b".  So at every instant b's
    keys are a subset of a's, and every table holds whole batches only."""
    d = DictDB(db_name)
    d.create_table("a")
    d.create_table("b")
    batches, size = 400, 50
    writer = spawn("write_batches", db_name, "a", batches, size)
    follower = spawn("follow_batches", db_name, "a", "b", batches, size)
    writer.expect("READY")
    follower.expect("READY")
    writer.send("GO")
    writer.expect("ACK")                 # so the first save already sees rows arriving
    files = []
    while len(files) < 12 and follower.proc.poll() is None:
        for fmt in ("json", "pickle"):
            path = tmp_path / f"s{len(files)}.{fmt}"
            d.save(path, fmt)
            files.append((path, fmt))
    writer.finish()
    follower.finish()
    grew = set()
    for path, fmt in files:
        loaded = DictDB.load(path, fmt)
        try:
            a = {r["id"]: r["batch"] for r in loaded.get_table("a").all()}
            b = {r["id"]: r["batch"] for r in loaded.get_table("b").all()}
        finally:
            loaded.destroy()
        assert set(b) <= set(a), f"{path.name}: b holds keys a did not have"
        for table in (a, b):
            per_batch: dict[int, int] = {}
            for batch in table.values():
                per_batch[batch] = per_batch.get(batch, 0) + 1
            assert set(per_batch.values()) <= {size}, f"{path.name}: a torn batch"
        grew.add(len(a))
    assert len(grew) > 1, "the saves did not run while the writers wrote"
    d.close()
    assert client.catalog_exists(db_name)
