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

Pickle: a stream of pickles, read back through unpickler.py (plain data
only).  Version 2 (written now) keeps each table as the engine stores it,
so that loading is close to a file read: first ``{"format": PICKLE_FORMAT,
"version": 2, "layout": engine layout version, "tables": [{"name",
"primary_key", "schema", "indexes", "count"}, ...]}``, then for each table
``{"count", "next_pk", "dir_cap", "crc", "sections": [heap, offset log,
directory, index]}``: the sections a snapshot holds (snapshot.py), as bytes,
the heap being the live records' msgpack bodies behind their headers, and
``crc`` the crc32 of the four.  So the file holds no dicts: read it with
``DictDB.load``, or save as JSON for other tools.  Version 1 (read only):
the same header, then each table's records as lists of at most CHUNK
dicts, ``count`` records in all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import zlib
from itertools import repeat
from typing import Any, BinaryIO, Callable, Iterable

from dictdb_shm import names
from dictdb_shm.core import schema as schemas
from dictdb_shm.engine import layout as L
from dictdb_shm.errors import (CorruptionError, DictDBError, FileAccessError,
                               InvalidArgumentError, UnstorableValueError)
from dictdb_shm.persistence import snapshot, unpickler
from dictdb_shm.persistence.capture import TableImage, gc_paused

FORMATS = ("json", "pickle")
EXTENSIONS = {"json": "json", "pickle": "pkl"}
PICKLE_FORMAT = "dictdb_shm-pickle"
PICKLE_VERSION = 2
PICKLE_VERSIONS_READ = (1, 2)
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
    built: Any = None          # from a version 2 pickle: the segments (bulk.BuiltTable)
    count: int = -1            # records in the table (-1: len(records))

    def __post_init__(self) -> None:
        if self.count < 0:
            self.count = len(self.records)

    def all_records(self) -> list[dict]:
        """The records as dicts, decoded from the segments when the file held those."""
        if self.built is None:
            return self.records
        heap = bytes(self.built.heap)
        image = TableImage(self.name, {"pk": self.primary_key}, {}, heap, self.count,
                           self.built.next_pk, 0, 0)
        return [r for chunk in image.records() for r in chunk]


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
    header = {"format": PICKLE_FORMAT, "version": PICKLE_VERSION, "layout": L.LAYOUT_VERSION,
              "tables": [{"name": img.name, "primary_key": img.primary_key,
                          "schema": img.schema, "indexes": img.indexes, "count": img.count}
                         for img in images]}
    pickle.dump(header, f, protocol=PICKLE_PROTOCOL)
    for img in images:
        built = snapshot.built_image(img)          # one table's segments at a time
        if built.count != img.count:
            raise CorruptionError(f"table {img.name!r}: {built.count} live records found, "
                                  f"its descriptor says {img.count}")
        parts = snapshot.sections(built)
        crc = _crc_of(parts)
        # PickleBuffer: the C pickler writes each section from its buffer, no copy.
        pickle.dump({"count": built.count, "next_pk": built.next_pk, "dir_cap": built.dir_cap,
                     "crc": crc, "sections": [pickle.PickleBuffer(p) for p in parts]},
                    f, protocol=PICKLE_PROTOCOL)
        if progress:
            progress(img.count)


def _crc_of(parts: Iterable[Any]) -> int:
    """The crc32 of a version 2 table's sections, one after the other."""
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    return crc


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
    version = header.get("version")
    if version not in PICKLE_VERSIONS_READ:
        raise _bad(path, f"pickle format version {version!r}; this dictdb_shm reads "
                         f"{' and '.join(map(str, PICKLE_VERSIONS_READ))}")
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
        if version == 2:
            td = _table(path, head.get("name"), {**head, "records": []})
            td.built, td.count = _segments(f, path, td, count, header.get("layout"))
            out.append(td)
            continue
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


def _segments(f: BinaryIO, path: str, td: TableData, count: int, layout: Any) -> tuple:
    """(BuiltTable, count) of the next table of a version 2 pickle, checked."""
    where = f"table {td.name!r}"
    try:
        t = unpickler.load_one(f, path)
    except EOFError:
        raise _bad(path, f"{where} ends before its records (truncated)") from None
    if not isinstance(t, dict):
        raise _bad(path, f"{where}: its records are {type(t).__name__}, not a dict of sections")
    parts = t.get("sections")
    sizes = [t.get(k) for k in ("count", "next_pk", "dir_cap", "crc")]
    if not (isinstance(parts, list) and len(parts) == 4
            and all(isinstance(p, (bytes, bytearray)) for p in parts)
            and all(type(v) is int and v >= 0 for v in sizes)):
        raise _bad(path, f"{where}: its sections are not four byte strings with their sizes")
    if t["count"] != count:
        raise _bad(path, f"{where} holds {t['count']} records, the header says {count}")
    if _crc_of(parts) != t["crc"]:
        raise _bad(path, f"{where}: the checksum of its records does not match (damaged)")
    try:
        built = snapshot.from_sections(parts, count, t["dir_cap"], t["next_pk"], td.indexes,
                                       td.name, layout == L.LAYOUT_VERSION)
    except DictDBError as exc:
        raise _bad(path, f"{where} does not read back: {exc.message}") from None
    return built, count


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
