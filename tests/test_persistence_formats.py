"""Every bad file: missing, empty, truncated, malformed, wrong types inside,
records a table refuses, and pickles naming anything but plain data.  Each
raises a DictDBError subclass (FileNotFoundError for a missing file) naming
the file and the problem, creates nothing in /dev/shm, and leaves a live
database as it was."""

from __future__ import annotations

import json
import os
import pickle

import pytest

from dictdb_shm import CorruptionError, DictDB, DictDBError, names
from dictdb_shm.persistence import formats, unpickler

GOOD = {"tables": {"t": {"primary_key": "id", "schema": None,
                         "records": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]}}}


def good_pickle() -> bytes:
    header = {"format": formats.PICKLE_FORMAT, "version": 1, "tables": [
        {"name": "t", "primary_key": "id", "schema": None, "indexes": {}, "count": 2}]}
    return pickle.dumps(header) + pickle.dumps([{"id": 1, "v": "a"}, {"id": 2, "v": "b"}])


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


class Custom:
    pass


def with_table(**changes) -> bytes:
    doc = json.loads(json.dumps(GOOD))
    doc["tables"]["t"].update(changes)
    return json.dumps(doc).encode()


JSON_CASES = {
    "empty": (b"", "empty"),
    "blank": (b"  \n", "empty"),
    "truncated": (json.dumps(GOOD).encode()[:-7], "truncated"),
    "malformed": (b'{"tables": {"t": [1,,]}}', "not valid JSON"),
    "not utf-8": (b"\x80\x04\x95 binary", "not UTF-8"),
    "no tables": (b'{"rows": []}', '"tables"'),
    "tables a list": (b'{"tables": []}', '"tables"'),
    "table not an object": (b'{"tables": {"t": 5}}', "not an object"),
    "bad table name": (b'{"tables": {"a/b": {"records": []}}}', "invalid table name"),
    "records not a list": (with_table(records={"id": 1}), "records must be a list"),
    "record not an object": (with_table(records=[1, 2]), "record 0"),
    "bad schema type": (with_table(schema={"id": "int", "v": "set"}), "schema"),
    "bad primary key": (with_table(primary_key=7), "primary_key"),
    "bad indexes": (with_table(indexes=["v"]), "indexes"),
    "unknown index kind": (with_table(indexes={"v": "btree"}), "btree"),
    "duplicate keys": (with_table(records=[{"id": 1}, {"id": 1}]), "primary key 1"),
    "schema violation": (with_table(schema={"id": "int", "v": "int"}), "expects int"),
}

PICKLE_CASES = {
    "empty": (b"", "empty"),
    "truncated": (good_pickle()[:-9], "truncated"),
    "garbage": (b"\x80\x05garbage", "not a valid pickle"),
    "not ours": (pickle.dumps({"tables": {}}), "no header"),
    "wrong version": (pickle.dumps({"format": formats.PICKLE_FORMAT, "version": 99,
                                    "tables": []}), "version 99"),
    "os.system": (pickle.dumps(Evil()), "posix.system"),
    "a custom class": (pickle.dumps({"x": Custom()}), "Custom, which is not plain data"),
    "count short": (good_pickle().rsplit(b"\x80", 1)[0], "ends after 0 of 2"),
    "extra bytes": (good_pickle() + pickle.dumps([1]), "after the last table"),
    "chunk not a list": (pickle.dumps({"format": formats.PICKLE_FORMAT, "version": 1,
                                       "tables": [{"name": "t", "count": 1}]})
                         + pickle.dumps({"id": 1}), "not a list"),
    "a class in records": (pickle.dumps({"format": formats.PICKLE_FORMAT, "version": 1,
                                         "tables": [{"name": "t", "count": 1}]})
                           + pickle.dumps([{"id": Custom()}]), "not plain data"),
}


def our_shm_entries() -> list[str]:
    mine = f"dictdb_p{os.getpid()}-"
    return [n for n in names.shm_listing() if mine in n]


@pytest.fixture
def live():
    d = DictDB()
    d.create_table("keep")
    d.get_table("keep").insert({"v": 1})
    yield d
    d.close()


def check_refused(path, fmt, words, live, db_name=None):
    before = our_shm_entries()
    with pytest.raises(DictDBError) as info:
        DictDB.load(path, fmt, name=db_name)
    assert isinstance(info.value, CorruptionError), info.value
    text = str(info.value)
    assert str(path) in text, text
    if words:
        assert words in text, text
    assert our_shm_entries() == before
    if db_name:
        assert names.shm_entries(db_name) == []
    assert live.get_table("keep").all() == [{"v": 1, "id": 1}]


CASES = [("json", c, *JSON_CASES[c]) for c in sorted(JSON_CASES)] + \
        [("pickle", c, *PICKLE_CASES[c]) for c in sorted(PICKLE_CASES)]


@pytest.mark.parametrize("fmt,case,data,words", CASES, ids=[f"{f}-{c}" for f, c, *_ in CASES])
def test_bad_files(tmp_path, live, fmt, case, data, words):
    path = tmp_path / f"bad.{fmt}"
    path.write_bytes(data)
    check_refused(path, fmt, words, live)


