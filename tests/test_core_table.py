"""The Table API's semantics (DictDB's), on a private database and on a named
database reached through a second, attached handle."""

from __future__ import annotations

import pytest

from dictdb_shm import (Condition, DictDB, DuplicateKeyError, DuplicateTableError,
                        RecordNotFoundError,
                        RecordTooLargeError, SchemaValidationError, UnstorableValueError)


@pytest.fixture(params=["private", "named-attached"])
def db(request, db_name):
    if request.param == "private":
        d = DictDB()
        yield d
        d.close()
    else:
        creator = DictDB(db_name)
        d = DictDB.attach(db_name)
        yield d
        d.close()
        creator.close()


@pytest.fixture
def users(db):
    db.create_table("users")
    t = db.get_table("users")
    t.insert([{"name": "Ada", "age": 36, "city": "London"},
              {"name": "Bob", "age": 17, "city": "Paris"},
              {"name": "Cy", "age": 52},
              {"name": "Di", "age": 30, "city": "Paris"}])
    return t


def test_insert_assigns_pks_and_writes_them_back(db):
    db.create_table("t")
    t = db.get_table("t")
    rec = {"name": "x"}
    assert t.insert(rec) == 1 and rec == {"name": "x", "id": 1}
    assert t.insert({"id": 10, "name": "y"}) == 10
    assert t.insert({"name": "z"}) == 11                 # continues after explicit keys
    assert t.insert([{"a": 1}, {"id": "k", "a": 2}, {"a": 3}]) == [12, "k", 13]
    assert t.insert([{"id": 20}, {"a": 4}]) == [20, 21]     # explicit keys first, then auto
    assert t.get("k") == {"id": "k", "a": 2}
    assert len(t) == t.count() == t.size() == 8


def test_duplicate_key_fails_whole_batch(users):
    before = users.copy()
    with pytest.raises(DuplicateKeyError):
        users.insert({"id": 2, "name": "again"})
    with pytest.raises(DuplicateKeyError):
        users.insert([{"id": 100}, {"id": 101}, {"id": 1}])
    with pytest.raises(DuplicateKeyError):
        users.insert([{"id": 200}, {"id": 200}])
    assert users.copy() == before
    assert users.get(100) is None and users.get(200) is None


def test_get_and_default(users):
    assert users.get(1)["name"] == "Ada"
    assert users.get(99) is None
    assert users.get(99, default="none") == "none"
    assert users.get([1, 2]) is None                      # unhashable: just absent


def test_select_where_columns_order_limit(users):
    names = lambda rows: [r["name"] for r in rows]   # noqa: E731
    assert names(users.select(where=users.age >= 30, order_by="name")) == ["Ada", "Cy", "Di"]
    assert names(users.select(where=Condition(users.city == "Paris"), order_by="-age")) \
        == ["Di", "Bob"]
    assert names(users.select(where=(users.age > 20) & ~(users.city == "Paris"),
                              order_by="age")) == ["Ada", "Cy"]
    assert names(users.select(where=(users.age < 18) | (users.age > 50), order_by="age")) \
        == ["Bob", "Cy"]
    assert users.select(columns=["name"], where=users.id == 2) == [{"name": "Bob"}]
    assert users.select(columns={"who": "name"}, where=users.id == 3) == [{"who": "Cy"}]
    assert names(users.select(order_by="age", limit=2, offset=1)) == ["Di", "Ada"]
    assert len(users.select(limit=3)) == 3
    assert users.select(where=users.city == "Rome") == []
    assert users.select(where=users.missing == 1) == []   # a missing field never matches
    assert users.select(where=users.id.is_in([1, 4, 99]), order_by="id") == [
        users.get(1), users.get(4)]


def test_select_returns_private_copies(users):
    rows = users.select(where=users.id == 1, copy=False)
    rows[0]["name"] = "changed"
    assert users.get(1)["name"] == "Ada"


def test_update_and_delete(users):
    assert users.update({"city": "Berlin"}, where=users.city == "Paris") == 2
    assert sorted(r["id"] for r in users.select(where=users.city == "Berlin")) == [2, 4]
    with pytest.raises(RecordNotFoundError):
        users.update({"x": 1}, where=users.age > 1000)
    with pytest.raises(SchemaValidationError):
        users.update({"id": 77}, where=users.id == 1)
    assert users.get(1)["id"] == 1 and users.get(77) is None
    assert users.delete(where=users.age < 20) == 1
    assert users.get(2) is None and users.count() == 3
    with pytest.raises(RecordNotFoundError):
        users.delete(where=users.id == 2)
    assert users.update({"seen": True}) == 3
    assert users.delete() == 3 and users.count() == 0 and users.all() == []
    assert users.insert({"name": "back"}) == 5              # keys are never reused


