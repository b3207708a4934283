"""Shared-memory segments: create, attach, unlink.

Owns: the POSIX shared-memory objects under /dev/shm and their mappings.
Must never: interpret the bytes it maps (that is layout.py, records.py and
directory.py), or unlink anything as a side effect of a process exiting.

Why not ``multiprocessing.shared_memory.SharedMemory``?  The objects are the
same (POSIX shm under /dev/shm), but on Python < 3.13 attaching registers the
segment with the attaching process's resource tracker, which unlinks it when
that process exits: an attached worker exiting would destroy shared data
(DESIGN.md invariant 5).  Opening through ``posix_ipc`` and mapping with
``mmap`` gives us the mode (0600) and no tracker.  Segments never grow in
place: a bigger one gets a new name (see store.py).

A segment is created with ``posix_fallocate`` so that a full /dev/shm raises
``DatabaseFullError`` at creation instead of SIGBUS on first touch.
"""

from __future__ import annotations

import errno
import mmap
import os

import posix_ipc

from dictdb_shm.errors import DatabaseFullError

MODE = 0o600


class Segment:
    """One mapped shared-memory object.  ``buf`` is the mmap; slicing it copies."""

    __slots__ = ("name", "size", "buf")

    def __init__(self, name: str, size: int, buf: mmap.mmap) -> None:
        self.name = name
        self.size = size
        self.buf = buf

    @classmethod
    def create(cls, name: str, size: int, *, replace: bool = False) -> "Segment":
        """Create ``name`` of ``size`` bytes, zero-filled and owner-only.

        ``replace`` unlinks a stale object of that name first: callers pass it
        only when they hold the lock that makes any such object an orphan.
        """
        if replace:
            unlink(name)
        try:
            shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, MODE, 0)
        except posix_ipc.ExistentialError:
            raise FileExistsError(errno.EEXIST, "shared memory exists", name) from None
        try:
            try:
                os.posix_fallocate(shm.fd, 0, size)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
                    raise DatabaseFullError(
                        f"no room in /dev/shm for a {size >> 20} MiB segment") from None
                raise
            buf = mmap.mmap(shm.fd, size)
        except BaseException:
            shm.close_fd()
            unlink(name)
            raise
        shm.close_fd()
        return cls(name, size, buf)

    @classmethod
    def attach(cls, name: str) -> "Segment":
        """Map an existing segment.  FileNotFoundError when it is gone."""
        try:
            shm = posix_ipc.SharedMemory(name)
        except posix_ipc.ExistentialError:
            raise FileNotFoundError(errno.ENOENT, "no such shared memory", name) from None
        try:
            size = os.fstat(shm.fd).st_size
            buf = mmap.mmap(shm.fd, size)
        finally:
            shm.close_fd()
        return cls(name, size, buf)

    def __repr__(self) -> str:
        return f"Segment({self.name!r}, {self.size})"


def unlink(name: str) -> bool:
    """Remove the name (mappings stay valid).  False when it did not exist."""
    try:
        posix_ipc.unlink_shared_memory(name)
        return True
    except posix_ipc.ExistentialError:
        return False
