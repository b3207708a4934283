"""The shared-memory storage engine.

Owns: everything that knows a byte layout: segments (segment.py), the
catalog (catalog.py, layout.py) and the semaphore files (semaphores.py),
records and keys (records.py), one table's store (store.py) with its write
steps (append.py), its growth (growth.py), its whole-table builds
(bulk.py), its searched scans (search.py) and its indexes (indexing.py,
index.py); and, here, the interface a Table
uses.  Must never: know the public API's rules (auto keys, schemas, upsert)
or evaluate queries.

The Table API reaches a table's storage only through the small interface
below.  ``TableStore`` is the shared-memory implementation; a backend for a
networked store, for users who outgrow one machine, would implement the same
methods.
"""

from __future__ import annotations

from typing import (Any, Callable, ContextManager, Iterable, Iterator, Protocol, Sequence,
                    TypeVar)

T = TypeVar("T")

# The modes of a change given to ``StorageEngine.apply``.
INSERT = 0      # the key must not exist
PUT = 1         # insert or replace
DELETE = 2      # the key must exist; the record is ignored

# What a column index (engine/columns.py) holds for each directory slot: the
# tag of its value.  The payload next to it is an int64 (INT, BOOL), a
# float64 (FLOAT) or a dictionary code (STR); OTHER values (bytes, lists,
# dicts, ints beyond int64) are only marked, and a query re-checks them.
COL_EMPTY = 0     # no live record at this slot
COL_MISSING = 1   # the record has no such field
COL_NULL = 2      # None
COL_INT = 3
COL_FLOAT = 4
COL_BOOL = 5
COL_STR = 6
COL_OTHER = 7


class TableLocking(Protocol):
    """The table's reader-writer lock, shared by every process using it."""

    def read_lock(self, timeout: float | None = None) -> ContextManager[None]: ...

    def write_lock(self, timeout: float | None = None) -> ContextManager[None]: ...

    def acquire_write(self, timeout: float | None = None) -> None: ...

    def release_write(self) -> None: ...

    def acquire_read(self, timeout: float | None = None) -> None: ...

    def release_read(self) -> None: ...


class StorageEngine(Protocol):
    """What a Table needs from the storage of one table.

    ``lock`` is the table's lock: a Table takes ``write_lock()`` around every
    write call and passes the store one batch per call.
    """

    lock: TableLocking

    def get(self, pk: Any, default: Any = None) -> Any:
        """The record with primary key ``pk``, or ``default``."""

    def read(self, fn: Callable[["StorageEngine"], T]) -> T:
        """Run ``fn`` on one consistent state of the table (it may run twice)."""

    def apply(self, changes: Iterable[tuple[Any, Any, int]]) -> None:
        """Apply (pk, record, INSERT | PUT | DELETE) changes all-or-nothing,
        under the table's write lock."""

    def count(self) -> int: ...

    def next_auto_pk(self) -> int: ...

    def create_index(self, field: str, kind: str) -> bool: ...

    def bulk_load(self, records: Any, key_field: str, indexes: dict[str, str]) -> bool:
        """Under the write lock of an empty table: fill it with ``records``
        (each holding its key under ``key_field``) and ``indexes`` in one
        pass, all or nothing; False, changing nothing, when a record lacks
        its key.  Not journaled (loads into new databases)."""

    def load_image(self, built: Any) -> None:
        """Under the write lock of an empty table: fill it with segments
        built in private memory (engine/bulk.py's BuiltTable, as a snapshot
        keeps them); not journaled (restores)."""

    def committed_image(self) -> tuple[bytes, Any, dict[str, str]]:
        """Under the table's lock: a copy of the committed record bytes (the
        heap format of engine/records.py), the descriptor, and the index
        kinds; read-only (saves copy under the locks, decode outside)."""

    # Inside ``read``:
    def scan(self) -> Iterator[dict]: ...

    def lookup(self, pk: Any) -> Any: ...

    def indexes(self) -> dict[str, str]: ...

    def live_count(self) -> int: ...

    def index_estimate(self, field: str, op: str, value: Any) -> int | None: ...

    def index_candidates(self, field: str, op: str, value: Any) -> list[dict] | None: ...

    def index_values(self, field: str) -> list[Any] | None: ...

    def scan_containing(self, field: str, values: Iterable[Any]) -> Iterator[dict] | None: ...

    def column(self, field: str) -> Any:
        """A column index's arrays (engine/columns.py ColumnArrays), or None."""

    def offsets_of(self, slots: Any) -> Any:
        """The heap offsets of the records at ``slots``: their write order."""

    def scan_holding(self, text: str) -> Iterator[dict]:
        """A superset of the live records whose bytes hold ``text``."""

    def rows_at(self, slots: Any, limit: int | None = None) -> list[dict]:
        """The live records at directory ``slots`` (a numpy array), in the
        order they were last written (the first ``limit`` of them)."""

    def field_arrays(self, field: str) -> Any:
        """``field`` of every live record as ColumnArrays, from the column
        index when there is one, else read from the heap."""

    # For parallel queries (dictdb_shm/parallel/), the one split and the
    # parts read in other processes:
    def partition(self, shares: Sequence[float]) -> list[Any] | None:
        """Under the table's read lock: the committed records in parts of
        about ``shares`` (relative sizes; picklable parts, empty ones left
        out), or None when this store cannot be split."""

    def part_records(self, part: Any, holding: str | None = None,
                     containing: tuple[str, Any] | None = None) -> Iterator[dict]:
        """In any process, without a lock, while the splitter holds the read
        lock: the live records of ``part`` (narrowed to a superset of those
        whose bytes hold ``holding``, or ``field`` == one of ``values`` for
        ``containing=(field, values)``)."""

    def pack_part(self, part: Any, keep: Callable[[dict], bool] | None,
                  stop: int | None = None, holding: str | None = None,
                  containing: tuple[str, Any] | None = None) -> bytes:
        """The records of ``part_records`` that ``keep`` accepts (the first
        ``stop``), packed to travel to another process."""

    def unpack_part(self, packed: bytes) -> list[dict]:
        """The records of a ``pack_part`` result."""
