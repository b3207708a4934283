"""Record encoding and the RecordHeap / PkDirectory byte formats.

Owns: how a record, its primary key and its hash become bytes, what values
can be stored (exactly what reads back equal), and the formats of the two
data segments of a table, with named helpers for every offset in them.
Must never: take locks, map segments or decide when to grow (store.py and
growth.py do).

RecordHeap segment: records back to back from offset 0, each 8-aligned::

    +0   u32 total      bytes of the whole record incl. header and padding
    +4   u32 body_len   msgpack body length
    +8   u8  kind       KIND_VALUE, or KIND_MARKER (a delete)
    +9   u8  flags      SUPERSEDED (a newer version exists),
                        SLOT_WAS_EMPTY (its directory slot was empty before),
                        INT_KEY (the key is an int in [-2**63, 2**63))
    +10  u16 pk_len
    +12  u32 stamp      when the record was written (STAMPS_PER_SECOND
                        units of the wall clock, mod 2**32) in stores that
                        read it (expiring tables, caches; 0 in others); a
                        cache's lock-free reads overwrite it with the last access
    +16  u64 prev + 1   the version this one replaced, 0 if none
    +24  u64 hash       key hash, so undo can find the directory slot
    +32  msgpack primary key, then msgpack body, then zero padding

After ``cap`` bytes of records, the heap segment holds the *offset log*: one
u64 per record, its offset, in heap order (``MIN_RECORD`` bounds how many fit).
It lets a byte search over the heap find the record around a match with a
bisect instead of walking every header.

Bytes past the committed end are always zero.  A write appends records after
the committed end and only then points directory entries at them, so undo can
walk the appended records (until a zero header) and put every directory entry
back to ``prev``; see store.py.

What can be stored: msgpack types, and only values that read back equal.
Bodies are packed with ``strict_types``, so exact dict/list/str/int/float/
bytes/bool/None take the fast path; anything else (a tuple, an IntEnum, a str
Enum, a float subclass, bytearray) is first normalised to what msgpack would
store and read back (list, int, str, float, bytes), so that what an index
sees is what is stored.  Map keys must be str, int or bytes: a tuple key
would come back as an unhashable list and make the record unreadable.

PkDirectory segment: open addressing with linear probing, ``cap`` (a power
of two) entries of 16 bytes: ``u64 hash, u64 (offset + 1) | INT_ENTRY``.
Offset 0 means empty, ``TOMBSTONE`` a slot freed by undo.  ``INT_ENTRY``
(bit 62) marks an int key: for those the hash is a bijection of the key (an
odd multiplier mod 2**64), so equal hashes mean equal keys and a lookup
never reads the stored key.  A delete does not free its slot:
it points it at a marker record, which compaction drops.  The home slot is
the top bits of the hash: ``hash >> (64 - log2(cap))``.

Key hash: ``(k * 0x9E3779B97F4A7C15) mod 2**64`` (Fibonacci hashing), where
``k`` is the integer itself (mod 2**64) for an int key in [-2**63, 2**63) and
CRC-32 of the msgpack bytes otherwise.  Python's ``hash()`` of str differs
between processes, so it is never used.  Keys compare by their msgpack
bytes: ``1`` and ``True`` are different keys here, unlike in a Python dict.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from zlib import crc32

import msgpack

from dictdb_shm.engine import DELETE
from dictdb_shm.errors import CorruptionError, RecordTooLargeError, UnstorableValueError

HEADER = struct.Struct("<IIBBHIQQ")
HEAD = struct.Struct("<IIBBH")               # total, body_len, kind, flags, pk_len
PREV_HASH = struct.Struct("<QQ")             # at PREV_HASH_AT
RECORD_HEADER = HEADER.size                  # 32: the key starts here
KIND_AT = 8
FLAGS_AT = 9
PK_LEN_AT = 10                               # u16, little-endian
STAMP_AT = 12                                # the u32 stamp: 4-aligned in an 8-aligned record
STAMP = struct.Struct("<I")
STAMPS_PER_SECOND = 16
STAMP_MASK = (1 << 32) - 1
PREV_HASH_AT = 16
ALIGN = 8                                    # records start 8-aligned

KIND_VALUE = 1
KIND_MARKER = 2
SUPERSEDED = 1
SLOT_WAS_EMPTY = 2
INT_KEY = 4

LOG_ENTRY = struct.Struct("<Q")              # one offset of the heap's offset log
ENTRY = struct.Struct("<QQ")
ENTRY_SIZE = 16
ENTRY_SHIFT = 4                              # slot << ENTRY_SHIFT == slot * ENTRY_SIZE
ENTRY_OFFSET_AT = 8                          # the offset word of an entry
TOMBSTONE = (1 << 64) - 1
INT_ENTRY = 1 << 62
OFFSET_MASK = INT_ENTRY - 1
INT_MIN = -(1 << 63)
INT_MAX = (1 << 63) - 1
UINT_MAX = (1 << 64) - 1

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MAX_RECORD_BYTES = 16 << 20
MIN_RECORD = 40            # header + 1-byte key + empty body, 8-aligned
MAX_LOAD = 0.7             # most entries a directory or index table holds per slot


class TornRead(Exception):
    """A lock-free read saw bytes that cannot be right (a writer was at work);
    the read is retried, and under the lock if need be."""


def stamp_of(seconds: float) -> int:
    """The record stamp of the wall-clock time ``seconds``."""
    return int(seconds * STAMPS_PER_SECOND) & STAMP_MASK


def stamp_age(now_stamp: int, stamp: int) -> float:
    """Seconds from ``stamp`` to ``now_stamp`` (stamps wrap every 8.5 years)."""
    return ((now_stamp - stamp) & STAMP_MASK) / STAMPS_PER_SECOND


def heap_segment_size(cap: int) -> int:
    """Bytes of a heap segment with ``cap`` bytes of records and their offset log."""
    return cap + (cap // MIN_RECORD + 1) * 8


def record_size(pk_len: int, body_len: int) -> int:
    """Bytes a record takes in the heap, padding included."""
    return (_PADDED_HEADER + pk_len + body_len) & _ALIGN_DOWN


_PADDED_HEADER = RECORD_HEADER + ALIGN - 1     # record_size's terms, for inlined copies
_ALIGN_DOWN = ~(ALIGN - 1)


def entry_at(slot: int) -> int:
    """Byte offset of directory slot ``slot``."""
    return slot << ENTRY_SHIFT


def entry_word(offset: int, int_flag: int) -> int:
    """The offset word of a directory entry pointing at ``offset``."""
    return (offset + 1) | int_flag


def entry_record(word: int) -> int:
    """The record offset a directory entry's offset word points at."""
    return (word & OFFSET_MASK) - 1


