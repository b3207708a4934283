"""CSV files in and out of tables.

Owns: reading a CSV file into a new table (parsing, per-column type
inference, conversion to a schema's types) and writing records to a CSV file
atomically.  Must never: touch shared memory or locks directly; it uses the
public DictDB/Table API only (``list_tables``, ``create_table``,
``drop_table``, ``insert``, ``select``, ``primary_key_name``,
``schema_fields``), so an import is one ordinary all-or-nothing ``insert``.

Import semantics (DictDB's where DictDB defines them):

* The whole file is parsed and converted before the table is created, so a
  bad file creates nothing.  If the insert itself fails (duplicate key,
  schema violation, unstorable value), the new table is dropped again and the
  error re-raised: a failed import leaves no table behind.
* Without a header (``has_header=False``) columns are named ``col_0``,
  ``col_1``, ... (DictDB's names); the first row fixes the column count.
* Type inference (``infer_types=True``, no schema) is per column: int when
  every non-empty cell is an integer that msgpack can store (-2**63 to
  2**64-1), else float when every non-empty cell is a decimal or exponent
  number (or nan / inf), else str.  An integer too large to store makes its
  column str rather than float, so no digit is lost.  Numbers must be plain ASCII numerals
  (surrounding spaces allowed, no ``1_000``); leading zeros do not prevent int
  (``007`` -> 7: give a schema or ``infer_types=False`` to keep such codes as
  text).  Booleans and JSON are never inferred.  A column with no non-empty
  cell counts as int, so its cells are all None.
* Empty cells, as in DictDB: None in a non-str column (int, float, bool,
  ...), ``""`` in a str column and whenever values are left as text (no
  schema and ``infer_types=False``, or a column the schema does not name);
  ``b""`` in a bytes column (the base64 of no bytes).
  An empty primary-key cell is an error.
* With ``schema`` every column it names is converted to its type: int and
  float as above, str verbatim, bool from true/false/1/0/yes/no (any case),
  list/dict/tuple from JSON text, bytes from base64, NoneType from an empty
  cell only.  The primary key joins the schema as int when it is absent (the
  table's rule).  A value that does not convert, an empty cell in a column
  whose type is not str/bytes/NoneType, a header column the schema lacks or a
  schema field the header lacks raises SchemaValidationError naming the file,
  line and column.  ``skip_validation=True`` turns off the checks the table
  would make (empty cells then become None, other columns stay text) but not
  conversion errors: there is no value to store for ``"abc"`` in an int
  column.
* Short rows are padded with empty cells (DictDB pads), so missing trailing
  fields follow the empty-cell rule.  A row with more fields than the header
  raises SchemaValidationError with its line number.  Blank lines are
  skipped.  A UTF-8 byte-order mark before the header is dropped.
* A primary-key column, when present, supplies the keys (after conversion);
  when absent the insert assigns integer keys.

Export semantics:

* Columns are the given list, else every key of the records in first-seen
  order with the primary key first; with no records and no columns, the
  table's schema fields (primary key first) or just the primary key.
* A missing field and None both give an empty cell; str as is; bool as
  ``True``/``False``; int and float as Python writes them (floats round-trip
  exactly); list, tuple and dict as JSON text; bytes as base64.  Anything else
  raises InvalidArgumentError (also a TypeError) naming the row and column.
* The file is written to a temporary file in the target's directory, flushed
  and fsynced, then renamed over the target, so a crash or an error never
  leaves a half-written file; on error the temporary file is removed and the
  target is as before.  An existing target keeps its permission bits.

Round trips (export then import) give equal records when every column's
type is what inference finds, or when a schema is given; text that looks
like a number, None in a str column (comes back ``""``), and lists/dicts
without a schema (come back as JSON text) are the exceptions.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
import os
import re
import secrets
import stat
from typing import Any, Callable, Iterable, Mapping, Sequence

from dictdb_shm.errors import DuplicateTableError, InvalidArgumentError, SchemaValidationError

# A DictDB and a Table, known here only by the calls made on them (the core
# imports this module, so it cannot import the core).
Database = Any
TableHandle = Any

__all__ = ["import_csv", "export_csv"]

Record = dict[str, Any]
_NO = object()                                   # "does not convert"
_MSGPACK_INT_MIN, _MSGPACK_INT_MAX = -(1 << 63), (1 << 64) - 1
_INT_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*")
_FLOAT_TEXT = re.compile(
    r"\s*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf|infinity)\s*",
    re.IGNORECASE)
_BOOL_TEXT = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_BOM = "\ufeff"


# ----------------------------------------------------------------- cell parsers
# Each takes a non-empty cell and returns the value, or _NO when it does not
# convert.

def _to_int(text: str) -> Any:
    if _INT_TEXT.fullmatch(text):
        value = int(text)
        if _MSGPACK_INT_MIN <= value <= _MSGPACK_INT_MAX:
            return value
    return _NO


def _to_float(text: str) -> Any:
    return float(text) if _FLOAT_TEXT.fullmatch(text) else _NO


def _to_str(text: str) -> Any:
    return text


def _to_bool(text: str) -> Any:
    return _BOOL_TEXT.get(text.strip().lower(), _NO)


def _json_of(kind: type, build: Callable[[Any], Any] = lambda v: v) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = json.loads(text)
        except ValueError:
            return _NO
        return build(value) if isinstance(value, kind) else _NO
    return parse


def _to_bytes(text: str) -> Any:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return _NO


def _to_none(text: str) -> Any:
    return _NO          # only an empty cell is None, and empty cells never get here


_PARSERS: dict[type, Callable[[str], Any]] = {
    int: _to_int, float: _to_float, str: _to_str, bool: _to_bool, bytes: _to_bytes,
    list: _json_of(list), dict: _json_of(dict), tuple: _json_of(list, tuple),
    type(None): _to_none,
}
_SHOWN_AS = {bytes: "bytes (base64)", list: "list (JSON array)", dict: "dict (JSON object)",
             tuple: "tuple (JSON array)", type(None): "None (an empty cell)"}


def _at(path: str, line: int | None = None, column: str | None = None) -> str:
    where = repr(path)
    if line is not None:
        where += f", line {line}"
    if column is not None:
        where += f", column {column!r}"
    return where


# -------------------------------------------------------------------- reading
def _read(path: str, delimiter: str, has_header: bool,
          encoding: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The column names and the ``(first line number, cells)`` of each data
    row, padded to the header's width."""
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    with open(path, newline="", encoding=encoding) as f:
        reader = csv.reader(f, delimiter=delimiter)
        end = 0
        try:
            for cells in reader:
                line, end = end + 1, reader.line_num
                if not cells:
                    continue                                    # blank line
                if header is None:
                    if has_header:
                        header = cells
                        if header[0].startswith(_BOM):
                            header[0] = header[0][len(_BOM):]
                        _check_header(path, line, header)
                        continue
                    header = [f"col_{i}" for i in range(len(cells))]
                if len(cells) > len(header):
                    raise SchemaValidationError(
                        f"{_at(path, line)}: {len(cells)} fields, but the "
                        f"{'header names' if has_header else 'first row has'} "
                        f"{len(header)}",
                        hint="remove the extra fields (a trailing delimiter counts as one)")
                if len(cells) < len(header):
                    cells.extend([""] * (len(header) - len(cells)))
                rows.append((line, cells))
        except csv.Error as exc:
            raise SchemaValidationError(f"{_at(path, end + 1)}: not valid CSV: {exc}",
                                        hint="check the quoting and the delimiter") from None
        except UnicodeDecodeError as exc:
            exc.add_note(f"while reading {path!r} after line {end} as {encoding}; "
                         "pass encoding= to import_csv")
            raise
    return header or [], rows