def test_upsert(users):
    assert users.upsert({"id": 1, "age": 37}) == (1, "updated")
    assert users.get(1) == {"id": 1, "name": "Ada", "age": 37, "city": "London"}
    assert users.upsert({"id": 1, "age": 99}, on_conflict="ignore") == (1, "ignored")
    assert users.get(1)["age"] == 37
    with pytest.raises(DuplicateKeyError):
        users.upsert({"id": 1}, on_conflict="error")
    assert users.upsert({"id": 50, "name": "new"}) == (50, "inserted")
    pk, status = users.upsert({"name": "auto"})
    assert status == "inserted" and users.get(pk)["name"] == "auto"
    with pytest.raises(ValueError):
        users.upsert({"id": 1}, on_conflict="merge")


def test_introspection(users, db):
    assert users.columns() == ["age", "city", "id", "name"]
    assert users.primary_key_name() == "id"
    assert users.schema_fields() == []
    assert set(users.copy()) == {1, 2, 3, 4}
    assert sorted(r["id"] for r in users.all()) == [1, 2, 3, 4]


def test_fields_named_like_methods(db):
    db.create_table("stats")
    t = db.get_table("stats")
    t.insert([{"count": 3, "size": "L", "name": "a"}, {"count": 5, "size": "S", "name": "b"}])
    assert [r["name"] for r in t.select(where=t["count"] > 4)] == ["b"]
    assert [r["count"] for r in t.select(where=t["size"] == "L")] == [3]
    assert [r["count"] for r in t.select(where=t.name == "a")] == [3]
    assert t.count() == 2


def test_schema_checked_everywhere(db):
    db.create_table("people", schema={"name": str, "age": int})
    t = db.get_table("people")
    assert t.schema_fields() == ["name", "age", "id"]
    t.insert({"name": "Ada", "age": 36})
    for bad in ({"name": "Bob"}, {"name": "Bob", "age": "old"},
                {"name": "Bob", "age": 3, "extra": 1}):
        with pytest.raises(SchemaValidationError):
            t.insert(bad)
    with pytest.raises(SchemaValidationError):
        t.insert([{"name": "ok", "age": 1}, {"name": "bad"}])
    with pytest.raises(SchemaValidationError):
        t.update({"age": "x"})
    with pytest.raises(SchemaValidationError):
        t.upsert({"id": 1, "age": "x"})
    assert t.all() == [{"name": "Ada", "age": 36, "id": 1}]
    with pytest.raises(SchemaValidationError):
        db.create_table("odd", schema={"when": complex})


def test_bad_values_leave_the_table_unchanged(users):
    before = users.copy()
    with pytest.raises(UnstorableValueError):
        users.insert({"name": "set", "tags": {1, 2}})
    with pytest.raises(UnstorableValueError):
        users.insert([{"name": "ok"}, {"name": "huge", "n": 2**70}])
    with pytest.raises(UnstorableValueError):
        users.update({"obj": object()}, where=users.id == 1)
    with pytest.raises(UnstorableValueError):
        users.insert({"id": {"a": 1}})
    with pytest.raises(RecordTooLargeError):
        users.insert({"blob": "x" * (17 << 20)})
    with pytest.raises(TypeError):
        users.insert("not a record")
    assert users.copy() == before
    assert users.insert({"name": "fine"}) == 5


def test_write_calls_inside_write_lock(users):
    with users._lock.write_lock():
        n = users.count()
        users.insert({"name": f"user{n}"})
        assert users.get(5)["name"] == "user4"
        with users._lock.read_lock():
            assert len(users.select()) == 5
    with users._lock.read_lock():
        assert users.count() == 5


def test_argument_errors_are_dictdb_errors(users):
    from dictdb_shm import DictDBError, InvalidArgumentError
    for call in (lambda: users.insert("not a record"),
                 lambda: users.upsert({"id": 1}, on_conflict="merge"),
                 lambda: users.select(limit="3"),
                 lambda: users.select(offset=1.5),
                 lambda: users.upsert(5),
                 lambda: users.upsert([{"id": 1}]),
                 lambda: users.select(where="age > 3"),
                 lambda: users.create_index("age", "btree"),
                 lambda: users.select(order_by=5)):
        with pytest.raises(InvalidArgumentError) as info:
            call()
        assert isinstance(info.value, DictDBError)
        assert isinstance(info.value, (ValueError, TypeError))


# ------------------------------------------------- values that would not read back
def test_a_record_that_cannot_be_read_back_is_refused(users):
    before = users.all()
    for bad in ({"id": 7000, "m": {(1, 2): 3}}, {"id": 7001, "m": [{"k": {frozenset(): 1}}]},
                {"id": 7002, "m": {1: {(0,): "x"}}}):
        with pytest.raises(UnstorableValueError) as info:
            users.insert(bad)
        assert "str, int or bytes" in str(info.value)
    assert users.all() == before
    users.insert({"id": 7003, "m": {1: "a", b"k": "b", "s": (1, 2)}})
    assert users.get(7003) == {"id": 7003, "m": {1: "a", b"k": "b", "s": [1, 2]}}
    assert users.select(where=users.id == 7003)[0]["m"]["s"] == [1, 2]


