"""The catalog's byte layout (dictdb_shm.engine.layout): regions that fit and
do not overlap, descriptors that round-trip, and shared words that are
stored whole."""

from __future__ import annotations

import ctypes
import json
import struct

import pytest

from dictdb_shm import names
from dictdb_shm.engine import layout as L
from dictdb_shm.engine.segment import Segment, unlink

HEADER_FIELDS = {            # name: (offset, size) of every header field
    "magic, version, flags": (0, L.HEADER.size),
    "ready": (L.READY_AT, 8),
    "catalog_seq": (L.CATALOG_SEQ_AT, 8),
    "coordinator": (L.COORDINATOR_AT, 16),
    "owner": (L.OWNER_AT, 16),
    "authkey": (L.AUTHKEY_AT, L.AUTHKEY_SIZE),
    "next uid": (L.NEXT_UID_AT, 8),
    "destroyed": (L.DESTROYED_AT, 8),
    "edit kind": (L.EDIT_KIND_AT, 8),
    "edit slot": (L.EDIT_SLOT_AT, 8),
    "edit uid": (L.EDIT_UID_AT, 8),
    "semaphore creation": (L.SEMAPHORE_CREATION_AT, 8),
    "socket path": (L.SOCKET_PATH_AT, L.SOCKET_PATH_LEN.size + L.SOCKET_PATH_MAX),
}

SLOT_FIELDS = {
    "state": (L.SLOT_STATE, 8),
    "uid": (L.SLOT_UID, 8),
    "name": (L.SLOT_NAME, L.NAME_LEN.size + L.SLOT_NAME_MAX),
    "meta": (L.SLOT_META, L.META_LEN.size + L.SLOT_META_MAX),
    "lock region": (L.LOCK_REGION, L.LOCK_REGION_SIZE),
    "store region": (L.STORE_REGION, L.STORE_REGION_SIZE),
}

LOCK_FIELDS = {
    "writer pid, ticks": (L.LOCK_WRITER, 16),
    "writer waiting": (L.LOCK_WRITER_WAITING, 8),
    "reader high-water mark": (L.LOCK_READER_HWM, 8),
    "reader flags": (L.LOCK_READER_FLAGS, 8 * L.READER_SLOTS),
    "reader pids": (L.LOCK_READER_PIDS, 8 * L.READER_SLOTS),
    "reader ticks": (L.LOCK_READER_TICKS, 8 * L.READER_SLOTS),
    "mutex": (L.LOCK_MUTEX, L.LOCK_MUTEX_SIZE),
}

STORE_FIELDS = {
    "seq": (L.STORE_SEQ, 8),
    "active": (L.STORE_ACTIVE, 8),
    "uid": (L.STORE_UID, 8),
    "txn_end": (L.STORE_TXN_END, 8),
    "index_dirty": (L.STORE_INDEX_DIRTY, 8),
    "descriptor 0": (L.STORE_DESC, L.DESC_SIZE),
    "descriptor 1": (L.STORE_DESC + L.DESC_SIZE, L.DESC_SIZE),
}

# Words that other processes read while they change: each must be one aligned store.
SHARED_WORDS = [L.READY_AT, L.CATALOG_SEQ_AT, L.COORDINATOR_AT, L.COORDINATOR_AT + 8,
                L.NEXT_UID_AT, L.DESTROYED_AT, L.EDIT_KIND_AT, L.EDIT_SLOT_AT, L.EDIT_UID_AT,
                L.SEMAPHORE_CREATION_AT]
SLOT_WORDS = ([L.SLOT_STATE, L.SLOT_UID]
              + [L.LOCK_REGION + off for off in (L.LOCK_WRITER, L.LOCK_WRITER + 8,
                                                 L.LOCK_WRITER_WAITING, L.LOCK_READER_HWM,
                                                 L.LOCK_READER_FLAGS, L.LOCK_READER_PIDS,
                                                 L.LOCK_READER_TICKS)]
              + [L.STORE_REGION + off for off in (L.STORE_SEQ, L.STORE_ACTIVE, L.STORE_UID,
                                                  L.STORE_TXN_END, L.STORE_INDEX_DIRTY)])


def _assert_disjoint_within(fields: dict[str, tuple[int, int]], size: int) -> None:
    spans = sorted((off, off + n, name) for name, (off, n) in fields.items())
    for (_, end, name), (start, _, following) in zip(spans, spans[1:]):
        assert end <= start, f"{name} overlaps {following}"
    assert spans[0][0] >= 0 and spans[-1][1] <= size, f"{spans[-1][2]} runs past {size}"


@pytest.mark.parametrize("fields, size", [(HEADER_FIELDS, L.SLOTS_AT),
                                          (SLOT_FIELDS, L.SLOT_SIZE),
                                          (LOCK_FIELDS, L.LOCK_REGION_SIZE),
                                          (STORE_FIELDS, L.STORE_REGION_SIZE)],
                         ids=["header", "slot", "lock region", "store region"])