def _check_header(path: str, line: int, header: list[str]) -> None:
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise SchemaValidationError(f"{_at(path, line)}: the header repeats column(s) {dupes}",
                                    hint="give every column its own name")


def _schema_parsers(path: str, header: list[str], schema: Mapping[str, type],
                    primary_key: str, skip_validation: bool) -> list[Callable[[str], Any] | None]:
    """Per column, the parser of its schema type (None: keep the text), after
    checking the header against the schema the table will have."""
    full = dict(schema)
    full.setdefault(primary_key, int)        # the table adds the key this way
    for field, typ in full.items():
        if typ not in _PARSERS:
            raise SchemaValidationError(
                f"schema field {field!r} has type {typ!r}, which a CSV cell cannot become",
                hint=f"use one of: {', '.join(t.__name__ for t in _PARSERS)}")
    if not skip_validation:
        extra = [c for c in header if c not in full]
        if extra:
            raise SchemaValidationError(f"{_at(path)}: column(s) {extra} are not in the schema",
                                        hint="add them to the schema or remove them from the file")
        missing = [f for f in full if f not in header and f != primary_key]
        if missing:
            raise SchemaValidationError(f"{_at(path)}: schema field(s) {missing} have no column",
                                        hint="add the column(s) to the file")
        if primary_key not in header and full[primary_key] is not int:
            raise SchemaValidationError(
                f"{_at(path)}: no primary-key column {primary_key!r}, so keys would be "
                f"auto-assigned ints, but the schema types it {full[primary_key].__name__}",
                hint="add the key column to the file")
    return [_PARSERS[full[c]] if c in full else None for c in header]


