"""Catalog: the database's list of tables, in its own shared-memory segment.

Owns: the catalog segment's header and table slots (layout.py says where
each byte is), and the semaphores and segments a table is born and dies with.
Must never: read or write records (store.py) or lock state (rwlock.py) beyond
zeroing them for a new table.

Only the coordinator edits the catalog (create, drop), one request at a time,
so edits need no lock among themselves; it makes ``catalog_seq`` odd while it
edits, and every other process reads the slots lock-free and retries when
``catalog_seq`` moved.  A slot's ``state`` is written last, so a table is
visible only once its slot, semaphores and store region are complete.
"""

from __future__ import annotations

import os
import secrets
import time

import msgpack
import posix_ipc

from dictdb_shm import names
from dictdb_shm.engine import layout as L
from dictdb_shm.engine.segment import MODE, Segment, unlink
from dictdb_shm.engine.store import init_store_region
from dictdb_shm.lock.rwlock import init_lock_region
from dictdb_shm.errors import (CorruptionError, DatabaseFullError, DatabaseNotFoundError,
                               DuplicateTableError, InvalidNameError)


class TableEntry:
    __slots__ = ("index", "uid", "name", "meta")

    def __init__(self, index: int, uid: int, name: str, meta: dict) -> None:
        self.index = index
        self.uid = uid
        self.name = name
        self.meta = meta