PROBE_FULL = -2                              # probe(): no empty entry on the whole path


def probe(dw: Any, heap: Any, shift: int, mask: int, h: int, pkb: bytes,
          int_flag: int) -> tuple[int, int, int]:
    """Find a key in a PkDirectory: ``(slot, record offset, first tombstone)``.

    ``dw`` is the directory as words (layout.words): entry ``i`` is the hash
    at ``dw[2 * i]`` and the offset word at ``dw[2 * i + 1]``.  The offset is
    -1 when the key is absent (``slot`` is then the empty entry ending its
    probe path) and PROBE_FULL when the walk met no empty entry (a full or
    torn directory).  Bounded by the capacity, so a lock-free caller cannot
    loop on torn bytes.  Int keys compare by hash alone (their hash is a
    bijection); others by their msgpack bytes.
    """
    i = h >> shift
    tomb = -1
    head = HEAD.unpack_from
    for _ in range(mask + 1):
        eo = dw[2 * i + 1]
        if eo == 0:
            return i, -1, tomb
        if eo == TOMBSTONE:
            if tomb < 0:
                tomb = i
        elif dw[2 * i] == h and eo & INT_ENTRY == int_flag:
            off = (eo & OFFSET_MASK) - 1
            if int_flag:
                return i, off, tomb
            start = off + RECORD_HEADER
            if heap[start:start + head(heap, off)[4]] == pkb:
                return i, off, tomb
        i = (i + 1) & mask
    return i, PROBE_FULL, tomb


_unpackb = msgpack.unpackb


def decode_body(heap: Any, start: int, body_len: int) -> Any:
    return _unpackb(heap[start:start + body_len], strict_map_key=False)


def decode_at(heap: Any, off: int) -> Any:
    """The record stored at ``off``, or None for a delete marker."""
    _, blen, kind, _, pklen = HEAD.unpack_from(heap, off)
    if kind != KIND_VALUE:
        return None
    return decode_body(heap, off + RECORD_HEADER + pklen, blen)


def key_bytes_at(heap: Any, off: int, pk_len: int) -> Any:
    start = off + RECORD_HEADER
    return heap[start:start + pk_len]


def records_in_force(heap: bytes, start: int, end: int) -> Iterator[tuple[int, bytes, bytes]]:
    """``(kind, key bytes, body bytes)`` of each record of ``heap[start:end]``
    that no newer version supersedes, in heap order: KIND_VALUE records are
    live values, KIND_MARKER ones deletes still in force.  For a private copy
    of committed bytes (``committed_image``); ``start`` must be a record
    boundary.  CorruptionError on a header that cannot be right."""
    head = HEAD.unpack_from
    off = start
    while off < end:
        total, blen, kind, flags, pklen = head(heap, off)
        if total < RECORD_HEADER or off + total > end:
            raise CorruptionError(f"a record header at offset {off} is damaged")
        if not flags & SUPERSEDED:
            key = off + RECORD_HEADER
            body = key + pklen
            yield kind, heap[key:body], heap[body:body + blen]
        off += total


_packb = msgpack.Packer(use_bin_type=True).pack
_pack_strict = msgpack.Packer(use_bin_type=True, strict_types=True).pack