def _inferred_parsers(header: list[str],
                      rows: list[tuple[int, list[str]]]) -> list[Callable[[str], Any]]:
    order = (_to_int, _to_float, _to_str)
    parsers = []
    for i in range(len(header)):
        rank = 0
        for _, cells in rows:
            text = cells[i]
            if text == "" or _to_int(text) is not _NO:
                continue
            if _INT_TEXT.fullmatch(text):
                rank = 2              # an integer past 64 bits: keep its digits as text
            elif _to_float(text) is not _NO:
                rank = max(rank, 1)
            else:
                rank = 2
            if rank == 2:
                break
        parsers.append(order[rank])
    return parsers


def _records(path: str, header: list[str], rows: list[tuple[int, list[str]]],
             parsers: Sequence[Callable[[str], Any] | None], schema: Mapping[str, type] | None,
             primary_key: str, skip_validation: bool) -> list[Record]:
    # What an empty cell becomes, per column: "" for text, else None; with a
    # schema, None where the schema does not allow it is an error (unless
    # validation is skipped).
    empty: list[Any] = []
    for parse in parsers:
        if parse is None or parse is _to_str:
            empty.append("")
        elif parse is _to_bytes:
            empty.append(b"")
        elif schema is not None and parse is not _to_none and not skip_validation:
            empty.append(_NO)
        else:
            empty.append(None)
    out = []
    for line, cells in rows:
        record: Record = {}
        for column, parse, blank, text in zip(header, parsers, empty, cells):
            if text == "":
                if column == primary_key:
                    raise SchemaValidationError(
                        f"{_at(path, line, column)}: the primary key is empty",
                        hint="give every row a key, or drop the column to have keys assigned")
                if blank is _NO:
                    typ = _type_of(parse)
                    raise SchemaValidationError(
                        f"{_at(path, line, column)}: empty cell, but the schema types the "
                        f"column {typ.__name__}, which does not allow None",
                        hint="fill the cell, or type the column str")
                record[column] = blank
                continue
            if parse is None:
                record[column] = text
                continue
            value = parse(text)
            if value is _NO:
                typ = _type_of(parse)
                raise SchemaValidationError(
                    f"{_at(path, line, column)}: cannot convert {text!r} to "
                    f"{_SHOWN_AS.get(typ, typ.__name__)}",
                    hint="fix the value or change the column's type in the schema")
            record[column] = value
        out.append(record)
    return out


def _type_of(parse: Callable[[str], Any] | None) -> type:
    return next(t for t, p in _PARSERS.items() if p is parse)


