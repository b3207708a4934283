"""Secondary indexes in shared memory: hash and sorted, one segment per table.

Owns: the byte layout of a table's index segment, the value identities it
keys on, and maintenance and lookups of each index.  Must never: decide when
to rebuild (store.py and growth.py do), evaluate predicates (index answers are
*candidates*: the caller re-checks every record), or decode records.

Index segment ``/dictdb_<db>.t<uid>.idx<n>``: ``INDEX_HEADER`` bytes per index
slot ``j`` (of ``MAX_INDEXES``), then each index's arrays, sized from the
directory capacity ``C`` of the same generation.  The definitions (kind and
field) live in the headers, so a descriptor flip to a new segment changes
definitions and data at once::

    header j:  u64 kind (0 = unused), u64 distinct values, u64 value-table
               slots used (incl. tombstones), u64 sorted entries, u64 overflow
               entries, u16 field name length, field name (UTF-8)
    values:    C x (u64 value hash, u32 chain head slot + 1, u32 count)
    links:     C x (u32 prev slot + 1, u32 next slot + 1, u64 value hash),
               one node per pk-directory slot: a record's node is its
               directory slot, so add and remove are O(1) whatever the
               value's cardinality
    sorted:    C x (16-byte order key, u64 value hash), sorted      [sorted only]
    overflow:  OVERFLOW x (16-byte order key, u64 value hash), unsorted

Value identity: equal values (``1 == 1.0 == True``) get one ``value hash``
(stable across processes: never Python's ``hash()``); numbers, str and bytes
are indexed, anything else (None, lists, dicts, NaN) is left out, so queries
on such constants scan.  The 16-byte *order key* is monotone: ``a < b``
implies ``key(a) <= key(b)`` (numbers as order-preserving float64, strings
and bytes by their first 15 bytes), which is all a range lookup needs since
candidates are re-checked.

Crash safety lives in store.py: small writes edit an index in place with the
table's ``index_dirty`` flag raised, and undo rebuilds the segment; big writes
and rebuilds build a fresh segment that the commit flip publishes.
"""

from __future__ import annotations

import math
import struct
from typing import Any, Iterable, Iterator
from zlib import adler32, crc32

from dictdb_shm.engine.records import GOLDEN, MASK64, MAX_LOAD, normalize_value

KIND_HASH = 1
KIND_SORTED = 2
KINDS = {"hash": KIND_HASH, "sorted": KIND_SORTED}
KIND_NAMES = {v: k for k, v in KINDS.items()}

MAX_INDEXES = 8
INDEX_HEADER = 128
FIELD_AT = 40
MAX_FIELD_BYTES = INDEX_HEADER - FIELD_AT - 2
HEADER_SIZE = MAX_INDEXES * INDEX_HEADER
OVERFLOW = 4096

_HDR = struct.Struct("<QQQQQ")
_VAL = struct.Struct("<QII")
_LINK = struct.Struct("<IIQ")
_KEYED = struct.Struct("<16sQ")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_U64 = struct.Struct("<Q")
_D = struct.Struct(">d")
_BQ = struct.Struct(">Q")
_TOMB = MASK64

TAG_NUMBER = 0x10
TAG_STR = 0x20
TAG_BYTES = 0x30
NUMBER_MIN = bytes([TAG_NUMBER]) + bytes(15)
NUMBER_MAX = bytes([TAG_NUMBER]) + b"\xff" * 15
STR_MIN = bytes([TAG_STR]) + bytes(15)
STR_MAX = bytes([TAG_STR]) + b"\xff" * 15
BYTES_MIN = bytes([TAG_BYTES]) + bytes(15)
BYTES_MAX = bytes([TAG_BYTES]) + b"\xff" * 15


def _mix(x: int, salt: int) -> int:
    h = ((x ^ salt) * GOLDEN) & MASK64
    return h or 1          # 0 marks an empty value-table slot


