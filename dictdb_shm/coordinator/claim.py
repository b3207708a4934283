"""The kernel lock that says "a coordinator serves this database".

Owns: an OFD write lock on the byte at COORDINATOR_CLAIM_AT of the catalog
file, which the serving coordinator takes before its catalog is published
and holds for its whole life, and the question whether anyone holds it.
Must never: create, change or remove the catalog.

Why this lock: the catalog lives in /dev/shm whatever the environment, so
every process of a user finds the same lock, even two with different
XDG_RUNTIME_DIR; the kernel drops it when its holder dies, however it dies;
``F_OFD_GETLK`` asks whether it is held without taking it, so asking never
makes a starting coordinator believe it lost; and an OFD lock belongs to the
open file, so closing another descriptor of the catalog never drops it (a
classic POSIX lock would go with the first close).  Its byte lies past the
segment's end, so no byte of the catalog's contents is locked.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from dictdb_shm import names
from dictdb_shm.engine import layout as L

# struct flock on Linux x86-64: l_type, l_whence, l_start, l_len, l_pid (0 for OFD).
_FLOCK = struct.Struct("hhqqi4x")
_CLAIM = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, L.COORDINATOR_CLAIM_AT, 1, 0)


def _path(db: str) -> str:
    return names.shm_path(names.catalog_segment(db))


def take(db: str) -> int | None:
    """Claim ``db``: a descriptor of its catalog file holding the lock (keep it
    open to keep the claim), or None when another process holds it.
    FileNotFoundError when there is no catalog.  The caller checks that the
    descriptor's file is still the catalog (``is_current``): a catalog
    removed and made again between open and lock is a different file."""
    fd = os.open(_path(db), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _CLAIM)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def is_current(db: str, fd: int) -> bool:
    """True while ``fd`` is the file at the catalog's name."""
    try:
        return os.stat(_path(db)).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def held(db: str) -> bool:
    """True while a coordinator holds the claim on ``db``'s catalog."""
    try:
        fd = os.open(_path(db), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:         # none, or not a file we may open: not served for us
        return False
    try:
        answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _CLAIM)
    finally:
        os.close(fd)
    return _FLOCK.unpack(answer)[0] != fcntl.F_UNLCK
