"""What a process asks for when it opens a durable database.

Owns: checking ``DictDB(name, path=, durability=)`` arguments, and that a
running database is the durable database that was asked for.  Must never:
restore or journal anything (keeper.py and restore.py, in the coordinator;
journal.py in every writer).
"""

from __future__ import annotations

import os
from typing import Any

from dictdb_shm.errors import InvalidArgumentError
from dictdb_shm.persistence.journal import DURABILITY_NAMES, DURABILITY_OF_CODE


def durability_code(durability: Any) -> int:
    code = DURABILITY_NAMES.get(durability) if isinstance(durability, str) else None
    if code is None:
        raise InvalidArgumentError(
            f"durability must be 'always', 'everysec' or 'no', not {durability!r}")
    return code


def requested(name: str | None, path: Any, durability: Any) -> tuple[str, str] | None:
    """``(absolute directory, durability)`` asked for, or None (not durable)."""
    if path is None:
        return None
    durability_code(durability)
    if name is None:
        raise InvalidArgumentError("a durable database needs a name: DictDB(name, path=DIR)",
                                   hint="a private database lives only as long as its creator")
    try:
        directory = os.path.abspath(os.fspath(path))
    except TypeError:
        raise InvalidArgumentError(f"path must be a str or os.PathLike, not "
                                   f"{type(path).__name__}") from None
    return directory, durability


def check_matches(catalog: Any, name: str, persist: tuple[str, str] | None) -> None:
    """InvalidArgumentError when ``name`` runs, but not with what was asked."""
    if persist is None:
        return
    path, code = catalog.persistence()
    if path is None:
        raise InvalidArgumentError(
            f"database {name!r} already runs without a path, so it is not durable",
            hint="destroy it (its data is lost) or save() it, then open it with path=")
    if path != persist[0]:
        raise InvalidArgumentError(f"database {name!r} runs with directory {path!r}, "
                                   f"not {persist[0]!r}")
    if DURABILITY_OF_CODE.get(code) != persist[1]:
        raise InvalidArgumentError(
            f"database {name!r} runs with durability {DURABILITY_OF_CODE.get(code)!r}, "
            f"not {persist[1]!r}", hint="it keeps the durability it was started with")
