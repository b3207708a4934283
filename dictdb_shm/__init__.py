"""dictdb_shm: DictDB's API, with tables in shared memory used by many processes.

``import dictdb_shm as dictdb`` and code written for DictDB runs unchanged,
and then also across processes: ``DictDB("shop")`` in one program and
``DictDB.attach("shop")`` in another see the same tables.

Package map (one idea per folder):

* ``engine/``      shared-memory segments, catalog, records, the TableStore
* ``lock/``        the cross-process reader-writer lock
* ``query/``       the query DSL as data, its evaluation and result shaping
* ``core/``        the public DictDB and Table objects
* ``coordinator/`` the per-database process that creates and removes things
* ``cache/``       the shared cache: ``db.cache(name)``, TTL, eviction, memoize
"""

from dictdb_shm.cache.cache import Cache
from dictdb_shm.core.database import DictDB
from dictdb_shm.core.table import Table
from dictdb_shm.persistence.backups import BackupManager, apply_delta
from dictdb_shm.errors import (CoordinatorError, CorruptionError, DatabaseClosedError,
                               DatabaseExistsError, DatabaseFullError, FileAccessError, DatabaseNotFoundError, DictDBError,
                               DuplicateKeyError, DuplicateTableError, ForkedLockError,
                               InvalidArgumentError, InvalidNameError,
                               LockTimeoutError, OwnershipError, LockUpgradeError,
                               ParallelQueryError, RecordNotFoundError,
                               RecordTooLargeError, SchemaValidationError, TableNotFoundError,
                               UnstorableValueError, WorkerLostError)
from dictdb_shm.query import (And, Avg, Compare, Condition, Count, Field, Max, Min, Not, Or,
                              Sum)

__version__ = "0.1.0"

__all__ = [
    "DictDB", "Table", "Cache", "BackupManager", "apply_delta",
    "Condition", "Field", "Compare", "And", "Or", "Not",
    "Count", "Sum", "Avg", "Min", "Max",
    "DictDBError", "DuplicateKeyError", "DuplicateTableError", "RecordNotFoundError",
    "TableNotFoundError", "SchemaValidationError", "DatabaseNotFoundError",
    "DatabaseClosedError", "DatabaseFullError", "InvalidArgumentError", "InvalidNameError",
    "LockTimeoutError",
    "LockUpgradeError", "OwnershipError", "UnstorableValueError", "RecordTooLargeError", "CoordinatorError",
    "CorruptionError", "DatabaseExistsError", "FileAccessError", "ForkedLockError",
    "ParallelQueryError", "WorkerLostError",
]