def identity(value: Any) -> tuple[int, bytes] | None:
    """``(value hash, order key)`` of an indexable value, else None.

    Subclasses (IntEnum, str Enum, float subclasses) are keyed as their base
    type, because that is what msgpack stores and what a scan reads back."""
    t = type(value)
    if t not in _EXACT:
        if isinstance(value, (str, int, float, bytes)) and t is not bool:
            return identity(normalize_value(value))
        return None
    if t is str:
        b = value.encode("utf-8", "surrogatepass")
        return (_mix((crc32(b) << 32) | adler32(b), 0x5354),
                bytes([TAG_STR]) + b[:15].ljust(15, b"\0"))
    if t is int or t is bool or t is float:
        f = float(value) if t is not int else None
        if t is float:
            if math.isnan(value):
                return None
            if value.is_integer():
                value = int(value)
        if type(value) is float:
            h = _mix(_BQ.unpack(_D.pack(value))[0], 0x464C)
        else:
            value = int(value)
            h = _mix(value & MASK64, 0x4E55)
        return h, _number_key(f if f is not None else value)
    if t is bytes:
        return (_mix((crc32(value) << 32) | adler32(value), 0x4259),
                bytes([TAG_BYTES]) + value[:15].ljust(15, b"\0"))
    return None


_EXACT = frozenset({str, int, bool, float, bytes})


def _number_key(value: float | int) -> bytes:
    try:
        f = float(value)
    except OverflowError:
        f = math.inf if value > 0 else -math.inf
    if f == 0:
        f = 0.0            # -0.0 == 0.0 must share a key
    bits = _BQ.unpack(_D.pack(f))[0]
    bits = (~bits & MASK64) if bits >> 63 else bits | (1 << 63)
    return bytes([TAG_NUMBER]) + _BQ.pack(bits) + bytes(7)


def order_bounds(lo: Any, hi: Any) -> tuple[bytes, bytes] | None:
    """Order-key range holding every value v with lo <= v <= hi (None = open end).

    None when the bounds are of no indexable family, or of two different ones.
    """
    fams = {_family(v) for v in (lo, hi) if v is not None}
    if len(fams) != 1 or None in fams:
        return None
    fam = fams.pop()
    lo_key = identity(lo)[1] if lo is not None else _FAMILY_MIN[fam]  # type: ignore[index]
    hi_key = identity(hi)[1] if hi is not None else _FAMILY_MAX[fam]  # type: ignore[index]
    return lo_key, hi_key


def _family(value: Any) -> int | None:
    ident = identity(value)
    return ident[1][0] if ident else None


_FAMILY_MIN = {TAG_NUMBER: NUMBER_MIN, TAG_STR: STR_MIN, TAG_BYTES: BYTES_MIN}
_FAMILY_MAX = {TAG_NUMBER: NUMBER_MAX, TAG_STR: STR_MAX, TAG_BYTES: BYTES_MAX}


def segment_size(kinds: list[int], dir_cap: int) -> int:
    size = HEADER_SIZE
    for kind in kinds:
        size += index_size(kind, dir_cap)
    return size


def index_size(kind: int, dir_cap: int) -> int:
    size = dir_cap * 16 * 2 + OVERFLOW * 24
    if kind == KIND_SORTED:
        size += dir_cap * 24
    return size


