"""The catalog (dictdb_shm.engine.catalog) on its own: adding, finding and
removing tables, the edit record each edit leaves while it runs, and the
repair of an edit cut short at every step.

No coordinator runs for these catalogs: the test (or a worker it kills)
edits the catalog the way a coordinator does.  The ``db_name`` fixture's
destroy removes everything afterwards.
"""

from __future__ import annotations

import pytest

from conftest import wait_until
from dictdb_shm import (CorruptionError, DatabaseFullError, DatabaseNotFoundError,
                        DuplicateTableError, InvalidNameError, crashpoints, names)
from dictdb_shm.engine import layout as L
from dictdb_shm.engine import semaphores
from dictdb_shm.engine.catalog import Catalog
from dictdb_shm.engine.segment import Segment
from proctools import process_state, spawn_paused

__all__ = ["spawn_paused"]       # a fixture

META = {"pk": "id", "schema": None}
ADD_POINTS = ["catalog.add_table.recorded", "catalog.add_table.slot_written",
              "catalog.create_semaphore.0", "catalog.add_table.published",
              "catalog.add_table.settled"]
PUBLISHED = {"catalog.add_table.published", "catalog.add_table.settled"}
REMOVE_POINTS = ["catalog.remove_table.recorded", "catalog.remove_table.unpublished"]


@pytest.fixture
def catalog(db_name):
    cat = Catalog.create(db_name, private=False, owner=(0, 0))
    cat.publish()
    yield cat
    cat.close()


