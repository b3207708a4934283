"""What ``select`` does to the rows that matched: order, columns, distinct, paging.

Owns: :func:`order_rows`, :func:`project`, :func:`distinct_rows`, :func:`page`,
:func:`normalize_paging`, :func:`shape_rows` (all of them, in the right
order) and :func:`sort_key` (the total order used whenever plain ``<`` would
fail).

Must never: filter rows (that is the predicate's job), touch storage or bytes,
or mutate the rows it is given.  Rows pass through by reference unless a
projection builds new dicts; copying is the caller's decision.

Decisions
---------
* **order_by** -- ``"age"``, ``"-age"`` (descending) or a list of those; the
  sort is stable and multi-key.  A missing field and a ``None`` value sort
  **after** every present value in ascending order and **before** them in
  descending order (descending is the ascending order reversed; rows that
  tie keep their input order either way).  Values that do not order against
  each other never raise: numbers (bool, int, float; NaN after all other
  numbers) come first, then str, bytes, lists, dicts, then anything else by
  type name.  ``order_by`` names source fields, not projection aliases.
* **columns** -- a list of names, a dict ``alias -> field``, or a list mixing
  names and ``(alias, field)`` pairs.  A field the row lacks comes out as
  ``None`` (as in DictDB), so every projected row has the same keys.
* **distinct** -- keeps the first of each group of equal rows (Python ``==``
  on the projected dicts, so ``1``, ``1.0`` and ``True`` are the same value);
  unhashable values such as lists and dicts are handled.
* **paging** -- as in DictDB, a negative ``offset`` counts as 0 and a
  negative ``limit`` as no limit (:func:`normalize_paging`).
* **pipeline** -- order, then projection, then distinct, then offset/limit,
  i.e. SQL's meaning: ``distinct=True, limit=10`` returns ten distinct rows
  when there are ten.  (DictDB pages before it de-duplicates, and so can
  return fewer; we deliberately do not copy that.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import islice
from operator import itemgetter
from typing import Any, Callable, Union

from dictdb_shm.errors import InvalidArgumentError

__all__ = [
    "OrderBy",
    "Columns",
    "parse_order_by",
    "sort_key",
    "order_rows",
    "projector",
    "project",
    "distinct_rows",
    "page",
    "normalize_paging",
    "shape_rows",
]

OrderBy = Union[None, str, Sequence[str]]
Columns = Union[None, Sequence[Union[str, tuple[str, str]]], Mapping[str, str]]

# --- ordering --------------------------------------------------------------------

def parse_order_by(order_by: OrderBy) -> list[tuple[str, bool]]:
    """``"-age"`` / ``["name", "-age"]`` -> ``[(field, descending), ...]``."""
    if order_by is None:
        return []
    if isinstance(order_by, str):
        items: Sequence[Any] = [order_by] if order_by else []
    elif isinstance(order_by, (list, tuple)):
        items = order_by
    else:
        raise InvalidArgumentError(
            f"order_by takes a field name, '-name' for descending, or a list "
                        f"of those; got {type(order_by).__name__}")
    specs = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidArgumentError(f"order_by entries must be field names (str), got {item!r}")
        desc = item.startswith("-")
        name = item[1:] if item[:1] in ("-", "+") else item
        if not name:
            raise InvalidArgumentError(f"order_by entry {item!r} names no field")
        specs.append((name, desc))
    return specs


_RANK_NUMBER, _RANK_STR, _RANK_BYTES, _RANK_LIST, _RANK_DICT, _RANK_NONE, _RANK_OTHER = range(7)


class _Fallback:
    """Orders values of one unknown type by ``<`` when they allow it, else by repr."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Fallback) and _safe_eq(self.v, other.v)

    def __lt__(self, other: "_Fallback") -> bool:
        try:
            return bool(self.v < other.v)
        except TypeError:
            return repr(self.v) < repr(other.v)