class Index:
    """One index inside a mapped index segment (``buf``)."""

    __slots__ = ("buf", "j", "kind", "cap", "mask", "shift", "hdr", "values", "links",
                 "sorted", "overflow")

    def __init__(self, buf: Any, j: int, kind: int, base: int, dir_cap: int) -> None:
        self.buf = buf
        self.j = j
        self.kind = kind
        self.cap = dir_cap
        self.mask = dir_cap - 1
        self.shift = 64 - (dir_cap.bit_length() - 1)
        self.hdr = j * INDEX_HEADER
        self.values = base
        self.links = base + dir_cap * 16
        self.sorted = self.links + dir_cap * 16
        self.overflow = self.sorted + (dir_cap * 24 if kind == KIND_SORTED else 0)

    # ------------------------------------------------------------- counters
    def header(self) -> tuple[int, int, int, int, int]:
        return _HDR.unpack_from(self.buf, self.hdr)

    def _set(self, field: int, value: int) -> None:
        _U64.pack_into(self.buf, self.hdr + 8 * field, value)

    def room_for(self, new_values: int) -> bool:
        """Can ``new_values`` more distinct values be added without a rebuild?"""
        _, _, used, _, over = self.header()
        if used + new_values > self.cap * MAX_LOAD:
            return False
        return self.kind != KIND_SORTED or over + new_values <= OVERFLOW

    # --------------------------------------------------------- value table
    def _find(self, vh: int) -> tuple[int, int, int]:
        """(slot, head + 1, count) of value hash ``vh``; head 0 when absent
        (slot is then where to insert)."""
        buf, mask, values = self.buf, self.mask, self.values
        i = vh >> self.shift
        tomb = -1
        left = mask                        # probes after this one (no range iterator: hot)
        while True:
            h, head, count = _VAL.unpack_from(buf, values + 16 * i)
            if h == 0:
                return (tomb if tomb >= 0 else i), 0, 0
            if h == _TOMB:
                if tomb < 0:
                    tomb = i
            elif h == vh:
                return i, head, count
            if not left:
                raise RuntimeError("index value table is full")
            left -= 1
            i = (i + 1) & mask

    def add(self, slot: int, ident: tuple[int, bytes]) -> None:
        """Link directory slot ``slot`` into the chain of its value."""
        vh, key = ident
        buf = self.buf
        i, head, count = self._find(vh)
        if not head:
            was_empty = _U64.unpack_from(buf, self.values + 16 * i)[0] == 0
            kind, distinct, used, n_sorted, n_over = self.header()
            self._set(1, distinct + 1)
            if was_empty:
                self._set(2, used + 1)
            if self.kind == KIND_SORTED:
                _KEYED.pack_into(buf, self.overflow + 24 * n_over, key, vh)
                self._set(4, n_over + 1)
        else:
            _U32.pack_into(buf, self.links + 16 * (head - 1), slot + 1)      # old head.prev
        _LINK.pack_into(buf, self.links + 16 * slot, 0, head, vh)
        _VAL.pack_into(buf, self.values + 16 * i, vh, slot + 1, count + 1)

    def remove(self, slot: int, ident: tuple[int, bytes]) -> bool:
        """Unlink directory slot ``slot`` from the chain of its value.

        A slot that is not linked into that value's chain is left alone and
        False returned: unlinking it would rewrite the chain's head from a
        node that is not in it, losing every other record of the value."""
        vh = ident[0]
        buf = self.buf
        prev, nxt, linked_vh = _LINK.unpack_from(buf, self.links + 16 * slot)
        i, head, count = self._find(vh)
        if not head or linked_vh != vh or (not prev and head != slot + 1):
            return False
        if prev:
            _U32.pack_into(buf, self.links + 16 * (prev - 1) + 4, nxt)
        else:
            head = nxt
        if nxt:
            _U32.pack_into(buf, self.links + 16 * (nxt - 1), prev)
        _LINK.pack_into(buf, self.links + 16 * slot, 0, 0, 0)
        if count <= 1:
            _VAL.pack_into(buf, self.values + 16 * i, _TOMB, 0, 0)
            self._set(1, self.header()[1] - 1)
        else:
            _VAL.pack_into(buf, self.values + 16 * i, vh, head, count - 1)
        return True

    # -------------------------------------------------------------- lookups
    def chain(self, vh: int) -> Iterator[int]:
        """Directory slots of the records whose value hash is ``vh``."""
        _, head, count = self._find(vh)
        buf, links = self.buf, self.links
        for _ in range(count if head else 0):
            yield head - 1
            head = _LINK.unpack_from(buf, links + 16 * (head - 1))[1]
            if not head:
                return

    def heads(self) -> Iterator[int]:
        """The directory slot heading each distinct value's chain (one record
        per value), in value-table order."""
        buf, base = self.buf, self.values
        for i in range(self.cap):
            h, head, count = _VAL.unpack_from(buf, base + 16 * i)
            if h and h != _TOMB and head:
                yield head - 1

    def count_equal(self, values: Iterable[Any]) -> int | None:
        """How many records hold one of ``values`` (None: not indexable)."""
        hashes = set()
        for v in values:
            ident = identity(v)
            if ident is None:
                return None
            hashes.add(ident[0])
        return sum(self._find(vh)[2] for vh in hashes)

    def slots_equal(self, values: Iterable[Any]) -> list[int] | None:
        out: list[int] = []
        seen = set()
        for v in values:
            ident = identity(v)
            if ident is None:
                return None
            if ident[0] not in seen:
                seen.add(ident[0])
                out.extend(self.chain(ident[0]))
        return out

    def slots_between(self, lo_key: bytes, hi_key: bytes) -> list[int]:
        """Directory slots of the values whose order key is in [lo_key, hi_key]."""
        buf = self.buf
        _, _, _, n_sorted, n_over = self.header()
        hashes = []
        base = self.sorted
        i = self._bisect(lo_key, n_sorted)
        while i < n_sorted:
            key, vh = _KEYED.unpack_from(buf, base + 24 * i)
            if key > hi_key:
                break
            hashes.append(vh)
            i += 1
        for k in range(n_over):
            key, vh = _KEYED.unpack_from(buf, self.overflow + 24 * k)
            if lo_key <= key <= hi_key:
                hashes.append(vh)
        out: list[int] = []
        for vh in dict.fromkeys(hashes):    # a value may be both merged and stale
            out.extend(self.chain(vh))
        return out

    def _bisect(self, key: bytes, n: int) -> int:
        buf, base = self.buf, self.sorted
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) >> 1
            if buf[base + 24 * mid:base + 24 * mid + 16] < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    # ------------------------------------------------------------ building
    def copy_header_to(self, buf: Any, hdr: int) -> None:
        """Copy this index's kind and counters to header ``hdr`` of ``buf``."""
        buf[hdr:hdr + FIELD_AT] = self.buf[self.hdr:self.hdr + FIELD_AT]

    def copy_body_to(self, other: "Index") -> None:
        """Copy the arrays into ``other``, an index of the same kind and
        directory capacity in a fresh segment."""
        end = self.overflow + OVERFLOW * 24
        memoryview(other.buf)[other.values:other.values + end - self.values] = \
            memoryview(self.buf)[self.values:end]          # one copy, no temporary

    def _write_sorted(self, pairs: list[tuple[bytes, int]]) -> None:
        buf, base = self.buf, self.sorted
        packed = b"".join(_KEYED.pack(k, vh) for k, vh in pairs)
        buf[base:base + len(packed)] = packed
        self._set(3, len(pairs))

    def merge_overflow(self) -> None:
        """Fold the overflow into the sorted array.

        Splices byte runs instead of rebuilding a list, so a merge costs one
        copy of the array.  Entries of values that are gone stay until the
        array would overflow, then one pass drops them; lookups skip them
        anyway (their chain is empty).
        """
        buf, base = self.buf, self.sorted
        _, _, _, n_sorted, n_over = self.header()
        new = sorted({_KEYED.unpack_from(buf, self.overflow + 24 * k) for k in range(n_over)})
        new = [p for p in new if self._find(p[1])[1]]
        if n_sorted + len(new) > self.cap:
            kept = [p for p in (_KEYED.unpack_from(buf, base + 24 * i) for i in range(n_sorted))
                    if self._find(p[1])[1]]
            self._write_sorted(kept)
            n_sorted = len(kept)
        pieces = []
        prev = 0
        for key, vh in new:
            pos = self._bisect(key, n_sorted)
            pieces.append(buf[base + 24 * prev:base + 24 * pos])
            pieces.append(_KEYED.pack(key, vh))
            prev = pos
        pieces.append(buf[base + 24 * prev:base + 24 * n_sorted])
        data = b"".join(pieces)
        buf[base:base + len(data)] = data
        self._set(3, len(data) // 24)
        self._set(4, 0)


def write_definitions(buf: Any, defs: list[tuple[str, int]]) -> None:
    """Write the (field, kind) of each index into a new segment's headers."""
    for j, (field, kind) in enumerate(defs):
        name = field.encode("utf-8")
        _HDR.pack_into(buf, j * INDEX_HEADER, kind, 0, 0, 0, 0)
        _U16.pack_into(buf, j * INDEX_HEADER + FIELD_AT, len(name))
        buf[j * INDEX_HEADER + FIELD_AT + 2:j * INDEX_HEADER + FIELD_AT + 2 + len(name)] = name


def read_definitions(buf: Any) -> list[tuple[str, int]]:
    defs = []
    for j in range(MAX_INDEXES):
        kind = _U64.unpack_from(buf, j * INDEX_HEADER)[0]
        if not kind:
            break
        n = _U16.unpack_from(buf, j * INDEX_HEADER + FIELD_AT)[0]
        start = j * INDEX_HEADER + FIELD_AT + 2
        defs.append((bytes(buf[start:start + n]).decode("utf-8"), kind))
    return defs


def layout(kinds: list[int], dir_cap: int) -> list[int]:
    """Start offset of each index's arrays in a segment holding ``kinds``."""
    offsets = []
    pos = HEADER_SIZE
    for kind in kinds:
        offsets.append(pos)
        pos += index_size(kind, dir_cap)
    return offsets
