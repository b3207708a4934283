"""Names: what users may call things, and what we call the OS objects behind them.

Owns: validation of database, table and field names, and the derivation of
every POSIX object name (shared-memory segments, semaphores, sockets) from a
database name.  Must never: create or open anything.

Every OS object of a database shares the prefix ``dictdb_<dbname>.`` so that
``destroy()`` and the coordinator's garbage collection can find all of them
by listing /dev/shm, including segments a crashed writer left unpublished.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile

from dictdb_shm.errors import InvalidNameError

_DB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")
MAX_TABLE_NAME_BYTES = 200

SHM_DIR = "/dev/shm"


def check_db_name(name: object) -> str:
    if not isinstance(name, str) or not _DB_NAME.match(name):
        raise InvalidNameError(f"invalid database name {name!r}")
    return name


def check_table_name(name: object) -> str:
    if not isinstance(name, str) or not name or not name.strip():
        raise InvalidNameError(f"invalid table name {name!r}",
                               hint="a table name is a non-empty string")
    if "\x00" in name or len(name.encode("utf-8")) > MAX_TABLE_NAME_BYTES:
        raise InvalidNameError(
            f"invalid table name {name!r}",
            hint=f"at most {MAX_TABLE_NAME_BYTES} UTF-8 bytes and no NUL character")
    return name


def private_db_name() -> str:
    return f"p{os.getpid()}-{secrets.token_hex(6)}"


def prefix(db: str) -> str:
    """Prefix of every /dev/shm entry of database ``db`` (without the leading slash)."""
    return f"dictdb_{db}."


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


def write_semaphore(db: str, uid: int) -> str:
    return f"/{table_prefix(db, uid)}w"


def drain_semaphore(db: str, uid: int) -> str:
    return f"/{table_prefix(db, uid)}r"


def runtime_dir() -> str:
    """Per-user directory (mode 0700) for coordinator sockets, lock files and logs.

    Not under /dev/shm, so that a clean /dev/shm after destroy() is easy to check.
    """
    base = os.environ.get("DICTDB_SHM_RUNTIME_DIR") or os.path.join(
        tempfile.gettempdir(), f"dictdb_shm-{os.getuid()}")
    os.makedirs(base, mode=0o700, exist_ok=True)
    st = os.stat(base)
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        os.chmod(base, 0o700)
    return base


def coordinator_socket(db: str) -> str:
    return os.path.join(runtime_dir(), f"{db}.sock")


def coordinator_lockfile(db: str) -> str:
    return os.path.join(runtime_dir(), f"{db}.lock")


def coordinator_log(db: str) -> str:
    return os.path.join(runtime_dir(), f"{db}.log")


def shm_entries(db: str) -> list[str]:
    """Every /dev/shm entry that belongs to ``db`` (segments and ``sem.`` files)."""
    p = prefix(db)
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    return [n for n in names if n.startswith(p) or n.startswith("sem." + p)]
