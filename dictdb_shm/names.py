"""Names: what users may call things, and what we call the OS objects behind them.

Owns: validation of database and table names, the derivation of every POSIX
object name (shared-memory segments, semaphores, sockets) from a database
name, and the per-user runtime directory.  Must never: create, open or
remove a segment, semaphore, socket or log -- it only names them.  Its only
effects on the file system are making and checking the runtime directory
(``runtime_dir``) and listing /dev/shm (``shm_listing``).

Every object of a database under /dev/shm starts with ``dictdb_<dbname>.``
(semaphores: ``sem.dictdb_<dbname>.``), so that ``destroy()`` and the
coordinator's garbage collection can find all of them by listing /dev/shm,
including segments a crashed writer left unpublished.  That is only safe
because a database name can never contain ``.`` or ``/``: ``check_db_name``
is the one rule, and every function here that turns a database name into an
OS name applies it, so no caller can forget.  A table's objects share
``table_prefix`` (``dictdb_<dbname>.t<uid>.``), whose final dot keeps table
1's prefix from matching table 10's objects.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import tempfile
import unicodedata

from dictdb_shm.errors import InvalidNameError, OwnershipError

# fullmatch, never match: "$" would accept a name ending in a newline.
_DB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,47}")
MAX_TABLE_NAME_BYTES = 200
# Table names become file names of dumps and backups: no path separator, no
# character a terminal or a file listing would hide or reinterpret.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})

SHM_DIR = "/dev/shm"
# glibc's sem_open(O_CREAT) writes a new semaphore to /dev/shm/sem.XXXXXX
# (six letters or digits) and then links it to its real name.
GLIBC_SEMAPHORE_TEMP = re.compile(r"sem\.[A-Za-z0-9]{6}")
# An AF_UNIX socket path, NUL included, fits in 108 bytes on Linux.
MAX_SOCKET_PATH = 107


def check_db_name(name: object) -> str:
    """``name`` when it is a valid database name, else InvalidNameError."""
    if not isinstance(name, str) or not _DB_NAME.fullmatch(name):
        raise InvalidNameError(f"invalid database name {name!r}")
    return name


def check_table_name(name: object) -> str:
    """``name`` when it is a valid table name, else InvalidNameError.

    The one rule for every caller (create_table, the coordinator, dumps and
    backups that name files after tables): a non-blank string of at most
    MAX_TABLE_NAME_BYTES UTF-8 bytes, without "/", NUL, control characters
    or line separators, and neither "." nor "..".
    """
    hint = (f"a table name is 1 to {MAX_TABLE_NAME_BYTES} UTF-8 bytes, not blank, "
            "not '.' or '..', without '/' or control characters")
    if not isinstance(name, str) or not name.strip() or name in (".", ".."):
        raise InvalidNameError(f"invalid table name {name!r}", hint=hint)
    if "/" in name or any(unicodedata.category(c) in _UNSAFE_CATEGORIES for c in name):
        raise InvalidNameError(f"invalid table name {name!r}", hint=hint)
    if len(name.encode("utf-8")) > MAX_TABLE_NAME_BYTES:
        raise InvalidNameError(f"table name {name!r} is too long", hint=hint)
    return name


CACHE_TABLE_PREFIX = "@cache:"


def cache_table(name: str) -> str:
    """The table that holds cache ``name`` (dictdb_shm/cache/): a table name
    with a prefix user tables may not have, so caches stay out of
    list_tables, saves and backups."""
    return CACHE_TABLE_PREFIX + name


def is_cache_table(table: str) -> bool:
    return table.startswith(CACHE_TABLE_PREFIX)


def private_db_name() -> str:
    return f"p{os.getpid()}-{secrets.token_hex(6)}"


def prefix(db: str) -> str:
    """Prefix of every /dev/shm entry of database ``db`` (without the leading slash)."""
    return f"dictdb_{check_db_name(db)}."


def catalog_segment(db: str) -> str:
    return f"/{prefix(db)}catalog"


def table_prefix(db: str, uid: int) -> str:
    return f"{prefix(db)}t{uid}."


def heap_segment(db: str, uid: int, seg: int) -> str:
    return f"/{table_prefix(db, uid)}heap{seg}"


def directory_segment(db: str, uid: int, seg: int) -> str:
    return f"/{table_prefix(db, uid)}dir{seg}"


def index_segment(db: str, uid: int, seg: int) -> str:
    return f"/{table_prefix(db, uid)}idx{seg}"


def drain_semaphore(db: str, uid: int) -> str:
    return f"/{table_prefix(db, uid)}r"


def shm_path(name: str) -> str:
    """The /dev/shm file of shared-memory object ``name`` ("/dictdb_...")."""
    return os.path.join(SHM_DIR, name.lstrip("/"))


def semaphore_path(name: str) -> str:
    """The /dev/shm file glibc keeps named semaphore ``name`` in."""
    return os.path.join(SHM_DIR, "sem." + name.lstrip("/"))


def runtime_dir() -> str:
    """Per-user directory for coordinator sockets and logs, checked on every call.

    ``$DICTDB_SHM_RUNTIME_DIR`` when set; else ``$XDG_RUNTIME_DIR/dictdb_shm``
    when XDG_RUNTIME_DIR is a directory of ours; else
    ``<tmp>/dictdb_shm-<uid>``.  Created with mode 0700.  An existing one
    that another user owns, that is a symbolic link, or whose mode is not
    0700 raises OwnershipError: in a shared /tmp another user could have
    made it to catch our sockets and logs, so it is never repaired in place.
    Not under /dev/shm, so that a clean /dev/shm after destroy() is easy to check.
    """
    base = os.environ.get("DICTDB_SHM_RUNTIME_DIR") or _default_runtime_dir()
    try:
        os.mkdir(base, 0o700)
        os.chmod(base, 0o700)          # ours, just made: undo a restrictive umask
    except FileExistsError:
        pass
    except OSError as exc:
        raise OwnershipError(f"cannot create the runtime directory {base}: {exc.strerror}",
                             hint="set DICTDB_SHM_RUNTIME_DIR to a directory you may "
                                  "create") from None
    st = os.lstat(base)
    problem = None
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif st.st_uid != os.geteuid():
        problem = f"belongs to uid {st.st_uid}, not to us (uid {os.geteuid()})"
    elif stat.S_IMODE(st.st_mode) != 0o700:
        problem = f"has mode {stat.S_IMODE(st.st_mode):04o}, not 0700"
    if problem:
        raise OwnershipError(
            f"refusing the runtime directory {base}: it {problem}",
            hint="remove it (as its owner) or chmod it 0700 if it is yours, or set "
                 "DICTDB_SHM_RUNTIME_DIR to a directory of yours with mode 0700")
    return base


def _default_runtime_dir() -> str:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        try:
            st = os.lstat(xdg)
        except OSError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
            return os.path.join(xdg, "dictdb_shm")
    return os.path.join(tempfile.gettempdir(), f"dictdb_shm-{os.geteuid()}")


def coordinator_socket(db: str) -> str:
    """Where a new coordinator of ``db`` listens (clients read the path it
    actually bound from the catalog header)."""
    return os.path.join(runtime_dir(), f"{check_db_name(db)}.sock")


def coordinator_log(db: str) -> str:
    return os.path.join(runtime_dir(), f"{check_db_name(db)}.log")


def semaphore_creation_lockfile() -> str:
    """The file whose flock every semaphore creation of this user holds."""
    return os.path.join(runtime_dir(), "semaphores.lock")


def shm_listing() -> list[str]:
    """Every entry of /dev/shm, of any user or program."""
    try:
        return os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []


def shm_entries(db: str) -> list[str]:
    """Every /dev/shm entry that belongs to ``db`` (segments and ``sem.`` files)."""
    p = prefix(db)
    return [n for n in shm_listing() if n.startswith(p) or n.startswith("sem." + p)]
