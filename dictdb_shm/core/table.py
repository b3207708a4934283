"""Table: DictDB's table API over a StorageEngine (engine/__init__.py).

Owns: the meaning of each public table call (auto primary keys, schemas,
upsert rules, what update and delete match, select's shaping), and which
lock each call takes.  Must never: touch bytes or shared memory; it speaks to
the store through the StorageEngine interface only (``get``, ``read``,
``apply``, ``count``, ``next_auto_pk``, ``create_index``, ``lock``, and
inside ``read`` ``scan``, ``lookup`` and the index and search calls).

Every write call runs under the table's write lock and hands the store one
batch, which the store applies all-or-nothing.  Reads go through
``store.read``, which gives them one consistent state of the table without
taking a lock in the common case.
"""

from __future__ import annotations

import gc
from typing import Any, ClassVar, Mapping, Sequence

from dictdb_shm.core import planner
from dictdb_shm.core import schema as schemas
from dictdb_shm.core.index_views import IndexViews
from dictdb_shm.engine import DELETE, INSERT, PUT, StorageEngine, TableLocking
from dictdb_shm.parallel import query as parallel
from dictdb_shm.parallel.plan import check_workers, parts, parts_for
from dictdb_shm.errors import (DuplicateKeyError, InvalidArgumentError, RecordNotFoundError,
                               SchemaValidationError)
from dictdb_shm.persistence import tracking
from dictdb_shm.persistence.csv_io import export_csv
from dictdb_shm.query import (Aggregate, Compare, Field, aggregate_rows, as_predicate,
                              compile_predicate, normalize_paging, shape_rows)

Record = dict[str, Any]
_MISSING = object()
_GC_PAUSE_ROWS = 10_000
_ON_CONFLICT = ("update", "ignore", "error")


