"""The save formats, both ways: DictDB's JSON layout and a pickle stream.

Owns: writing table images (capture.py) as a ``"json"`` or ``"pickle"``
file, chunk by chunk, and reading such a file back into checked table data,
with every problem a CorruptionError that names the file and what is wrong.
Must never: create tables or touch a database (saveload.py does), unpickle
without the restricted unpickler, or accept a file it has not checked whole.

JSON (DictDB's layout, so files move both ways between the two libraries)::

    {"tables": {name: {"primary_key": "id",
                       "schema": {field: "int" | "str" | ...} or null,
                       "indexes": {field: "hash" | "sorted"},      (ours; DictDB ignores it)
                       "records": [{...}, ...]}}}

JSON holds no bytes, and turns int dict keys into strings (as DictDB's save
does); a table holding bytes must be saved as pickle.

Pickle: a stream of pickles, so that a large table is written (and read)
in chunks: first ``{"format": PICKLE_FORMAT, "version": 1, "tables": [{"name",
"primary_key", "schema", "indexes", "count"}, ...]}``, then each table's
records as lists of at most CHUNK dicts, ``count`` records in all, then the
end of the file.  Read back through unpickler.py: plain data only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
from itertools import repeat
from typing import Any, BinaryIO, Callable, Iterable

from dictdb_shm import names
from dictdb_shm.core import schema as schemas
from dictdb_shm.errors import (CorruptionError, DictDBError, FileAccessError,
                               InvalidArgumentError, UnstorableValueError)
from dictdb_shm.persistence import unpickler
from dictdb_shm.persistence.capture import TableImage, gc_paused

FORMATS = ("json", "pickle")
EXTENSIONS = {"json": "json", "pickle": "pkl"}
PICKLE_FORMAT = "dictdb_shm-pickle"
PICKLE_VERSION = 1
PICKLE_PROTOCOL = 5
FILE_HINT = "the file is not a complete dictdb save file; restore it from a backup"

Progress = Callable[[int], None] | None


@dataclasses.dataclass
class TableData:
    """One table as a file holds it, checked."""

    name: str
    primary_key: str
    schema: dict[str, type] | None
    indexes: dict[str, str]
    records: list[dict]


def check_format(file_format: Any) -> str:
    fmt = file_format.lower() if isinstance(file_format, str) else file_format
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"file_format must be 'json' or 'pickle', not {file_format!r}")
    return fmt


def _bad(path: str, problem: str) -> CorruptionError:
    return CorruptionError(f"{path}: {problem}", hint=FILE_HINT)


# ------------------------------------------------------------------ writing
def write(f: BinaryIO, images: Iterable[TableImage], file_format: str,
          progress: Progress = None) -> None:
    (write_json if file_format == "json" else write_pickle)(f, list(images), progress)


def write_json(f: BinaryIO, images: list[TableImage], progress: Progress = None) -> None:
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    f.write(b'{"tables": {')
    for i, img in enumerate(images):
        head = {"primary_key": img.primary_key, "schema": img.schema, "indexes": img.indexes}
        f.write(("%s%s: %s, \"records\": [" % (", " if i else "", dumps(img.name),
                                                dumps(head)[:-1])).encode())
        first = True
        for chunk in img.records():
            try:
                text = dumps(chunk)
            except (TypeError, ValueError) as exc:
                raise UnstorableValueError(
                    f"table {img.name!r} cannot be saved as JSON: {exc}",
                    hint="save it with file_format='pickle', which keeps bytes") from None
            f.write((text[1:-1] if first else ", " + text[1:-1]).encode())
            first = False
            if progress:
                progress(len(chunk))
        f.write(b"]}")
    f.write(b"}}\n")


def write_pickle(f: BinaryIO, images: list[TableImage], progress: Progress = None) -> None:
    header = {"format": PICKLE_FORMAT, "version": PICKLE_VERSION, "tables": [
        {"name": img.name, "primary_key": img.primary_key, "schema": img.schema,
         "indexes": img.indexes, "count": img.count} for img in images]}
    pickle.dump(header, f, protocol=PICKLE_PROTOCOL)
    # Fast mode keeps no memo: records decoded from msgpack share no object
    # and hold no cycle, so the memo would only cost time, and without it
    # each chunk is a pickle of its own, as read_pickle reads them.
    pickler = pickle.Pickler(f, protocol=PICKLE_PROTOCOL)
    pickler.fast = True
    for img in images:
        written = 0
        for chunk in img.records():
            pickler.dump(chunk)
            written += len(chunk)
            if progress:
                progress(len(chunk))
        if written != img.count:
            raise CorruptionError(f"table {img.name!r}: {written} live records found, its "
                                  f"descriptor says {img.count}")


# ------------------------------------------------------------------ reading
def read(path: str | os.PathLike, file_format: str) -> list[TableData]:
    """Every table of the file at ``path``, checked whole.  FileNotFoundError
    when it is missing; CorruptionError for any other problem of its content;
    FileAccessError when it cannot be read."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as f, gc_paused():
            if file_format == "json":
                return read_json(f.read(), p)
            return read_pickle(f, p)
    except (FileNotFoundError, DictDBError):
        raise
    except OSError as exc:
        raise FileAccessError(f"cannot read {p}: {exc.strerror or exc}") from None


