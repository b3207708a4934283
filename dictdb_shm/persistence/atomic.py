"""Files written whole or not at all, and read whole.

Owns: ``read_whole``, the one way persistence reads a file (OSError other
than a missing file becomes FileAccessError naming it), and
``atomic_file``, the one way persistence writes a file: a temporary
file in the target's directory, written, flushed and fsynced, renamed over
the target, then the directory fsynced, so a crash at any point leaves the
old file or the new one, never a mix; and ``fsync_dir``.  Must never: know
what the bytes mean, or leave its temporary file behind when writing fails.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from typing import BinaryIO, Iterator

from dictdb_shm.errors import FileAccessError

TEMP_SUFFIX = ".tmp"


def read_whole(path: str, what: str = "") -> bytes:
    """The bytes of ``path``; FileNotFoundError stays what it is."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise FileAccessError(f"cannot read {what + ' ' if what else ''}{path}: "
                              f"{exc.strerror or exc}") from None


def fsync_dir(directory: str) -> None:
    """Make a rename or a new file in ``directory`` survive a power loss."""
    fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(target: str) -> str:
    """A fresh hidden name beside ``target`` (same directory, so the rename
    is atomic)."""
    directory, name = os.path.split(target)
    return os.path.join(directory, f".{name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")


@contextmanager
def atomic_file(path: str | os.PathLike, mode: int = 0o600) -> Iterator[BinaryIO]:
    """``with atomic_file(path) as f: f.write(...)``: the file appears at
    ``path`` complete, or (on any error) not at all and ``path`` is as before.
    A new file gets ``mode``; an existing target keeps its permission bits."""
    target = os.fspath(path)
    tmp = temp_name(target)
    try:
        mode = os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)          # the umask does not get a say on a replacement
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(os.path.dirname(target))
