"""The journal's format read back: entries cut short anywhere by a process
killed mid-append are skipped (at the end of the file and before other
processes' entries), and anything else that does not check out is a
CorruptionError naming the file."""

from __future__ import annotations

import os

import pytest

from dictdb_shm import CorruptionError
from dictdb_shm.engine import DELETE, INSERT, PUT
from dictdb_shm.engine import layout as L
from dictdb_shm.persistence import journal as J


@pytest.fixture
def header():
    """A catalog header of our own: the journal reads its generation there."""
    buf = bytearray(L.SLOTS_AT)
    J.initialize(buf)
    return buf


def write(directory, header, *calls):
    j = J.Journal(str(directory), L.DURABILITY_ALWAYS, header)
    for table, changes in calls:
        j.write(table, changes)
    j.close()
    return J.journal_path(str(directory), 0)


CALLS = [("t", [(1, {"id": 1, "v": "a"}, INSERT)]),
         ("t", [(i, {"id": i}, INSERT) for i in range(2, 60)]),
         ("u", [(1, {"id": 1, "w": 2}, PUT), (2, None, DELETE)])]
EXPECTED = [[J.WRITE, "t", [[J.PUT, 1, {"id": 1, "v": "a"}]]],
            [J.WRITE, "t", [[J.PUT, i, {"id": i}] for i in range(2, 60)]],
            [J.WRITE, "u", [[J.PUT, 1, {"id": 1, "w": 2}], [J.DEL, 2, None]]]]


def test_entries_read_back(tmp_path, header):
    path = write(tmp_path, header, *CALLS)
    assert list(J.entries(path)) == EXPECTED


def test_writers_follow_the_generation_in_the_header(tmp_path, header):
    j = J.Journal(str(tmp_path), L.DURABILITY_NO, header)
    j.write("t", CALLS[0][1])
    L.words(header)[L.JOURNAL_GENERATION_AT // L.WORD] = 7
    j.write("t", CALLS[0][1])
    j.close()
    assert J.generations(str(tmp_path)) == [0, 7]


def test_the_file_is_filled_with_zeros_ahead_of_its_entries(tmp_path, header):
    path = write(tmp_path, header, *CALLS)
    data = open(path, "rb").read()
    end = sum(len(J.frame(J.WRITE, t, J.write_ops(c))) for t, c in CALLS)
    assert L.words(header)[L.JOURNAL_END_AT // L.WORD] == end
    assert len(data) > J.PREFILL > end and not data[end:].strip(b"\0")
    j = J.Journal(str(tmp_path), L.DURABILITY_NO, header)     # another process's appender
    j.write("t", CALLS[0][1])
    j.close()
    assert list(J.entries(path)) == EXPECTED + EXPECTED[:1]


def test_a_torn_last_entry_is_dropped_at_every_cut(tmp_path, header):
    """Cut short as an appending writer leaves it (the file ends there) and
    as a positioned one does (zeros after the bytes that made it)."""
    path = write(tmp_path, header, *CALLS)
    data = open(path, "rb").read()
    end = L.words(header)[L.JOURNAL_END_AT // L.WORD]
    last = len(J.frame(J.WRITE, "u", J.write_ops(CALLS[2][1])))
    for cut in range(1, last):
        for torn in (data[:end - cut], data[:end - cut] + bytes(cut) + data[end:]):
            open(path, "wb").write(torn)
            assert list(J.entries(path)) == EXPECTED[:2], cut


def test_a_dead_writers_reservation_is_padded_and_stepped_over(tmp_path, header):
    """A writer that died holding the journal's mutex left ``reserved``
    bytes at the end, written in part or not at all: the next writer covers
    them with a PAD entry and appends after them; whole entries are kept."""
    frames = [J.frame(J.WRITE, t, J.write_ops(c)) for t, c in CALLS]
    w = L.words(header)
    for cut in (0, 5, 20, len(frames[1])):
        path = write(tmp_path, header, CALLS[0])
        pos = w[L.JOURNAL_END_AT // L.WORD]
        with open(path, "r+b") as f:                       # what the dead writer wrote
            f.seek(pos)
            f.write(frames[1][:cut])
        w[L.JOURNAL_RESERVED_AT // L.WORD] = len(frames[1])
        j = J.Journal(str(tmp_path), L.DURABILITY_NO, header)
        j._step_over_dead_reservation()       # what _place does when the owner died
        j.write(*CALLS[2])
        j.close()
        expect = [EXPECTED[0]] + ([EXPECTED[1]] if cut == len(frames[1]) else []) + [EXPECTED[2]]
        assert list(J.entries(path)) == expect, cut
        kinds = [what for what, *_ in J._scan(open(path, "rb").read(), path)]
        assert kinds == ([J.ENTRY] * 3 if cut == len(frames[1]) else [J.ENTRY, J.PAD, J.ENTRY])
        os.unlink(path)
        for word in (L.JOURNAL_FILE_AT, L.JOURNAL_END_AT, L.JOURNAL_FILLED_AT):
            w[word // L.WORD] = 0


def test_a_torn_entry_before_other_entries_is_skipped(tmp_path, header):
    frames = [J.frame(J.WRITE, t, J.write_ops(c)) for t, c in CALLS]
    path = str(tmp_path / "j.log")
    for cut in (1, 3, 5, 11, 12, 40, len(frames[1]) - 1):
        # the second call's writer was killed after ``cut`` bytes; the third
        # writer appended after what it left
        open(path, "wb").write(frames[0] + frames[1][:cut] + frames[2])
        assert list(J.entries(path)) == [EXPECTED[0], EXPECTED[2]], cut


def test_a_flipped_byte_is_corruption(tmp_path, header):
    path = write(tmp_path, header, *CALLS)
    data = bytearray(open(path, "rb").read())
    data[len(J.frame(J.WRITE, "t", J.write_ops(CALLS[0][1]))) + 30] ^= 0x01
    open(path, "wb").write(bytes(data))
    with pytest.raises(CorruptionError, match=os.path.basename(path)):
        list(J.entries(path))


def test_garbage_between_entries_is_corruption(tmp_path, header):
    frames = [J.frame(J.WRITE, t, J.write_ops(c)) for t, c in CALLS]
    path = str(tmp_path / "j.log")
    open(path, "wb").write(frames[0] + b"not an entry at all, but long enough" + frames[2])
    with pytest.raises(CorruptionError, match="damaged bytes"):
        list(J.entries(path))


def test_an_entry_that_checks_out_but_means_nothing_is_corruption(tmp_path):
    payload = b"\xc1"                            # never valid msgpack
    path = str(tmp_path / "j.log")
    open(path, "wb").write(J.HEAD.pack(J.MAGIC, 1, __import__("zlib").crc32(payload))
                           + payload)
    with pytest.raises(CorruptionError, match="does not decode"):
        list(J.entries(path))
    open(path, "wb").write(J.frame("zz", "t", []))
    with pytest.raises(CorruptionError, match="not a journal entry"):
        list(J.entries(path))
