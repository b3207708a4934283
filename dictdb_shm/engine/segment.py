"""Shared-memory segments: create, attach, unlink.

Owns: the POSIX shared-memory objects under /dev/shm and their mappings.
Must never: interpret the bytes it maps (that is layout.py, records.py and
index.py), or unlink anything as a side effect of a process exiting.

Why not ``multiprocessing.shared_memory.SharedMemory``?  The objects are the
same (POSIX shm under /dev/shm), but on Python < 3.13 attaching registers the
segment with the attaching process's resource tracker, which unlinks it when
that process exits: an attached worker exiting would destroy shared data,
and an attached process must never remove data.  Opening through ``posix_ipc`` and mapping with
``mmap`` gives us the mode (0600) and no tracker.  Segments never grow in
place: a bigger one gets a new name (see growth.py).

A segment is created with ``posix_fallocate`` so that a full /dev/shm raises
``DatabaseFullError`` at creation instead of SIGBUS on first touch.

Ownership: /dev/shm is writable by every user, so another user can make an
object under one of our names before we do, readable and writable by all,
hoping we adopt it.  ``attach`` therefore checks the descriptor it opened
(``check_owned``): the object must be ours and mode 0600, else
OwnershipError, before a byte of it is read or written.  ``create`` is
exclusive (O_EXCL), so what it returns is ours by construction.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from typing import Callable

import posix_ipc

from dictdb_shm.errors import DatabaseFullError, OwnershipError

MODE = 0o600


def check_owned(st: os.stat_result, path: str) -> None:
    """OwnershipError unless ``st`` is a regular file of ours with mode 0600."""
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file"
    elif st.st_uid != os.geteuid():
        problem = f"belongs to uid {st.st_uid}, not to us (uid {os.geteuid()})"
    elif stat.S_IMODE(st.st_mode) != MODE:
        problem = f"has mode {stat.S_IMODE(st.st_mode):04o}, not {MODE:04o}"
    if problem:
        raise OwnershipError(
            f"refusing {path}: it {problem}",
            hint=f"another user may have made {path} to read or change your data; its "
                 "owner (or root) should remove it, or use another database name")


class Segment:
    """One mapped shared-memory object.  ``buf`` is the mmap; slicing it copies.
    ``ino`` is the object's inode, to tell it from a later object of that name."""

    __slots__ = ("name", "size", "buf", "ino")

    def __init__(self, name: str, size: int, buf: mmap.mmap, ino: int) -> None:
        self.name = name
        self.size = size
        self.buf = buf
        self.ino = ino

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
        except posix_ipc.PermissionsError:
            raise OwnershipError(f"cannot create shared memory {_path(name)}: permission "
                                 "denied") from None
        try:
            ino = os.fstat(shm.fd).st_ino
            try:
                os.posix_fallocate(shm.fd, 0, size)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
                    raise DatabaseFullError(
                        f"no room in /dev/shm for a segment of {size:,} bytes") from None
                raise
            buf = mmap.mmap(shm.fd, size)
        except BaseException:
            shm.close_fd()
            unlink(name)
            raise
        shm.close_fd()
        return cls(name, size, buf, ino)

    @property
    def path(self) -> str:
        return _path(self.name)

    @classmethod
    def attach(cls, name: str) -> "Segment":
        """Map an existing segment of ours.  FileNotFoundError when it is gone,
        OwnershipError when it is not ours or not owner-only."""
        try:
            shm = posix_ipc.SharedMemory(name)
        except posix_ipc.ExistentialError:
            raise FileNotFoundError(errno.ENOENT, "no such shared memory", name) from None
        except posix_ipc.PermissionsError:
            raise OwnershipError(f"refusing {_path(name)}: another user owns it and it is "
                                 "not open to us") from None
        try:
            st = os.fstat(shm.fd)
            check_owned(st, _path(name))
            if not st.st_size:          # its creator has not sized it yet
                raise FileNotFoundError(errno.ENOENT, "shared memory not ready", name)
            buf = mmap.mmap(shm.fd, st.st_size)
        finally:
            shm.close_fd()
        return cls(name, st.st_size, buf, st.st_ino)

    def __repr__(self) -> str:
        return f"Segment({self.name!r}, {self.size})"


def unlink(name: str) -> bool:
    """Remove the name (mappings stay valid).  False when it did not exist."""
    return unlink_posix_object(posix_ipc.unlink_shared_memory, name, _path(name))


def unlink_posix_object(unlink_name: Callable[[str], None], name: str, path: str) -> bool:
    """``unlink_name(name)``; False when it did not exist, OwnershipError when
    the object at ``path`` is another user's."""
    try:
        unlink_name(name)
        return True
    except posix_ipc.ExistentialError:
        return False
    except posix_ipc.PermissionsError:
        raise OwnershipError(f"cannot remove {path}: another user owns it") from None


def _path(name: str) -> str:
    return "/dev/shm/" + name.lstrip("/")