def test_a_bad_file_loaded_under_a_name_leaves_no_database(tmp_path, live, db_name):
    path = tmp_path / "dup.json"
    path.write_bytes(JSON_CASES["duplicate keys"][0])
    check_refused(path, "json", "primary key 1", live, db_name=db_name)


def test_the_evil_pickle_never_runs(tmp_path, live, monkeypatch):
    ran = []
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(Evil()))
    monkeypatch.setattr(os, "system", lambda cmd: ran.append(cmd))
    with pytest.raises(CorruptionError):
        DictDB.load(path, "pickle")
    assert ran == []


def test_plain_data_with_sets_and_old_protocols_loads():
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        value = {"s": {1, 2}, "f": frozenset({3}), "b": b"\x00", "t": (1, 2.5), "n": None}
        assert unpickler.loads(pickle.dumps(value, protocol=protocol)) == value


def test_missing_file_is_file_not_found(tmp_path, live):
    for fmt in ("json", "pickle"):
        with pytest.raises(FileNotFoundError):
            DictDB.load(tmp_path / "nowhere", fmt)


def test_a_directory_is_a_file_access_error(tmp_path, live):
    with pytest.raises(DictDBError, match=str(tmp_path)):
        DictDB.load(tmp_path, "json")


def test_pickle_files_written_with_a_memo_still_load(tmp_path):
    """Saves now pickle chunks in fast mode (no memo); files of earlier
    releases, each chunk a memoised pickle, load the same."""
    rows = [{"id": i, "tag": "same", "v": [i]} for i in range(1, 2501)]
    path = str(tmp_path / "old.pkl")
    with open(path, "wb") as f:
        pickle.dump({"format": formats.PICKLE_FORMAT, "version": 1, "tables": [
            {"name": "t", "primary_key": "id", "schema": None, "indexes": {"tag": "hash"},
             "count": len(rows)}]}, f, protocol=4)
        for start in range(0, len(rows), 1000):
            pickle.dump(rows[start:start + 1000], f, protocol=4)
    db = DictDB.load(path, "pickle")
    try:
        t = db.get_table("t")
        assert t.all() == rows and t.indexed_fields() == ["tag"]
        assert len(t.select(where=t.tag == "same")) == len(rows)
        db.save(str(tmp_path / "new.pkl"), "pickle")
        again = DictDB.load(str(tmp_path / "new.pkl"), "pickle")
        assert again.get_table("t").all() == rows
        again.destroy()
    finally:
        db.destroy()


# ------------------------------------------------------- version 2 pickles
def v2_parts(tmp_path) -> tuple[dict, dict]:
    """(header, table entry) of a version 2 pickle saved by a real database."""
    db = DictDB()
    try:
        t = db.create_table("t")
        t.insert([{"id": 1, "v": "a"}, {"id": 2, "v": "b"}])
        path = tmp_path / "good.pkl"
        db.save(path, "pickle")
    finally:
        db.destroy()
    with open(path, "rb") as f:
        header, table = pickle.load(f), pickle.load(f)
        assert not f.read(1)
    assert header["version"] == 2 and set(table) >= {"sections", "crc", "count"}
    return header, table


def v2_file(header: dict, *tables: dict) -> bytes:
    return b"".join(pickle.dumps(x, protocol=5) for x in (header, *tables))


def test_bad_version_2_pickles(tmp_path, live):
    header, table = v2_parts(tmp_path)
    heap = bytearray(table["sections"][0])
    heap[-3] ^= 0xFF
    cases = {
        "no table after the header": (v2_file(header), "ends before its records"),
        "truncated": (v2_file(header, table)[:-9], "truncated"),
        "damaged heap": (v2_file(header, {**table, "sections": [bytes(heap),
                                                                *table["sections"][1:]]}),
                         "checksum"),
        "sections not bytes": (v2_file(header, {**table, "sections": [1, 2, 3, 4]}),
                               "four byte strings"),
        "three sections": (v2_file(header, {**table, "sections": table["sections"][:3]}),
                           "four byte strings"),
        "a list of records": (v2_file(header, [{"id": 1}]), "not a dict of sections"),
        "count differs": (v2_file({**header, "tables": [{**header["tables"][0], "count": 3}]},
                                  table), "the header says 3"),
        "extra bytes": (v2_file(header, table, [1]), "after the last table"),
    }
    for case, (data, words) in cases.items():
        path = tmp_path / f"{case.replace(' ', '_')}.pkl"
        path.write_bytes(data)
        check_refused(path, "pickle", words, live)


def test_a_version_2_pickle_of_another_layout_is_rebuilt_from_its_records(tmp_path):
    """The directory and index sections depend on the engine's layout; a file
    of another layout is rebuilt from its heap, as a snapshot is."""
    header, table = v2_parts(tmp_path)
    path = tmp_path / "other_layout.pkl"
    path.write_bytes(v2_file({**header, "layout": -1}, table))
    db = DictDB.load(path, "pickle")
    try:
        t = db.get_table("t")
        assert t.all() == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]
        assert t.insert({"v": "c"}) == 3
    finally:
        db.destroy()
