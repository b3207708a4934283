"""Durable databases restored from their directory: after SIGKILL of every
process (the coordinator too) and removal of the database's /dev/shm
entries, as a reboot would do, at random moments, every acknowledged write
is back and every bulk insert is whole or absent; a damaged snapshot or
journal is a clear error that leaves nothing in /dev/shm."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from conftest import wait_until
from dictdb_shm import CorruptionError, DictDB, names
from dictdb_shm.coordinator import client
from dictdb_shm.persistence import journal as J
from dictdb_shm.engine import bulk
from dictdb_shm.persistence import restore
from dictdb_shm.persistence import snapshot as snap
from proctools import coordinator_pid, process_state, spawn_paused

__all__ = ["spawn_paused"]       # a fixture


def reboot(db: str, pids: list[int]) -> None:
    """SIGKILL every process given and the coordinator, then remove what a
    reboot removes: the database's shared memory and semaphores."""
    coordinator = coordinator_pid(db)
    for pid in pids + ([coordinator] if coordinator else []):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_until(lambda: not client.coordinator_running(db), 30, "the coordinator to die")
    for entry in names.shm_entries(db):
        os.unlink(os.path.join(names.SHM_DIR, entry))


def acknowledged(w) -> tuple[set[int], list[tuple[int, int]], int]:
    """What the killed writer acknowledged: single ids, bulk (first, n), last counter."""
    ones, bulks, counter = set(), [], 0
    while True:
        try:
            line = w.read_line(timeout=30)
        except EOFError:
            break
        parts = line.split()
        if parts[:2] == ["ACK", "one"]:
            ones.add(int(parts[2]))
        elif parts[:2] == ["ACK", "bulk"]:
            bulks.append((int(parts[2]), int(parts[3])))
        elif parts[:2] == ["ACK", "n"]:
            counter = int(parts[2])
    return ones, bulks, counter


@pytest.mark.slow
@pytest.mark.parametrize("durability", ["always", "everysec"])
def test_every_acknowledged_write_survives_sigkill_of_everything(db_name, spawn, tmp_path,
                                                                 durability):
    directory = str(tmp_path / "data")
    rnd = random.Random(durability)
    all_ones: set[int] = set()
    all_bulks: list[tuple[int, int]] = []
    for _round in range(3):
        w = spawn("durable_writer", db_name, directory, durability)
        w.expect("READY", timeout=120)
        time.sleep(rnd.uniform(0.1, 0.8))
        reboot(db_name, [w.pid])
        ones, bulks, counter = acknowledged(w)
        all_ones |= ones
        all_bulks += bulks
        assert ones or bulks or counter, "the writer acknowledged nothing before the kill"
        db = DictDB(db_name, path=directory, durability=durability)
        rows = {r["id"]: r for r in db.get_table("t").all()}
        missing = sorted(i for i in all_ones if i not in rows)
        assert not missing, f"acknowledged inserts lost: {missing[:10]}"
        for first, n in all_bulks:
            assert all(first + i in rows for i in range(n)), f"bulk {first} lost"
        by_bulk: dict[int, int] = {}
        for r in rows.values():
            if "bulk" in r:
                by_bulk[r["bulk"]] = by_bulk.get(r["bulk"], 0) + 1
        torn = {b: c for b, c in by_bulk.items() if c != rows[b]["size"]}
        assert not torn, f"bulk inserts restored in part: {torn}"
        assert rows[0]["n"] >= counter, "an acknowledged update was lost"
        db.close()


def test_restore_replays_snapshot_then_journal(db_name, tmp_path):
    directory = str(tmp_path)
    db = DictDB(db_name, path=directory, durability="no")
    db.create_table("a")
    db.create_table("b", primary_key="k", schema={"k": str, "v": int})
    a, b = db.get_table("a"), db.get_table("b")
    a.insert([{"x": i} for i in range(100)])
    b.insert({"k": "one", "v": 1})
    db.checkpoint()
    a.update({"x": -1}, where=a.x < 10)
    a.delete(where=a.x > 90)
    b.upsert({"k": "one", "v": 2})
    a.create_index("x", "sorted")
    db.drop_table("b")
    db.create_table("b")
    db.get_table("b").insert({"fresh": True})
    expect = {"a": a.all(), "b": db.get_table("b").all()}
    reboot(db_name, [])
    db = DictDB(db_name, path=directory, durability="no")
    assert {n: db.get_table(n).all() for n in ("a", "b")} == expect
    assert db.get_table("a").indexed_fields() == ["x"]
    assert db.get_table("b").schema is None
    db.close()


