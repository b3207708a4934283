"""Record encoding and the RecordHeap / PkDirectory byte formats.

Owns: how a record, its primary key and its hash become bytes, and the
formats of the two data segments of a table.  Must never: take locks, map
segments or decide when to grow (store.py does).

RecordHeap segment: records back to back from offset 0, each 8-aligned::

    +0   u32 total      bytes of the whole record incl. header and padding
    +4   u32 body_len   msgpack body length
    +8   u8  kind       KIND_VALUE, or KIND_MARKER (a delete)
    +9   u8  flags      SUPERSEDED (a newer version exists),
                        SLOT_WAS_EMPTY (its directory slot was empty before),
                        INT_KEY (the key is an int in [-2**63, 2**63))
    +10  u16 pk_len
    +12  u32 reserved
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
from zlib import crc32

import msgpack

from dictdb_shm.errors import RecordTooLargeError, UnstorableValueError

HEADER = struct.Struct("<IIBBHIQQ")
HEAD = struct.Struct("<IIBBH")               # total, body_len, kind, flags, pk_len
PREV_HASH = struct.Struct("<QQ")             # at +16
FLAGS_AT = 9

KIND_VALUE = 1
KIND_MARKER = 2
SUPERSEDED = 1
SLOT_WAS_EMPTY = 2
INT_KEY = 4

ENTRY = struct.Struct("<QQ")
ENTRY_SIZE = 16
TOMBSTONE = (1 << 64) - 1
INT_ENTRY = 1 << 62
OFFSET_MASK = INT_ENTRY - 1
INT_MIN = -(1 << 63)
INT_MAX = (1 << 63) - 1

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MAX_RECORD_BYTES = 16 << 20
MIN_RECORD = 40            # header + 1-byte key + empty body, 8-aligned


def heap_segment_size(cap: int) -> int:
    """Bytes of a heap segment with ``cap`` bytes of records and their offset log."""
    return cap + (cap // MIN_RECORD + 1) * 8

_packb = msgpack.Packer(use_bin_type=True).pack


def encode_key(pk: object) -> bytes:
    if isinstance(pk, (dict, list, tuple, set)) or pk is None:
        raise UnstorableValueError(
            f"primary key {pk!r} is not a scalar",
            hint="use an int, str or bytes primary key")
    try:
        return _packb(pk)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UnstorableValueError(f"primary key {pk!r} cannot be stored: {exc}") from None


def encode_record(record: dict, table: str, limit: int = MAX_RECORD_BYTES) -> bytes:
    try:
        body = _packb(record)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UnstorableValueError(
            f"a record for table {table!r} cannot be stored: {exc}") from None
    if len(body) > limit:
        raise RecordTooLargeError(
            f"a record for table {table!r} encodes to {len(body)} bytes, over the "
            f"limit of {limit}")
    return body


def key_hash(pk: object, pkb: bytes) -> tuple[int, int]:
    """``(hash, INT_ENTRY or 0)`` of a key and its msgpack bytes."""
    if type(pk) is int and INT_MIN <= pk <= INT_MAX:
        return ((pk & MASK64) * GOLDEN) & MASK64, INT_ENTRY
    return (crc32(pkb) * GOLDEN) & MASK64, 0
