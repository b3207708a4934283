"""Every exception dictdb_shm raises on purpose.

Owns: the exception hierarchy, rooted at :class:`DictDBError`, and the wording
that tells a user what to do next.  Must never: import other dictdb_shm
modules (everything imports this one).

Each class carries a ``hint``; ``str(exc)`` is the message followed by the hint,
so a log line alone says what went wrong and what to try.
"""

from __future__ import annotations

import pickle


class DictDBError(Exception):
    """Base of every error raised by dictdb_shm."""

    hint: str = ""

    def __init__(self, message: str = "", *, hint: str | None = None) -> None:
        if hint is not None:
            self.hint = hint
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


# --- the errors DictDB itself defines -------------------------------------

class DuplicateKeyError(DictDBError):
    hint = "use upsert() to overwrite, or insert without the primary key to get a new one"


class DuplicateTableError(DictDBError):
    hint = "use get_table() to open the existing table, or drop_table() first"


class RecordNotFoundError(DictDBError):
    hint = "check the where= condition; select() shows what is there"


class TableNotFoundError(DictDBError):
    hint = "list_tables() shows the tables of this database; create_table() makes one"


class SchemaValidationError(DictDBError):
    hint = "make the record match the table's schema (see schema_fields())"


# --- the shared-memory ones ------------------------------------------------

class DatabaseNotFoundError(DictDBError):
    hint = "create it with DictDB(name), or check the name (DictDB.attach only attaches)"


class DatabaseClosedError(DictDBError):
    hint = "this handle was closed or the database destroyed; open it again with DictDB(name)"


class InvalidNameError(DictDBError, ValueError):
    hint = ("use 1 to 48 characters from letters, digits, '_' and '-', starting with a "
            "letter or digit")


class InvalidArgumentError(DictDBError, ValueError, TypeError):
    """A call got an argument of the wrong type or value.  Also a ValueError
    and a TypeError, so code written against DictDB's plain errors still works."""

    hint = "see docs/usage.md for the forms each call accepts"


class LockTimeoutError(DictDBError, TimeoutError):
    """A lock wait ran past its timeout.  ``holder_pid`` is the pid seen holding it."""

    hint = ("another process holds the table lock; make its critical section shorter, "
            "or pass a larger lock_timeout to DictDB()")

    def __init__(self, message: str = "", *, table: str | None = None,
                 holder_pid: int | None = None, hint: str | None = None) -> None:
        self.table = table
        self.holder_pid = holder_pid
        super().__init__(message, hint=hint)


class LockUpgradeError(DictDBError):
    hint = ("a thread that holds read_lock() cannot write; take write_lock() instead, "
            "which also allows reads")


class ForkedLockError(DictDBError):
    """A forked child used a table whose lock its parent's forking thread
    held: the child is inside a critical section it does not hold.
    ``table`` names the table, ``holder_pid`` the parent."""

    hint = ("fork (start the pool, the server's workers, os.fork()) outside "
            "`with t.lock.write_lock()` / `read_lock()` blocks; a child forked inside one "
            "must leave the block before it writes to that table")

    def __init__(self, message: str = "", *, table: str | None = None,
                 holder_pid: int | None = None, hint: str | None = None) -> None:
        self.table = table
        self.holder_pid = holder_pid
        super().__init__(message, hint=hint)


class UnstorableValueError(DictDBError, TypeError):
    hint = ("records hold msgpack types only: None, bool, int (64-bit), float, str, bytes, "
            "list/tuple, and dicts whose keys are str, int or bytes; convert other values "
            "first")


class UnpicklableValueError(UnstorableValueError, pickle.PicklingError):
    """A value for a pickling store (the Django cache backend) that pickle
    refused.  Also a pickle.PicklingError, as Django's own backends raise."""

    hint = "store only picklable values (or make the object picklable)"


class RecordTooLargeError(DictDBError, ValueError):
    hint = "split the record, or store large blobs outside the database and keep a reference"


class DatabaseFullError(DictDBError):
    hint = "drop unused tables, or free space in /dev/shm (df -h /dev/shm)"


class CoordinatorError(DictDBError):
    hint = ("the database's coordinator process could not be reached or started; "
            "see the log named in the message")


class OwnershipError(DictDBError, PermissionError):
    """An object or file we would use is not safely ours: another user owns
    it, it is a symbolic link, or its mode lets others in.  Also a
    PermissionError.  The message names the object."""

    hint = ("another user may have made it to read or change your data; remove it as its "
            "owner, or use another database name")


class DatabaseExistsError(DictDBError):
    hint = "choose another name, or destroy the existing database first"


class FileAccessError(DictDBError, OSError):
    """A file of a save, a backup or a durable database could not be read or
    written (permissions, a full disk, a directory where a file should be).
    Also an OSError; the message names the file."""

    hint = "check the path, its permissions and the free space of its disk"


class CorruptionError(DictDBError):
    hint = "the shared memory does not hold what this version expects; recreate the database"



class ParallelQueryError(DictDBError):
    """A query with ``workers=N`` could not be run across its worker
    processes (one failed to start, did not answer, or read a table that
    moved on).  The pool is ended; the next parallel query starts a new one."""

    hint = "run the query again; with workers=1 it runs in this process only"


class WorkerLostError(ParallelQueryError):
    """A worker process of a parallel query died before it answered (killed,
    or out of memory).  The query is abandoned; the pool heals."""

    hint = ("run the query again: a new worker process is started; check the system log "
            "if workers keep dying (out of memory?)")

__all__ = [name for name in dir() if name.endswith("Error")]