def word(cat: Catalog, offset: int) -> int:
    return cat.words[offset // L.WORD]


def edit_record(cat: Catalog) -> tuple[int, int, int]:
    return word(cat, L.EDIT_KIND_AT), word(cat, L.EDIT_SLOT_AT), word(cat, L.EDIT_UID_AT)


def table_objects(db: str, uid: int) -> list[str]:
    tp = names.table_prefix(db, uid)
    return sorted(e for e in names.shm_entries(db) if e.startswith((tp, "sem." + tp)))


def assert_settled(cat: Catalog) -> None:
    assert edit_record(cat)[0] == L.EDIT_NONE
    assert word(cat, L.CATALOG_SEQ_AT) % 2 == 0
    assert word(cat, L.SEMAPHORE_CREATION_AT) == 0


# ------------------------------------------------------------ add / find / remove
def test_added_tables_are_found_with_their_metadata(catalog, db_name):
    a = catalog.add_table("a", {"pk": "id", "schema": {"id": "int"}})
    b = catalog.add_table("b", {"pk": "key", "schema": None})
    assert [(e.name, e.uid, e.index) for e in catalog.entries()] == [("a", a.uid, a.index),
                                                                   ("b", b.uid, b.index)]
    found = catalog.find("a")
    assert (found.uid, found.index, found.meta) == (a.uid, a.index,
                                                    {"pk": "id", "schema": {"id": "int"}})
    assert catalog.find("missing") is None
    assert catalog.is_current(a.index, a.uid) and not catalog.is_current(a.index, b.uid)
    assert_settled(catalog)
    # another process's view of the same catalog agrees
    other = Catalog.attach(db_name)
    assert [e.name for e in other.entries()] == ["a", "b"]
    other.close()


def test_a_new_table_starts_empty_with_its_semaphore_owner_only(catalog, db_name):
    entry = catalog.add_table("t", META)
    base = L.slot_offset(entry.index) + L.STORE_REGION
    assert L.Descriptor._make(L.DESCRIPTOR.unpack_from(catalog.buf, base + L.STORE_DESC)) \
        == L.EMPTY_TABLE
    assert word(catalog, base + L.STORE_UID) == entry.uid
    assert word(catalog, base + L.STORE_SEQ) == 0
    assert semaphores.check(names.drain_semaphore(db_name, entry.uid)) is True


def test_removing_a_table_unpublishes_it_and_unlinks_its_objects(catalog, db_name):
    entry = catalog.add_table("t", META)
    Segment.create(names.heap_segment(db_name, entry.uid, 1), 4096)
    keep = catalog.add_table("keep", META)
    catalog.remove_table(entry)
    assert catalog.find("t") is None and catalog.find("keep") is not None
    assert table_objects(db_name, entry.uid) == []
    assert table_objects(db_name, keep.uid) != []
    store = L.slot_offset(entry.index) + L.STORE_REGION
    assert word(catalog, store + L.STORE_SEQ) == L.SEQ_DROPPED   # stale handles stop
    assert word(catalog, store + L.STORE_UID) == 0
    assert_settled(catalog)


def test_a_reused_slot_gets_a_new_uid(catalog):
    old = catalog.add_table("t", META)
    catalog.remove_table(old)
    new = catalog.add_table("t", META)
    assert new.index == old.index and new.uid > old.uid
    assert not catalog.is_current(old.index, old.uid)


def test_add_refuses_duplicates_bad_names_and_oversized_definitions(catalog, db_name):
    catalog.add_table("t", META)
    with pytest.raises(DuplicateTableError, match=f"table 't' already exists in database "
                                                  f"'{db_name}'"):
        catalog.add_table("t", META)
    for bad in ("", "..", "a/b", "x\ny"):
        with pytest.raises(InvalidNameError):
            catalog.add_table(bad, META)
    with pytest.raises(DatabaseFullError, match="use a smaller schema"):
        catalog.add_table("big", {"pk": "id", "schema": {f"f{i}": "str" for i in range(2000)}})
    assert [e.name for e in catalog.entries()] == ["t"]
    assert_settled(catalog)


def test_a_full_catalog_refuses_one_more_table(catalog):
    for i in range(L.MAX_TABLES):
        catalog.add_table(f"t{i}", META)
    with pytest.raises(DatabaseFullError, match=f"has {L.MAX_TABLES} tables"):
        catalog.add_table("one_more", META)
    assert len(catalog.entries()) == L.MAX_TABLES


def test_remove_orphans_unlinks_objects_of_tables_that_are_not_live(catalog, db_name):
    live = catalog.add_table("live", META)
    orphan_segment = names.heap_segment(db_name, 999, 3)
    Segment.create(orphan_segment, 4096)
    semaphores.create(names.drain_semaphore(db_name, 998), 0)
    removed = catalog.remove_orphans()
    assert sorted(removed) == sorted([orphan_segment[1:],
                                      "sem." + names.drain_semaphore(db_name, 998)[1:]])
    assert table_objects(db_name, 999) == [] and table_objects(db_name, 998) == []
    assert table_objects(db_name, live.uid) != []


# ---------------------------------------------------------------- attaching
def test_attach_finds_only_a_published_catalog(db_name):
    with pytest.raises(DatabaseNotFoundError, match=f"no database named '{db_name}'"):
        Catalog.attach(db_name)
    cat = Catalog.create(db_name, private=True, owner=(123, 456))
    with pytest.raises(DatabaseNotFoundError):
        Catalog.attach(db_name)                          # not published yet
    early = Catalog.attach(db_name, require_ready=False)  # what a coordinator may look at
    assert not early.ready
    cat.publish()
    seen = Catalog.attach(db_name)
    assert seen.ready and seen.private and seen.owner() == (123, 456)
    assert seen.authkey == cat.authkey and len(seen.authkey) == L.AUTHKEY_SIZE
    for c in (cat, early, seen):
        c.close()


def test_attach_refuses_another_layout(catalog, db_name):
    L.HEADER.pack_into(catalog.buf, 0, L.MAGIC, L.LAYOUT_VERSION + 1, 0)
    try:
        with pytest.raises(CorruptionError, match=f"layout .*/{L.LAYOUT_VERSION + 1}"):
            Catalog.attach(db_name)
    finally:
        L.HEADER.pack_into(catalog.buf, 0, L.MAGIC, L.LAYOUT_VERSION, 0)


def test_socket_path_round_trips_and_a_long_one_is_refused(catalog):
    assert catalog.socket_path() is None
    catalog.set_socket_path("/run/user/1000/dictdb_shm/x.sock")
    assert catalog.socket_path() == "/run/user/1000/dictdb_shm/x.sock"
    with pytest.raises(InvalidNameError, match="too long"):
        catalog.set_socket_path("/" + "x" * L.SOCKET_PATH_MAX)
    assert catalog.socket_path() == "/run/user/1000/dictdb_shm/x.sock"


def test_mark_destroyed_tells_every_handle(catalog, db_name):
    entry = catalog.add_table("t", META)
    other = Catalog.attach(db_name)
    catalog.mark_destroyed()
    store = L.slot_offset(entry.index) + L.STORE_REGION
    assert other.is_destroyed()
    assert word(other, store + L.STORE_SEQ) == L.SEQ_DROPPED
    assert word(other, store + L.STORE_UID) == 0
    other.close()


# ------------------------------------------------------- edits cut short
class Interrupted(Exception):
    pass


def test_an_edit_that_raises_is_undone_at_once(catalog, db_name, monkeypatch):
    def fail_at(point):
        if point == "catalog.add_table.slot_written":
            raise Interrupted
    monkeypatch.setattr(crashpoints, "reach", fail_at)
    uid = word(catalog, L.NEXT_UID_AT)
    with pytest.raises(Interrupted):
        catalog.add_table("t", META)
    assert catalog.find("t") is None and table_objects(db_name, uid) == []
    assert_settled(catalog)


def _killed_at(spawn_paused, db: str, op: str, table: str) -> None:
    """Run ``op`` on ``table`` in a worker that stops at the test's crash
    point, and SIGKILL it there."""
    w = spawn_paused("catalog_edit", db, op, table)
    w.expect("READY")
    wait_until(lambda: process_state(w.pid) == "T", 60, "the worker to stop at its point")
    w.kill()


@pytest.mark.parametrize("point", ADD_POINTS)
def test_add_killed_at_each_step_is_finished_or_undone(catalog, db_name, spawn_paused,
                                                      point):
    keep = catalog.add_table("keep", META)
    uid = word(catalog, L.NEXT_UID_AT)
    _killed_at(spawn_paused, db_name, "add", "new")

    kind, slot, recorded_uid = edit_record(catalog)
    assert (kind, recorded_uid) == (L.EDIT_ADD, uid) and slot != keep.index
    if point == "catalog.create_semaphore.0":
        assert word(catalog, L.SEMAPHORE_CREATION_AT) != 0
    if point == "catalog.add_table.slot_written":
        # Readers see an edit that never ends, and are told how to repair it.
        with pytest.raises(CorruptionError, match="died while editing"):
            catalog.entries()

    done = catalog.repair_interrupted_edit()
    assert_settled(catalog)
    if point in PUBLISHED:
        assert done == f"finished adding table uid {uid}"
        assert catalog.find("new").uid == uid
        assert table_objects(db_name, uid) != []
    else:
        assert done == f"undid adding table uid {uid}"
        assert catalog.find("new") is None and table_objects(db_name, uid) == []
        assert bytes(catalog.buf[L.slot_offset(slot):L.slot_offset(slot) + L.SLOT_SIZE]) \
            == bytes(L.SLOT_SIZE)
    assert catalog.find("keep").uid == keep.uid
    assert catalog.repair_interrupted_edit() is None          # nothing left to do
    assert catalog.add_table("after", META).uid > uid


@pytest.mark.parametrize("point", REMOVE_POINTS)
def test_remove_killed_at_each_step_is_finished(catalog, db_name, spawn_paused, point):
    victim = catalog.add_table("victim", META)
    Segment.create(names.heap_segment(db_name, victim.uid, 1), 4096)
    keep = catalog.add_table("keep", META)
    _killed_at(spawn_paused, db_name, "remove", "victim")

    assert edit_record(catalog) == (L.EDIT_REMOVE, victim.index, victim.uid)
    done = catalog.repair_interrupted_edit()
    assert done == f"finished removing table uid {victim.uid}"
    assert_settled(catalog)
    assert catalog.find("victim") is None and table_objects(db_name, victim.uid) == []
    assert catalog.find("keep").uid == keep.uid and table_objects(db_name, keep.uid) != []
