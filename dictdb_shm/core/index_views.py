"""Read-only views of a table's indexes: ``t.indexes``, as DictDB offers it.

Owns: ``IndexViews`` (field -> view), ``IndexView.search(value)`` (the set of
primary keys whose field equals ``value``) and, for a hash index,
``view.index`` (a read-only mapping value -> set of primary keys).  Must
never: copy an index whole, change one, or answer from anything but one
consistent state of the shared-memory index (each call is one
``StorageEngine.read``).

An index's answer is a superset of the matches (engine/index.py), so each
candidate is re-checked against the value with Python's ``==`` (``1``,
``1.0`` and ``True`` are one key, as in a dict).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from dictdb_shm.engine import StorageEngine

_MISSING = object()


class IndexView:
    """One index of a table (``kind`` "hash", "sorted", ...)."""

    __slots__ = ("field", "kind", "_store", "_pk")

    def __init__(self, store: StorageEngine, field: str, kind: str, pk: str) -> None:
        self.field = field
        self.kind = kind
        self._store = store
        self._pk = pk

    def search(self, value: Any) -> set[Any]:
        """Primary keys of the records whose field equals ``value``."""
        field, pk = self.field, self._pk

        def run(s: StorageEngine) -> set[Any]:
            found = s.index_candidates(field, "eq", value)
            if found is None:       # a value no index holds (None, a list): scan
                found = s.scan()
            return {r[pk] for r in found if r.get(field, _MISSING) == value}
        return self._store.read(run)

    @property
    def index(self) -> "HashIndexMapping":
        """value -> set of primary keys (hash indexes, as DictDB's HashIndex)."""
        if self.kind != "hash":
            raise AttributeError(f"a {self.kind} index has no .index mapping; use search()")
        return HashIndexMapping(self)

    def __repr__(self) -> str:
        return f"<{self.kind} index on {self.field!r}>"


class HashIndexMapping(Mapping):
    """A hash index read as ``{value: set of primary keys}``, without copying
    it: lookups search the shared index, iteration lists its distinct values."""

    __slots__ = ("_view",)

    def __init__(self, view: IndexView) -> None:
        self._view = view

    def __getitem__(self, value: Any) -> set[Any]:
        try:
            found = self._view.search(value)
        except TypeError:
            raise KeyError(value) from None
        if not found:
            raise KeyError(value)
        return found

    def _values(self) -> list[Any]:
        view = self._view
        return view._store.read(lambda s: s.index_values(view.field)) or []

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values())

    def __len__(self) -> int:
        return len(self._values())


class IndexViews(Mapping):
    """``t.indexes``: field -> IndexView, read-only, current at each access."""

    __slots__ = ("_store", "_pk")

    def __init__(self, store: StorageEngine, pk: str) -> None:
        self._store = store
        self._pk = pk

    def _kinds(self) -> dict[str, str]:
        return self._store.read(lambda s: s.indexes())

    def __getitem__(self, field: str) -> IndexView:
        kind = self._kinds().get(field)
        if kind is None:
            raise KeyError(field)
        return IndexView(self._store, field, kind, self._pk)

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds())

    def __len__(self) -> int:
        return len(self._kinds())

    def __repr__(self) -> str:
        return f"<indexes {self._kinds()}>"
