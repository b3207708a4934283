"""Read-only facts about this user's databases, for the command line.

Owns: listing the databases in /dev/shm (name, private or named, coordinator,
tables, bytes), a database's per-table figures (rows, bytes used and free,
indexes, lock holders), the processes attached to it (psutil names them),
and the sentence saying what a destroy removes.  Must never: write to a
database, start a coordinator, or signal a process.
"""

from __future__ import annotations

import os
from typing import Any

import psutil

from dictdb_shm import names
from dictdb_shm.engine import layout as L
from dictdb_shm.engine.catalog import Catalog
from dictdb_shm.errors import DictDBError, LockTimeoutError
from dictdb_shm.procinfo import is_alive

CATALOG_SUFFIX = ".catalog"
LOCK_PEEK = 0.2              # seconds stat waits for a table's read lock


def database_names() -> list[str]:
    """Databases of this user with a catalog in /dev/shm."""
    found = []
    for entry in names.shm_listing():
        if entry.startswith("dictdb_") and entry.endswith(CATALOG_SUFFIX):
            db = entry[len("dictdb_"):-len(CATALOG_SUFFIX)]
            try:
                names.check_db_name(db)
                st = os.lstat(os.path.join(names.SHM_DIR, entry))
            except (DictDBError, OSError):
                continue
            if st.st_uid == os.geteuid():
                found.append(db)
    return sorted(found)


def shm_bytes(db: str) -> int:
    total = 0
    for entry in names.shm_entries(db):
        try:
            total += os.lstat(os.path.join(names.SHM_DIR, entry)).st_blocks * 512
        except OSError:
            pass
    return total


def summary(db: str) -> dict[str, Any]:
    """``{"name", "private", "coordinator", "tables", "bytes", "path"}`` of ``db``."""
    info: dict[str, Any] = {"name": db, "private": None, "coordinator": None, "tables": None,
                            "bytes": shm_bytes(db), "path": None}
    try:
        catalog = Catalog.attach(db, check_tables=False)
    except DictDBError as exc:
        info["error"] = exc.message
        return info
    try:
        pid, ticks = catalog.coordinator()
        info.update(private=catalog.private, coordinator=pid if is_alive(pid, ticks) else None,
                    tables=len(catalog.entries()), path=catalog.persistence()[0])
    except DictDBError as exc:
        info["error"] = exc.message
    finally:
        catalog.close()
    return info


def lock_holders(catalog: Catalog, slot: int) -> dict[str, Any]:
    """The writer and the readers recorded in a table's lock region (pids)."""
    w = L.words(catalog.buf)
    base = (L.slot_offset(slot) + L.LOCK_REGION) // L.WORD
    writer = w[base + L.LOCK_WRITER // L.WORD]
    flags = base + L.LOCK_READER_FLAGS // L.WORD
    pids = base + L.LOCK_READER_PIDS // L.WORD
    readers = [w[pids + i] for i in range(L.READER_SLOTS) if w[flags + i]]
    return {"writer": writer or None, "readers": readers}


def descriptor(catalog: Catalog, slot: int) -> L.Descriptor:
    """A table's current descriptor, read without any lock (a diagnostic:
    it may be a moment old)."""
    base = L.slot_offset(slot) + L.STORE_REGION
    active = L.words(catalog.buf)[(base + L.STORE_ACTIVE) // L.WORD]
    return L.Descriptor._make(L.DESCRIPTOR.unpack_from(
        catalog.buf, base + L.STORE_DESC + L.DESC_SIZE * (active & 1)))


def table_stats(db: Any) -> list[dict[str, Any]]:
    """Per table of the open database handle ``db``: rows, bytes, indexes
    ("?" while a writer holds the table longer than LOCK_PEEK), lock holders."""
    att = db._attachment()
    out = []
    for entry in att.catalog.entries():
        lock, store = att.table(entry)
        d = descriptor(att.catalog, entry.index)
        try:
            with lock.read_lock(timeout=LOCK_PEEK):
                kinds: Any = store.read(lambda s: s.indexes())
        except LockTimeoutError:
            kinds = "?"
        out.append({"table": entry.name, "rows": d.live, "bytes_used": d.heap_end,
                    "bytes_free": d.heap_cap - d.heap_end, "indexes": kinds,
                    **lock_holders(att.catalog, entry.index)})
    return out


def attached_processes(db: str) -> list[dict[str, Any]]:
    """Processes of this user that map ``db``'s catalog (psutil), by pid."""
    path = names.shm_path(names.catalog_segment(db))
    found = []
    for proc in psutil.process_iter(["pid", "name", "uids"]):
        uids = proc.info.get("uids")
        if uids is None or uids.real != os.getuid():
            continue
        try:
            if any(m.path == path for m in proc.memory_maps(grouped=True)):
                found.append({"pid": proc.pid, "name": process_name(proc.pid)})
        except (psutil.Error, OSError):
            continue
    return found


def process_name(pid: int | None) -> str:
    """``name (cmdline)`` of ``pid``, shortened; "gone" when it exited."""
    if not pid:
        return "-"
    try:
        p = psutil.Process(pid)
        cmd = " ".join(p.cmdline())[:60]
        return f"{p.name()}: {cmd}" if cmd else p.name()
    except psutil.Error:
        return "gone"


def what_destroy_removes(db: str) -> str:
    """One sentence for ``stop`` and ``destroy``: what goes, and what stays."""
    info = summary(db)
    tables = info["tables"]
    what = f"database {db!r} ({tables if tables is not None else '?'} tables, " \
           f"{info['bytes'] / 2**20:.1f} MiB of shared memory)"
    if info.get("path"):
        return f"removing the shared memory of {what}; its data stays in {info['path']}"
    return f"destroying {what}: it has no path, so its data is gone for good"
