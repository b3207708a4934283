"""TableMapping: the mapped segments of one table, and how they change.

Owns: which segments a table's committed descriptor names and this
process's mappings of them (remapped when the descriptor's generation
moves), the start of a lock-free read (``_begin_read``), and, under the
write lock, the three steps by which a table's segments are replaced: a new
segment (``new_segment``), adopting new mappings (``adopt``) and the commit
flip (``publish``).  Must never: read or write records (store.py, append.py)
or decide when segments are replaced (growth.py).

Shared words (seq, active, uid, txn_end, index_dirty) are read and stored
through a ``"Q"`` view of the catalog (layout.words): one 8-byte load or
store each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from dictdb_shm import names
from dictdb_shm.engine import index as IX
from dictdb_shm.engine import indexing
from dictdb_shm.engine import layout as L
from dictdb_shm.engine import records as R
from dictdb_shm.engine.segment import Segment, unlink
from dictdb_shm.errors import DatabaseClosedError, DatabaseFullError, TableNotFoundError

if TYPE_CHECKING:
    from dictdb_shm.lock.rwlock import TableLock

_DESC = L.DESCRIPTOR.unpack_from
Descriptor = L.Descriptor


class TableMapping:
    """One table's segments as this process maps them."""

    def __init__(self, db: str, table: str, catalog: Any, slot_index: int, uid: int,
                 lock: "TableLock", max_record_bytes: int = R.MAX_RECORD_BYTES) -> None:
        self.db = db
        self.table = table
        self.uid = uid
        self._cat = catalog
        self._base = L.slot_offset(slot_index) + L.STORE_REGION
        self._w = L.words(catalog)
        self._seq_w = self._base // L.WORD          # seq, active, uid: three words
        self._active_w = self._seq_w + 1
        self._uid_w = self._seq_w + 2
        self._txn_w = (self._base + L.STORE_TXN_END) // L.WORD
        self._dirty_w = (self._base + L.STORE_INDEX_DIRTY) // L.WORD
        self.lock = lock
        self._max_record = max_record_bytes
        self._active = -1
        self.desc = L.EMPTY_TABLE
        self._heap_id = 0
        self.heap: Any = b""
        self._dir_id = 0
        self.directory: Any = b""
        self._dw = L.words(b"")          # the directory as words: [2i] hash, [2i+1] offset
        self._index_id = 0
        self.indexes_by_field: dict[str, IX.Index] = {}
        self._shift = 64
        self._mask = 0
        self._heap_end = 0

    def _sync(self, active: int) -> None:
        """Map the segments of descriptor ``active``; cheap when nothing changed."""
        desc = Descriptor._make(
            _DESC(self._cat, self._base + L.STORE_DESC + L.DESC_SIZE * (active & 1)))
        if desc.heap_seg != self._heap_id:
            self.heap = self._attach(names.heap_segment, desc.heap_seg)
            self._heap_id = desc.heap_seg
        if desc.dir_seg != self._dir_id:
            self.directory = self._attach(names.directory_segment, desc.dir_seg)
            self._dw = L.words(self.directory)
            self._dir_id = desc.dir_seg
        if desc.index_seg != self._index_id:
            buf = self._attach(names.index_segment, desc.index_seg)
            self.indexes_by_field = indexing.open_indexes(buf, desc.dir_cap)
            self._index_id = desc.index_seg
        self._set_shape(desc)
        self._active = active

    def _attach(self, name_of: Callable[[str, int, int], str], seg: int) -> Any:
        if not seg:
            return b""
        try:
            return Segment.attach(name_of(self.db, self.uid, seg)).buf
        except FileNotFoundError:
            raise DatabaseClosedError(
                f"the shared memory of table {self.table!r} is gone: database {self.db!r} "
                "was destroyed or removed from /dev/shm") from None

    def _set_shape(self, desc: Descriptor) -> None:
        cap = desc.dir_cap
        if cap != self.desc.dir_cap or not cap:
            if cap:
                self._shift = 64 - (cap.bit_length() - 1)
                self._mask = cap - 1
            else:
                self._shift, self._mask = 64, 0
        self._heap_end = desc.heap_end
        self.desc = desc

    def _check_table(self) -> int:
        """Under a lock: map the current segments; raise if the table is gone."""
        w = self._w
        seq, active, uid = w[self._seq_w], w[self._active_w], w[self._uid_w]
        if uid != self.uid or seq == L.SEQ_DROPPED:
            if w[L.DESTROYED_AT // L.WORD]:
                raise DatabaseClosedError(f"database {self.db!r} was destroyed")
            raise TableNotFoundError(f"table {self.table!r} was dropped")
        if active != self._active:
            self._sync(active)
        return seq

    def _begin_read(self) -> int:
        """Start a lock-free read: ``seq``, with the segments it names mapped;
        -1 when the read must take the lock instead (a writer holds the
        table, or the slot is not this table's any more)."""
        w = self._w
        seq, active = w[self._seq_w], w[self._active_w]
        if seq & 1 or w[self._uid_w] != self.uid:
            return -1
        if active != self._active:
            try:
                self._sync(active)
            except Exception:  # a descriptor torn by a writer that just began
                return -1
        return seq

    # ------------------------------------------ segments (for growth.py)
    # Engine-internal, under the write lock: growth.py replaces segments
    # through these (and reads desc, heap, directory, indexes_by_field).
    def new_segment(self, name_of: Callable[[str, int, int], str], seg: int,
                    size: int) -> Segment:
        """A new, zeroed segment of this table.  Never for a destroyed
        database: the flag is checked after the creation, which pairs with
        destroy setting it before it unlinks (so one of the two removes it)."""
        name = name_of(self.db, self.uid, seg)
        try:
            segment = Segment.create(name, size, replace=True)
        except DatabaseFullError as exc:
            raise DatabaseFullError(f"table {self.table!r}: {exc.message}",
                                    hint=exc.hint) from None
        if self._w[L.DESTROYED_AT // L.WORD]:
            unlink(name)
            raise DatabaseClosedError(f"database {self.db!r} was destroyed")
        return segment

    def adopt(self, *, heap: tuple[int, Any] | None = None,
              directory: tuple[int, Any] | None = None,
              index: tuple[int, Segment | None] | None = None, dir_cap: int = 0) -> None:
        """Use new mappings now, before the flip that publishes them, so
        ``_sync`` does not map them again."""
        if heap is not None:
            self._heap_id, self.heap = heap
        if directory is not None:
            self._dir_id, self.directory = directory
            self._dw = L.words(self.directory)
        if index is not None:
            seg, segment = index
            if segment is None:
                self._index_id, self.indexes_by_field = 0, {}
            else:
                self._index_id = seg
                self.indexes_by_field = indexing.open_indexes(segment.buf, dir_cap)

    def publish(self, desc: Descriptor) -> None:
        """Commit ``desc``: write the inactive descriptor, then flip ``active``.
        The caller has already adopted the segments ``desc`` names."""
        active = self._active + 1      # under the write lock, _active is current
        L.DESCRIPTOR.pack_into(self._cat, self._base + L.STORE_DESC +
                               L.DESC_SIZE * (active & 1), *desc)
        self._w[self._active_w] = active           # the commit point: one 8-byte store
        self._w[self._txn_w] = desc.heap_end
        self._set_shape(desc)
        self._active = active

    def stats(self) -> dict:
        """Under any lock or inside ``read``: sizes, for tests and housekeeping."""
        d = self.desc
        return {"heap_segment": d.heap_seg, "heap_capacity": d.heap_cap,
                "heap_end": d.heap_end, "directory_capacity": d.dir_cap,
                "directory_used": d.dir_used, "live": d.live, "next_pk": d.next_pk,
                "garbage_bytes": d.garbage, "live_bytes": d.live_bytes,
                "index_segment": d.index_seg, "records_logged": d.n_records}
