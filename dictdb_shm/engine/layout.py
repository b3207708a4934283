"""Byte layout of the catalog segment and of each table's control block.

Owns: every offset and struct format of the catalog segment.  Must never:
hold state or policy; other modules import these constants and nothing else
here decides anything.  Change LAYOUT_VERSION with any change below.

Catalog segment ``/dictdb_<db>.catalog``
=========================================
All integers little-endian (the only byte order this runs on: x86-64 and
aarch64 Linux); every 8-byte word is 8-aligned so that a single store
publishes it atomically.

Shared words are stored through ``words(buf)`` -- a ``"Q"`` memoryview, whose
item assignment is one 8-byte store -- never with ``struct.pack_into``, which
zero-fills its target before writing the fields: a reader (or a crash in
between) would see 0, an empty directory entry or a descriptor generation
that never was.  Words are read through the same view (one 8-byte load; a
little-endian ``struct`` format reads byte by byte and can tear).

Header, bytes [0, 4096)::

    0    8s  magic  b"DDBSHMC1"
    8    u32 layout version       12  u32 flags (FLAG_PRIVATE)
    16   u64 ready                 1 once the header is complete (published last)
    24   u64 catalog_seq           odd while the coordinator edits the table slots
    32   u64 coordinator pid      40  u64 coordinator start ticks
    48   u64 owner pid            56  u64 owner start ticks  (private databases)
    64   32s authkey of the coordinator's control channel
    96   u64 next table uid
    104  u64 destroyed             1 once destroy() began: set before anything is
                                   unlinked, so every handle still mapping this
                                   catalog fails instead of writing into orphans
    112  u64 edit kind             EDIT_ADD / EDIT_REMOVE while the coordinator adds
                                   or removes a table, EDIT_NONE otherwise: written
                                   after the slot and uid below, cleared once the
                                   edit is complete, so a new coordinator can finish
                                   or undo the edit of one that died
    120  u64 edit slot            128  u64 edit uid
    136  u64 semaphore creation    CLOCK_REALTIME ns at which a semaphore creation
                                   began, 0 when none is under way (see catalog.py)
    144  u64 journal generation    the journal file writers append to (a durable
                                   database's; the coordinator moves it on at each
                                   snapshot: persistence/journal.py)
    152  u64 durability            DURABILITY_NONE (no path), _NO, _EVERYSEC, _ALWAYS
    160  the journal's append mutex (lock/robust_mutex.py), MUTEX_SIZE bytes, then
    224  u64 journal file          the generation the three words below describe
    232  u64 journal end           where the next entry goes in that file
    240  u64 journal filled        bytes of it written (zeros past the end)
    248  u64 journal reserved      length of the entry being written at the end
                                   (0 when none): persistence/journal.py
    256  u16 control socket path length, then the path of the coordinator's
         socket (at most SOCKET_PATH_MAX bytes); 0 until a coordinator listens
    1024 u16 persistence directory length, then the directory of a durable
         database (at most PERSIST_PATH_MAX bytes); written before the catalog
         is published, so attaching processes read it without a path of their own
    2560 u32 length, then msgpack of the backup schedules the coordinator runs
         (at most BACKUPS_MAX bytes), so a new coordinator resumes them

The serving coordinator holds an OFD write lock on the one byte at
COORDINATOR_CLAIM_AT of the catalog file (coordinator/claim.py).  It lies
past the segment's end: a file lock needs no byte to exist, and no byte of
the catalog's contents is ever locked.

Table slots, ``MAX_TABLES`` of ``SLOT_SIZE`` bytes from ``SLOTS_AT``; slot i::

    +0     u64 state (SLOT_FREE / SLOT_LIVE), published last by create_table
    +8     u64 uid: unique within the database for its whole life, so a slot
                reused after drop_table is never mistaken for the old table
    +16    u16 name length, then the UTF-8 name            (to +256)
    +256   u32 meta length, then msgpack meta: primary key, schema, indexes
    +4096  lock region (lock/rwlock.py), LOCK_REGION_SIZE bytes
    +6144  store region (store.py), STORE_REGION_SIZE bytes

Lock region::

    +0    u64 writer pid    +8 u64 writer start ticks   +16 reserved
          (the writer record: see lock/rwlock.py; proof of ownership is the
          mutex at +1600, the record only says "undo may be needed")
    +24   u64 writer waiting (1 while a writer waits for readers to drain)
    +32   u64 reader slot high-water mark
    +64   READER_SLOTS x u64 reader flags (1 = that slot holds a read lock)
    +576  READER_SLOTS x u64 reader pid
    +1088 READER_SLOTS x u64 reader start ticks
    +1600 the table's mutex: a robust process-shared pthread mutex
          (lock/robust_mutex.py), LOCK_MUTEX_SIZE bytes reserved

Store region::

    +0    u64 seq      odd while a writer holds the table; DROPPED after drop
    +8    u64 active   descriptor generation; descriptor (active & 1) is current
    +16   u64 uid      copy of the slot uid, read in the same load as seq
    +24   u64 txn_end  high-water mark of the running write (bytes to zero on undo)
    +32   u64 index_dirty  1 while a write edits the index segment in place
    +40   u64 patch_at     heap offset + 1 of an in-place edit under way, 0 when
                           none: the undo record of engine/inplace.py, armed last
    +48   u64 patch_copy   heap offset of the copy of the bytes it overwrites
    +56   u64 patch_shape  their length | the heap segment number << 32
    +64   descriptor 0 (DESC_SIZE bytes)   +192 descriptor 1
    +512  a cache's words (STORE_CACHE: CACHE_* below): evictions, expired,
          the eviction hand, counters, then CACHE_PROCESS_SLOTS per-process
          (pid, start ticks, hits, misses)

A descriptor says where the table's data is; a commit writes the inactive one
and then flips ``active`` with one 8-byte store (see store.py).
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

LAYOUT_VERSION = 5
MAGIC = b"DDBSHMC1"
FLAG_PRIVATE = 1

HEADER = struct.Struct("<8sII")            # magic, version, flags at 0
READY_AT = 16
CATALOG_SEQ_AT = 24
COORDINATOR_AT = 32                          # pid, ticks
OWNER_AT = 48                                # pid, ticks
AUTHKEY_AT = 64
AUTHKEY_SIZE = 32
NEXT_UID_AT = 96
DESTROYED_AT = 104
EDIT_KIND_AT = 112
EDIT_SLOT_AT = 120
EDIT_UID_AT = 128
SEMAPHORE_CREATION_AT = 136
SOCKET_PATH_AT = 256
SOCKET_PATH_LEN = struct.Struct("<H")
SOCKET_PATH_MAX = 512
JOURNAL_GENERATION_AT = 144
DURABILITY_AT = 152
JOURNAL_MUTEX_AT = 160
JOURNAL_FILE_AT = 224
JOURNAL_END_AT = 232
JOURNAL_FILLED_AT = 240
JOURNAL_RESERVED_AT = 248
DURABILITY_NONE, DURABILITY_NO, DURABILITY_EVERYSEC, DURABILITY_ALWAYS = 0, 1, 2, 3
PERSIST_PATH_AT = 1024
PERSIST_PATH_LEN = struct.Struct("<H")
PERSIST_PATH_MAX = 1024
BACKUPS_AT = 2560
BACKUPS_LEN = struct.Struct("<I")
BACKUPS_MAX = 1500

EDIT_NONE = 0
EDIT_ADD = 1
EDIT_REMOVE = 2

U64 = struct.Struct("<Q")
TWO_U64 = struct.Struct("<QQ")
THREE_U64 = struct.Struct("<QQQ")

SLOTS_AT = 4096
SLOT_SIZE = 8192
MAX_TABLES = 256
CATALOG_SIZE = SLOTS_AT + SLOT_SIZE * MAX_TABLES
COORDINATOR_CLAIM_AT = CATALOG_SIZE

SLOT_FREE = 0
SLOT_LIVE = 1

SLOT_STATE = 0
SLOT_UID = 8
SLOT_NAME = 16
NAME_LEN = struct.Struct("<H")
SLOT_NAME_MAX = 256 - 16 - 2
SLOT_META = 256
META_LEN = struct.Struct("<I")
SLOT_META_MAX = 4096 - 256 - 4

LOCK_REGION = 4096
LOCK_REGION_SIZE = 2048
READER_SLOTS = 64
LOCK_WRITER = 0            # pid, ticks
LOCK_WRITER_WAITING = 24
LOCK_READER_HWM = 32
LOCK_READER_FLAGS = 64
LOCK_READER_PIDS = LOCK_READER_FLAGS + 8 * READER_SLOTS
LOCK_READER_TICKS = LOCK_READER_PIDS + 8 * READER_SLOTS
LOCK_MUTEX = LOCK_READER_TICKS + 8 * READER_SLOTS     # 1600: 64-aligned
LOCK_MUTEX_SIZE = 64         # glibc's pthread_mutex_t is 40 (x86-64) or 48 (aarch64) bytes

STORE_REGION = 6144
STORE_REGION_SIZE = 2048
STORE_SEQ = 0
STORE_ACTIVE = 8
STORE_UID = 16
STORE_TXN_END = 24
STORE_INDEX_DIRTY = 32
STORE_PATCH_AT = 40          # engine/inplace.py's undo record: three words
STORE_PATCH_COPY = 48
STORE_PATCH_SHAPE = 56
STORE_DESC = 64
DESC_SIZE = 128
SEQ_DROPPED = (1 << 64) - 1                  # odd, so lock-free readers stop

# A cache's shared words (dictdb_shm/cache/counters.py), in its table's store
# region after the descriptors; zero for a table that is no cache.
STORE_CACHE = 512
CACHE_EVICTIONS = 0          # written under the table's write lock
CACHE_EXPIRED = 8            # ... and by the coordinator's sweep, under it too
CACHE_HAND = 16              # the eviction sample's next directory slot
CACHE_RETIRED_HITS = 24      # counts of ended processes, folded in under the lock
CACHE_RETIRED_MISSES = 32
CACHE_SPARE_HITS = 40        # for processes beyond CACHE_PROCESS_SLOTS (relaxed: approximate)
CACHE_SPARE_MISSES = 48
CACHE_PROCESSES = 64         # per process: pid, start ticks, hits, misses
CACHE_PROCESS_SLOTS = 32
CACHE_PROCESS_SIZE = 32

# The descriptor's byte form: the fields of Descriptor below, in order.
DESCRIPTOR = struct.Struct("<14Q")


class Descriptor(NamedTuple):
    """Where a table's data is; ``layout.DESCRIPTOR`` is its byte form."""

    heap_seg: int           # 0: no segment yet
    heap_cap: int
    heap_end: int           # committed bytes
    dir_seg: int
    dir_cap: int            # entries, a power of two
    dir_used: int           # live + markers + tombstones
    live: int               # live records
    next_pk: int            # next auto-assigned primary key (at most INT_MAX + 1)
    garbage: int            # bytes of superseded records and markers
    next_seg: int           # id for the next new segment
    live_bytes: int
    index_seg: int          # 0: no index
    n_records: int          # entries of the heap's offset log
    track_mark: int         # change tracking starts at this heap offset; TRACK_LOST once
                            # a compaction moved records it had not reported


