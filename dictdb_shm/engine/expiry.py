"""TtlStore: the TableStore of a table made with ``create_table(..., ttl=)``,
whose records expire ``ttl`` seconds after their last write.

Owns: hiding expired records from every read (``get``, ``lookup``,
``scan``, index candidates, ``count``) and the expiry test itself.  Must
never write: the coordinator's sweep (coordinator/sweep.py) deletes expired
records, under the write lock like any writer.

A record's last write is its header's stamp (records.STAMP_AT), which every
write sets (1/16 s of the wall clock, mod 2**32); reads of a TTL table never
stamp.  So the expiry test is one header load, and a table without ``ttl``
keeps TableStore's paths untouched.  A searched scan answers nothing here
(the caller scans, filtering as it goes), since it finds records by their
bytes without their headers.
"""

from __future__ import annotations

from time import time
from typing import Any, Iterable, Iterator

from dictdb_shm.engine import indexing
from dictdb_shm.engine import records as R
from dictdb_shm.engine.store import TableStore

_RHEAD = R.HEAD.unpack_from
_STAMP = R.STAMP.unpack_from
_HDR = R.RECORD_HEADER
_VALUE = R.KIND_VALUE
_MASK = R.STAMP_MASK


def now_stamp() -> int:
    return R.stamp_of(time())


class TtlStore(TableStore):
    """A TableStore whose records expire ``ttl`` seconds after their last write."""

    STAMPED = True
    ttl_stamps = 0                  # the ttl in stamp units; set by attachment.py

    def set_ttl(self, seconds: float) -> None:
        self.ttl_stamps = max(1, int(seconds * R.STAMPS_PER_SECOND))

    def expired_stamp(self, stamp: int, now: int) -> bool:
        """Whether a record stamped ``stamp`` has expired at stamp ``now``."""
        return ((now - stamp) & _MASK) >= self.ttl_stamps

    def expired(self, heap: Any, off: int, now: int) -> bool:
        """Whether the record at ``off`` was last written ``ttl`` or more ago."""
        return ((now - _STAMP(heap, off + R.STAMP_AT)[0]) & _MASK) >= self.ttl_stamps

    def get(self, pk: Any, default: Any = None) -> Any:
        found = self.read(lambda s: s.lookup(pk))
        return default if found is None else found

    def _lookup(self, pkb: bytes, h: int, int_key: int) -> Any:
        # TableStore.lookup encodes the key; only the probe's answer differs.
        if not self._mask:
            return None
        heap = self.heap
        off = R.probe(self._dw, heap, self._shift, self._mask, h, pkb, int_key)[1]
        if off == R.PROBE_FULL:
            raise R.TornRead
        if off < 0 or self.expired(heap, off, now_stamp()):
            return None
        return R.decode_at(heap, off)

    def scan(self) -> Iterator[dict]:
        heap = self.heap
        end = self._heap_end
        now = now_stamp()
        ttl = self.ttl_stamps
        off = 0
        while off < end:
            total, blen, kind, flags, pklen = _RHEAD(heap, off)
            if total < _HDR:
                raise R.TornRead
            if kind == _VALUE and not flags & R.SUPERSEDED and \
                    ((now - _STAMP(heap, off + R.STAMP_AT)[0]) & _MASK) < ttl:
                start = off + _HDR + pklen
                yield R.decode_body(heap, start, blen)
            off += total

    def partition(self, shares: Any) -> None:
        """Not split: whether a record has expired depends on when it is read,
        so a query of a TTL table runs in one process."""
        return None

    def live_count(self) -> int:
        heap = self.heap
        end = self._heap_end
        now = now_stamp()
        n = off = 0
        while off < end:
            total, _, kind, flags, _ = _RHEAD(heap, off)
            if total < _HDR:
                raise R.TornRead
            if kind == _VALUE and not flags & R.SUPERSEDED and not self.expired(heap, off, now):
                n += 1
            off += total
        return n

    def count(self) -> int:
        return self.read(TtlStore.live_count)

    def index_candidates(self, field: str, op: str, value: Any) -> list[dict] | None:
        slots = indexing.candidate_slots(self.indexes_by_field, field, op, value)
        if slots is None:
            return None
        now = now_stamp()
        dw = self._dw
        fresh = [s for s in slots if not self.expired(self.heap, R.entry_record(dw[2 * s + 1]),
                                                       now)]
        return indexing.records_at(self.directory, self.heap, fresh)

    def scan_containing(self, field: str, values: Iterable[Any]) -> Iterator[dict] | None:
        return None