def test_primary_keys_over_the_int64_range(db):
    t = db.create_table("t")
    top = 2 ** 63 - 1
    assert t.insert({"id": top}) == top and t.get(top) == {"id": top}
    from dictdb_shm import DatabaseFullError
    with pytest.raises(DatabaseFullError) as info:
        t.insert({"v": "auto"})
    assert "explicitly" in str(info.value)
    with pytest.raises(UnstorableValueError):
        t.insert({"id": 2 ** 64})
    assert t.insert({"id": 2 ** 64 - 1}) == 2 ** 64 - 1      # msgpack's uint64 still fits
    assert t.count() == 2


def test_a_tuple_schema_field_accepts_the_list_it_reads_back_as(db):
    t = db.create_table("t", schema={"pos": tuple, "n": int})
    t.insert({"id": 1, "pos": (1, 2), "n": 0})
    t.update({"n": 1}, where=t.id == 1)               # validates the stored record again
    t.upsert({"id": 1, "pos": [3, 4], "n": 2})
    assert t.get(1) == {"id": 1, "pos": [3, 4], "n": 2}
    with pytest.raises(SchemaValidationError):
        t.insert({"id": 2, "pos": "12", "n": 0})


# ------------------------------------------------------------- DictDB parity
def test_validate_record_is_the_check_every_write_makes(db):
    t = db.create_table("t")
    t.insert([{"id": 1, "v": 1}, {"id": 2, "v": 2}])
    seen = []

    def refuse_negative(record):
        seen.append(dict(record))
        if record.get("v", 0) < 0:
            raise SchemaValidationError("v must not be negative")

    t.validate_record = refuse_negative            # a patch, as DictDB code may do
    for call in (lambda: t.insert([{"id": 3, "v": 3}, {"id": 4, "v": -4}]),
                 lambda: t.update({"v": -1}),
                 lambda: t.upsert({"id": 1, "v": -9})):
        with pytest.raises(SchemaValidationError):
            call()
    assert sorted((r["id"], r["v"]) for r in t.all()) == [(1, 1), (2, 2)]
    assert len(seen) == 4                         # each call stopped at its first refusal
    t.insert({"id": 5, "v": 5}, skip_validation=False)
    assert t.get(5) == {"id": 5, "v": 5}
    del t.validate_record
    schemaful = db.create_table("s", schema={"name": str})
    with pytest.raises(SchemaValidationError):
        schemaful.validate_record({"id": 1, "name": 3})
    schemaful.validate_record({"id": 1, "name": "ok"})


def test_create_table_exist_ok(db):
    first = db.create_table("t", primary_key="key")
    first.insert({"key": "a"})
    again = db.create_table("t", primary_key="key", exist_ok=True)
    assert again.get("a") == {"key": "a"}
    with pytest.raises(DuplicateTableError):
        db.create_table("t", primary_key="key")
    with pytest.raises(DuplicateTableError) as info:
        db.create_table("t", primary_key="id", exist_ok=True)
    assert "'key'" in str(info.value)


def test_lock_is_public_and_dictdb_name_kept(db):
    t = db.create_table("t")
    assert t.lock is t._lock
    with t.lock.write_lock():
        t.insert({"id": 1})
    with t._lock.read_lock():
        assert t.count() == 1


def test_indexes_mapping_of_index_views(db):
    t = db.create_table("t")
    t.insert([{"id": i, "city": ["Paris", "Oslo", "Rome"][i % 3], "n": i % 4}
              for i in range(12)] + [{"id": 99, "city": None}])
    t.create_index("city", "hash")
    t.create_index("n", "sorted")
    assert set(t.indexes) == {"city", "n"} and len(t.indexes) == 2
    assert "missing" not in t.indexes
    city, n = t.indexes["city"], t.indexes["n"]
    assert city.search("Oslo") == {1, 4, 7, 10}
    assert n.search(2) == {2, 6, 10} == n.search(2.0)
    assert city.search("Lima") == set() and city.search(None) == {99}
    mapping = city.index
    assert mapping["Rome"] == {2, 5, 8, 11}
    assert sorted(mapping) == ["Oslo", "Paris", "Rome"] and len(mapping) == 3
    with pytest.raises(KeyError):
        mapping["Lima"]
    with pytest.raises(AttributeError):
        n.index
    t.update({"city": "Lima"}, where=t.id == 1)
    assert mapping["Lima"] == {1} and 1 not in mapping["Oslo"]
    with pytest.raises(TypeError):
        t.indexes["city"] = None
