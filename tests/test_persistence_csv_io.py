"""CSV import/export (dictdb_shm.persistence.csv_io) on a named database."""

from __future__ import annotations

import csv
import os

import pytest

from dictdb_shm import (DictDB, DuplicateKeyError, DuplicateTableError, SchemaValidationError)
from dictdb_shm.persistence import csv_io, export_csv, import_csv


@pytest.fixture
def db(db_name):
    d = DictDB(db_name)
    yield d
    d.close()


def write(path, text: str) -> str:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return str(path)


def read_rows(path, delimiter=",") -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter=delimiter))


def by_pk(records, pk="id"):
    return sorted(records, key=lambda r: r[pk])


# ------------------------------------------------------------------ round trip
def test_round_trip_with_inferred_types(db, tmp_path):
    t = db.create_table("src")
    rows = [{"id": 1, "name": "Ada", "age": 36, "score": 9.5},
            {"id": 2, "name": "Bob, Jr.", "age": -4, "score": None},
            {"id": 7, "name": 'say "hi"\nnext line', "age": 0, "score": 1e-300}]
    t.insert([dict(r) for r in rows])
    path = tmp_path / "out.csv"
    assert export_csv(t, path) == 3
    assert import_csv(db, path, "copy") == 3
    got = by_pk(db.get_table("copy").select())
    assert got == by_pk(rows)
    assert [type(r["age"]) for r in got] == [int, int, int]
    assert type(got[0]["score"]) is float


def test_round_trip_with_schema_keeps_every_type(db, tmp_path):
    schema = {"code": str, "n": int, "x": float, "ok": bool, "tags": list,
              "meta": dict, "blob": bytes, "gone": type(None)}
    t = db.create_table("src", primary_key="code", schema=schema)
    rows = [{"code": "007", "n": 2**63 - 1, "x": 0.1, "ok": True, "tags": ["a", 1, None],
             "meta": {"k": [1, 2]}, "blob": b"\x00\xffbin", "gone": None},
            {"code": "A,B", "n": -5, "x": float("inf"), "ok": False, "tags": [],
             "meta": {}, "blob": b"", "gone": None}]
    t.insert([dict(r) for r in rows])
    path = tmp_path / "out.csv"
    export_csv(t, path)
    assert read_rows(path)[0][0] == "code", "primary key column comes first"
    assert import_csv(db, path, "copy", primary_key="code", schema=schema) == 2
    got = by_pk(db.get_table("copy").select(), "code")
    assert got == by_pk(rows, "code")
    assert type(got[0]["ok"]) is bool and got[0]["code"] == "007"


# ------------------------------------------------------------------- inference
def test_inference_is_per_column(db, tmp_path):
    path = write(tmp_path / "in.csv",
                 "id,i,f,mixed,s,e,zip\n"
                 "1,10,1.5,1,abc,,007\n"
                 "2,-3,2,x,,,010\n"
                 "3, 4 ,1e3,2.5,d,,\n")
    assert import_csv(db, path, "t") == 3
    got = by_pk(db.get_table("t").select())
    assert [r["i"] for r in got] == [10, -3, 4]
    assert all(type(r["i"]) is int for r in got)
    assert [r["f"] for r in got] == [1.5, 2.0, 1000.0]
    assert all(type(r["f"]) is float for r in got), "one float makes the column float"
    assert [r["mixed"] for r in got] == ["1", "x", "2.5"], "one text cell makes it str"
    assert [r["s"] for r in got] == ["abc", "", "d"], "empty cell in a str column is ''"
    assert [r["e"] for r in got] == [None, None, None], "an all-empty column is None"
    assert [r["zip"] for r in got] == [7, 10, None], "empty cell in an int column is None"


def test_infer_types_false_keeps_text(db, tmp_path):
    path = write(tmp_path / "in.csv", "code,qty\nA1,5\nB2,\n")
    import_csv(db, path, "t", primary_key="code", infer_types=False)
    assert by_pk(db.get_table("t").select(), "code") == [{"code": "A1", "qty": "5"},
                                                         {"code": "B2", "qty": ""}]