class Table:
    """A table of dicts shared by every process attached to its database.

    ``Table(name, primary_key="id", schema=None)`` makes a standalone table in
    a private database of its own; tables of a named database come from
    ``db.create_table`` / ``db.get_table``.  ``t.field`` and ``t["field"]``
    build query conditions (``t["count"]`` reaches a field whose name is also
    a method).  A Table pickles as the names to attach to.

    ``t.get(pk, default=None)`` is the point read by primary key, lock-free:
    it is the store's own ``get``, bound to the instance (the hottest call
    skips a layer).
    """

    # Set by core/database.py when it is imported: the database class that a
    # standalone Table creates and a pickled one reattaches through.  (This
    # module must not import it: database.py imports this one.)
    _database_type: ClassVar[Any] = None

    lock: TableLocking
    _store: StorageEngine

    def __init__(self, name: str, primary_key: str = "id",
                 schema: Mapping[str, type] | None = None) -> None:
        db = self._database_type()
        made = db.create_table(name, primary_key=primary_key, schema=schema)
        self._bind(db, name, {"pk": made.primary_key, "schema": schemas.encode_schema(
            made._schema, made.primary_key)}, made._store)

    @classmethod
    def _open(cls, db: Any, name: str, meta: Mapping[str, Any],
              store: StorageEngine) -> "Table":
        table = cls.__new__(cls)
        table._bind(db, name, meta, store)
        return table

    def _bind(self, db: Any, name: str, meta: Mapping[str, Any],
              store: StorageEngine) -> None:
        self._db = db
        self.table_name = name
        self.primary_key = meta["pk"]
        self._schema = schemas.decode_schema(meta.get("schema"))
        self._fields: dict[str, Field] = {}
        self._store = store
        # A durable database's journal (persistence/journal.py), else None:
        # each write call below appends its changes right after the commit.
        att = getattr(db, "_att", None)
        self._journal = att.journal if att is not None else None
        self.lock = store.lock
        self._lock = store.lock          # DictDB's name, for code written against it
        self.get = store.get  # type: ignore[method-assign]

    # --------------------------------------------------------------- fields
    def __getattr__(self, attr: str) -> Field:
        # Only names that are no attribute or method get here.  Keeping the
        # Field in the instance dict makes the next ``t.attr`` a plain lookup.
        if attr.startswith("_"):
            raise AttributeError(attr)
        field = self.__dict__[attr] = self[attr]
        return field

    def __getitem__(self, field: str) -> Field:
        # Fields are immutable, so one per name serves every query.
        try:
            return self._fields[field]
        except KeyError:
            f = self._fields[field] = Field(field)
            return f

    def __reduce__(self) -> tuple:
        return (_reopen_table, (type(self), self._db.name, self.table_name))

    def __repr__(self) -> str:
        return f"<Table {self.table_name!r} of database {self._db.name!r}>"

    # --------------------------------------------------------------- writes
    def insert(self, record: Record | Sequence[Record], batch_size: int | None = None,
               skip_validation: bool = False) -> Any:
        """Insert one record (returns its primary key) or a list of records
        (returns their keys, all inserted or none).

        A record without the primary key gets the next free integer, written
        into the caller's dict once the insert succeeded.  ``batch_size`` is
        accepted for DictDB compatibility; the whole list is one atomic write.
        """
        if type(record) is dict:
            return self._insert_one(record, skip_validation)
        if isinstance(record, Mapping):
            return self._insert([record], skip_validation)[0]
        if isinstance(record, (list, tuple)):
            return self._insert(record, skip_validation)
        raise InvalidArgumentError(
            f"insert takes a dict or a list of dicts, not {type(record).__name__}")

    def _insert_one(self, record: Record, skip_validation: bool) -> Any:
        """insert() of one plain dict: the single-row hot path."""
        pk_name = self.primary_key
        lock = self.lock
        lock.acquire_write()
        try:
            pk = record.get(pk_name, _MISSING)
            stored = record
            if pk is _MISSING:
                pk = self._store.next_auto_pk()
                stored = dict(record)
                stored[pk_name] = pk
            if self._schema is not None and not skip_validation:
                self.validate_record(stored)     # skipped without a schema: the hot path
            change = ((pk, stored, INSERT),)
            self._store.apply(change)
            if self._journal is not None:
                self._journal.write(self.table_name, change)
        finally:
            lock.release_write()
        if stored is not record:
            record[pk_name] = pk
        return pk

    def _insert(self, records: Sequence[Record], skip_validation: bool) -> list[Any]:
        for r in records:
            if type(r) is not dict and not isinstance(r, Mapping):
                raise InvalidArgumentError(f"insert takes dicts, got {type(r).__name__}")
        if len(records) < _GC_PAUSE_ROWS or not gc.isenabled():
            return self._insert_locked(records, skip_validation)
        # A big batch builds millions of tuples that the cyclic collector would
        # scan again and again (a third of a 1M-row insert); none form cycles.
        gc.disable()
        try:
            return self._insert_locked(records, skip_validation)
        finally:
            gc.enable()

    def _insert_locked(self, records: Sequence[Record], skip_validation: bool) -> list[Any]:
        pk_name = self.primary_key
        validate = None if skip_validation else self.validate_record
        with self.lock.write_lock():
            next_pk = None
            pks: list[Any] = []
            changes = []
            assigned = []
            explicit_max = None          # auto keys also skip explicit ones met so far
            for r in records:
                pk = r.get(pk_name, _MISSING)
                if pk is _MISSING:
                    if next_pk is None:
                        next_pk = self._store.next_auto_pk()
                        if explicit_max is not None and explicit_max >= next_pk:
                            next_pk = explicit_max + 1
                    pk = next_pk
                    next_pk += 1
                    r = dict(r)
                    r[pk_name] = pk
                    assigned.append(len(pks))
                elif type(pk) is int:
                    if next_pk is None:
                        explicit_max = pk if explicit_max is None else max(explicit_max, pk)
                    elif pk >= next_pk:
                        next_pk = pk + 1
                if validate is not None:
                    validate(r)
                pks.append(pk)
                changes.append((pk, r, INSERT))
            self._store.apply(changes)
            if self._journal is not None:
                self._journal.write(self.table_name, changes)
        for i in assigned:
            records[i][pk_name] = pks[i]  # type: ignore[index]
        return pks

    def upsert(self, record: Record, on_conflict: str = "update") -> tuple[Any, str]:
        """Insert ``record``, or resolve a clash on its primary key:
        ``"update"`` merges its fields into the stored record, ``"ignore"``
        keeps the stored one, ``"error"`` raises DuplicateKeyError."""
        if on_conflict not in _ON_CONFLICT:
            raise InvalidArgumentError(
                f"on_conflict must be one of {_ON_CONFLICT}, not {on_conflict!r}")
        if not isinstance(record, Mapping):
            raise InvalidArgumentError(
                f"upsert takes one record (a dict), not {type(record).__name__}")
        pk = record.get(self.primary_key, _MISSING)
        if pk is _MISSING:
            return self.insert(record), "inserted"
        with self.lock.write_lock():
            current = self._store.read(lambda s: s.lookup(pk))
            if current is None:
                return self.insert(record), "inserted"
            if on_conflict == "ignore":
                return pk, "ignored"
            if on_conflict == "error":
                raise DuplicateKeyError(f"table {self.table_name!r} already has primary key {pk!r}")
            current.update(record)
            self.validate_record(current)
            self._store.apply([(pk, current, PUT)])
            if self._journal is not None:
                self._journal.write(self.table_name, [(pk, current, PUT)])
        return pk, "updated"

    def update(self, changes: Mapping[str, Any], where: Any = None) -> int:
        """Apply ``changes`` to every record matching ``where`` (all records
        when None), all or nothing.  RecordNotFoundError when none match."""
        if not isinstance(changes, Mapping):
            raise InvalidArgumentError("update takes a dict of field -> new value")
        pk_name = self.primary_key
        with self.lock.write_lock():
            matches = self._matching_or_raise(where)
            batch = []
            for r in matches:
                pk = r[pk_name]
                r.update(changes)
                if r.get(pk_name, _MISSING) != pk:
                    raise SchemaValidationError(
                        f"table {self.table_name!r}: update cannot change the primary key "
                        f"{pk_name!r}", hint="delete the record and insert it with the new key")
                self.validate_record(r)
                batch.append((pk, r, PUT))
            self._store.apply(batch)
            if self._journal is not None:
                self._journal.write(self.table_name, batch)
        return len(batch)

    def delete(self, where: Any = None) -> int:
        """Delete every record matching ``where`` (all when None), all or
        nothing.  RecordNotFoundError when none match."""
        pk_name = self.primary_key
        with self.lock.write_lock():
            matches = self._matching_or_raise(where)
            gone = [(r[pk_name], None, DELETE) for r in matches]
            self._store.apply(gone)
            if self._journal is not None:
                self._journal.write(self.table_name, gone)
        return len(matches)

    # ---------------------------------------------------------------- reads
    def select(self, columns: Sequence[str] | Mapping[str, str] | None = None,
               where: Any = None, order_by: str | Sequence[str] | None = None,
               limit: int | None = None, offset: int = 0, copy: bool = True,
               distinct: bool = False, workers: int | None = None) -> list[Record]:
        """Records matching ``where``, shaped like DictDB's select.

        Every record is decoded from shared memory for this call, so the
        result is always the caller's own: ``copy=False`` is accepted and
        returns the same private dicts.  Without ``order_by`` the order is the
        order in which records were last written.  ``workers=N`` splits the
        scan over N processes (dictdb_shm/parallel/); None lets the library
        decide, 1 keeps it in this process.
        """
        limit, offset = normalize_paging(limit, offset)
        if workers is not None and (type(workers) is not int or workers != 1):
            check_workers(workers)
        if (type(where) is Compare and where.op == "eq" and where.field == self.primary_key
                and columns is None and order_by is None and not offset and not distinct
                and (limit is None or limit > 0)):
            found = self._store.get(where.value)     # select by primary key: the fast path
            return [] if found is None else [found]
        stop = None if order_by or distinct or limit is None else offset + limit
        rows = self._matching(where, stop, workers)
        if type(rows) is int:                 # the path splits, into this many parts
            rows = parallel.matching(self._db.name, self._store, self.primary_key,
                                     as_predicate(where), stop, rows, workers is not None)
            if rows is None:
                rows = self._matching(where, stop)
        return shape_rows(rows, columns=columns, order_by=order_by, limit=limit,
                          offset=offset, distinct=distinct)

    def _matching_or_raise(self, where: Any) -> list[Record]:
        """update's and delete's targets: RecordNotFoundError when none match."""
        matches = self._matching(where)
        if not matches:
            raise RecordNotFoundError(
                f"no record of table {self.table_name!r} matches {where!r}")
        return matches

    def _matching(self, where: Any, stop: int | None = None,
                  workers: int | None = 1) -> Any:
        """Records matching ``where`` (at most ``stop`` of them), read from one
        consistent state of the table through the planner's access path.
        With ``workers`` other than 1, an int instead when that path is split
        into that many parts: select then runs it in parallel.  Writers call
        this with the default, since a write lock must never wait on workers."""
        node = as_predicate(where)
        pred = compile_predicate(node)
        pk_name = self.primary_key

        def run(s: StorageEngine) -> Any:
            plan = planner.choose(node, pk_name, s.indexes(), s.index_estimate) \
                if node is not None else planner.SCAN
            if workers != 1:
                n = parts(plan, workers, s.live_count)
                if n > 1:
                    return n
            if plan.kind == "pk":
                found = (s.lookup(k) for k in plan.value)
                return [r for r in found if r is not None and pred(r)]
            if plan.kind == "index":
                candidates = s.index_candidates(plan.field, plan.op, plan.value)
                if candidates is not None:
                    return [r for r in candidates if pred(r)][:stop]
            if plan.kind == "column":
                from dictdb_shm.core import columnar    # numpy: only for tables with columns
                found = columnar.matching(s, node, pred, stop)
                if found is not None:
                    return found
            source = None
            if plan.kind == "search" and plan.op == "contains":
                source = s.scan_holding(plan.value)
            elif plan.kind == "search":
                source = s.scan_containing(
                    plan.field, plan.value if plan.op == "in" else (plan.value,))
            if source is None:
                source = s.scan()
            rows = source if node is None else filter(pred, source)
            if stop is None:
                return list(rows)
            out = []
            for r in rows:
                if len(out) >= stop:
                    break
                out.append(r)
            return out
        return self._store.read(run)

    def all(self) -> list[Record]:
        return self._matching(None)

    def copy(self) -> dict[Any, Record]:
        pk_name = self.primary_key
        return {r[pk_name]: r for r in self._matching(None)}

    def count(self) -> int:
        return self._store.count()

    def size(self) -> int:
        return self._store.count()

    def __len__(self) -> int:
        return self._store.count()

    def columns(self) -> list[str]:
        """Schema fields, or else the sorted union of the records' fields."""
        if self._schema is not None:
            return list(self._schema)
        cols: set[str] = set()
        for r in self._matching(None):
            cols.update(r)
        return sorted(cols)

    def aggregate(self, group_by: str | Sequence[str] | None = None, where: Any = None,
                  workers: Any = None, **aggs: Aggregate) -> Any:
        """``t.aggregate(n=Count(), avg=Avg("age"), where=..., group_by="city")``:
        one dict of results, or with ``group_by`` a list of one dict per group.
        Computed from column indexes when the fields have them (core/columnar.py);
        else ``workers`` as in select (an aggregate named "workers" still works)."""
        if isinstance(workers, Aggregate):
            aggs, workers = {"workers": workers, **aggs}, None
        check_workers(workers)
        node = as_predicate(where)

        def from_columns(s: StorageEngine) -> Any:
            if "column" in s.indexes().values():
                from dictdb_shm.core import columnar
                found = columnar.aggregate(s, node, group_by, aggs)
                if found is not None:
                    return found
            return parts_for(node, self.primary_key, s, workers)   # the parts, an int
        found = self._store.read(from_columns)
        if type(found) is int:
            found = None if found < 2 else parallel.aggregate(
                self._db.name, self._store, self.primary_key, node, group_by, aggs, found,
                workers is not None)
        if found is not None:
            return found
        return aggregate_rows(self._matching(where), group_by, **aggs)

    def to_numpy(self, fields: str | Sequence[str], where: Any = None) -> dict[str, Any]:
        """``{field: numpy array}`` of the records matching ``where``, in
        select's order, from one consistent state; a masked array where
        some records lack the field or hold None.  Fast for fields with a
        column index; works for any field."""
        from dictdb_shm.core import to_numpy as export
        names = [fields] if isinstance(fields, str) else list(fields)
        for name in names:
            if not isinstance(name, str):
                raise InvalidArgumentError(f"to_numpy takes field names, not {name!r}")
        node = as_predicate(where)
        found = self._store.read(lambda s: export.arrays(s, names, node))
        if found is not None:
            return found
        return export.from_records(self._matching(where), names)

    def export_csv(self, path: str, *, records: Sequence[Record] | None = None,
                   columns: Sequence[str] | None = None, where: Any = None,
                   delimiter: str = ",", encoding: str = "utf-8") -> int:
        """Write ``records`` (default: the rows matching ``where``) to a CSV
        file, atomically (temporary file, fsync, rename).  Returns the row count."""
        return export_csv(self, path, records=records, columns=columns, where=where,
                          delimiter=delimiter, encoding=encoding)

    def validate_record(self, record: Mapping[str, Any]) -> None:
        """The check every insert, update and upsert makes of each record it
        writes (the schema's, when the table has one).  Raise to refuse: the
        whole write call then changes nothing."""
        if self._schema is not None:
            schemas.validate(record, self._schema, self.table_name)

    # ------------------------------------------------------ change tracking
    # Database-wide, as DictDB's per-table tracking: every process's writes
    # count (persistence/tracking.py has the rules).
    def has_changes(self) -> bool:
        """True when records were written since the last clear_dirty_tracking()."""
        return tracking.has_changes(self)

    def get_dirty_records(self) -> list[Record]:
        """The records inserted or updated since the last clear_dirty_tracking()."""
        return tracking.dirty_records(self)

    def get_deleted_pks(self) -> list[Any]:
        """The primary keys deleted since the last clear_dirty_tracking()."""
        return tracking.deleted_pks(self)

    def clear_dirty_tracking(self) -> None:
        tracking.clear(self)

    # -------------------------------------------------------------- indexes
    @property
    def indexes(self) -> IndexViews:
        """Read-only ``{field: view}`` of the table's indexes, as in DictDB:
        ``view.search(value)`` is the set of matching primary keys, and a hash
        index's ``view.index`` maps value -> set of primary keys."""
        return IndexViews(self._store, self.primary_key)

    def create_index(self, field: str, index_type: str = "hash") -> None:
        """Index ``field`` for every process: ``"hash"`` serves ``==`` and
        ``is_in``; ``"sorted"`` also ``<``, ``<=``, ``>``, ``>=`` and
        ``between``; ``"column"`` keeps a typed copy of the field for
        vectorised filters, counts, aggregates, group-by and to_numpy.  The
        index lives in shared memory and changes atomically with the data.
        A field has one index: creating one on an indexed field does nothing."""
        if not isinstance(field, str) or not field:
            raise InvalidArgumentError("create_index needs a field name")
        with self.lock.write_lock():
            if self._store.create_index(field, index_type) and self._journal is not None:
                self._journal.index(self.table_name, field, index_type)

    def indexed_fields(self) -> list[str]:
        return list(self._store.read(lambda s: s.indexes()))

    def has_index(self, field: str) -> bool:
        return field in self._store.read(lambda s: s.indexes())

    def primary_key_name(self) -> str:
        return self.primary_key

    def schema_fields(self) -> list[str]:
        return list(self._schema) if self._schema is not None else []

    @property
    def schema(self) -> dict[str, type] | None:
        return dict(self._schema) if self._schema is not None else None


def _reopen_table(cls: type[Table], db_name: str, table: str) -> Table:
    return cls._database_type.attach(db_name).get_table(table)