def test_a_torn_last_entry_is_dropped(db_name, tmp_path):
    directory = str(tmp_path)
    db = DictDB(db_name, path=directory, durability="always")
    db.create_table("t")
    db.get_table("t").insert([{"v": i} for i in range(10)])
    db.get_table("t").insert({"v": "last"})
    reboot(db_name, [])
    gen = J.generations(directory)[-1]
    path = J.journal_path(directory, gen)
    end = J._logical_end(path)[0]
    with open(path, "r+b") as f:             # the last entry, cut mid-write: zeros
        f.seek(end - 3)                      # where its last bytes did not land
        f.write(bytes(3))
    db = DictDB(db_name, path=directory, durability="always")
    assert [r["v"] for r in db.get_table("t").all()] == list(range(10))
    db.close()


@pytest.mark.parametrize("damage", ["snapshot", "journal"])
def test_damage_is_a_corruption_error_and_leaves_nothing(db_name, tmp_path, damage):
    directory = str(tmp_path)
    db = DictDB(db_name, path=directory, durability="always")
    db.create_table("t")
    db.get_table("t").insert([{"v": i} for i in range(50)])
    db.checkpoint()
    for i in range(5):
        db.get_table("t").insert({"v": i})
    reboot(db_name, [])
    if damage == "snapshot":
        path = os.path.join(directory, restore.SNAPSHOT)
    else:
        path = J.journal_path(directory, J.generations(directory)[-1])
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(CorruptionError, match=os.path.basename(path)):
        DictDB(db_name, path=directory, durability="always")
    assert names.shm_entries(db_name) == []


def test_attaching_processes_journal_without_knowing_the_path(db_name, tmp_path, spawn):
    directory = str(tmp_path)
    db = DictDB(db_name, path=directory, durability="always")
    db.create_table("t")
    w = spawn("insert_one", db_name, "t", '{"by": "worker"}')
    assert w.expect("RESULT") == "1"
    w.finish()
    db.destroy()                                     # keeps the directory
    assert os.path.exists(os.path.join(directory, restore.SNAPSHOT))
    db = DictDB(db_name, path=directory, durability="always")
    assert db.get_table("t").all() == [{"by": "worker", "id": 1}]
    db.close()


def write_v1_snapshot(directory: str, generation: int, tables: list[tuple[str, dict, dict,
                                                                      list[dict]]]) -> None:
    """A snapshot in the version 1 format (records as msgpack), as earlier
    releases wrote it."""
    import struct
    import zlib

    import msgpack
    header = {"version": 1, "generation": generation, "tables": [
        {"name": n, "meta": m, "indexes": ix, "count": len(rs)} for n, m, ix, rs in tables]}
    body = msgpack.packb(header) + b"".join(msgpack.packb(r) for *_, rs in tables for r in rs)
    with open(os.path.join(directory, snap.SNAPSHOT), "wb") as f:
        f.write(snap.MAGIC_V1 + body + struct.pack("<QI6s", len(body), zlib.crc32(body),
                                                   b"DDBEND"))


def test_a_version_1_snapshot_still_restores(db_name, tmp_path):
    directory = str(tmp_path)
    rows = [{"id": i, "v": i * 2} for i in range(1, 501)]
    write_v1_snapshot(directory, 1, [("t", {"pk": "id", "schema": None}, {"v": "sorted"},
                                      rows), ("e", {"pk": "k", "schema": None}, {}, [])])
    db = DictDB(db_name, path=directory, durability="no")
    t = db.get_table("t")
    assert t.all() == rows and db.get_table("e").all() == []
    assert t.indexed_fields() == ["v"]
    assert [r["id"] for r in t.select(where=t.v.between(10, 20))] == [5, 6, 7, 8, 9, 10]
    assert t.insert({"v": 0}) == 501
    db.destroy()
    assert snap.read_snapshot(os.path.join(directory, snap.SNAPSHOT))[1][0].built is not None