def normalize_key(pk: object) -> object:
    """A primary key as it will be stored: int/str/bytes subclasses (IntEnum,
    str Enum) become the base type, so they find the same record."""
    t = type(pk)
    if t is int or t is str or t is bytes or t is bool:
        return pk
    base = _as_base_scalar(pk)
    return pk if base is _NOT_SCALAR else base


def encode_key(pk: object) -> bytes:
    if isinstance(pk, (dict, list, tuple, set)) or pk is None:
        raise UnstorableValueError(
            f"primary key {pk!r} is not a scalar",
            hint="use an int, str or bytes primary key")
    try:
        return _packb(pk)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UnstorableValueError(f"primary key {pk!r} cannot be stored: {exc}") from None


def encode_record(record: dict, table: str,
                  limit: int = MAX_RECORD_BYTES) -> tuple[bytes, dict]:
    """``(msgpack body, the record as it will read back)``.  The second is
    ``record`` itself unless it held values that are stored as another type."""
    try:
        body = _pack_strict(record)
    except (TypeError, ValueError, OverflowError):
        try:
            record = normalize_value(record)
            body = _pack_strict(record)
        except UnstorableValueError as exc:
            raise UnstorableValueError(f"a record for table {table!r} cannot be stored: "
                                       f"{exc.message}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise UnstorableValueError(
                f"a record for table {table!r} cannot be stored: {exc}") from None
    if len(body) > limit:
        raise RecordTooLargeError(
            f"a record for table {table!r} encodes to {len(body)} bytes, over the "
            f"limit of {limit}")
    return body, record


# Keys that read back as themselves (hashable); a tuple key would read back as a list.
_SCALAR_KEYS = frozenset({str, int, bytes, bool, float, type(None)})


def normalize_value(value: Any) -> Any:
    """``value`` as msgpack stores and reads it back: tuples become lists, and
    subclasses of int, float, str and bytes their base type.  Raises
    UnstorableValueError for a map key that is not str, int or bytes (it
    would not read back as a usable key) and for types msgpack cannot hold."""
    t = type(value)
    if t is str or t is int or t is float or t is bool or t is bytes or value is None:
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            tk = type(k)
            if tk not in _SCALAR_KEYS:
                if isinstance(k, (str, int, bytes, float)):
                    k = normalize_value(k)
                else:
                    raise UnstorableValueError(
                        f"map key {k!r} ({tk.__name__}) is not str, int or bytes")
            out[k] = normalize_value(v)
        return out
    if isinstance(value, (list, tuple)):
        return [normalize_value(v) for v in value]
    base = _as_base_scalar(value)
    if base is _NOT_SCALAR:
        raise UnstorableValueError(f"{t.__name__} value {value!r} is not a msgpack type")
    return base


_NOT_SCALAR = object()


def _as_base_scalar(value: Any) -> Any:
    """A subclass of int, float, str or bytes (or a bytearray) as its base
    type, the way msgpack stores it; _NOT_SCALAR for anything else."""
    if isinstance(value, int):
        return int.__index__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return _NOT_SCALAR


def key_hash(pk: object, pkb: bytes) -> tuple[int, int]:
    """``(hash, INT_ENTRY or 0)`` of a key and its msgpack bytes."""
    if type(pk) is int and INT_MIN <= pk <= INT_MAX:
        return ((pk & MASK64) * GOLDEN) & MASK64, INT_ENTRY
    return (crc32(pkb) * GOLDEN) & MASK64, 0


Change = tuple[Any, bytes, int, int, bytes, int, int, Any]
"""An encoded change: (pk, key bytes, key hash, INT_ENTRY or 0, body, mode,
record size, the record as it will read back or None)."""


def encode_changes(changes: Iterable[tuple[Any, Any, int]], table: str,
                   limit: int = MAX_RECORD_BYTES) -> tuple[list[Change], int, int]:
    """The first step of a write: encode every ``(pk, record, mode)`` change,
    so that bad input fails before anything changes.  Returns the encoded
    changes, their total record bytes, and how many may add a key.  Hot path."""
    packb, pack = _packb, _pack_strict
    batch = []
    nbytes = nkeys = 0
    for pk, record, mode in changes:
        if type(pk) is int and INT_MIN <= pk <= INT_MAX:
            pkb = packb(pk)
            h, int_key = ((pk & MASK64) * GOLDEN) & MASK64, INT_ENTRY
        else:
            pk = normalize_key(pk)
            pkb = encode_key(pk)
            h, int_key = key_hash(pk, pkb)
        if mode == DELETE:
            body = b""
            record = None
        else:
            nkeys += 1
            # encode_record's first step inlined: most records pack as they
            # are, and two calls per row are a tenth of a single insert.
            try:
                body = pack(record)
            except (TypeError, ValueError, OverflowError):
                body = b""
            if not body or len(body) > limit:
                body, record = encode_record(record, table, limit)
        total = (_PADDED_HEADER + len(pkb) + len(body)) & _ALIGN_DOWN
        batch.append((pk, pkb, h, int_key, body, mode, total, record))
        nbytes += total
    return batch, nbytes, nkeys