def import_csv(db: Database, path: str | os.PathLike, table_name: str, *,
               primary_key: str = "id", delimiter: str = ",", has_header: bool = True,
               encoding: str = "utf-8", schema: Mapping[str, type] | None = None,
               infer_types: bool = True, skip_validation: bool = False) -> int:
    """Create table ``table_name`` in ``db`` from the CSV file at ``path``
    and return the number of rows inserted.

    The file is parsed and converted first (see the module docstring for the
    rules); then the table is created with ``primary_key`` and ``schema`` and
    every row goes in with one atomic insert.  On any error nothing is left
    behind: DuplicateTableError when the table exists, SchemaValidationError
    (file, line, column) for content that does not fit, DuplicateKeyError
    for a repeated key.
    """
    path = os.fspath(path)
    if table_name in db.list_tables():           # fail before reading a large file
        raise DuplicateTableError(f"table {table_name!r} already exists in database {db.name!r}")
    header, rows = _read(path, delimiter, has_header, encoding)
    parsers: Sequence[Callable[[str], Any] | None]
    if schema is not None:
        parsers = _schema_parsers(path, header, schema, primary_key, skip_validation)
    elif infer_types:
        parsers = _inferred_parsers(header, rows)
    else:
        parsers = [None] * len(header)
    records = _records(path, header, rows, parsers, schema, primary_key, skip_validation)
    del rows

    table = db.create_table(table_name, primary_key=primary_key, schema=schema)
    if not records:
        return 0
    try:
        keys = table.insert(records, skip_validation=skip_validation)
    except BaseException as exc:
        try:
            db.drop_table(table_name)
        except Exception as drop_exc:  # keep the insert's error; say what is left
            exc.add_note(f"and dropping the half-made table {table_name!r} failed: {drop_exc!r}")
        raise
    return len(keys)


# -------------------------------------------------------------------- writing
def _cell(value: Any, column: str, row: int) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    if isinstance(value, (list, tuple, dict)):
        try:
            return json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(
                f"row {row}, column {column!r}: {type(value).__name__} value "
                            f"cannot be written as JSON: {exc}") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise InvalidArgumentError(
        f"row {row}, column {column!r}: cannot write a {type(value).__name__} "
                    f"({value!r}) to CSV; convert it to str, a number or JSON-able data first")


def _header(table: TableHandle | None, records: list[Mapping[str, Any]]) -> list[str]:
    pk = table.primary_key_name() if table is not None else None
    if not records:
        if table is None:
            return []
        fields = table.schema_fields() or [pk]
    else:
        fields = list(dict.fromkeys(k for r in records for k in r))
    if pk in fields:
        fields.remove(pk)
        fields.insert(0, pk)
    return fields  # type: ignore[return-value]


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def export_csv(table: TableHandle | None, path: str | os.PathLike, *,
               records: Iterable[Mapping[str, Any]] | None = None,
               columns: Sequence[str] | None = None, where: Any = None,
               delimiter: str = ",", encoding: str = "utf-8") -> int:
    """Write ``records`` (default: ``table.select(where=where)``) to the CSV
    file at ``path``, replacing it atomically, and return the number of data
    rows written (the header row not counted).

    ``columns`` picks and orders the columns; fields of a record that are not
    among them are left out.  ``table`` may be None when ``records`` is given
    (there is then no primary key to put first).
    """
    if records is None:
        if table is None:
            raise InvalidArgumentError("export_csv needs a table or records=")
        rows: list[Mapping[str, Any]] = table.select(where=where)
    elif where is not None:
        raise InvalidArgumentError(
            "pass records= or where=, not both (filter the records yourself)")
    else:
        rows = list(records)
        for i, r in enumerate(rows):
            if not isinstance(r, Mapping):
                raise InvalidArgumentError(f"records[{i}] is a {type(r).__name__}, not a dict")
    if columns is not None:
        if isinstance(columns, str):
            raise InvalidArgumentError("columns must be a list of field names, not one str")
        header = list(columns)
        dupes = sorted({c for c in header if header.count(c) > 1})
        if dupes:
            raise InvalidArgumentError(f"columns repeats {dupes}")
    else:
        header = _header(table, rows)

    target = os.path.realpath(os.fspath(path))   # through a symlink, to the real file
    directory, name = os.path.split(target)
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            pass
        else:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding=encoding, newline="") as f:
            fd = -1                                   # the file object owns it now
            writer = csv.writer(f, delimiter=delimiter)
            writer.writerow(header)
            for i, r in enumerate(rows):
                writer.writerow([_cell(r.get(c), c, i) for c in header])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)
    return len(rows)