def test_numbers_that_do_not_fit_64_bits_stay_text(db, tmp_path):
    big = "123456789012345678901234567890"
    path = write(tmp_path / "in.csv", f"n,u\n{big},1_000\n1,2\n")
    import_csv(db, path, "t")
    got = by_pk(db.get_table("t").select())
    assert [r["n"] for r in got] == [big, "1"]
    assert [r["u"] for r in got] == ["1_000", "2"], "Python-only int syntax is not a number"


# ------------------------------------------------------- file shapes, options
def test_header_less_file_uses_col_n_names_and_auto_keys(db, tmp_path):
    path = write(tmp_path / "in.csv", "Ada,36\nBob,17\n")
    assert import_csv(db, path, "t", has_header=False) == 2
    got = by_pk(db.get_table("t").select())
    assert got == [{"id": 1, "col_0": "Ada", "col_1": 36}, {"id": 2, "col_0": "Bob", "col_1": 17}]


def test_header_less_file_with_a_key_column(db, tmp_path):
    path = write(tmp_path / "in.csv", "10,x\n20,y\n")
    import_csv(db, path, "t", has_header=False, primary_key="col_0")
    t = db.get_table("t")
    assert t.get(20) == {"col_0": 20, "col_1": "y"}


def test_semicolon_delimiter(db, tmp_path):
    path = write(tmp_path / "in.csv", "id;name;price\n1;Ada, Countess;1,5\n2;Bob;2\n")
    import_csv(db, path, "t", delimiter=";")
    got = by_pk(db.get_table("t").select())
    assert got == [{"id": 1, "name": "Ada, Countess", "price": "1,5"},
                   {"id": 2, "name": "Bob", "price": "2"}]
    out = tmp_path / "out.csv"
    export_csv(db.get_table("t"), out, delimiter=";")
    assert read_rows(out, ";")[1] == ["1", "Ada, Countess", "1,5"]


def test_short_rows_are_padded_long_rows_rejected(db, tmp_path):
    path = write(tmp_path / "short.csv", "id,name,age\n1,Ada\n\n2,Bob,5\n")
    assert import_csv(db, path, "short") == 2, "the blank line is skipped"
    assert db.get_table("short").get(1) == {"id": 1, "name": "Ada", "age": None}
    path = write(tmp_path / "long.csv", 'id,name\n1,"two\nlines"\n2,Bob,extra\n')
    with pytest.raises(SchemaValidationError, match=r"line 4\b"):
        import_csv(db, path, "long")
    assert "long" not in db.list_tables()


def test_errors_name_the_line_a_multi_line_record_starts_on(db, tmp_path):
    path = write(tmp_path / "in.csv", 'id,note,qty\n1,"a\nb",1\n2,"c\nd\ne",x\n')
    with pytest.raises(SchemaValidationError, match=r"line 4, column 'qty'"):
        import_csv(db, path, "t", schema={"note": str, "qty": int})
    path = write(tmp_path / "long.csv", 'id,note\n1,"a\nb"\n2,"c\nd",extra\n')
    with pytest.raises(SchemaValidationError, match=r"line 4\b"):
        import_csv(db, path, "t")
    assert db.list_tables() == []


