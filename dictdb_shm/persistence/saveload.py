"""``db.save`` and ``DictDB.load``: a database to a file and back.

Owns: the order of a save (one consistent capture of every table, then the
encoding outside the locks into an atomically written file) and of a load
(the whole file read and checked first, then a new database made and
filled, and removed again if filling fails).  Must never: leave a
half-written file at the target or a half-made database in /dev/shm, or
keep a second full copy of a table as Python objects while saving.
"""

from __future__ import annotations

import operator
import os
from itertools import repeat
from typing import Any, Callable, Iterable

from dictdb_shm import names
from dictdb_shm.coordinator import client
from dictdb_shm.errors import (CorruptionError, DatabaseExistsError, DuplicateKeyError,
                               DuplicateTableError,
                               FileAccessError, InvalidArgumentError, InvalidNameError,
                               RecordTooLargeError, SchemaValidationError, TableNotFoundError,
                               UnstorableValueError)
from dictdb_shm.persistence import formats
from dictdb_shm.persistence.atomic import atomic_file
from dictdb_shm.persistence.capture import DEFAULT_TIMEOUT, TableImage, capture, gc_paused

# What a table refuses because of the file's content (anything else, such as
# a full /dev/shm, is raised as it is).
CONTENT_ERRORS = (DuplicateKeyError, DuplicateTableError, SchemaValidationError, UnstorableValueError,
                  RecordTooLargeError, InvalidArgumentError, InvalidNameError)
CAPTURE_ATTEMPTS = 5          # a table dropped mid-capture: list the tables again


def fspath(path: Any) -> str:
    try:
        return os.fspath(path)
    except TypeError:
        raise InvalidArgumentError(f"a path must be a str or os.PathLike, not "
                                   f"{type(path).__name__}") from None


def images_of(att: Any, timeout: float = DEFAULT_TIMEOUT) -> list[TableImage]:
    """Every table of the attachment ``att`` as of one instant."""
    for attempt in range(CAPTURE_ATTEMPTS):
        entries = [e for e in att.catalog.entries() if not names.is_cache_table(e.name)]
        try:
            return capture([(e.name, e.meta, att.table(e)[1]) for e in entries], timeout)
        except TableNotFoundError:
            if attempt == CAPTURE_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def write_file(path: str, images: Iterable[TableImage], file_format: str,
               progress: Callable[[int], None] | None = None) -> None:
    """Write ``images`` to ``path`` atomically; OSError becomes FileAccessError."""
    try:
        with atomic_file(path) as f:
            formats.write(f, images, file_format, progress)
    except OSError as exc:
        raise FileAccessError(f"cannot write {path}: {exc.strerror or exc}") from None


def save(db: Any, path: Any, file_format: str = "json", *,
         progress: Callable[[int], None] | None = None) -> None:
    """Save every table of ``db`` to ``path`` (see the module docstring)."""
    fmt = formats.check_format(file_format)
    target = fspath(path)
    att = db._attachment()
    write_file(target, images_of(att, att.lock_timeout), fmt, progress)


def load(db_class: Any, path: Any, file_format: str = "json", *, name: str | None = None,
         progress: Callable[[int], None] | None = None) -> Any:
    """A new database holding the tables of the file at ``path``: the named
    database ``name`` (DatabaseExistsError when it exists), else a private one."""
    fmt = formats.check_format(file_format)
    source = fspath(path)
    tables = formats.read(source, fmt)
    if name is not None:
        names.check_db_name(name)
        if client.catalog_exists(name):
            raise DatabaseExistsError(f"database {name!r} already exists; load makes a new one")
    db = db_class(name) if name is not None else db_class()
    try:
        fill(db, tables, source, progress)
    except BaseException:
        db.destroy()
        raise
    return db


def fill(db: Any, tables: Iterable[formats.TableData], source: str,
         progress: Callable[[int], None] | None = None) -> None:
    """Create each table and fill it in one call; a record the table refuses
    is a CorruptionError naming ``source``.  A table read as segments (a
    version 2 pickle) is copied in as it is (StorageEngine.load_image); a
    table whose records all hold their primary key is built whole by the
    engine (StorageEngine.bulk_load: one pass, no per-record write work);
    others are one ordinary insert.  A journaled database takes the
    ordinary insert, which journals."""
    att = db._attachment()
    for td in tables:
        where = f"{source}: table {td.name!r}"
        try:
            db.create_table(td.name, primary_key=td.primary_key, schema=td.schema)
            table = db.get_table(td.name)
            if att.journal is None and td.built is not None:
                lock, store = att.table(att.catalog.find(td.name))
                with lock.write_lock():
                    store.load_image(td.built)
            elif not (att.journal is None and _bulk_load(att, table, td)):
                records = td.all_records()
                if records:
                    table.insert(records)
                for field, kind in td.indexes.items():
                    table.create_index(field, kind)
        except CONTENT_ERRORS as exc:
            raise CorruptionError(f"{where}: {exc.message}", hint=formats.FILE_HINT) from None
        if progress:
            progress(td.count)


def _bulk_load(att: Any, table: Any, td: formats.TableData) -> bool:
    """Fill the new ``table`` with ``td`` in one pass; False, having changed
    nothing, when a record lacks its primary key (insert assigns it)."""
    if td.schema is not None:
        if not all(map(operator.contains, td.records, repeat(td.primary_key))):
            return False                  # the schema check comes after key assignment
        for record in td.records:
            table.validate_record(record)
    lock, store = att.table(att.catalog.find(td.name))
    with lock.write_lock(), gc_paused():
        return store.bulk_load(td.records, td.primary_key, td.indexes)
