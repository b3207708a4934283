"""The snapshot file of a durable database: its format, both ways.

Owns: writing ``<dir>/snapshot.ddb`` atomically from table images
(capture.py) and reading it back, checked whole, as tables ready to
install; version 1 files (records as msgpack) stay readable.  Must never:
touch a database (restore.py installs what this reads), or hand out bytes
whose checksum it has not verified.

Version 2 (written now)::

    MAGIC b"DDBSNAP2"  u32 header length  msgpack header {"version": 2,
    "generation", "layout": engine layout version, "tables": [{"name", "meta",
    "indexes", "count", "next_pk", "heap", "dir_cap", "index"}, ...]}
    then for each table: "heap" bytes of records, count x u64 offset log,
    dir_cap x 16 bytes of pk directory, "index" bytes of index segment
    TRAILER (u64 length and u32 crc32 of everything between MAGIC and
    TRAILER, b"DDBEND")

The sections are the table's segments as engine/bulk.py builds them: the
heap's own record bytes (live records only, compacted, never decoded), so
restoring copies them into shared memory and publishes (close to a file
read).  The directory and index sections depend on the engine's layout
version; a snapshot of another layout is restored from its heap section
alone (the records' headers hold their key hashes), rebuilding the rest.

Version 1 (read only): MAGIC b"DDBSNAP1", a msgpack header {"version": 1,
"generation", "tables": [{"name", "meta", "indexes", "count"}]}, then each
table's records as msgpack, then the same TRAILER.  It held no next_pk: the
next automatic key is then one past the largest int key.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import zlib
from typing import Iterable

import msgpack

from dictdb_shm.engine import bulk
from dictdb_shm.engine import layout as L
from dictdb_shm.errors import CorruptionError, FileAccessError
from dictdb_shm.persistence.atomic import atomic_file, read_whole
from dictdb_shm.persistence.capture import TableImage, gc_paused

SNAPSHOT = "snapshot.ddb"
MAGIC = b"DDBSNAP2"
MAGIC_V1 = b"DDBSNAP1"
HEADER_LEN = struct.Struct("<I")
TRAILER = struct.Struct("<QI6s")
TRAILER_MAGIC = b"DDBEND"
VERSION = 2
HINT = ("the snapshot is damaged; restore the directory from a backup, or move "
        "snapshot.ddb aside to restore from the journals alone")


@dataclasses.dataclass
class TableSnapshot:
    """One table of a snapshot: its segments ready to install (``built``),
    or, from a version 1 file, its records."""

    name: str
    meta: dict
    indexes: dict[str, str]
    count: int
    built: bulk.BuiltTable | None = None
    records: list[dict] | None = None


# ------------------------------------------------------------------ writing
def built_image(img: TableImage) -> bulk.BuiltTable:
    """The segments a table holding ``img``'s live records is installed from."""
    return bulk.build(bulk.compact_image(img.heap, img.next_pk, img.log or None), img.indexes,
                      img.name)


def sections(built: bulk.BuiltTable) -> list[memoryview]:
    """``built``'s heap, offset log, directory and index, as bytes, in file order."""
    return [memoryview(s).cast("B") for s in (built.heap, built.log, built.directory, built.index)]


def from_sections(parts: list, count: int, dir_cap: int, next_pk: int, indexes: dict[str, str],
                  name: str, same_layout: bool) -> bulk.BuiltTable:
    """A table's segments from the four ``sections`` of a file; rebuilt from
    the heap alone when the file was written with another engine layout."""
    heap, log, directory, index = parts
    if same_layout:
        return bulk.BuiltTable(heap, log, dir_cap, directory, index, count, next_pk)
    return bulk.build(bulk.compact_image(heap, next_pk), indexes or {}, name)


def write_snapshot(directory: str, generation: int, images: Iterable[TableImage]) -> None:
    """Write the snapshot of ``images`` (one instant: capture.py) atomically."""
    built = [(img, built_image(img)) for img in images]
    header = {"version": VERSION, "generation": generation, "layout": L.LAYOUT_VERSION,
              "tables": [{"name": img.name, "meta": img.meta, "indexes": img.indexes,
                          "count": b.count, "next_pk": b.next_pk, "heap": len(b.heap),
                          "dir_cap": b.dir_cap, "index": len(b.index)}
                         for img, b in built]}
    packed = msgpack.packb(header, use_bin_type=True)
    path = os.path.join(directory, SNAPSHOT)
    try:
        with atomic_file(path) as f:
            f.write(MAGIC)
            crc, length = 0, 0
            for part in [HEADER_LEN.pack(len(packed)), packed] + [
                    s for _, b in built for s in sections(b)]:
                f.write(part)
                crc = zlib.crc32(part, crc)
                length += len(part)
            f.write(TRAILER.pack(length, crc, TRAILER_MAGIC))
    except OSError as exc:
        raise FileAccessError(f"cannot write the snapshot {path}: {exc.strerror or exc}") \
            from None