def test_restore_of_a_bulk_built_table_equals_its_source(db_name, tmp_path):
    """A table loaded whole (DictDB.load's bulk build), made durable by a
    snapshot, then rebooted: rows, next_pk and indexes (against a scan) as
    they were; a snapshot of another engine layout rebuilds from its heap."""
    source = DictDB()
    source.create_table("t")
    src = source.get_table("t")
    src.insert([{"name": f"n{i}", "age": i % 9} for i in range(4000)])
    src.create_index("age", "sorted")
    src.delete(where=src.id > 3990)
    saved = str(tmp_path / "save.pickle")
    source.save(saved, "pickle")
    source.destroy()
    loaded = DictDB.load(saved, "pickle")
    lt = loaded.get_table("t")
    lt.delete(where=lt.id > 3980)                        # next_pk stays past them
    expect = lt.all()
    directory = str(tmp_path / "durable")
    db = DictDB(db_name, path=directory, durability="everysec")
    db.create_table("t")
    lock, store = db._attachment().table(db._attachment().catalog.find("t"))
    heap, _, desc, _ = loaded._attachment().table(
        loaded._attachment().catalog.find("t"))[1].committed_image()
    with lock.write_lock():
        store.load_image(bulk.build(bulk.compact_image(heap, desc.next_pk), {"age": "sorted"},
                                    "t"))
    loaded.destroy()
    db.checkpoint()
    reboot(db_name, [])
    db = DictDB(db_name, path=directory, durability="everysec")
    t = db.get_table("t")
    assert t.all() == expect
    for age in (0, 4, 8):
        assert sorted(r["id"] for r in t.select(where=t.age == age)) == [
            r["id"] for r in expect if r["age"] == age]
    assert len(t.select(where=t.age.between(2, 3))) == len(
        [r for r in expect if 2 <= r["age"] <= 3])
    assert t.insert({"name": "new"}) == desc.next_pk == 4001    # the pickle kept next_pk
    db.close()
    path = os.path.join(directory, snap.SNAPSHOT)
    with pytest.MonkeyPatch.context() as mp:                  # another engine layout
        mp.setattr(snap.L, "LAYOUT_VERSION", snap.L.LAYOUT_VERSION + 1)
        (table,) = snap.read_snapshot(path)[1]
    other = DictDB()
    try:
        other.create_table("t")
        lock, store = other._attachment().table(other._attachment().catalog.find("t"))
        with lock.write_lock():
            store.load_image(table.built)
        o = other.get_table("t")
        assert o.all() == expect
        assert sorted(map(str, o.select(where=o.age == 4))) == sorted(
            str(r) for r in expect if r["age"] == 4)
    finally:
        other.destroy()


@pytest.mark.parametrize("point", [J.RESERVED_POINT])
def test_a_writer_killed_holding_the_journal_leaves_it_readable(db_name, tmp_path,
                                                              spawn_paused, point):
    """A process SIGKILLed after it reserved its entry's place and before it
    wrote it (holding the journal's mutex): the next writer covers the place
    with a PAD entry, and after a reboot every acknowledged write is back."""
    directory = str(tmp_path)
    db = DictDB(db_name, path=directory, durability="always")
    t = db.create_table("t")
    t.insert({"id": 1, "v": "before"})
    w = spawn_paused("insert_one", db_name, "t", '{"id": 2, "v": "killed"}')
    wait_until(lambda: process_state(w.pid) == "T", 60, "the writer to stop at its crash point")
    w.kill()
    t.insert({"id": 3, "v": "after"})      # takes the journal's mutex from the dead writer
    reboot(db_name, [])
    path = J.journal_path(directory, J.generations(directory)[-1])
    kinds = [what for what, *_ in J._scan(open(path, "rb").read(), path)]
    assert J.PAD in kinds
    db = DictDB(db_name, path=directory, durability="always")
    rows = {r["id"]: r["v"] for r in db.get_table("t").all()}
    assert rows[1] == "before" and rows[3] == "after"
    assert 2 not in rows                   # committed in memory, never journaled: not acknowledged
    db.close()
