"""TTL tables (engine/expiry.py): ``create_table(..., ttl=)`` records expire
by their last write for every read path and every process, the coordinator
sweeps them (coordinator/sweep.py), and tables without ttl are untouched."""

from __future__ import annotations

import json

import pytest

from conftest import wait_until
from dictdb_shm import DictDB, InvalidArgumentError
from test_cache import spawn_cache  # noqa: F401 - the fixture, shared


@pytest.fixture
def db(db_name):
    d = DictDB(db_name)
    yield d
    d.close()


def test_expired_records_vanish_from_every_read_and_other_processes(db, spawn_cache):
    t = db.create_table("sessions", ttl=1.0)
    t.create_index("user")
    w = spawn_cache("wait_table_expired", db.name, "sessions", 1)
    w.expect("READY")
    t.insert([{"id": 1, "user": "ann"}, {"id": 2, "user": "bob"}])
    assert json.loads(w.expect("SEEN")) == {"id": 1, "user": "ann"}
    assert json.loads(w.expect("RESULT")) == [0, [], None]
    w.finish()
    assert t.get(1) is None and t.count() == 0 and len(t) == 0 and t.all() == []
    assert t.select(where=t.user == "ann") == [] and t.select(where=t.id == 2) == []
    assert t.select(where=t.id.is_in([1, 2])) == []
    wait_until(lambda: t._store.read(lambda s: s.desc.live) == 0, 30,
               "the coordinator to sweep the expired records")


def test_a_write_renews_a_record(db):
    t = db.create_table("s", ttl=0.4)
    t.insert({"id": 1, "v": 0})
    t.insert({"id": 2, "v": 0})
    renewed = 0
    while t.get(2) is not None:       # keep rewriting 1 until 2 (written once) expires
        t.update({"v": renewed}, where=t.id == 1)
        renewed += 1
        if renewed > 100_000:
            pytest.fail("record 2 never expired")
    assert t.get(1) == {"id": 1, "v": renewed - 1}
    assert [r["id"] for r in t.select()] == [1] and t.count() == 1


def test_ttl_is_checked_and_tables_without_it_keep_everything(db):
    for bad in (0, -1, "5", True):
        with pytest.raises(InvalidArgumentError):
            db.create_table("bad", ttl=bad)
    t = db.create_table("plain")
    t.insert({"id": 1})
    assert t.get(1) == {"id": 1} and type(t._store).__name__ == "TableStore"
