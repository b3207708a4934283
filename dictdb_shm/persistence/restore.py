"""A durable database's directory: restoring, and checkpoints.

Owns: restoring a database from its directory (the snapshot, then every
journal from the snapshot's generation on), a checkpoint (move the journal
on, snapshot, drop the journals the snapshot covers) and the claim that
keeps two databases out of one directory.  Must never: run anywhere but in
the coordinator (it edits the catalog), or replace a snapshot except
atomically (snapshot.py owns the file's format).

A checkpoint (1) moves the journal generation on, so every write from then
on goes to a new file; (2) captures every table at one instant; (3) writes
the snapshot, naming the new generation; (4) removes the older journals.
Writers read the generation under their table's write lock and the capture
takes every table's lock after (1), so the old journals hold nothing the
snapshot lacks.  A crash between the steps leaves the old snapshot and all
the journals it needs.  Journal entries are idempotent, so replaying some
that the snapshot already holds is harmless.

A snapshot's tables are installed whole (engine/bulk.py through
``StorageEngine.load_image``): the heap's bytes are copied in as the file
holds them, with their offset log, directory and indexes, so a restore is
close to a read of the file.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from typing import Any

from dictdb_shm.engine import DELETE, PUT
from dictdb_shm.engine import layout as L
from dictdb_shm.errors import CorruptionError, DictDBError, FileAccessError
from dictdb_shm.persistence import journal as J
from dictdb_shm.persistence import snapshot as snap
from dictdb_shm.persistence.atomic import fsync_dir

log = logging.getLogger("dictdb_shm.persistence")

SNAPSHOT = snap.SNAPSHOT
CLAIM = "dictdb.lock"


# ------------------------------------------------------------------ claim
def claim_directory(directory: str, db: str) -> int:
    """Create ``directory`` if needed and take its claim (an flock the
    kernel drops when we die): FileAccessError when another database's
    coordinator holds it.  Returns the descriptor to keep open."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(directory, CLAIM), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
    except OSError as exc:
        raise FileAccessError(f"cannot use {directory} for database {db!r}: "
                              f"{exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another database"
        os.close(fd)
        raise FileAccessError(f"{directory} is in use by the coordinator of {owner!r}",
                              hint="give each durable database a directory of its own")\
            from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, db.encode(), 0)
    return fd


# ---------------------------------------------------------------- restore
def restore(att: Any, directory: str) -> dict:
    """Fill the (new, unpublished) database of attachment ``att`` from
    ``directory`` and set the journal generation writers will use.  Returns
    what was restored, for the log."""
    started = time.monotonic()
    path = os.path.join(directory, snap.SNAPSHOT)
    first = 0
    rows = 0
    if os.path.exists(path):
        first, tables = snap.read_snapshot(path)
        for t in tables:
            rows += _restore_table(att, path, t)
        del tables
    gens = [g for g in J.generations(directory) if g >= first]
    entries = 0
    known = {e.name: e for e in att.catalog.entries()}     # a catalog lookup reads every slot
    for g in gens:
        for entry in J.entries(J.journal_path(directory, g)):
            apply_entry(att, entry, known)
            entries += 1
    L.words(att.catalog.buf)[L.JOURNAL_GENERATION_AT // L.WORD] = max(gens + [first]) + 1
    return {"rows": rows, "entries": entries, "journals": len(gens), "since": first,
            "seconds": round(time.monotonic() - started, 3)}


def _restore_table(att: Any, path: str, t: snap.TableSnapshot) -> int:
    try:
        entry = att.catalog.add_table(t.name, t.meta)
        lock, store = att.table(entry)
        with lock.write_lock():
            if t.built is not None:
                store.load_image(t.built)
            else:
                store.bulk_load(t.records, t.meta["pk"], t.indexes)
    except (KeyError, TypeError, ValueError, DictDBError) as exc:
        raise CorruptionError(f"{path}: table {t.name!r} does not restore: "
                              f"{type(exc).__name__}: {exc}", hint=snap.HINT) from None
    return t.count


def apply_entry(att: Any, entry: list, known: dict[str, Any]) -> None:
    """Replay one journal entry (idempotent: see journal.py).  ``known``:
    the catalog's entries by table name, kept up to date here."""
    kind, table, data = entry
    found = known.get(table)
    if kind == J.CREATE:
        if found is None:
            known[table] = att.catalog.add_table(table, data)
        return
    if found is None:
        return              # written before a drop that follows (or is in the snapshot)
    lock, store = att.table(found)
    with lock.write_lock():
        if kind == J.DROP:
            att.catalog.remove_table(found)
        elif kind == J.INDEX:
            store.create_index(data[0], data[1])
        else:
            changes = [(pk, rec, PUT) if op == J.PUT else (pk, None, DELETE)
                       for op, pk, rec in data
                       if op == J.PUT or store.read(lambda s: s.lookup(pk)) is not None]
            store.apply(changes)
    if kind == J.DROP:
        del known[table]
        att.forget_table(found.uid)


# ------------------------------------------------------------- checkpoint
def checkpoint(att: Any, directory: str, images_of: Any) -> dict:
    """Snapshot the database now and drop the journals it covers (see the
    module docstring for the order).  ``images_of(att)`` captures the tables."""
    started = time.monotonic()
    words = L.words(att.catalog.buf)
    new = words[L.JOURNAL_GENERATION_AT // L.WORD] + 1
    try:
        os.close(os.open(J.journal_path(directory, new),
                         os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        fsync_dir(directory)
    except OSError as exc:
        raise FileAccessError(f"cannot start a journal in {directory}: "
                              f"{exc.strerror or exc}") from None
    words[L.JOURNAL_GENERATION_AT // L.WORD] = new
    images = images_of(att)
    snap.write_snapshot(directory, new, images)
    for g in J.generations(directory):
        if g < new:
            try:
                os.unlink(J.journal_path(directory, g))
            except FileNotFoundError:
                pass
    fsync_dir(directory)
    return {"generation": new, "rows": sum(i.count for i in images),
            "seconds": round(time.monotonic() - started, 3)}


def journal_bytes(directory: str, generation: int) -> int:
    """Bytes of journal the next restore would replay from ``generation`` on."""
    total = 0
    for g in J.generations(directory):
        if g >= generation:
            try:
                total += os.path.getsize(J.journal_path(directory, g))
            except OSError:
                pass
    return total
