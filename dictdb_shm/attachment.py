"""A process's attachment to one database: the mapped catalog and, per table, the one TableLock and TableStore this process uses.

Owns: the process-wide registry that makes every handle of a database in
this process share the same locks (so a write made through one handle while
another holds ``write_lock()`` does not deadlock).  Must never: create or
unlink shared objects (the coordinator does) or speak to the coordinator.

After ``fork`` the child keeps the attachments: the mappings are MAP_SHARED,
so they stay the same shared memory, and the inherited semaphores and file
descriptors stay valid.  Only the in-process thread locks are made anew in
the child (another thread of the parent may have held one at the fork, and
that thread does not exist in the child).
"""

from __future__ import annotations

import os
import threading
from typing import Callable

import posix_ipc

from dictdb_shm import names
from dictdb_shm.engine.catalog import Catalog, TableEntry
from dictdb_shm.engine.cache_store import CacheStore
from dictdb_shm.engine.expiry import TtlStore
from dictdb_shm.engine.store import TableStore
from dictdb_shm.errors import TableNotFoundError
from dictdb_shm.lock.rwlock import TableLock
from dictdb_shm.persistence.journal import Journal

DEFAULT_LOCK_TIMEOUT = float(os.environ.get("DICTDB_SHM_LOCK_TIMEOUT", "30"))

_registry: dict[str, "Attachment"] = {}
# Called with the database's name when this process's last handle of it
# closes (parallel/pool.py ends its worker processes there).
detach_hooks: list[Callable[[str], None]] = []
_registry_lock = threading.Lock()


class Attachment:
    def __init__(self, db: str, catalog: Catalog, lock_timeout: float) -> None:
        self.db = db
        self.catalog = catalog
        self.lock_timeout = lock_timeout
        self.handles = 0
        self.closed = False         # its catalog view is released: handles must not use it
        # A durable database's journal: every Table write call appends to it.
        path, code = catalog.persistence() if catalog.ready else (None, 0)
        self.journal = Journal(path, code, catalog.buf) if path else None
        self._tables: dict[int, tuple[TableLock, TableStore]] = {}
        self._mutex = threading.Lock()

    @classmethod
    def get(cls, db: str, *, wait: float = 0.0,
            lock_timeout: float | None = None) -> "Attachment":
        """The attachment of this process to ``db``, mapping the catalog if needed."""
        with _registry_lock:
            att = _registry.get(db)
            if att is None or not _catalog_still_there(att):
                att = cls(db, Catalog.attach(db, wait=wait),
                          DEFAULT_LOCK_TIMEOUT if lock_timeout is None else lock_timeout)
                _registry[db] = att
            elif lock_timeout is not None:
                att.lock_timeout = lock_timeout
            att.handles += 1
            return att

    def release(self) -> None:
        with _registry_lock:
            self.handles -= 1
            last = self.handles <= 0 and _registry.get(self.db) is self
            if last:
                del _registry[self.db]
                self.closed = True
        if last:
            _run_detach_hooks(self.db)
            with _registry_lock:
                self.catalog.close()

    def forget(self) -> None:
        """Drop this attachment from the registry (the database is gone)."""
        with _registry_lock:
            if _registry.get(self.db) is self:
                del _registry[self.db]
            self.closed = True
        _run_detach_hooks(self.db)
        with _registry_lock:
            self.catalog.close()

    def table(self, entry: TableEntry) -> tuple[TableLock, TableStore]:
        """The lock and store of ``entry``, opened once per process."""
        with self._mutex:
            pair = self._tables.get(entry.uid)
            if pair is None:
                try:
                    drain = posix_ipc.Semaphore(names.drain_semaphore(self.db, entry.uid))
                except posix_ipc.ExistentialError:
                    raise TableNotFoundError(f"table {entry.name!r} was dropped") from None
                lock = TableLock(self.db, entry.name, entry.uid, self.catalog.buf,
                                 entry.index, drain, self.lock_timeout)
                ttl = entry.meta.get("ttl")
                kind = CacheStore if names.is_cache_table(entry.name) else \
                    TtlStore if ttl else TableStore
                store = kind(self.db, entry.name, self.catalog.buf, entry.index, entry.uid, lock)
                if ttl:
                    store.set_ttl(ttl)
                lock.recover = store.recover
                pair = (lock, store)
                self._tables[entry.uid] = pair
            pair[0].timeout = self.lock_timeout
            return pair

    def forget_table(self, uid: int) -> None:
        with self._mutex:
            self._tables.pop(uid, None)


def _new_thread_locks_after_fork() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    for att in list(_registry.values()):
        att._mutex = threading.Lock()
        if att.journal is not None:
            att.journal.after_fork()


os.register_at_fork(after_in_child=_new_thread_locks_after_fork)


def _run_detach_hooks(db: str) -> None:
    for hook in detach_hooks:
        hook(db)


def _catalog_still_there(att: Attachment) -> bool:
    """False when the database was destroyed and maybe recreated since we mapped it."""
    if att.catalog.is_destroyed():
        return False
    try:
        st = os.stat(os.path.join(names.SHM_DIR, names.catalog_segment(att.db)[1:]))
    except FileNotFoundError:
        return False
    return st.st_ino == att.catalog.segment.ino
