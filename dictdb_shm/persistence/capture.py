"""Consistent images of tables: every table's committed bytes as of one instant.

Owns: taking the read locks of several tables together, copying each one's
committed record bytes under them (``StorageEngine.committed_image``), and
decoding those private copies afterwards, outside every lock, in bounded
chunks.  Must never: write to a table, hold a lock while it decodes or
encodes, or hand out a whole table as Python objects at once.

Why this is one instant: a reader-writer lock held by us means no write call
of that table is in flight, and every table's lock is held at the same
moment while the bytes are copied.  Writers of those tables wait for the
copy (a memcpy of the committed heap: tens of milliseconds for a million
small rows), never for the encoding.

Why it cannot deadlock: a user may hold one table's write lock while writing
another.  Holding some read locks while waiting for the next could then wait
forever in a circle, so a lock that is not free at once is not waited for
while others are held: every lock taken is released, that one table is
waited for alone, and the round starts again.
"""

from __future__ import annotations

import dataclasses
import gc
import random
import struct
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

import msgpack

from dictdb_shm.engine import StorageEngine
from dictdb_shm.engine import records as R
from dictdb_shm.errors import CorruptionError, LockTimeoutError

CHUNK = 10_000               # records decoded at a time
TRY_LOCK = 0.02              # seconds to wait for one lock while holding others
DEFAULT_TIMEOUT = 30.0

_unpackb = msgpack.unpackb


@dataclasses.dataclass
class TableImage:
    """A table as of the instant of its capture: its definition and a
    private copy of its committed record bytes."""

    name: str
    meta: dict                     # the catalog's definition: {"pk": ..., "schema": ...}
    indexes: dict[str, str]        # field -> "hash" | "sorted"
    heap: bytes
    count: int                     # live records
    next_pk: int
    track_mark: int                # where changes since the last report begin (engine/tracking.py)
    heap_seg: int                  # which heap segment the bytes came from
    log: bytes = b""               # a copy of the offset log of ``heap`` (b"": none)

    @property
    def primary_key(self) -> str:
        return self.meta["pk"]

    @property
    def schema(self) -> dict[str, str] | None:
        """The schema by type names (``{"id": "int", ...}``), or None."""
        return self.meta.get("schema")

    def bodies(self, start: int = 0) -> Iterator[bytes]:
        """The msgpack body of every live record written at or after byte
        ``start``, in the order they were last written."""
        for kind, _key, body in R.records_in_force(self.heap, start, len(self.heap)):
            if kind == R.KIND_VALUE:
                yield body

    def records(self, chunk: int = CHUNK, start: int = 0) -> Iterator[list[dict]]:
        """The live records (from byte ``start`` on), decoded ``chunk`` at a
        time: the chunk's bodies are joined behind one msgpack array header
        and decoded by one C call."""
        heap = self.heap
        head = R.HEAD.unpack_from
        end = len(heap)
        off = start
        parts = [b""]
        add = parts.append
        value, superseded, header = R.KIND_VALUE, R.SUPERSEDED, R.RECORD_HEADER
        with gc_paused():
            while off < end:
                total, blen, kind, flags, pklen = head(heap, off)
                if total < header or off + total > end:
                    raise CorruptionError(f"a record header at offset {off} is damaged")
                if kind == value and not flags & superseded:
                    body = off + header + pklen
                    add(heap[body:body + blen])
                    if len(parts) > chunk:
                        yield _decode_bodies(parts)
                        parts = [b""]
                        add = parts.append
                off += total
            if len(parts) > 1:
                yield _decode_bodies(parts)

    def deleted_keys(self, start: int = 0) -> list[Any]:
        """The primary keys of deletes still in force written at or after ``start``."""
        return [_unpackb(key, strict_map_key=False)
                for kind, key, _body in R.records_in_force(self.heap, start, len(self.heap))
                if kind == R.KIND_MARKER]


_ARRAY_HEADER = struct.Struct(">BI")             # msgpack array 32: 0xdd, count


def _decode_bodies(parts: list) -> list[dict]:
    """``parts[1:]``, msgpack bodies, decoded as one list (``parts[0]`` is
    replaced by the array header)."""
    parts[0] = _ARRAY_HEADER.pack(0xDD, len(parts) - 1)
    return _unpackb(b"".join(parts), strict_map_key=False)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Decoding builds millions of acyclic dicts that the cyclic collector
    would scan again and again; pause it meanwhile (as bulk inserts do)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def capture(tables: Sequence[tuple[str, dict, StorageEngine]],
            timeout: float = DEFAULT_TIMEOUT) -> list[TableImage]:
    """Images of ``tables`` (name, catalog meta, store) as of one instant.
    LockTimeoutError when the locks could not all be had within ``timeout``."""
    return hold_all([store for _, _, store in tables], timeout, lambda: [
        _image(name, meta, store) for name, meta, store in tables])


def _image(name: str, meta: dict, store: StorageEngine) -> TableImage:
    heap, log, desc, indexes = store.committed_image()
    return TableImage(name, dict(meta), indexes, heap, desc.live, desc.next_pk,
                      desc.track_mark, desc.heap_seg, log)


def hold_all(stores: Iterable[StorageEngine], timeout: float, fn: Any) -> Any:
    """Run ``fn()`` while holding the read lock of every store at once (see
    the module docstring for the order and the back-off)."""
    stores = list(stores)
    deadline = time.monotonic() + timeout
    while True:
        held = []
        busy = None
        try:
            for store in stores:
                try:
                    store.lock.acquire_read(timeout=TRY_LOCK if held else
                                            max(0.0, deadline - time.monotonic()))
                except LockTimeoutError:
                    if not held:
                        raise
                    busy = store
                    break
                held.append(store)
            if busy is None:
                return fn()
        finally:
            for store in reversed(held):
                store.lock.release_read()
        if time.monotonic() > deadline:
            raise LockTimeoutError("timed out waiting to read every table at one instant",
                                   table=getattr(busy.lock, "table", None))
        # Wait for the busy table alone, then start the round again.
        busy.lock.acquire_read(timeout=max(0.0, deadline - time.monotonic()))
        busy.lock.release_read()
        time.sleep(random.uniform(0, 0.002))