EMPTY_TABLE = Descriptor(0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0)
TRACK_LOST = (1 << 64) - 1


if STORE_PATCH_SHAPE + U64.size > STORE_DESC or \
        STORE_DESC + 2 * DESC_SIZE > STORE_CACHE or STORE_CACHE + CACHE_PROCESSES + \
        CACHE_PROCESS_SLOTS * CACHE_PROCESS_SIZE > STORE_REGION_SIZE or \
        DESCRIPTOR.size > DESC_SIZE or LOCK_MUTEX + LOCK_MUTEX_SIZE > LOCK_REGION_SIZE or \
        SOCKET_PATH_AT + SOCKET_PATH_LEN.size + SOCKET_PATH_MAX > PERSIST_PATH_AT or \
        PERSIST_PATH_AT + PERSIST_PATH_LEN.size + PERSIST_PATH_MAX > BACKUPS_AT or \
        BACKUPS_AT + BACKUPS_LEN.size + BACKUPS_MAX > SLOTS_AT:
    raise ImportError("engine/layout.py: a region outgrew its reserved bytes")


WORD = 8


def words(buf: Any) -> memoryview:
    """``buf`` as u64 words: ``w[off // WORD] = v`` is one 8-byte store.
    Use it for every word another process may read while it changes, or that
    must survive a crash whole (see the module docstring)."""
    return memoryview(buf).cast("Q")


def slot_offset(index: int) -> int:
    return SLOTS_AT + index * SLOT_SIZE
