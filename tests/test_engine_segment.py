"""Shared-memory segments (dictdb_shm.engine.segment): created exclusive,
owner-only and fully allocated; attached only when they are ours; unlinked
without disturbing the mappings that remain."""

from __future__ import annotations

import os
import stat

import posix_ipc
import pytest

from dictdb_shm import DatabaseFullError, OwnershipError, names
from dictdb_shm.engine.segment import Segment, unlink
from proctools import OTHER_UID, needs_root


@pytest.fixture
def name(db_name):
    """A segment name of the test's database (its destroy removes leftovers)."""
    return names.heap_segment(db_name, 1, 1)


def test_create_makes_a_zeroed_owner_only_object_of_that_size(name):
    seg = Segment.create(name, 8192)
    st = os.stat(seg.path)
    assert seg.path == names.shm_path(name)
    assert (st.st_size, st.st_uid, stat.S_IMODE(st.st_mode)) == (8192, os.geteuid(), 0o600)
    assert st.st_blocks * 512 >= 8192           # allocated now, not on first touch
    assert seg.size == 8192 and bytes(seg.buf) == bytes(8192) and seg.ino == st.st_ino
    assert unlink(name)


def test_attach_maps_the_same_bytes(name):
    seg = Segment.create(name, 4096)
    try:
        other = Segment.attach(name)
        assert (other.size, other.ino) == (4096, seg.ino)
        seg.buf[100:105] = b"hello"
        assert bytes(other.buf[100:105]) == b"hello"
        other.buf[0] = 7
        assert seg.buf[0] == 7
    finally:
        unlink(name)


def test_create_is_exclusive_unless_asked_to_replace(name):
    first = Segment.create(name, 4096)
    first.buf[0] = 1
    try:
        with pytest.raises(FileExistsError):
            Segment.create(name, 4096)
        second = Segment.create(name, 8192, replace=True)
        assert second.ino != first.ino and second.size == 8192 and second.buf[0] == 0
        assert first.buf[0] == 1                # the old mapping still works
    finally:
        unlink(name)


def test_unlink_removes_the_name_and_keeps_mappings(name):
    seg = Segment.create(name, 4096)
    assert unlink(name) is True
    assert not os.path.exists(seg.path)
    with pytest.raises(FileNotFoundError):
        Segment.attach(name)
    seg.buf[:3] = b"abc"                         # still mapped
    assert bytes(seg.buf[:3]) == b"abc"
    assert unlink(name) is False


def test_attach_of_a_missing_or_unsized_object_is_file_not_found(name):
    with pytest.raises(FileNotFoundError):
        Segment.attach(name)
    shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, 0o600, 0)   # its creator's first step
    shm.close_fd()
    try:
        with pytest.raises(FileNotFoundError, match="not ready"):
            Segment.attach(name)
    finally:
        unlink(name)


@pytest.mark.parametrize("mode", [0o644, 0o660, 0o666, 0o700])
def test_attach_refuses_an_object_open_to_others_before_reading_it(name, mode):
    Segment.create(name, 4096).buf[:6] = b"secret"
    os.chmod(names.shm_path(name), mode)
    try:
        with pytest.raises(OwnershipError, match=f"has mode {mode:04o}, not 0600") as info:
            Segment.attach(name)
        assert names.shm_path(name) in str(info.value)
        assert isinstance(info.value, PermissionError)
    finally:
        unlink(name)


@needs_root
def test_attach_refuses_an_object_of_another_user(name):
    Segment.create(name, 4096)
    os.chown(names.shm_path(name), OTHER_UID, -1)
    try:
        with pytest.raises(OwnershipError, match=f"belongs to uid {OTHER_UID}"):
            Segment.attach(name)
    finally:
        unlink(name)


def test_a_segment_bigger_than_dev_shm_fails_at_creation_and_leaves_nothing(name):
    st = os.statvfs(names.SHM_DIR)
    too_big = st.f_blocks * st.f_frsize + (1 << 30)
    with pytest.raises(DatabaseFullError, match=f"{too_big:,} bytes") as info:
        Segment.create(name, too_big)
    assert "df -h /dev/shm" in str(info.value)
    assert not os.path.exists(names.shm_path(name))
