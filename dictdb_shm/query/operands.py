"""The constant side of a test: operator names and the values they take.

Owns: the operator names (:data:`OPS` and its families), checking and
canonicalising the value of one test (:func:`normalize_value`), so that equal
queries get equal keys wherever they were built, and :func:`freeze`, the
hashable form of a value that a node's key is made of.

Must never: build nodes, evaluate records, or know the node or Field classes
(expr.py imports this module; it rejects a Field or a node used as a value
itself, after normalisation).  The layout of each op's value is tabulated in
expr.py's docstring.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from dictdb_shm.errors import InvalidArgumentError

__all__ = ["OPS", "COMPARISON_OPS", "CASE_INSENSITIVE_OPS", "STR_OPS", "SCALARS",
           "normalize_value", "freeze"]

COMPARISON_OPS: frozenset[str] = frozenset({"eq", "ne", "lt", "le", "gt", "ge"})
CASE_INSENSITIVE_OPS: frozenset[str] = frozenset(
    {"iequals", "icontains", "istartswith", "iendswith", "ilike"})
# Ops whose constant must be a str: a non-str constant is always a caller bug,
# so it is reported when the query is built rather than silently never matching.
STR_OPS: frozenset[str] = frozenset({"startswith", "endswith", "iequals", "icontains",
                                     "istartswith", "iendswith"})
OPS: frozenset[str] = COMPARISON_OPS | CASE_INSENSITIVE_OPS | STR_OPS | frozenset(
    {"in", "between", "like", "contains", "is_null", "is_not_null"})

# Values a comparison keeps as they are: immutable, and never part of a query.
SCALARS = frozenset({int, float, str, bool, bytes, type(None)})


def freeze(value: Any) -> Any:
    """A hashable stand-in for *value*, tagged by type.

    The tag keeps ``x == 1``, ``x == 1.0`` and ``x == True`` apart so that a
    result cache never hands back rows for a query that was merely
    Python-equal.
    """
    tname = type(value).__name__
    if isinstance(value, (list, tuple)):
        return (tname, tuple(freeze(v) for v in value))
    if isinstance(value, dict):
        items = [(freeze(k), freeze(v)) for k, v in value.items()]
        try:
            items.sort()
        except TypeError:
            items.sort(key=repr)
        return (tname, tuple(items))
    try:
        hash(value)
    except TypeError:
        return ("repr", tname, repr(value))
    return (tname, value)


def normalize_value(op: str, value: Any) -> Any:
    """Check *value* for *op* and return its canonical form (see expr.py's table).

    Mutable constants are copied: the caller may keep changing their list,
    and the node must not change with it.
    """
    if op in ("is_null", "is_not_null"):
        if value is not None:
            raise InvalidArgumentError(f"{op} takes no value, got {value!r}")
        return None
    if op == "in":
        if isinstance(value, (str, bytes, bytearray, dict)) or not isinstance(value, Iterable):
            raise InvalidArgumentError(f"is_in() expects a list, tuple or set of values, "
                                       f"got {type(value).__name__}")
        values = list(value)
        if isinstance(value, (set, frozenset)):
            # Set iteration order differs between processes (string hashing is
            # randomised); sorting keeps the node's key identical everywhere.
            try:
                values.sort()
            except TypeError:
                values.sort(key=lambda v: (type(v).__name__, repr(v)))
        return tuple(copy.deepcopy(values))
    if op == "between":
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise InvalidArgumentError(f"between expects a (lo, hi) pair, got {value!r}")
        return (copy.deepcopy(value[0]), copy.deepcopy(value[1]))
    if op in ("like", "ilike"):
        return _like_value(op, value)
    if op in STR_OPS:
        if not isinstance(value, str):
            raise InvalidArgumentError(f"{op}() expects a str, got {type(value).__name__}")
        return value
    if isinstance(value, (list, dict)):
        return copy.deepcopy(value)
    return value


def _like_value(op: str, value: Any) -> tuple[str, str | None]:
    if isinstance(value, str):
        value = (value, None)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise InvalidArgumentError(f"{op} expects a pattern str, got {value!r}")
    pattern, escape = value
    if not isinstance(pattern, str):
        raise InvalidArgumentError(f"{op}() pattern must be a str, got {type(pattern).__name__}")
    if escape is not None:
        if not isinstance(escape, str) or len(escape) != 1:
            raise InvalidArgumentError(
                f"{op}() escape must be a single character, got {escape!r}")
        if escape in "%_":
            raise InvalidArgumentError(
                f"{op}() escape cannot be a wildcard character ({escape!r})")
        if _ends_with_lone_escape(pattern, escape):
            raise InvalidArgumentError(f"{op}() pattern {pattern!r} ends with the escape "
                                       f"character {escape!r}, which escapes nothing")
    return (pattern, escape)


def _ends_with_lone_escape(pattern: str, escape: str) -> bool:
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] == escape:
            if i + 1 == n:
                return True
            i += 2
        else:
            i += 1
    return False
