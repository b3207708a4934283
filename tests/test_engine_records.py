"""Records and keys as bytes (dictdb_shm.engine.records): what can be stored
and how it reads back, the record and entry formats, the stable key hash,
and the directory probe, on heaps and directories laid out by hand."""

from __future__ import annotations

import enum
import os
import subprocess
import sys

import msgpack
import pytest

from conftest import ROOT
from dictdb_shm import RecordTooLargeError, UnstorableValueError
from dictdb_shm.engine import DELETE, INSERT, PUT
from dictdb_shm.engine import layout as L
from dictdb_shm.engine import records as R


class Color(enum.IntEnum):
    RED = 1


class Mood(str, enum.Enum):
    HAPPY = "happy"


# ------------------------------------------------------------------ keys
@pytest.mark.parametrize("pk", [0, -1, 2**63 - 1, -2**63, 2**64 - 1, "", "ключ", b"\x00\xff"])
def test_keys_round_trip_through_their_bytes(pk):
    assert msgpack.unpackb(R.encode_key(pk)) == pk


@pytest.mark.parametrize("pk", [None, [1], (1,), {"a": 1}, {1}])
def test_a_key_that_is_not_a_scalar_is_refused_with_a_hint(pk):
    with pytest.raises(UnstorableValueError, match="is not a scalar") as info:
        R.encode_key(pk)
    assert "int, str or bytes" in str(info.value)
    assert isinstance(info.value, TypeError)


def test_a_key_beyond_64_bits_cannot_be_stored():
    with pytest.raises(UnstorableValueError, match="cannot be stored"):
        R.encode_key(2**64)


def test_keys_of_subclasses_are_stored_as_their_base_type():
    assert type(R.normalize_key(Color.RED)) is int and R.normalize_key(Color.RED) == 1
    assert type(R.normalize_key(Mood.HAPPY)) is str
    assert R.normalize_key(bytearray(b"ab")) == b"ab"
    assert R.normalize_key(True) is True            # a bool stays a bool: a key of its own
    assert R.encode_key(R.normalize_key(Color.RED)) == R.encode_key(1)


def test_int_keys_hash_as_a_bijection_and_are_flagged():
    keys = list(range(-2000, 2000)) + [2**63 - 1, -2**63]
    hashes = {R.key_hash(k, R.encode_key(k)) for k in keys}
    assert len(hashes) == len(keys)
    assert all(flag == R.INT_ENTRY for _, flag in hashes)
    assert R.key_hash(1, R.encode_key(1)) == (0x9E3779B97F4A7C15, R.INT_ENTRY)


@pytest.mark.parametrize("pk", ["a", b"a", True, 2**63])
def test_other_keys_hash_their_bytes_and_are_not_flagged(pk):
    pkb = R.encode_key(pk)
    h, flag = R.key_hash(pk, pkb)
    assert flag == 0 and 0 <= h <= R.UINT_MAX


def test_key_hashes_are_the_same_in_every_process():
    """Python's hash() of a str changes with PYTHONHASHSEED; ours must not."""
    code = ("from dictdb_shm.engine import records as R\n"
            "print(*(R.key_hash(k, R.encode_key(k))[0] for k in ('alpha', b'beta', 7)))")
    seen = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=ROOT)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, timeout=60, check=True).stdout
        seen.add(out)
    here = " ".join(str(R.key_hash(k, R.encode_key(k))[0]) for k in ("alpha", b"beta", 7))
    assert seen == {here + "\n"}


# --------------------------------------------------------------- records
def test_a_plain_record_is_stored_as_is_and_reads_back_equal():
    record = {"id": 1, "name": "Ada", "tags": ["x", 2], "score": 1.5, "raw": b"\x00",
              "ok": True, "none": None, "nested": {"k": [1, {"j": 2}]}, 3: "int key"}
    body, stored = R.encode_record(record, "t")
    assert stored is record
    assert msgpack.unpackb(body, strict_map_key=False) == record


def test_values_that_would_read_back_as_another_type_are_normalised_first():
    record = {"pair": (1, 2), "color": Color.RED, "mood": Mood.HAPPY,
              "blob": bytearray(b"ab"), "deep": [(3, (4,))], Color.RED: "enum key"}
    body, stored = R.encode_record(record, "t")
    assert stored is not record and record["pair"] == (1, 2)      # the caller's is untouched
    assert stored == {"pair": [1, 2], "color": 1, "mood": "happy", "blob": b"ab",
                      "deep": [[3, [4]]], 1: "enum key"}
    assert type(stored["color"]) is int and type(stored["mood"]) is str
    assert msgpack.unpackb(body, strict_map_key=False) == stored


@pytest.mark.parametrize("record, words", [
    ({"s": {1, 2}}, "set value"),
    ({(1, 2): "v"}, "map key (1, 2) (tuple) is not str, int or bytes"),
    ({"f": object()}, "object value"),
    ({"n": 2**64}, "cannot be stored"),
])
def test_an_unstorable_value_names_the_table_and_the_problem(record, words):
    with pytest.raises(UnstorableValueError) as info:
        R.encode_record(record, "people")
    text = str(info.value)
    assert "a record for table 'people' cannot be stored" in text and words in text
    assert "msgpack types only" in text                 # the class's hint


def test_a_record_over_the_limit_is_too_large():
    body, _ = R.encode_record({"v": "x" * 40}, "t", limit=50)
    with pytest.raises(RecordTooLargeError, match=r"encodes to \d+ bytes, over the limit of 20"):
        R.encode_record({"v": "x" * 40}, "t", limit=20)
    assert len(body) <= 50
    assert isinstance(RecordTooLargeError(), ValueError)