def read_json(data: bytes, path: str) -> list[TableData]:
    if not data.strip():
        raise _bad(path, "the file is empty")
    try:
        doc = json.loads(data)
    except UnicodeDecodeError:
        raise _bad(path, "not UTF-8 text, so not a JSON save file "
                         "(a pickle file? pass file_format='pickle')") from None
    except json.JSONDecodeError as exc:
        if exc.pos >= len(data.rstrip()):
            raise _bad(path, f"the JSON ends early at line {exc.lineno} (truncated)") from None
        raise _bad(path, f"not valid JSON: {exc.msg} at line {exc.lineno} column "
                         f"{exc.colno}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tables"), dict):
        raise _bad(path, 'no "tables" object at the top level')
    return [_table(path, name, t) for name, t in doc["tables"].items()]


def read_pickle(f: BinaryIO, path: str) -> list[TableData]:
    try:
        header = unpickler.load_one(f, path)
    except EOFError:
        raise _bad(path, "the file is empty") from None
    if not (isinstance(header, dict) and header.get("format") == PICKLE_FORMAT):
        raise _bad(path, "not a dictdb_shm pickle save file (no header)")
    if header.get("version") != PICKLE_VERSION:
        raise _bad(path, f"pickle format version {header.get('version')!r}; this "
                         f"dictdb_shm reads {PICKLE_VERSION}")
    heads = header.get("tables")
    if not isinstance(heads, list):
        raise _bad(path, "the header lists no tables")
    out = []
    for head in heads:
        if not isinstance(head, dict):
            raise _bad(path, "a table entry of the header is not a dict")
        count = head.get("count")
        if type(count) is not int or count < 0:
            raise _bad(path, f"table {head.get('name')!r} has no record count")
        records: list = []
        while len(records) < count:
            try:
                chunk = unpickler.load_one(f, path)
            except EOFError:
                raise _bad(path, f"table {head.get('name')!r} ends after {len(records)} of "
                                 f"{count} records (truncated)") from None
            if not isinstance(chunk, list):
                raise _bad(path, f"table {head.get('name')!r}: a chunk of records is "
                                 f"{type(chunk).__name__}, not a list")
            records.extend(chunk)
        if len(records) != count:
            raise _bad(path, f"table {head.get('name')!r} holds {len(records)} records, its "
                             f"header says {count}")
        out.append(_table(path, head.get("name"), {**head, "records": records}))
    if f.read(1):
        raise _bad(path, "bytes after the last table")
    return out


def schema_types(schema: Any, path: str, table: str) -> dict[str, type] | None:
    """A schema by type names (``{"id": "int"}``), checked, as types."""
    if schema is None:
        return None
    if not isinstance(schema, dict) or not all(
            isinstance(k, str) and v in schemas.TYPES for k, v in schema.items()):
        raise _bad(path, f"table {table!r}: schema must map fields to one of "
                         f"{', '.join(schemas.TYPES)}, not {schema!r:.80}")
    return schemas.decode_schema(schema)


def _table(path: str, name: Any, t: Any) -> TableData:
    try:
        names.check_table_name(name)
    except DictDBError:
        raise _bad(path, f"invalid table name {name!r}") from None
    where = f"table {name!r}"
    if not isinstance(t, dict):
        raise _bad(path, f"{where} is {type(t).__name__}, not an object")
    pk = t.get("primary_key", "id")
    if not isinstance(pk, str) or not pk:
        raise _bad(path, f"{where}: primary_key must be a field name, not {pk!r}")
    schema = schema_types(t.get("schema"), path, name)
    indexes = t.get("indexes") or {}
    if not isinstance(indexes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in indexes.items()):
        raise _bad(path, f"{where}: indexes must map fields to index kinds, "
                         f"not {indexes!r:.80}")
    records = t.get("records")
    if not isinstance(records, list):
        raise _bad(path, f"{where}: records must be a list, not {type(records).__name__}")
    if not all(map(isinstance, records, repeat(dict))):
        i = next(i for i, r in enumerate(records) if not isinstance(r, dict))
        raise _bad(path, f"{where}: record {i} is {type(records[i]).__name__}, not an object")
    return TableData(name, pk, schema, dict(indexes), records)