# ------------------------------------------------------------------ reading
def read_snapshot(path: str) -> tuple[int, list[TableSnapshot]]:
    """(generation, tables) of the checked snapshot at ``path``."""
    data = read_whole(path, "the snapshot")
    magic = data[:len(MAGIC)]
    if len(data) < len(MAGIC) + TRAILER.size or magic not in (MAGIC, MAGIC_V1):
        raise _bad(path, "not a dictdb_shm snapshot (or cut short)")
    length, crc, end = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    body = memoryview(data)[len(MAGIC):len(data) - TRAILER.size]
    if end != TRAILER_MAGIC or length != len(body):
        raise _bad(path, "the snapshot is cut short")
    if zlib.crc32(body) != crc:
        raise _bad(path, "the snapshot's checksum does not match")
    try:
        return (_read_v2 if magic == MAGIC else _read_v1)(body, path)
    except (KeyError, TypeError, ValueError, IndexError, msgpack.OutOfData,
            msgpack.ExtraData) as exc:
        raise _bad(path, f"its tables do not read back ({type(exc).__name__}: {exc})") \
            from None


def _read_v2(body: memoryview, path: str) -> tuple[int, list[TableSnapshot]]:
    (n,) = HEADER_LEN.unpack_from(body, 0)
    pos = HEADER_LEN.size + n
    header = msgpack.unpackb(body[HEADER_LEN.size:pos], raw=False, strict_map_key=False)
    if not (isinstance(header, dict) and header.get("version") == VERSION
            and isinstance(header.get("tables"), list)):
        raise _bad(path, f"snapshot version {header.get('version')!r} is not {VERSION}")
    same_layout = header.get("layout") == L.LAYOUT_VERSION
    out = []
    for t in header["tables"]:
        count, heap_len, dir_cap, index_len = (int(t[k]) for k in
                                               ("count", "heap", "dir_cap", "index"))
        sizes = (heap_len, 8 * count, 16 * dir_cap, index_len)
        parts = []
        for size in sizes:
            if size < 0 or pos + size > len(body):
                raise _bad(path, f"table {t.get('name')!r} runs past the end of the file")
            parts.append(body[pos:pos + size])
            pos += size
        built = from_sections(parts, count, dir_cap, int(t["next_pk"]), t["indexes"],
                              t["name"], same_layout)
        out.append(TableSnapshot(t["name"], t["meta"], t["indexes"] or {}, count, built))
    if pos != len(body):
        raise _bad(path, "bytes after the last table")
    return int(header["generation"]), out


def _read_v1(body: memoryview, path: str) -> tuple[int, list[TableSnapshot]]:
    unpacker = msgpack.Unpacker(io.BytesIO(body), raw=False, strict_map_key=False,
                                max_buffer_size=max(len(body), 1 << 20))
    header = unpacker.unpack()
    if not (isinstance(header, dict) and header.get("version") == 1
            and isinstance(header.get("tables"), list)):
        raise _bad(path, f"snapshot version {header.get('version')!r} is not 1")
    out = []
    with gc_paused():
        for t in header["tables"]:
            count = int(t["count"])
            records = [unpacker.unpack() for _ in range(count)]
            out.append(TableSnapshot(t["name"], t["meta"], t.get("indexes") or {}, count,
                                     records=records))
    return int(header.get("generation", 0)), out


def snapshot_generation(directory: str) -> int:
    """The generation the snapshot in ``directory`` replays from (0: none),
    read from its header alone."""
    try:
        with open(os.path.join(directory, SNAPSHOT), "rb") as f:
            head = f.read(1 << 20)
    except FileNotFoundError:
        return 0
    try:
        if head.startswith(MAGIC):
            (n,) = HEADER_LEN.unpack_from(head, len(MAGIC))
            start = len(MAGIC) + HEADER_LEN.size
            header = msgpack.unpackb(head[start:start + n], raw=False, strict_map_key=False)
        else:
            header = next(iter(msgpack.Unpacker(io.BytesIO(head[len(MAGIC):]), raw=False)))
        return int(header["generation"])
    except Exception:
        return 0


def _bad(path: str, problem: str) -> CorruptionError:
    return CorruptionError(f"{path}: {problem}", hint=HINT)