@pytest.mark.parametrize("pk_len, body_len, size", [(0, 0, 32), (1, 0, 40), (1, 7, 40),
                                                    (1, 8, 48), (3, 64, 104)])
def test_record_size_is_header_key_and_body_rounded_to_eight(pk_len, body_len, size):
    assert R.record_size(pk_len, body_len) == size
    assert R.RECORD_HEADER == 32 and R.record_size(1, 0) == R.MIN_RECORD


@pytest.mark.parametrize("cap", [0, 40, 1 << 16, 1 << 20, 12345])
def test_the_offset_log_has_room_for_every_record_the_heap_can_hold(cap):
    most_records = cap // R.MIN_RECORD
    assert R.heap_segment_size(cap) - cap >= R.LOG_ENTRY.size * most_records


def test_entry_words_round_trip_and_never_read_as_empty():
    for off in (0, 8, 1 << 40):
        for flag in (0, R.INT_ENTRY):
            word = R.entry_word(off, flag)
            assert word not in (0, R.TOMBSTONE)
            assert R.entry_record(word) == off and word & R.INT_ENTRY == flag
    assert R.entry_at(3) == 3 * R.ENTRY_SIZE


def test_encode_changes_counts_bytes_and_new_keys_and_fails_on_bad_input():
    batch, nbytes, nkeys = R.encode_changes(
        [(1, {"id": 1}, INSERT), ("k", {"id": "k"}, PUT), (2, None, DELETE)], "t")
    assert [c[0] for c in batch] == [1, "k", 2]
    assert nkeys == 2 and nbytes == sum(c[6] for c in batch)
    assert batch[2][4] == b"" and batch[2][7] is None          # a delete has no body
    assert batch[0][3] == R.INT_ENTRY and batch[1][3] == 0
    with pytest.raises(UnstorableValueError):
        R.encode_changes([(1, {"id": 1}, INSERT), (2, {"bad": {1}}, INSERT)], "t")
    with pytest.raises(UnstorableValueError):
        R.encode_changes([([1], {"id": 1}, INSERT)], "t")


# ----------------------------------------------------- heap and directory
class Table:
    """A heap and a directory of ``cap`` entries, laid out with records' helpers."""

    def __init__(self, cap: int = 8) -> None:
        self.heap = bytearray(1 << 14)
        self.directory = bytearray(cap * R.ENTRY_SIZE)
        self.dw = L.words(self.directory)
        self.shift, self.mask = 64 - (cap.bit_length() - 1), cap - 1
        self.end = 0

    def append(self, pk, record, kind=R.KIND_VALUE, hash_override=None) -> int:
        pkb = R.encode_key(pk)
        h, flag = R.key_hash(pk, pkb)
        if hash_override is not None:
            h = hash_override
        body = msgpack.packb(record) if record is not None else b""
        off, total = self.end, R.record_size(len(pkb), len(body))
        R.HEADER.pack_into(self.heap, off, total, len(body), kind,
                           R.INT_KEY if flag else 0, len(pkb), 0, 0, h)
        start = off + R.RECORD_HEADER
        self.heap[start:start + len(pkb) + len(body)] = pkb + body
        slot, found, tomb = self.probe(pk, h)
        assert found == -1
        self.dw[2 * slot] = h
        self.dw[2 * slot + 1] = R.entry_word(off, flag)
        self.end += total
        return off

    def probe(self, pk, h=None):
        pkb = R.encode_key(pk)
        real, flag = R.key_hash(pk, pkb)
        return R.probe(self.dw, self.heap, self.shift, self.mask,
                       real if h is None else h, pkb, flag)


def test_probe_finds_each_key_and_reports_an_absent_one_at_an_empty_entry():
    t = Table()
    offsets = {pk: t.append(pk, {"id": pk}) for pk in (1, "one", b"\x01", -5)}
    for pk, off in offsets.items():
        slot, found, tomb = t.probe(pk)
        assert found == off and tomb == -1
        assert R.decode_at(t.heap, found) == {"id": pk}
        assert bytes(R.key_bytes_at(t.heap, found, len(R.encode_key(pk)))) == R.encode_key(pk)
    slot, found, _ = t.probe("absent")
    assert found == -1 and t.dw[2 * slot + 1] == 0


def test_probe_tells_keys_with_one_hash_apart_by_their_bytes():
    t = Table()
    first = t.append("first", {"n": 1}, hash_override=12345 << 40)
    second = t.append("second", {"n": 2}, hash_override=12345 << 40)
    assert t.probe("second", 12345 << 40)[1] == second
    assert t.probe("first", 12345 << 40)[1] == first
    assert t.probe("third", 12345 << 40)[1] == -1


def test_probe_walks_past_a_tombstone_and_reports_the_first_one():
    t = Table()
    h = 7 << 61                                  # every key below starts at entry 7
    t.append("a", {"n": 1}, hash_override=h)
    b_off = t.append("b", {"n": 2}, hash_override=h)
    home = h >> t.shift
    t.dw[2 * home + 1] = R.TOMBSTONE            # "a" freed by an undo
    slot, found, tomb = t.probe("b", h)
    assert found == b_off and tomb == home
    slot, found, tomb = t.probe("a", h)
    assert found == -1 and tomb == home


def test_probe_of_a_full_directory_ends_instead_of_looping():
    t = Table(cap=4)
    for i in range(4):
        t.dw[2 * i] = i + 1
        t.dw[2 * i + 1] = R.entry_word(0, R.INT_ENTRY)
    assert t.probe(99)[1] == R.PROBE_FULL


def test_a_delete_marker_reads_as_absent():
    t = Table()
    off = t.append(3, None, kind=R.KIND_MARKER)
    assert t.probe(3)[1] == off and R.decode_at(t.heap, off) is None