def test_fields_fit_their_region_and_do_not_overlap(fields, size):
    _assert_disjoint_within(fields, size)


def test_slots_fill_the_catalog_and_the_claim_byte_lies_past_it():
    assert L.slot_offset(0) == L.SLOTS_AT
    assert L.slot_offset(L.MAX_TABLES - 1) + L.SLOT_SIZE == L.CATALOG_SIZE
    assert L.slot_offset(1) - L.slot_offset(0) == L.SLOT_SIZE
    assert L.COORDINATOR_CLAIM_AT >= L.CATALOG_SIZE
    assert L.DESCRIPTOR.size <= L.DESC_SIZE
    assert L.LOCK_MUTEX_SIZE >= 48          # glibc's pthread_mutex_t on aarch64, the larger


def test_every_shared_word_is_eight_byte_aligned():
    for off in SHARED_WORDS:
        assert off % L.WORD == 0, off
    for index in (0, 1, L.MAX_TABLES - 1):
        for off in SLOT_WORDS:
            assert (L.slot_offset(index) + off) % L.WORD == 0, (index, off)
    assert L.LOCK_MUTEX % 64 == 0           # a cache line of its own


def test_descriptor_round_trips_through_its_byte_form():
    desc = L.Descriptor(*range(3, 3 + len(L.Descriptor._fields)))
    buf = bytearray(L.DESC_SIZE)
    L.DESCRIPTOR.pack_into(buf, 0, *desc)
    assert L.Descriptor._make(L.DESCRIPTOR.unpack_from(buf, 0)) == desc
    assert L.EMPTY_TABLE.heap_seg == 0 and L.EMPTY_TABLE.next_pk == 1
    assert L.EMPTY_TABLE.next_seg == 1 and L.EMPTY_TABLE.live == 0


def test_dropped_seq_is_odd_so_lock_free_readers_stop():
    assert L.SEQ_DROPPED & 1


# ------------------------------------------------------------- layout.words
def test_a_word_store_writes_exactly_its_eight_bytes_little_endian():
    buf = bytearray(b"\xaa" * 32)
    w = L.words(buf)
    assert (w.format, w.itemsize, len(w)) == ("Q", 8, 4)
    w[1] = 0x0102030405060708
    assert bytes(buf[8:16]) == (0x0102030405060708).to_bytes(8, "little")
    assert bytes(buf[:8]) == b"\xaa" * 8 and bytes(buf[16:]) == b"\xaa" * 16
    assert w[1] == 0x0102030405060708 == L.U64.unpack_from(buf, 8)[0]


@pytest.mark.parametrize("bad", [1 << 64, -1, "7", 1.5])
def test_a_failed_word_store_leaves_the_word_as_it_was(bad):
    buf = bytearray(b"\xff" * 16)
    w = L.words(buf)
    with pytest.raises((ValueError, TypeError)):
        w[0] = bad
    assert bytes(buf) == b"\xff" * 16


def test_pack_into_zero_fills_its_target_before_writing_which_words_never_do():
    """Why shared words never go through struct.pack_into: it clears its whole
    target first, so stopping it part-way (here a bad second field; in life a
    SIGKILL or a reader looking) leaves zeros where a word used to be."""
    buf = bytearray(b"\xff" * 16)
    with pytest.raises(struct.error):
        struct.pack_into("<QQ", buf, 0, 5, "not a number")
    assert bytes(buf[8:16]) == bytes(8)                 # the old word is gone
    buf[:] = b"\xff" * 16
    w = L.words(buf)
    w[0] = 5
    with pytest.raises(TypeError):
        w[1] = "not a number"
    assert bytes(buf[8:16]) == b"\xff" * 8              # the old word is intact


def test_words_of_a_mapped_segment_are_aligned_for_single_stores(db_name):
    seg = Segment.create(names.heap_segment(db_name, 1, 1), 4096)
    try:
        base = ctypes.addressof(ctypes.c_char.from_buffer(seg.buf))
        assert base % 4096 == 0                         # mappings are page-aligned
        assert len(L.words(seg.buf)) == 4096 // L.WORD
    finally:
        unlink(seg.name)


def test_another_process_never_sees_a_word_half_stored(db_name, spawn):
    """A reader in an unrelated process watches one word while this process
    stores two values into it, alternately, through layout.words: every value
    it reads is one of the two, never a mix or a zero."""
    first, second, stop = 0x1111111111111111, 0xEEEEEEEEEEEEEEEE, 0x5555555555555555
    seg = Segment.create(names.heap_segment(db_name, 1, 1), 4096)
    try:
        w = L.words(seg.buf)
        w[0] = first
        reader = spawn("watch_word", seg.name, first, second, stop)
        reader.expect("READY")
        for i in range(200_000):
            w[0] = second if i & 1 else first
        w[1] = stop
        result = json.loads(reader.expect("RESULT"))
        reader.finish()
        assert result["torn"] == 0, result
    finally:
        unlink(seg.name)
