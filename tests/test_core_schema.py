"""Schemas (dictdb_shm.core.schema): DictDB's ``{field: type}`` dicts, stored in
the catalog by type name, and the check every write makes with them."""

from __future__ import annotations

import pytest

from dictdb_shm import DictDB, SchemaValidationError
from dictdb_shm.core import schema as S

ALL_TYPES = {"i": int, "f": float, "s": str, "b": bool, "raw": bytes, "l": list, "d": dict,
             "t": tuple, "n": type(None)}


# ------------------------------------------------------------ encode / decode
def test_every_shareable_type_round_trips_by_name():
    stored = S.encode_schema(ALL_TYPES, "id")
    assert stored == {"i": "int", "f": "float", "s": "str", "b": "bool", "raw": "bytes",
                      "l": "list", "d": "dict", "t": "tuple", "n": "NoneType", "id": "int"}
    assert S.decode_schema(stored) == {**ALL_TYPES, "id": int}


def test_the_primary_key_joins_as_int_unless_the_schema_names_it():
    assert S.encode_schema({"name": str}, "id") == {"name": "str", "id": "int"}
    assert S.encode_schema({"code": str, "name": str}, "code") == {"code": "str",
                                                                   "name": "str"}


def test_no_schema_stays_none():
    assert S.encode_schema(None, "id") is None and S.decode_schema(None) is None


@pytest.mark.parametrize("schema, words", [
    ([("a", int)], "schema must be a dict"),
    ({1: int}, "field names must be str"),
    ({"a": set}, "cannot be shared between processes"),
    ({"a": "int"}, "cannot be shared between processes"),
    ({"a": type("int", (), {})}, "cannot be shared between processes"),   # a fake "int"
    ({"a": list[int]}, "cannot be shared between processes"),
])
def test_a_schema_that_cannot_be_stored_is_refused(schema, words):
    with pytest.raises(SchemaValidationError, match=words) as info:
        S.encode_schema(schema, "id")
    if "shared" in words:
        assert "use one of: int, float, str, bool, bytes, list, dict, tuple, NoneType" \
            in str(info.value)


# ------------------------------------------------------------------ validate
SCHEMA = {"id": int, "name": str, "score": float}


def test_a_matching_record_passes_and_none_means_no_check():
    S.validate({"id": 1, "name": "Ada", "score": 2.5}, SCHEMA, "t")
    S.validate({"anything": object()}, None, "t")


@pytest.mark.parametrize("record, words", [
    ({"id": 1, "name": "Ada"}, "missing field 'score' required by the schema"),
    ({"id": 1, "name": "Ada", "score": "high"},
     "field 'score' expects float, got str ('high')"),
    ({"id": 1, "name": "Ada", "score": 2.5, "extra": 1}, "field(s) ['extra'] are not in the schema"),
    ({"id": "1", "name": "Ada", "score": 2.5}, "field 'id' expects int, got str"),
])
def test_a_record_that_does_not_match_names_the_table_and_field(record, words):
    with pytest.raises(SchemaValidationError) as info:
        S.validate(record, SCHEMA, "people")
    assert str(info.value).startswith("table 'people': ") and words in str(info.value)


def test_types_are_checked_with_isinstance_as_in_dictdb():
    S.validate({"n": True}, {"n": int}, "t")               # a bool is an int
    with pytest.raises(SchemaValidationError):
        S.validate({"n": 1}, {"n": float}, "t")             # an int is not a float
    S.validate({"n": None}, {"n": type(None)}, "t")


def test_the_tuple_rule_a_tuple_field_takes_the_list_it_reads_back_as():
    """Tuples are stored as msgpack arrays and read back as lists, so a tuple
    field takes both; a list field still refuses a tuple."""
    S.validate({"p": (1, 2)}, {"p": tuple}, "t")
    S.validate({"p": [1, 2]}, {"p": tuple}, "t")
    S.validate({"p": [1, 2]}, {"p": list}, "t")
    with pytest.raises(SchemaValidationError, match="expects list, got tuple"):
        S.validate({"p": (1, 2)}, {"p": list}, "t")
    with pytest.raises(SchemaValidationError, match="expects tuple, got str"):
        S.validate({"p": "12"}, {"p": tuple}, "t")


def test_a_record_stored_under_a_tuple_schema_can_be_updated():
    with DictDB() as db:
        db.create_table("t", schema={"pair": tuple, "n": int})
        t = db.get_table("t")
        t.insert({"pair": (1, 2), "n": 1})
        t.update({"n": 2})
        assert t.get(1)["n"] == 2


def test_a_table_keeps_its_schema_for_every_process_through_the_catalog(db_name):
    db = DictDB(db_name)
    db.create_table("t", schema={"name": str, "tags": list})
    other = DictDB.attach(db_name).get_table("t")
    assert other.schema == {"name": str, "tags": list, "id": int}
    with pytest.raises(SchemaValidationError, match="expects list, got str"):
        other.insert({"name": "Ada", "tags": "x"})
    assert other.insert({"name": "Ada", "tags": ["x"]}) == 1
    db.close()
