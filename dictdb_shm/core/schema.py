"""Table schemas: DictDB's ``{field: type}`` dicts, validated and stored.

Owns: turning a schema into catalog metadata and back, and validating a
record against it.  Must never: touch storage.

Semantics follow DictDB: with a schema, a record must have every schema
field, each value an instance of its type, and no other field; the primary
key joins the schema as ``int`` when the schema does not name it.  Types are
stored by name, so only the types below can appear in a schema (every
process must rebuild the same check from the catalog).  A ``tuple`` field also
accepts a list: tuples are stored as msgpack arrays and read back as lists,
so a stored record must still pass the check when it is updated.
"""

from __future__ import annotations

from typing import Any, Mapping

from dictdb_shm.errors import SchemaValidationError

TYPES: dict[str, type] = {t.__name__: t for t in (int, float, str, bool, bytes, list, dict,
                                                  tuple, type(None))}
Schema = Mapping[str, type]


def encode_schema(schema: Schema | None, primary_key: str) -> dict[str, str] | None:
    if schema is None:
        return None
    if not isinstance(schema, Mapping):
        raise SchemaValidationError(f"schema must be a dict of field -> type, got {schema!r}")
    out: dict[str, str] = {}
    for field, typ in schema.items():
        if not isinstance(field, str):
            raise SchemaValidationError(f"schema field names must be str, got {field!r}")
        name = getattr(typ, "__name__", None)
        if name not in TYPES or TYPES[name] is not typ:
            raise SchemaValidationError(
                f"schema field {field!r} has type {typ!r}, which cannot be shared between "
                "processes", hint=f"use one of: {', '.join(TYPES)}")
        out[field] = name
    out.setdefault(primary_key, "int")
    return out


def decode_schema(stored: Mapping[str, str] | None) -> dict[str, type] | None:
    if stored is None:
        return None
    return {field: TYPES[name] for field, name in stored.items()}


def validate(record: Mapping[str, Any], schema: Mapping[str, type] | None, table: str) -> None:
    if schema is None:
        return
    for field, typ in schema.items():
        if field not in record:
            raise SchemaValidationError(f"table {table!r}: missing field {field!r} "
                                        "required by the schema")
        value = record[field]
        if not isinstance(value, typ) and not (typ is tuple and type(value) is list):
            raise SchemaValidationError(
                f"table {table!r}: field {field!r} expects {typ.__name__}, "
                f"got {type(value).__name__} ({value!r})")
    if len(record) != len(schema):
        extra = [f for f in record if f not in schema]
        raise SchemaValidationError(f"table {table!r}: field(s) {extra} are not in the schema")