def test_utf8_bom_is_dropped_from_the_header(db, tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffid,name\n1,Ada\n".encode("utf-8"))
    import_csv(db, path, "t")
    assert db.get_table("t").get(1) == {"id": 1, "name": "Ada"}


def test_empty_file_gives_an_empty_table(db, tmp_path):
    path = write(tmp_path / "in.csv", "id,name\n")
    assert import_csv(db, path, "t") == 0
    assert "t" in db.list_tables() and db.get_table("t").count() == 0


# ---------------------------------------------------------------------- schema
def test_schema_converts_each_column(db, tmp_path):
    path = write(tmp_path / "in.csv",
                 "id,name,qty,price,ok,tags\n"
                 "1,Ada,3,2,TRUE,\"[1, \"\"x\"\"]\"\n"
                 "2,,0,0.5,no,[]\n"
                 "3,007,-1,1e2,1,[null]\n")
    schema = {"name": str, "qty": int, "price": float, "ok": bool, "tags": list}
    assert import_csv(db, path, "t", schema=schema) == 3
    got = by_pk(db.get_table("t").select())
    assert got == [
        {"id": 1, "name": "Ada", "qty": 3, "price": 2.0, "ok": True, "tags": [1, "x"]},
        {"id": 2, "name": "", "qty": 0, "price": 0.5, "ok": False, "tags": []},
        {"id": 3, "name": "007", "qty": -1, "price": 100.0, "ok": True, "tags": [None]}]
    assert type(got[0]["price"]) is float and type(got[2]["ok"]) is bool


@pytest.mark.parametrize("cell, column", [("3.5", "qty"), ("maybe", "ok"), ("", "qty")])
def test_schema_bad_value_names_file_line_column_and_creates_nothing(db, tmp_path, cell, column):
    other = "qty" if column == "ok" else "ok"
    good = {"qty": "1", "ok": "yes"}
    bad = dict(good, **{column: cell})
    path = write(tmp_path / "bad.csv",
                 f"id,qty,ok\n1,{good['qty']},{good['ok']}\n2,{bad['qty']},{bad['ok']}\n")
    assert other != column
    with pytest.raises(SchemaValidationError) as info:
        import_csv(db, path, "t", schema={"qty": int, "ok": bool})
    text = str(info.value)
    assert "bad.csv" in text and "line 3" in text and repr(column) in text
    assert db.list_tables() == []


def test_schema_and_header_must_agree(db, tmp_path):
    path = write(tmp_path / "in.csv", "id,name,extra\n1,a,b\n")
    with pytest.raises(SchemaValidationError, match="extra"):
        import_csv(db, path, "t", schema={"name": str})
    with pytest.raises(SchemaValidationError, match="age"):
        import_csv(db, path, "t", schema={"name": str, "extra": str, "age": int})
    assert db.list_tables() == []
    assert import_csv(db, path, "t", schema={"name": str}, skip_validation=True) == 1
    assert db.get_table("t").get(1) == {"id": 1, "name": "a", "extra": "b"}


def test_string_primary_key_with_schema(db, tmp_path):
    path = write(tmp_path / "in.csv", "sku,qty\n0042,1\nB-7,2\n")
    import_csv(db, path, "t", primary_key="sku", schema={"sku": str, "qty": int})
    assert db.get_table("t").get("0042") == {"sku": "0042", "qty": 1}


# ---------------------------------------------------------- failures roll back
def test_duplicate_key_in_file_leaves_no_table(db, tmp_path):
    path = write(tmp_path / "in.csv", "id,name\n1,Ada\n2,Bob\n1,Cy\n")
    with pytest.raises(DuplicateKeyError):
        import_csv(db, path, "t")
    assert db.list_tables() == []


def test_empty_primary_key_cell_is_an_error(db, tmp_path):
    path = write(tmp_path / "in.csv", "id,name\n1,Ada\n,Bob\n")
    with pytest.raises(SchemaValidationError, match=r"line 3.*'id'"):
        import_csv(db, path, "t")
    assert db.list_tables() == []


def test_existing_table_is_refused_and_untouched(db, tmp_path):
    t = db.create_table("t")
    t.insert({"id": 1, "name": "keep"})
    path = write(tmp_path / "in.csv", "id,name\n2,new\n")
    with pytest.raises(DuplicateTableError):
        import_csv(db, path, "t")
    assert t.select() == [{"id": 1, "name": "keep"}]


def test_failed_insert_drops_the_new_table(db, tmp_path, monkeypatch):
    path = write(tmp_path / "in.csv", "id,name\n1,Ada\n")
    created = []
    real_create = DictDB.create_table

    def create_then_break(self, *a, **kw):
        table = real_create(self, *a, **kw)
        created.append(table)

        def broken_insert(*_a, **_kw):
            raise RuntimeError("insert failed")
        monkeypatch.setattr(table, "insert", broken_insert)
        return table

    monkeypatch.setattr(DictDB, "create_table", create_then_break)
    with pytest.raises(RuntimeError, match="insert failed"):
        import_csv(db, path, "t")
    assert len(created) == 1
    assert db.list_tables() == []


# ---------------------------------------------------------------------- export
@pytest.fixture
def people(db):
    t = db.create_table("people")
    t.insert([{"name": "Ada", "age": 36, "tags": ["x", 1]},
              {"age": 17, "name": "Bob", "city": "Paris"},
              {"name": "Cy", "age": 52, "city": None, "meta": {"a": {"b": True}}}])
    return t


def test_export_header_is_pk_first_then_first_seen_keys(people, tmp_path):
    path = tmp_path / "out.csv"
    assert export_csv(people, path) == 3
    assert read_rows(path) == [
        ["id", "name", "age", "tags", "city", "meta"],
        ["1", "Ada", "36", '["x", 1]', "", ""],
        ["2", "Bob", "17", "", "Paris", ""],
        ["3", "Cy", "52", "", "", '{"a": {"b": true}}']]


def test_export_with_where_and_columns(people, tmp_path):
    path = tmp_path / "out.csv"
    n = export_csv(people, path, where=people.age > 20, columns=["name", "city", "nope"])
    assert n == 2
    assert read_rows(path) == [["name", "city", "nope"], ["Ada", "", ""], ["Cy", "", ""]]


def test_export_of_given_records(people, tmp_path):
    path = tmp_path / "out.csv"
    recs = people.select(columns=["name"], order_by="-age")
    assert export_csv(people, path, records=recs) == 3
    assert read_rows(path) == [["name"], ["Cy"], ["Ada"], ["Bob"]]
    with pytest.raises(ValueError):
        export_csv(people, path, records=recs, where=people.age > 1)


def test_export_of_no_records_writes_the_header(db, tmp_path):
    t = db.create_table("t", schema={"name": str})
    path = tmp_path / "out.csv"
    assert export_csv(t, path) == 0
    assert read_rows(path) == [["id", "name"]]


# ---------------------------------------------------------- atomic replacement
def leftovers(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".tmp"))


