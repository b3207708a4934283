"""Catalog: the database's list of tables, in its own shared-memory segment.

Owns: the catalog segment's header and table slots (layout.py says where
each byte is), the semaphores and segments a table is born and dies with,
and the repair of a catalog edit that its coordinator did not finish.
Must never: read or write records (store.py) or lock state (rwlock.py) beyond
zeroing them for a new table.

Only the coordinator edits the catalog (create, drop), one request at a time,
so edits need no lock among themselves; it makes ``catalog_seq`` odd while it
edits, and every other process reads the slots lock-free and retries when
``catalog_seq`` moved.  A slot's ``state`` is written last, so a table is
visible only once its slot, semaphores and store region are complete.

Crash safety of edits: before an edit changes anything, the header's *edit
record* names its kind, slot and uid; it is cleared only once the edit is
complete.  A coordinator SIGKILLed at any step therefore leaves a record that
the next coordinator acts on before it serves (``repair_interrupted_edit``):

* adding a table is undone (slot zeroed, the table's objects unlinked) unless
  its slot was already published, in which case it is finished;
* removing a table is always finished (the drop was decided);
* either way ``catalog_seq`` is made even again, so readers settle.

Semaphores are created one by one, each with its start time in the header,
so that a glibc temporary file leaked by a kill inside ``sem_open`` can be
found and removed (see semaphores.py).  ``remove_orphans`` then unlinks every
object of the database whose table uid is not live.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from typing import Any

import msgpack

from dictdb_shm import crashpoints, names
from dictdb_shm.engine import layout as L
from dictdb_shm.engine import semaphores
from dictdb_shm.engine.segment import Segment, unlink
from dictdb_shm.lock.rwlock import init_lock_region
from dictdb_shm.errors import (CorruptionError, DatabaseFullError, DatabaseNotFoundError,
                               DuplicateTableError, InvalidNameError)
from dictdb_shm.procinfo import is_alive

_TABLE_UID = re.compile(r"t(\d+)\.")


def init_store_region(buf: Any, slot_base: int, uid: int) -> None:
    """Write an empty table's store region: no segments yet (the first write
    makes them), and the uid every handle checks (store.py, lock/rwlock.py)."""
    base = slot_base + L.STORE_REGION
    buf[base:base + L.STORE_REGION_SIZE] = bytes(L.STORE_REGION_SIZE)
    L.DESCRIPTOR.pack_into(buf, base + L.STORE_DESC, *L.EMPTY_TABLE)
    L.U64.pack_into(buf, base + L.STORE_UID, uid)


def table_semaphores(db: str, uid: int) -> list[tuple[str, int]]:
    """The semaphores table ``uid`` is born with, as (name, initial value):
    the lock's reader drain, empty (lock/rwlock.py: the table's mutex itself
    lives in the catalog slot)."""
    return [(names.drain_semaphore(db, uid), 0)]


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
        self.words = L.words(segment.buf)     # shared words: one load or store each

    # ---------------------------------------------------------------- open
    @classmethod
    def create(cls, db: str, *, private: bool, owner: tuple[int, int]) -> "Catalog":
        """Create the catalog of ``db``, not yet ready: the coordinator claims
        it, then calls ``publish``.  FileExistsError when one exists."""
        seg = Segment.create(names.catalog_segment(db), L.CATALOG_SIZE)
        buf = seg.buf
        L.HEADER.pack_into(buf, 0, L.MAGIC, L.LAYOUT_VERSION, L.FLAG_PRIVATE if private else 0)
        L.TWO_U64.pack_into(buf, L.OWNER_AT, *owner)
        buf[L.AUTHKEY_AT:L.AUTHKEY_AT + L.AUTHKEY_SIZE] = secrets.token_bytes(L.AUTHKEY_SIZE)
        L.U64.pack_into(buf, L.NEXT_UID_AT, 1)      # nobody maps it yet
        return cls(db, seg)

    def publish(self) -> None:
        """Make the new catalog visible to attaching processes."""
        self.words[L.READY_AT // L.WORD] = 1

    @property
    def ready(self) -> bool:
        return self.words[L.READY_AT // L.WORD] == 1

    @classmethod
    def attach(cls, db: str, wait: float = 0.0, *, require_ready: bool = True,
               check_tables: bool = True) -> "Catalog":
        """Map the catalog of ``db``; DatabaseNotFoundError when there is none.

        The catalog (and, with ``check_tables``, every live table's
        semaphores) must be ours and owner-only, else OwnershipError.
        ``require_ready=False`` maps a catalog still being created (for the
        coordinator deciding whether its creator died).
        """
        deadline = time.monotonic() + wait
        while True:
            try:
                seg = Segment.attach(names.catalog_segment(db))
            except FileNotFoundError:
                seg = None
            if seg is not None and seg.size >= L.CATALOG_SIZE and (
                    not require_ready or L.words(seg.buf)[L.READY_AT // L.WORD] == 1):
                break
            if time.monotonic() >= deadline:
                raise DatabaseNotFoundError(f"no database named {db!r} on this machine")
            time.sleep(0.01)
        catalog = cls(db, seg)
        if catalog.ready:
            catalog.check_layout()
            if check_tables:
                for entry in catalog.entries():
                    catalog.check_semaphores(entry.uid)
        return catalog

    def check_layout(self) -> None:
        magic, version, _ = L.HEADER.unpack_from(self.buf, 0)
        if magic != L.MAGIC or version != L.LAYOUT_VERSION:
            raise CorruptionError(
                f"database {self.db!r} has layout {magic!r}/{version}; this dictdb_shm "
                f"reads {L.MAGIC!r}/{L.LAYOUT_VERSION}")

    def check_semaphores(self, uid: int) -> None:
        """OwnershipError unless table ``uid``'s semaphores are ours and
        owner-only (a missing one is the table being dropped: not an error)."""
        for name, _ in table_semaphores(self.db, uid):
            semaphores.check(name)

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
        w = self.words
        w[L.COORDINATOR_AT // L.WORD + 1] = ticks
        w[L.COORDINATOR_AT // L.WORD] = pid

    def coordinator(self) -> tuple[int, int]:
        w = self.words
        return w[L.COORDINATOR_AT // L.WORD], w[L.COORDINATOR_AT // L.WORD + 1]

    def set_socket_path(self, path: str) -> None:
        """Publish where the coordinator listens (length last, so a reader
        sees the old path, no path, or the new one)."""
        raw = path.encode()
        if len(raw) > L.SOCKET_PATH_MAX:
            raise InvalidNameError(f"socket path {path!r} is too long")
        at = L.SOCKET_PATH_AT + L.SOCKET_PATH_LEN.size
        L.SOCKET_PATH_LEN.pack_into(self.buf, L.SOCKET_PATH_AT, 0)
        self.buf[at:at + len(raw)] = raw
        L.SOCKET_PATH_LEN.pack_into(self.buf, L.SOCKET_PATH_AT, len(raw))

    def socket_path(self) -> str | None:
        (n,) = L.SOCKET_PATH_LEN.unpack_from(self.buf, L.SOCKET_PATH_AT)
        if not n or n > L.SOCKET_PATH_MAX:
            return None
        at = L.SOCKET_PATH_AT + L.SOCKET_PATH_LEN.size
        return bytes(self.buf[at:at + n]).decode(errors="replace")

    # Persistence (persistence/): written by the coordinator before it
    # publishes the catalog, except the journal generation and the backups.
    def set_persistence(self, path: str, durability: int) -> None:
        raw = os.fsencode(path)
        if len(raw) > L.PERSIST_PATH_MAX:
            raise InvalidNameError(f"the directory {path!r} is too long "
                                   f"(at most {L.PERSIST_PATH_MAX} bytes)")
        at = L.PERSIST_PATH_AT + L.PERSIST_PATH_LEN.size
        self.buf[at:at + len(raw)] = raw
        L.PERSIST_PATH_LEN.pack_into(self.buf, L.PERSIST_PATH_AT, len(raw))
        self.words[L.DURABILITY_AT // L.WORD] = durability

    def persistence(self) -> tuple[str | None, int]:
        """(directory, durability code) of a durable database, else (None, 0)."""
        (n,) = L.PERSIST_PATH_LEN.unpack_from(self.buf, L.PERSIST_PATH_AT)
        durability = self.words[L.DURABILITY_AT // L.WORD]
        if not n or n > L.PERSIST_PATH_MAX or not durability:
            return None, L.DURABILITY_NONE
        at = L.PERSIST_PATH_AT + L.PERSIST_PATH_LEN.size
        return os.fsdecode(bytes(self.buf[at:at + n])), durability

    def set_backups(self, packed: bytes) -> None:
        if len(packed) > L.BACKUPS_MAX:
            raise DatabaseFullError(f"the backup schedules of {self.db!r} take {len(packed)} "
                                    f"bytes, over {L.BACKUPS_MAX}", hint="stop some of them")
        L.BACKUPS_LEN.pack_into(self.buf, L.BACKUPS_AT, 0)
        at = L.BACKUPS_AT + L.BACKUPS_LEN.size
        self.buf[at:at + len(packed)] = packed
        L.BACKUPS_LEN.pack_into(self.buf, L.BACKUPS_AT, len(packed))

    def backups(self) -> bytes:
        (n,) = L.BACKUPS_LEN.unpack_from(self.buf, L.BACKUPS_AT)
        at = L.BACKUPS_AT + L.BACKUPS_LEN.size
        return bytes(self.buf[at:at + min(n, L.BACKUPS_MAX)])

    def is_destroyed(self) -> bool:
        return self.words[L.DESTROYED_AT // L.WORD] != 0

    def mark_destroyed(self) -> None:
        """Tell every handle of every process that the database is gone.

        Must run before anything is unlinked: handles keep their mappings
        of the unlinked objects, so this flag (and each table's ``seq``
        turned SEQ_DROPPED) is the only way they can learn it.  Lock-free
        readers then fall back to the lock, and the lock raises
        DatabaseClosedError.
        """
        w = self.words
        w[L.DESTROYED_AT // L.WORD] = 1
        for i in range(L.MAX_TABLES):
            base = L.slot_offset(i)
            if w[(base + L.SLOT_STATE) // L.WORD] == L.SLOT_LIVE:
                w[(base + L.STORE_REGION + L.STORE_SEQ) // L.WORD] = L.SEQ_DROPPED
                w[(base + L.STORE_REGION + L.STORE_UID) // L.WORD] = 0

    def close(self) -> None:
        """Drop this handle's view of the catalog (the mapping stays while
        table locks and stores of this process still use it)."""
        self.words.release()

    # --------------------------------------------------------------- reading
    def _read_slot(self, index: int) -> TableEntry | None:
        buf = self.buf
        base = L.slot_offset(index)
        state, uid = self.words[base // L.WORD], self.words[base // L.WORD + 1]
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
            seq = self.words[L.CATALOG_SEQ_AT // L.WORD]
            if seq & 1:
                time.sleep(0.001)
                continue
            try:
                found = [e for e in (self._read_slot(i) for i in range(L.MAX_TABLES)) if e]
            except Exception:  # torn while the coordinator edits: retry
                found = None
            if found is not None and self.words[L.CATALOG_SEQ_AT // L.WORD] == seq:
                return found
        if not is_alive(*self.coordinator()):
            raise CorruptionError(
                f"the coordinator of {self.db!r} died while editing its catalog",
                hint=f"DictDB({self.db!r}), create_table or drop_table starts a new "
                     "coordinator, which repairs it")
        raise CorruptionError(f"the catalog of {self.db!r} never settled")

    def find(self, name: str) -> TableEntry | None:
        for e in self.entries():
            if e.name == name:
                return e
        return None

    def is_current(self, index: int, uid: int) -> bool:
        base = L.slot_offset(index)
        w = self.words
        return w[base // L.WORD] == L.SLOT_LIVE and w[base // L.WORD + 1] == uid

    # --------------------------------------------------- editing (coordinator)
    def add_table(self, name: str, meta: dict) -> TableEntry:
        names.check_table_name(name)
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
                if self.words[L.slot_offset(i) // L.WORD] == L.SLOT_FREE]
        if not free:
            raise DatabaseFullError(f"database {self.db!r} has {L.MAX_TABLES} tables, the most "
                                    "it can hold", hint="drop tables you no longer need")
        index = free[0]
        uid = self.words[L.NEXT_UID_AT // L.WORD]
        self.words[L.NEXT_UID_AT // L.WORD] = uid + 1     # a uid is never used twice
        base = L.slot_offset(index)
        self._record_edit(L.EDIT_ADD, index, uid)
        crashpoints.reach("catalog.add_table.recorded")
        try:
            self._begin_edit()
            buf[base:base + L.SLOT_SIZE] = bytes(L.SLOT_SIZE)
            self.words[(base + L.SLOT_UID) // L.WORD] = uid
            L.NAME_LEN.pack_into(buf, base + L.SLOT_NAME, len(name_b))
            buf[base + L.SLOT_NAME + 2:base + L.SLOT_NAME + 2 + len(name_b)] = name_b
            L.META_LEN.pack_into(buf, base + L.SLOT_META, len(meta_b))
            buf[base + L.SLOT_META + 4:base + L.SLOT_META + 4 + len(meta_b)] = meta_b
            init_store_region(buf, base, uid)
            init_lock_region(buf, base)
            crashpoints.reach("catalog.add_table.slot_written")
            self._create_semaphores(uid)
            self.words[(base + L.SLOT_STATE) // L.WORD] = L.SLOT_LIVE   # published
            crashpoints.reach("catalog.add_table.published")
            self._end_edit()
            crashpoints.reach("catalog.add_table.settled")
        except BaseException:
            self.repair_interrupted_edit()
            raise
        self._clear_edit()
        return TableEntry(index, uid, name, meta)

    def _create_semaphores(self, uid: int) -> None:
        with semaphores.creation_lock():
            for i, (sem_name, value) in enumerate(table_semaphores(self.db, uid)):
                self.words[L.SEMAPHORE_CREATION_AT // L.WORD] = time.time_ns()
                crashpoints.reach(f"catalog.create_semaphore.{i}")
                try:
                    semaphores.create(sem_name, value)
                finally:     # glibc removes its temporary file when sem_open fails
                    self.words[L.SEMAPHORE_CREATION_AT // L.WORD] = 0

    def remove_table(self, entry: TableEntry) -> None:
        """Mark the table dropped and remove its objects.  The caller holds its
        write lock, so no writer is inside it; lock-free readers see ``seq``
        turn to SEQ_DROPPED and stop."""
        self._record_edit(L.EDIT_REMOVE, entry.index, entry.uid)
        crashpoints.reach("catalog.remove_table.recorded")
        self._finish_remove(entry.index, entry.uid)
        self._clear_edit()

    def _finish_remove(self, index: int, uid: int) -> None:
        base = L.slot_offset(index)
        self._begin_edit()
        if self.is_current(index, uid):
            self.words[(base + L.STORE_REGION + L.STORE_SEQ) // L.WORD] = L.SEQ_DROPPED
            self.words[(base + L.STORE_REGION + L.STORE_UID) // L.WORD] = 0
            self.words[(base + L.SLOT_STATE) // L.WORD] = L.SLOT_FREE
        self._end_edit()
        crashpoints.reach("catalog.remove_table.unpublished")
        remove_table_objects(self.db, uid)

    # ------------------------------------------------------ repair (coordinator)
    def repair_interrupted_edit(self) -> str | None:
        """Finish or undo an edit that a coordinator did not complete (it died,
        or the edit raised).  The coordinator calls this before it serves, so
        nothing else edits meanwhile.  Returns what was done, or None."""
        buf = self.buf
        started = self.words[L.SEMAPHORE_CREATION_AT // L.WORD]
        if started:
            with semaphores.creation_lock():
                semaphores.remove_leaked_temp_files(started)
            self.words[L.SEMAPHORE_CREATION_AT // L.WORD] = 0
        kind = self.words[L.EDIT_KIND_AT // L.WORD]
        index = self.words[L.EDIT_SLOT_AT // L.WORD]
        uid = self.words[L.EDIT_UID_AT // L.WORD]
        done = None
        if kind == L.EDIT_ADD and index < L.MAX_TABLES:
            if self.is_current(index, uid):
                done = f"finished adding table uid {uid}"
            else:
                self._begin_edit()
                base = L.slot_offset(index)
                buf[base:base + L.SLOT_SIZE] = bytes(L.SLOT_SIZE)
                remove_table_objects(self.db, uid)
                done = f"undid adding table uid {uid}"
        elif kind == L.EDIT_REMOVE and index < L.MAX_TABLES:
            self._finish_remove(index, uid)
            done = f"finished removing table uid {uid}"
        if self.words[L.CATALOG_SEQ_AT // L.WORD] & 1:
            self._end_edit()
            done = done or "settled the catalog"
        self._clear_edit()
        return done

    def remove_orphans(self) -> list[str]:
        """Unlink every object of the database whose table uid is not live
        (on a new catalog: whatever an earlier database of that name left).
        Coordinator only, while no catalog edit runs."""
        live = {e.uid for e in self.entries()}
        p = names.prefix(self.db)
        removed = []
        for entry in names.shm_entries(self.db):
            rest = entry[len("sem."):] if entry.startswith("sem.") else entry
            m = _TABLE_UID.match(rest, len(p))
            if m and int(m.group(1)) not in live and _remove_entry(entry):
                removed.append(entry)
        return removed

    # --------------------------------------------------------------- helpers
    def _record_edit(self, kind: int, index: int, uid: int) -> None:
        self.words[L.EDIT_SLOT_AT // L.WORD] = index
        self.words[L.EDIT_UID_AT // L.WORD] = uid
        self.words[L.EDIT_KIND_AT // L.WORD] = kind     # the record counts from here

    def _clear_edit(self) -> None:
        self.words[L.EDIT_KIND_AT // L.WORD] = L.EDIT_NONE

    def _begin_edit(self) -> None:
        seq = self.words[L.CATALOG_SEQ_AT // L.WORD]
        self.words[L.CATALOG_SEQ_AT // L.WORD] = seq | 1

    def _end_edit(self) -> None:
        seq = self.words[L.CATALOG_SEQ_AT // L.WORD]
        self.words[L.CATALOG_SEQ_AT // L.WORD] = (seq | 1) + 1


def _remove_entry(entry: str) -> bool:
    """Unlink /dev/shm ``entry`` (a segment or a ``sem.`` file) when it is
    ours; another user's object under our prefix is left to its owner."""
    try:
        st = os.lstat(os.path.join(names.SHM_DIR, entry))
    except FileNotFoundError:
        return False
    if st.st_uid != os.geteuid():
        return False
    if entry.startswith("sem."):
        return semaphores.unlink("/" + entry[len("sem."):])
    return unlink("/" + entry)


def remove_table_objects(db: str, uid: int) -> None:
    """Unlink every segment and semaphore of table ``uid``."""
    tp = names.table_prefix(db, uid)
    for entry in names.shm_entries(db):
        if entry.startswith(tp) or entry.startswith("sem." + tp):
            _remove_entry(entry)


def remove_database_objects(db: str) -> None:
    """Unlink everything of ``db`` under /dev/shm: segments and semaphores.
    The catalog goes last, so that a destroy cut short leaves a catalog that
    says what is left (and that it was being destroyed)."""
    catalog = names.catalog_segment(db).lstrip("/")
    for entry in sorted(names.shm_entries(db), key=lambda e: e == catalog):
        _remove_entry(entry)