class Catalog:
    """A mapped catalog segment.  ``buf`` is shared with locks and stores."""

    def __init__(self, db: str, segment: Segment) -> None:
        self.db = db
        self.segment = segment
        self.buf = segment.buf
        self._repair_fd = -1

    # ---------------------------------------------------------------- open
    @classmethod
    def create(cls, db: str, *, private: bool, owner: tuple[int, int]) -> "Catalog":
        seg = Segment.create(names.catalog_segment(db), L.CATALOG_SIZE, replace=True)
        buf = seg.buf
        L.HEADER.pack_into(buf, 0, L.MAGIC, L.LAYOUT_VERSION, L.FLAG_PRIVATE if private else 0)
        L.TWO_U64.pack_into(buf, L.OWNER_AT, *owner)
        buf[L.AUTHKEY_AT:L.AUTHKEY_AT + L.AUTHKEY_SIZE] = secrets.token_bytes(L.AUTHKEY_SIZE)
        L.U64.pack_into(buf, L.NEXT_UID_AT, 1)
        L.U64.pack_into(buf, L.READY_AT, 1)
        return cls(db, seg)

    @classmethod
    def attach(cls, db: str, wait: float = 0.0) -> "Catalog":
        """Map the catalog of ``db``; DatabaseNotFoundError when there is none."""
        deadline = time.monotonic() + wait
        while True:
            try:
                seg = Segment.attach(names.catalog_segment(db))
            except FileNotFoundError:
                seg = None
            if seg is not None and seg.size >= L.CATALOG_SIZE and \
                    L.U64.unpack_from(seg.buf, L.READY_AT)[0] == 1:
                break
            if time.monotonic() >= deadline:
                raise DatabaseNotFoundError(f"no database named {db!r} on this machine")
            time.sleep(0.01)
        magic, version, _ = L.HEADER.unpack_from(seg.buf, 0)
        if magic != L.MAGIC or version != L.LAYOUT_VERSION:
            raise CorruptionError(
                f"database {db!r} has layout {magic!r}/{version}; this dictdb_shm "
                f"reads {L.MAGIC!r}/{L.LAYOUT_VERSION}")
        return cls(db, seg)

    # -------------------------------------------------------------- header
    @property
    def private(self) -> bool:
        return bool(L.HEADER.unpack_from(self.buf, 0)[2] & L.FLAG_PRIVATE)

    @property
    def authkey(self) -> bytes:
        return bytes(self.buf[L.AUTHKEY_AT:L.AUTHKEY_AT + L.AUTHKEY_SIZE])

    def owner(self) -> tuple[int, int]:
        return L.TWO_U64.unpack_from(self.buf, L.OWNER_AT)

    def set_coordinator(self, pid: int, ticks: int) -> None:
        L.TWO_U64.pack_into(self.buf, L.COORDINATOR_AT, pid, ticks)

    def coordinator(self) -> tuple[int, int]:
        return L.TWO_U64.unpack_from(self.buf, L.COORDINATOR_AT)

    def is_destroyed(self) -> bool:
        return L.U64.unpack_from(self.buf, L.DESTROYED_AT)[0] != 0

    def mark_destroyed(self) -> None:
        """Tell every handle of every process that the database is gone.

        Must run before anything is unlinked: handles keep their mappings
        of the unlinked objects, so this flag (and each table's ``seq``
        turned SEQ_DROPPED) is the only way they can learn it.  Lock-free
        readers then fall back to the lock, and the lock raises
        DatabaseClosedError.
        """
        w = L.words(self.buf)
        w[L.DESTROYED_AT // L.WORD] = 1
        for i in range(L.MAX_TABLES):
            base = L.slot_offset(i)
            if w[(base + L.SLOT_STATE) // L.WORD] == L.SLOT_LIVE:
                w[(base + L.STORE_REGION + L.STORE_SEQ) // L.WORD] = L.SEQ_DROPPED
                w[(base + L.STORE_REGION + L.STORE_UID) // L.WORD] = 0
        w.release()

    def repair_fd(self) -> int:
        """A descriptor of the catalog file, for the locks' kernel repair mutex."""
        if self._repair_fd < 0:
            self._repair_fd = os.open(os.path.join(names.SHM_DIR,
                                                   names.catalog_segment(self.db)[1:]),
                                      os.O_RDWR)
        return self._repair_fd

    def close(self) -> None:
        if self._repair_fd >= 0:
            os.close(self._repair_fd)
            self._repair_fd = -1

    # --------------------------------------------------------------- reading
    def _read_slot(self, index: int) -> TableEntry | None:
        buf = self.buf
        base = L.slot_offset(index)
        state, uid = L.TWO_U64.unpack_from(buf, base)
        if state != L.SLOT_LIVE:
            return None
        (nlen,) = L.NAME_LEN.unpack_from(buf, base + L.SLOT_NAME)
        name = bytes(buf[base + L.SLOT_NAME + 2:base + L.SLOT_NAME + 2 + nlen]).decode()
        (mlen,) = L.META_LEN.unpack_from(buf, base + L.SLOT_META)
        meta = msgpack.unpackb(buf[base + L.SLOT_META + 4:base + L.SLOT_META + 4 + mlen])
        return TableEntry(index, uid, name, meta)

    def entries(self) -> list[TableEntry]:
        """Every live table, read consistently (retries while the coordinator edits)."""
        for _ in range(1000):
            seq = L.U64.unpack_from(self.buf, L.CATALOG_SEQ_AT)[0]
            if seq & 1:
                time.sleep(0.001)
                continue
            try:
                found = [e for e in (self._read_slot(i) for i in range(L.MAX_TABLES)) if e]
            except Exception:  # torn while the coordinator edits: retry
                found = None
            if found is not None and L.U64.unpack_from(self.buf, L.CATALOG_SEQ_AT)[0] == seq:
                return found
        raise CorruptionError(f"the catalog of {self.db!r} never settled")

    def find(self, name: str) -> TableEntry | None:
        for e in self.entries():
            if e.name == name:
                return e
        return None

    def is_current(self, index: int, uid: int) -> bool:
        base = L.slot_offset(index)
        return L.TWO_U64.unpack_from(self.buf, base) == (L.SLOT_LIVE, uid)

    # --------------------------------------------------- editing (coordinator)
    def add_table(self, name: str, meta: dict) -> TableEntry:
        if self.find(name) is not None:
            raise DuplicateTableError(f"table {name!r} already exists in database {self.db!r}")
        name_b = name.encode()
        meta_b = msgpack.packb(meta)
        if len(name_b) > L.SLOT_NAME_MAX:
            raise InvalidNameError(f"table name {name!r} is too long")
        if len(meta_b) > L.SLOT_META_MAX:
            raise DatabaseFullError(
                f"the definition of table {name!r} takes {len(meta_b)} bytes, over "
                f"{L.SLOT_META_MAX}", hint="use a smaller schema")
        buf = self.buf
        free = [i for i in range(L.MAX_TABLES)
                if L.U64.unpack_from(buf, L.slot_offset(i))[0] == L.SLOT_FREE]
        if not free:
            raise DatabaseFullError(f"database {self.db!r} has {L.MAX_TABLES} tables, the most "
                                    "it can hold", hint="drop tables you no longer need")
        index = free[0]
        uid = L.U64.unpack_from(buf, L.NEXT_UID_AT)[0]
        L.U64.pack_into(buf, L.NEXT_UID_AT, uid + 1)
        base = L.slot_offset(index)
        self._begin_edit()
        try:
            buf[base:base + L.SLOT_SIZE] = bytes(L.SLOT_SIZE)
            L.U64.pack_into(buf, base + L.SLOT_UID, uid)
            L.NAME_LEN.pack_into(buf, base + L.SLOT_NAME, len(name_b))
            buf[base + L.SLOT_NAME + 2:base + L.SLOT_NAME + 2 + len(name_b)] = name_b
            L.META_LEN.pack_into(buf, base + L.SLOT_META, len(meta_b))
            buf[base + L.SLOT_META + 4:base + L.SLOT_META + 4 + len(meta_b)] = meta_b
            init_store_region(buf, base, uid)
            init_lock_region(buf, base)
            for sem_name, value in ((names.write_semaphore(self.db, uid), 1),
                                    (names.drain_semaphore(self.db, uid), 0)):
                _unlink_semaphore(sem_name)
                posix_ipc.Semaphore(sem_name, posix_ipc.O_CREX, MODE, value).close()
            L.U64.pack_into(buf, base + L.SLOT_STATE, L.SLOT_LIVE)   # published
        finally:
            self._end_edit()
        return TableEntry(index, uid, name, meta)

    def remove_table(self, entry: TableEntry) -> None:
        """Mark the table dropped and remove its objects.  The caller holds its
        write lock, so no writer is inside it; lock-free readers see ``seq``
        turn to SEQ_DROPPED and stop."""
        buf = self.buf
        base = L.slot_offset(entry.index)
        self._begin_edit()
        try:
            L.U64.pack_into(buf, base + L.STORE_REGION + L.STORE_SEQ, L.SEQ_DROPPED)
            L.U64.pack_into(buf, base + L.STORE_REGION + L.STORE_UID, 0)
            L.U64.pack_into(buf, base + L.SLOT_STATE, L.SLOT_FREE)
        finally:
            self._end_edit()
        remove_table_objects(self.db, entry.uid)

    def _begin_edit(self) -> None:
        seq = L.U64.unpack_from(self.buf, L.CATALOG_SEQ_AT)[0]
        L.U64.pack_into(self.buf, L.CATALOG_SEQ_AT, seq | 1)

    def _end_edit(self) -> None:
        seq = L.U64.unpack_from(self.buf, L.CATALOG_SEQ_AT)[0]
        L.U64.pack_into(self.buf, L.CATALOG_SEQ_AT, (seq | 1) + 1)


def _unlink_semaphore(name: str) -> None:
    try:
        posix_ipc.unlink_semaphore(name)
    except posix_ipc.ExistentialError:
        pass


def remove_table_objects(db: str, uid: int) -> None:
    """Unlink every segment and semaphore of table ``uid``."""
    tp = names.table_prefix(db, uid)
    for entry in names.shm_entries(db):
        if entry.startswith(tp):
            unlink("/" + entry)
        elif entry.startswith("sem." + tp):
            _unlink_semaphore("/" + entry[4:])


def remove_database_objects(db: str) -> None:
    """Unlink everything of ``db`` under /dev/shm: segments and semaphores."""
    for entry in names.shm_entries(db):
        if entry.startswith("sem."):
            _unlink_semaphore("/" + entry[4:])
        else:
            unlink("/" + entry)