def _safe_eq(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return a is b


def sort_key(value: Any) -> tuple:
    """A key giving a total order over any mix of values; never raises on compare.

    Within one kind of value it agrees with ``<``.  ``None`` ranks after
    every other kind (only relevant inside lists: top-level ``None`` is
    handled by the callers).
    """
    if isinstance(value, (bool, int, float)):
        if value != value:  # NaN: after every other number, never compared
            return (_RANK_NUMBER, 1, 0)
        return (_RANK_NUMBER, 0, value)
    if isinstance(value, str):
        return (_RANK_STR, value)
    if isinstance(value, (bytes, bytearray)):
        return (_RANK_BYTES, bytes(value))
    if isinstance(value, (list, tuple)):
        return (_RANK_LIST, tuple(sort_key(v) for v in value))
    if isinstance(value, dict):
        return (_RANK_DICT, tuple(sorted((sort_key(k), sort_key(v)) for k, v in value.items())))
    if value is None:
        return (_RANK_NONE,)
    return (_RANK_OTHER, type(value).__name__, _Fallback(value))


def _plain_sortable(values: list[Any]) -> bool:
    """True when ``<`` alone orders *values* exactly as :func:`sort_key` would.

    Checked up front because a sort that merely does not raise can still be
    wrong (NaN), and because sort_key tuples cost several times more.
    """
    types = set(map(type, values))
    if types <= {str}:
        return True
    if types <= {int, bool}:
        return True
    if types <= {int, bool, float}:
        return all(v == v for v in values)
    return False


def _sort_pass(rows: list[dict], name: str, descending: bool) -> list[dict]:
    # No (value, row) pairs: a million small tuples cost more in allocation
    # and GC than the sort itself; itemgetter keys are computed once, in C.
    present = [r for r in rows if r.get(name) is not None]
    get = itemgetter(name)
    if _plain_sortable(list(map(get, present))):
        present.sort(key=get, reverse=descending)
    else:
        present.sort(key=lambda r: sort_key(r[name]), reverse=descending)
    if len(present) == len(rows):
        return present
    absent = [r for r in rows if r.get(name) is None]
    if descending:
        absent.extend(present)
        return absent
    present.extend(absent)
    return present


def order_rows(rows: Iterable[dict], order_by: OrderBy) -> list[dict]:
    """Sort rows by ``order_by`` (see the module docstring); returns a new list."""
    specs = parse_order_by(order_by)
    result = list(rows)
    # Stable passes from the last key to the first give a multi-key sort in
    # which each key can have its own direction and its own missing values.
    for name, descending in reversed(specs):
        result = _sort_pass(result, name, descending)
    return result


# --- projection ------------------------------------------------------------------

def _column_pairs(columns: Columns) -> list[tuple[str, str]] | None:
    if columns is None:
        return None
    if isinstance(columns, str):
        return [(columns, columns)]
    if isinstance(columns, Mapping):
        pairs = list(columns.items())
    elif isinstance(columns, (list, tuple)):
        pairs = []
        for item in columns:
            if isinstance(item, str):
                pairs.append((item, item))
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                pairs.append((item[0], item[1]))
            else:
                raise InvalidArgumentError(f"columns entries must be field names or (alias, field) "
                                f"pairs, got {item!r}")
    else:
        raise InvalidArgumentError(f"columns takes a list of field names or a dict alias -> field, "
                        f"got {type(columns).__name__}")
    seen: set[str] = set()
    for alias, field in pairs:
        if not isinstance(alias, str) or not isinstance(field, str):
            raise InvalidArgumentError(
                f"column alias and field must be str, got {(alias, field)!r}")
        if alias in seen:
            raise InvalidArgumentError(f"column {alias!r} appears twice in columns")
        seen.add(alias)
    return pairs


def _identity(row: dict) -> dict:
    return row


def projector(columns: Columns) -> Callable[[dict], dict]:
    """Build the ``row -> projected row`` function once for many rows.

    ``None`` returns rows unchanged (the same object); otherwise a new dict
    with one key per column, ``None`` where the row lacks the field.
    """
    pairs = _column_pairs(columns)
    if pairs is None:
        return _identity
    if all(alias == field for alias, field in pairs):
        names = [alias for alias, _ in pairs]
        return lambda row: {n: row.get(n) for n in names}
    return lambda row: {alias: row.get(field) for alias, field in pairs}


def project(row: dict, columns: Columns) -> dict:
    """Project one row; see :func:`projector`."""
    return projector(columns)(row)


# --- distinct --------------------------------------------------------------------

_LIST, _TUPLE, _DICT, _SET, _OTHER = (object() for _ in range(5))


def _hashable(v: Any) -> Any:
    """A hashable value equal for values that are ``==`` (containers tagged by
    private sentinels, so no user value can collide with the encoding)."""
    try:
        hash(v)
        return v
    except TypeError:
        pass
    if isinstance(v, list):
        return (_LIST, tuple(_hashable(x) for x in v))
    if isinstance(v, tuple):
        return (_TUPLE, tuple(_hashable(x) for x in v))
    if isinstance(v, dict):
        return (_DICT, frozenset((k, _hashable(x)) for k, x in v.items()))
    if isinstance(v, (set, frozenset)):
        return (_SET, frozenset(_hashable(x) for x in v))
    return (_OTHER, type(v).__name__, repr(v))


def _row_key(row: dict) -> Any:
    try:
        return frozenset(row.items())
    except TypeError:
        return frozenset((k, _hashable(v)) for k, v in row.items())


def _unique(rows: Iterable[dict]) -> Iterable[dict]:
    seen: set[Any] = set()
    for row in rows:
        k = _row_key(row)
        if k not in seen:
            seen.add(k)
            yield row


def distinct_rows(rows: Iterable[dict]) -> list[dict]:
    """Keep the first occurrence of each distinct row, in order."""
    return list(_unique(rows))


# --- paging ----------------------------------------------------------------------

def normalize_paging(limit: int | None, offset: int | None = 0) -> tuple[int | None, int]:
    """``(limit, offset)`` as DictDB reads them: ``(None or a limit >= 0, offset >= 0)``.

    A negative offset counts as 0 and a negative limit as no limit; an offset
    of ``None`` is 0.  Anything but an int (a bool included) is an
    InvalidArgumentError.  Callers that compute ``offset + limit`` (to stop a
    scan early) normalise first.
    """
    if offset is None:
        offset = 0
    elif isinstance(offset, bool) or not isinstance(offset, int):
        raise InvalidArgumentError(f"offset must be an int, got {type(offset).__name__}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise InvalidArgumentError(f"limit must be an int or None, got {type(limit).__name__}")
    return (None if limit is None or limit < 0 else limit), (offset if offset > 0 else 0)


def page(rows: Iterable[dict], limit: int | None = None, offset: int = 0) -> list[dict]:
    """Skip *offset* rows, then keep at most *limit* (``None``: all the rest);
    see :func:`normalize_paging` for negative values."""
    limit, offset = normalize_paging(limit, offset)
    return _page(rows, limit, offset)


def _page(rows: Iterable[dict], limit: int | None, offset: int) -> list[dict]:
    stop = None if limit is None else offset + limit
    if isinstance(rows, list):
        return rows[offset:stop]
    return list(islice(rows, offset, stop))


# --- everything ------------------------------------------------------------------

def shape_rows(rows: Iterable[dict], *, columns: Columns = None, order_by: OrderBy = None,
               limit: int | None = None, offset: int = 0,
               distinct: bool = False) -> list[dict]:
    """Order, project, de-duplicate, then page (see the module docstring)."""
    limit, offset = normalize_paging(limit, offset)
    proj = projector(columns)
    ordered: Iterable[dict] = order_rows(rows, order_by) if order_by else rows
    if not distinct:
        # Paging before projecting gives the same rows and projects fewer.
        return [proj(r) for r in _page(ordered, limit, offset)]
    # Lazy all the way, so paging stops projecting once it has enough rows.
    return _page(_unique(map(proj, ordered)), limit, offset)
