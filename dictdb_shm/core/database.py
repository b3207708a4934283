"""DictDB: a handle on one shared-memory database.

Owns: the database lifecycle as a user sees it (create or attach by name,
private databases, close, destroy, context manager, pickling) and the table
catalogue calls.  Must never: edit the catalog itself (the coordinator does,
through client.request) or touch records.

Fork: a handle opened before ``fork`` (gunicorn ``--preload``, a fork
pool) works in the child as it does in the parent; the rules for a child
forked inside a lock's block are in lock/rwlock.py ("Fork").  A private
database stays its creator's: a child's close() or exit only detaches.
A handle pickles as its name (``DictDB.attach(name)`` on unpickling).

Lifetimes (an attached process that exits or is killed never removes data):

* ``DictDB(name)`` creates the database or attaches to it, and starts its
  coordinator when none runs.  It lives until ``destroy()`` or until its
  coordinator is stopped; ``close()`` and process exit only detach.
* ``DictDB()`` is private: a generated name others may attach to, removed
  when its creator closes it or exits.  If the creator is killed, the
  coordinator notices within its ``HOUSEKEEPING_INTERVAL`` (0.2 s,
  coordinator/service.py) and removes it.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import weakref
from typing import Any, Mapping

from dictdb_shm import names
from dictdb_shm.attachment import Attachment
from dictdb_shm.cache import settings as cache_settings
from dictdb_shm.cache.cache import Cache
from dictdb_shm.coordinator import client
from dictdb_shm.core import schema as schemas
from dictdb_shm.core.table import Table
from dictdb_shm.engine.catalog import TableEntry
from dictdb_shm.errors import (CorruptionError, DatabaseClosedError, DuplicateTableError,
                               InvalidArgumentError, InvalidNameError, TableNotFoundError)
from dictdb_shm.persistence import durable, saveload
from dictdb_shm.persistence.csv_io import import_csv
from dictdb_shm.procinfo import own_identity

_private_dbs: "weakref.WeakSet[DictDB]" = weakref.WeakSet()
_open_handles: "weakref.WeakSet[DictDB]" = weakref.WeakSet()
CHECKPOINT_TIMEOUT = 600.0


class DictDB:
    """A shared-memory database that many processes use at once.

    ``lock_timeout`` (seconds, default 30 or $DICTDB_SHM_LOCK_TIMEOUT) bounds
    every lock wait of this process on this database; past it the call raises
    LockTimeoutError naming the table and the holder's pid.

    ``path`` makes a named database durable: restored from that directory at
    start, every write call journaled there with ``durability`` "always",
    "everysec" or "no" (persistence/keeper.py).  Processes that attach
    later need not pass it.
    """

    _att: Attachment | None = None
    _private = False

    def __init__(self, name: str | None = None, *, lock_timeout: float | None = None,
                 path: str | os.PathLike | None = None, durability: str = "everysec") -> None:
        persist = durable.requested(name, path, durability)
        if name is None:
            client.sweep_orphaned_private()
            name = names.private_db_name()
            client.ensure_running(name, create=True, private=True, owner=own_identity())
            self._private = True
            self._creator_pid = os.getpid()
            _private_dbs.add(self)
        else:
            names.check_db_name(name)
            client.ensure_running(name, create=True, persist=persist)
        self._name = name
        self._att = Attachment.get(name, wait=5, lock_timeout=lock_timeout)
        durable.check_matches(self._att.catalog, name, persist)
        # name -> ((slot, uid), Table): a cached Table is reused while the
        # catalog still holds that very table.
        self._tables: dict[str, tuple[tuple[int, int], Table]] = {}
        self._mutex = threading.Lock()
        _open_handles.add(self)

    @classmethod
    def attach(cls, name: str, *, lock_timeout: float | None = None) -> "DictDB":
        """Attach to an existing database; DatabaseNotFoundError when absent."""
        names.check_db_name(name)
        client.ensure_running(name, create=False)
        db = cls.__new__(cls)
        db._name = name
        db._att = Attachment.get(name, wait=5, lock_timeout=lock_timeout)
        db._tables = {}
        db._mutex = threading.Lock()
        _open_handles.add(db)
        return db

    # ------------------------------------------------------------ lifecycle
    @property
    def name(self) -> str:
        return self._name

    @property
    def is_private(self) -> bool:
        return self._attachment().catalog.private

    def _attachment(self) -> Attachment:
        att = self._att
        if att is None:
            raise DatabaseClosedError(f"database {self._name!r} is closed in this handle")
        if att.closed or att.catalog.is_destroyed():
            # closed: another handle of this process destroyed it (forget()).
            raise DatabaseClosedError(f"database {self._name!r} was destroyed")
        return att

    def close(self) -> None:
        """Detach this handle; the data stays for the other processes.  On the
        private database's creating handle, close() removes the database."""
        if self._private and os.getpid() == self._creator_pid:
            self.destroy()
            return
        att, self._att = self._att, None
        if att is not None:
            att.release()
        self._tables = {}

    def destroy(self) -> None:
        """Remove the database for every process: segments, semaphores and
        coordinator.  Other processes' handles then raise on use."""
        att, self._att = self._att, None
        if att is not None:
            att.forget()
        self._tables = {}
        client.destroy(self._name)

    def __enter__(self) -> "DictDB":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce__(self) -> tuple:
        return (DictDB.attach, (self._name,))

    def __repr__(self) -> str:
        state = "closed" if self._att is None else "open"
        return f"<DictDB {self._name!r} {state}>"

    # --------------------------------------------------------------- tables
    def create_table(self, table_name: str, primary_key: str = "id",
                     schema: Mapping[str, type] | None = None, *,
                     exist_ok: bool = False, ttl: float | None = None) -> Table:
        """Create a table every attached process sees.  DuplicateTableError
        when it exists, unless ``exist_ok`` and it has this primary key: then
        the existing table (so every worker of a pool can run the same
        start-up code).  With ``ttl`` (seconds) a record expires that long
        after its last write: no read returns it, and the coordinator
        deletes it (engine/expiry.py, coordinator/sweep.py)."""
        names.check_table_name(table_name)
        if names.is_cache_table(table_name):
            raise InvalidNameError(f"table names starting with {names.CACHE_TABLE_PREFIX!r} "
                                   "are reserved for caches", hint="use db.cache(name) "
                                   "for a cache, or another table name")
        if not isinstance(primary_key, str) or not primary_key:
            raise InvalidArgumentError("primary_key must be a non-empty field name")
        self._attachment()
        meta = {"pk": primary_key, "schema": schemas.encode_schema(schema, primary_key)}
        if ttl is not None:
            if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < 2**27:
                raise InvalidArgumentError(f"ttl must be a positive number of seconds (under "
                                           f"4 years) or None, not {ttl!r}")
            meta["ttl"] = float(ttl)
        try:
            client.request(self._name, "create_table", table_name, meta)
        except DuplicateTableError:
            if not exist_ok:
                raise
            table = self.get_table(table_name)
            if table.primary_key != primary_key:
                raise DuplicateTableError(
                    f"table {table_name!r} exists with primary key {table.primary_key!r}, "
                    f"not {primary_key!r}", hint="use the existing primary key, or "
                    "drop_table() first") from None
            return table
        return self.get_table(table_name)

    def get_table(self, table_name: str) -> Table:
        with self._mutex:
            att = self._attachment()
            cached = self._tables.get(table_name)
            if cached is not None and att.catalog.is_current(*cached[0]):
                return cached[1]
            entry = next((e for e in self._entries(att) if e.name == table_name
                          and not names.is_cache_table(e.name)), None)
            if entry is None:
                raise TableNotFoundError(f"no table {table_name!r} in database {self._name!r}")
            table = Table._open(self, table_name, entry.meta, att.table(entry)[1])
            self._tables[table_name] = ((entry.index, entry.uid), table)
            return table

    def drop_table(self, table_name: str) -> None:
        self._attachment()
        client.request(self._name, "drop_table", table_name)
        with self._mutex:
            self._tables.pop(table_name, None)

    def list_tables(self) -> list[str]:
        return [e.name for e in self._entries(self._attachment())
                if not names.is_cache_table(e.name)]

    # --------------------------------------------------------------- caches
    def cache(self, name: str, *, max_items: int | None = None, max_bytes: int | None = None,
              ttl: float | None = None, serializer: str | None = None) -> Cache:
        """The shared cache ``name`` (created when new): the same entries for
        every process that opens it.  ``ttl`` is the default lifetime of an
        entry in seconds; past ``max_items`` or ``max_bytes`` the least
        recently used entries are evicted (approximately: cache/eviction.py);
        ``serializer="pickle"`` takes any picklable value (trusted data only).
        Settings are fixed at creation; None takes the existing ones."""
        asked = cache_settings.requested(max_items, max_bytes, ttl, serializer)
        return cache_settings.open_cache(self, self._attachment(), name, asked)

    def _entries(self, att: Attachment) -> list[TableEntry]:
        """The catalog's tables.  A coordinator that died in the middle of an
        edit leaves the catalog unsettled until a new one repairs it: start one,
        as DictDB(name) would, and read again."""
        try:
            return att.catalog.entries()
        except CorruptionError:
            client.ensure_running(self._name, create=False)
            return att.catalog.entries()

    def import_csv(self, path: str, table_name: str, *, primary_key: str = "id",
                   delimiter: str = ",", has_header: bool = True, encoding: str = "utf-8",
                   schema: Mapping[str, type] | None = None, infer_types: bool = True,
                   skip_validation: bool = False) -> int:
        """Create ``table_name`` from a CSV file in one all-or-nothing insert;
        returns the number of rows.  See persistence/csv_io.py for the rules."""
        return import_csv(self, path, table_name, primary_key=primary_key,
                          delimiter=delimiter, has_header=has_header, encoding=encoding,
                          schema=schema, infer_types=infer_types,
                          skip_validation=skip_validation)

    # ---------------------------------------------------------- persistence
    # persistence/saveload.py has the rules: one consistent capture of every
    # table, encoded outside the locks into a file written atomically.
    def save(self, path: str | os.PathLike, file_format: str = "json") -> None:
        """Save every table to ``path`` (``"json"``: DictDB's layout, or ``"pickle"``)."""
        saveload.save(self, path, file_format)

    @classmethod
    def load(cls, path: str | os.PathLike, file_format: str = "json", *,
             name: str | None = None) -> "DictDB":
        """A new database holding the file's tables: private, or named ``name``
        (DatabaseExistsError when it exists).  A bad file creates nothing."""
        return saveload.load(cls, path, file_format, name=name)

    def checkpoint(self) -> dict:
        """Write a snapshot of a durable database now (its coordinator does,
        in the background of the writers); InvalidArgumentError without a path."""
        self._attachment()
        return client.request(self._name, "checkpoint", timeout=CHECKPOINT_TIMEOUT)

    async def async_save(self, path: str | os.PathLike, file_format: str = "json") -> None:
        """``save`` in a worker thread, off the event loop."""
        await asyncio.to_thread(self.save, path, file_format)

    @classmethod
    async def async_load(cls, path: str | os.PathLike, file_format: str = "json", *,
                         name: str | None = None) -> "DictDB":
        """``load`` in a worker thread, off the event loop."""
        return await asyncio.to_thread(cls.load, path, file_format, name=name)


def _remove_private_databases() -> None:
    for db in list(_private_dbs):
        if db._att is not None and os.getpid() == db._creator_pid:
            try:
                db.destroy()
            except Exception:  # exiting: the coordinator removes it anyway
                pass


def _new_thread_locks_after_fork() -> None:
    # A parent's thread may have held a handle's lock at the fork; that
    # thread does not exist in the child.  (attachment.py does the same.)
    for db in list(_open_handles):
        db._mutex = threading.Lock()


atexit.register(_remove_private_databases)
os.register_at_fork(after_in_child=_new_thread_locks_after_fork)
Table._database_type = DictDB
