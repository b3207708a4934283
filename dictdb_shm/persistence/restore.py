"""A durable database's directory: the snapshot, restoring, and checkpoints.

Owns: the snapshot file's format, restoring a database from its directory
(the snapshot, then every journal from the snapshot's generation on), a
checkpoint (move the journal on, snapshot, drop the journals the snapshot
covers) and the claim that keeps two databases out of one directory.  Must
never: run anywhere but in the coordinator (it edits the catalog), or
replace a snapshot except atomically.

Snapshot ``<dir>/snapshot.ddb``::

    MAGIC  msgpack header {"version", "generation", "tables": [{"name", "meta",
           "indexes", "count"}, ...]}  each table's ``count`` records as msgpack
           (the heap's own bytes, copied, never decoded)  TRAILER (u64 length and
           u32 crc32 of everything between MAGIC and TRAILER, b"DDBEND")

A checkpoint (1) moves the journal generation on, so every write from then
on goes to a new file; (2) captures every table at one instant; (3) writes
the snapshot, naming the new generation; (4) removes the older journals.
Writers read the generation under their table's write lock and the capture
takes every table's lock after (1), so the old journals hold nothing the
snapshot lacks.  A crash between the steps leaves the old snapshot and all
the journals it needs.  Journal entries are idempotent, so replaying some
that the snapshot already holds is harmless.
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import struct
import time
import zlib
from typing import Any, Iterable

import msgpack

from dictdb_shm.engine import DELETE, PUT
from dictdb_shm.engine import layout as L
from dictdb_shm.errors import CorruptionError, DictDBError, FileAccessError
from dictdb_shm.persistence import journal as J
from dictdb_shm.persistence.atomic import atomic_file, fsync_dir, read_whole
from dictdb_shm.persistence.capture import TableImage

log = logging.getLogger("dictdb_shm.persistence")

SNAPSHOT = "snapshot.ddb"
CLAIM = "dictdb.lock"
MAGIC = b"DDBSNAP1"
TRAILER = struct.Struct("<QI6s")
TRAILER_MAGIC = b"DDBEND"
VERSION = 1
RESTORE_CHUNK = 50_000        # records per write call while restoring
HINT = ("the snapshot is damaged; restore the directory from a backup, or move "
        "snapshot.ddb aside to restore from the journals alone")


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


# --------------------------------------------------------------- snapshot
def write_snapshot(directory: str, generation: int, images: Iterable[TableImage]) -> None:
    images = list(images)
    header = {"version": VERSION, "generation": generation, "tables": [
        {"name": i.name, "meta": i.meta, "indexes": i.indexes, "count": i.count}
        for i in images]}
    path = os.path.join(directory, SNAPSHOT)
    try:
        with atomic_file(path) as f:
            f.write(MAGIC)
            crc, length = 0, 0
            for part in _snapshot_parts(header, images):
                f.write(part)
                crc = zlib.crc32(part, crc)
                length += len(part)
            f.write(TRAILER.pack(length, crc, TRAILER_MAGIC))
    except OSError as exc:
        raise FileAccessError(f"cannot write the snapshot {path}: {exc.strerror or exc}") \
            from None


def _snapshot_parts(header: dict, images: list[TableImage]) -> Iterable[bytes]:
    yield msgpack.packb(header, use_bin_type=True)
    for img in images:
        batch: list[bytes] = []
        for body in img.bodies():
            batch.append(body)
            if len(batch) >= RESTORE_CHUNK:
                yield b"".join(batch)
                batch = []
        if batch:
            yield b"".join(batch)


def read_snapshot(path: str) -> tuple[dict, Any]:
    """(header, msgpack.Unpacker positioned at the first record) of a checked snapshot."""
    data = read_whole(path, "the snapshot")
    if len(data) < len(MAGIC) + TRAILER.size or not data.startswith(MAGIC):
        raise CorruptionError(f"{path}: not a dictdb_shm snapshot (or cut short)", hint=HINT)
    length, crc, end = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    body = memoryview(data)[len(MAGIC):len(data) - TRAILER.size]
    if end != TRAILER_MAGIC or length != len(body):
        raise CorruptionError(f"{path}: the snapshot is cut short", hint=HINT)
    if zlib.crc32(body) != crc:
        raise CorruptionError(f"{path}: the snapshot's checksum does not match", hint=HINT)
    unpacker = msgpack.Unpacker(io.BytesIO(body), raw=False, strict_map_key=False,
                                max_buffer_size=max(len(body), 1 << 20))
    header = unpacker.unpack()
    if not (isinstance(header, dict) and header.get("version") == VERSION
            and isinstance(header.get("tables"), list)):
        raise CorruptionError(f"{path}: snapshot version {header.get('version')!r} is not "
                              f"{VERSION}", hint=HINT)
    return header, unpacker


# ---------------------------------------------------------------- restore
def restore(att: Any, directory: str) -> dict:
    """Fill the (new, unpublished) database of attachment ``att`` from
    ``directory`` and set the journal generation writers will use.  Returns
    what was restored, for the log."""
    started = time.monotonic()
    path = os.path.join(directory, SNAPSHOT)
    first = 0
    rows = 0
    if os.path.exists(path):
        header, unpacker = read_snapshot(path)
        first = int(header.get("generation", 0))
        for t in header["tables"]:
            rows += _restore_table(att, path, t, unpacker)
    gens = [g for g in J.generations(directory) if g >= first]
    entries = 0
    for g in gens:
        for entry in J.entries(J.journal_path(directory, g)):
            apply_entry(att, entry)
            entries += 1
    L.words(att.catalog.buf)[L.JOURNAL_GENERATION_AT // L.WORD] = max(gens + [first]) + 1
    return {"rows": rows, "entries": entries, "journals": len(gens), "since": first,
            "seconds": round(time.monotonic() - started, 3)}


def snapshot_generation(directory: str) -> int:
    """The generation the snapshot in ``directory`` replays from (0: none),
    read from its header alone."""
    try:
        with open(os.path.join(directory, SNAPSHOT), "rb") as f:
            head = f.read(1 << 20)
    except FileNotFoundError:
        return 0
    try:
        header = next(iter(msgpack.Unpacker(io.BytesIO(head[len(MAGIC):]), raw=False)))
        return int(header["generation"])
    except Exception:
        return 0


def _restore_table(att: Any, path: str, t: dict, unpacker: Any) -> int:
    try:
        name, meta, count = t["name"], t["meta"], int(t["count"])
        entry = att.catalog.add_table(name, meta)
        lock, store = att.table(entry)
        pk = meta["pk"]
        with lock.write_lock():
            left = count
            while left:
                n = min(left, RESTORE_CHUNK)
                store.apply([(r[pk], r, PUT) for r in (unpacker.unpack() for _ in range(n))])
                left -= n
            for field, kind in (t.get("indexes") or {}).items():
                store.create_index(field, kind)
    except (KeyError, TypeError, ValueError, msgpack.OutOfData, DictDBError) as exc:
        raise CorruptionError(f"{path}: table {t.get('name')!r} does not restore: "
                              f"{type(exc).__name__}: {exc}", hint=HINT) from None
    return count


def apply_entry(att: Any, entry: list) -> None:
    """Replay one journal entry (idempotent: see journal.py)."""
    kind, table, data = entry
    found = att.catalog.find(table)
    if kind == J.CREATE:
        if found is None:
            att.catalog.add_table(table, data)
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
    write_snapshot(directory, new, images)
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