def test_failed_rename_leaves_the_target_and_no_temp_file(people, tmp_path, monkeypatch):
    path = write(tmp_path / "out.csv", "old content\n")

    def no_replace(src, dst):
        assert os.path.exists(src), "the data is written to a temp file first"
        raise OSError("disk on fire")

    with monkeypatch.context() as m:
        m.setattr(csv_io.os, "replace", no_replace)
        with pytest.raises(OSError, match="disk on fire"):
            export_csv(people, path)
    assert open(path).read() == "old content\n"
    assert leftovers(tmp_path) == []


def test_unwritable_value_leaves_the_target_and_no_temp_file(people, tmp_path):
    path = write(tmp_path / "out.csv", "old content\n")
    recs = [{"id": 1, "ok": "fine"}, {"id": 2, "ok": {1, 2}}]
    with pytest.raises(TypeError, match=r"row 1, column 'ok'"):
        export_csv(people, path, records=recs)
    with pytest.raises(UnicodeEncodeError):
        export_csv(people, path, encoding="ascii", records=[{"name": "Zoë"}])
    assert open(path).read() == "old content\n"
    assert leftovers(tmp_path) == []


def test_export_replaces_and_keeps_permissions(people, tmp_path):
    path = write(tmp_path / "out.csv", "old content\n")
    os.chmod(path, 0o640)
    export_csv(people, path)
    assert read_rows(path)[0][0] == "id"
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert leftovers(tmp_path) == []


def test_api_methods_delegate(db_name, tmp_path):
    from dictdb_shm import DictDB
    db = DictDB(db_name)
    path = tmp_path / "people.csv"
    path.write_text("id,name,age\n1,Ada,36\n2,Bob,17\n")
    assert db.import_csv(str(path), "people") == 2
    people = db.get_table("people")
    assert people.get(1) == {"id": 1, "name": "Ada", "age": 36}
    out = tmp_path / "adults.csv"
    assert people.export_csv(str(out), where=people.age >= 18) == 1
    assert out.read_text().splitlines() == ["id,name,age", "1,Ada,36"]
    db.close()
