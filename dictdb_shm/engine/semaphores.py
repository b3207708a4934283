"""Named POSIX semaphores as files: create exclusively, check, remove, and
clean up what an interrupted creation leaks.

Owns: the ``/dev/shm/sem.*`` files of our databases, and the temporary
``sem.XXXXXX`` files glibc makes while creating one.  Must never: wait on or
post a semaphore (lock/), or decide which semaphores a table has (catalog.py).

Why the temporary files matter: glibc's ``sem_open(O_CREAT)`` writes the new
semaphore to ``/dev/shm/sem.XXXXXX`` (six random letters or digits), then
``link()``s it to the real name and unlinks the temporary name.  A process
killed in between leaves that file behind, under no name of ours.  So every
creation happens under ``creation_lock()`` (a per-user flock, released by the
kernel if the holder dies), and the caller records in shared memory when it
began.  Whoever repairs a dead creator's work calls ``remove_leaked_temp_files``
with that time, under the same lock: no live creation of ours can then be in
its window, and a file is removed only if it looks exactly like glibc's
temporary file, is ours, and was written within the window.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from contextlib import contextmanager
from typing import Iterator

import posix_ipc

from dictdb_shm import names
from dictdb_shm.engine.segment import MODE, check_owned, unlink_posix_object
from dictdb_shm.errors import DatabaseFullError, OwnershipError

# glibc writes one sem_t (32 bytes on 64-bit Linux) to the temporary file.
SEM_T_SIZE = 32
# File times come from a coarse clock that can lag the fine one by a tick.
CLOCK_SLACK_NS = 50_000_000
# A creation writes its temporary file microseconds after recording its start.
LEAK_WINDOW_NS = 5_000_000_000


@contextmanager
def creation_lock() -> Iterator[None]:
    """Hold the per-user lock that every semaphore creation of ours takes."""
    path = names.semaphore_creation_lockfile()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, MODE)
    try:
        check_owned(os.fstat(fd), path)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)                        # releases the flock


def create(name: str, value: int) -> None:
    """Create semaphore ``name`` with ``value``, owner-only.  A leftover of ours
    under that name is replaced; one of another user's is an OwnershipError."""
    for _ in range(2):
        try:
            posix_ipc.Semaphore(name, posix_ipc.O_CREX, MODE, value).close()
            return
        except posix_ipc.ExistentialError:
            check(name)                     # raises when it is not ours
            unlink(name)
        except posix_ipc.PermissionsError:
            raise OwnershipError(f"cannot create semaphore {names.semaphore_path(name)}: "
                                 "permission denied") from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.ENOMEM):
                raise DatabaseFullError(f"no room in /dev/shm for semaphore {name}") from None
            raise
    raise FileExistsError(errno.EEXIST, "semaphore keeps reappearing", name)


def check(name: str) -> bool:
    """True when semaphore ``name`` exists and is safely ours, False when it
    does not exist; OwnershipError when it is another user's, a symbolic link,
    or open to others."""
    path = names.semaphore_path(name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    check_owned(st, path)
    return True


def unlink(name: str) -> bool:
    """Remove semaphore ``name``; False when it did not exist."""
    return unlink_posix_object(posix_ipc.unlink_semaphore, name, names.semaphore_path(name))


def remove_leaked_temp_files(started_ns: int) -> list[str]:
    """Remove glibc temporary semaphore files that a creation which began at
    ``started_ns`` (CLOCK_REALTIME) and never finished left behind.  The caller
    holds ``creation_lock()``.  Returns the names removed."""
    low, high = started_ns - CLOCK_SLACK_NS, started_ns + LEAK_WINDOW_NS
    removed = []
    for entry in names.shm_listing():
        if not names.GLIBC_SEMAPHORE_TEMP.fullmatch(entry):
            continue
        path = os.path.join(names.SHM_DIR, entry)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if (stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
                and stat.S_IMODE(st.st_mode) == MODE and st.st_size in (0, SEM_T_SIZE)
                and low <= st.st_mtime_ns <= high):
            try:
                os.unlink(path)
                removed.append(entry)
            except FileNotFoundError:
                pass
    return removed
