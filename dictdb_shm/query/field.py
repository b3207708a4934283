"""Field: the entry point of the query DSL (``t.age >= 18``).

Owns: turning Python's comparison operators and the string methods of a
named field into :class:`~dictdb_shm.query.expr.Compare` nodes, and the
advice for the usual mistakes (``t.a > 1 & t.b``, ``if t.flag:``).  Must
never: evaluate anything or hold state beyond the field's name; a Field is
immutable and pickles as its name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

from dictdb_shm.errors import InvalidArgumentError
from dictdb_shm.query.expr import Compare, FieldRef

__all__ = ["Field"]

_PAREN_HINT = ("wrap each comparison in parentheses before combining: "
               "(t.age >= 18) & (t.name == 'Ada')")


class Field(FieldRef):
    """A named field; comparing it builds a :class:`Compare` node.

    Because ``==`` builds a node, a Field cannot be compared or hashed itself;
    use ``.name`` when you need to.
    """

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, name: str) -> None:
        if not isinstance(name, str):
            raise InvalidArgumentError(f"field name must be a str, got {type(name).__name__}")
        object.__setattr__(self, "name", name)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("Field is immutable")

    def __reduce__(self) -> tuple:
        return (Field, (self.name,))

    def __repr__(self) -> str:
        return f"Field({self.name!r})"

    # -- comparisons ----------------------------------------------------------
    def __eq__(self, value: Any) -> Compare:  # type: ignore[override]
        return Compare(self.name, "eq", value)

    def __ne__(self, value: Any) -> Compare:  # type: ignore[override]
        return Compare(self.name, "ne", value)

    def __lt__(self, value: Any) -> Compare:
        return Compare(self.name, "lt", value)

    def __le__(self, value: Any) -> Compare:
        return Compare(self.name, "le", value)

    def __gt__(self, value: Any) -> Compare:
        return Compare(self.name, "gt", value)

    def __ge__(self, value: Any) -> Compare:
        return Compare(self.name, "ge", value)

    def is_in(self, values: Iterable[Any]) -> Compare:
        return Compare(self.name, "in", values)

    def between(self, lo: Any, hi: Any) -> Compare:
        """``lo <= field <= hi``."""
        return Compare(self.name, "between", (lo, hi))

    def is_null(self) -> Compare:
        """Matches a missing field or a ``None`` value."""
        return Compare(self.name, "is_null")

    def is_not_null(self) -> Compare:
        """Matches a present, non-``None`` value."""
        return Compare(self.name, "is_not_null")

    # -- strings --------------------------------------------------------------
    def like(self, pattern: str, escape: str | None = None) -> Compare:
        """SQL LIKE: ``%`` any run, ``_`` one char, all else literal.

        With *escape*, that character makes the next ``%``, ``_`` or itself
        literal.
        """
        return Compare(self.name, "like", (pattern, escape))

    def ilike(self, pattern: str, escape: str | None = None) -> Compare:
        return Compare(self.name, "ilike", (pattern, escape))

    def startswith(self, prefix: str) -> Compare:
        return Compare(self.name, "startswith", prefix)

    def endswith(self, suffix: str) -> Compare:
        return Compare(self.name, "endswith", suffix)

    def contains(self, item: Any) -> Compare:
        """Substring of a str value, or element of a list value."""
        return Compare(self.name, "contains", item)

    def iequals(self, value: str) -> Compare:
        return Compare(self.name, "iequals", value)

    def icontains(self, value: str) -> Compare:
        return Compare(self.name, "icontains", value)

    def istartswith(self, value: str) -> Compare:
        return Compare(self.name, "istartswith", value)

    def iendswith(self, value: str) -> Compare:
        return Compare(self.name, "iendswith", value)

    # -- common mistakes ----------------------------------------------------------
    # `t.age >= 18 & t.ok == 1` parses as `t.age >= (18 & t.ok) == 1`; Python's
    # own message for that says nothing useful, so say what to do.
    def _no_logic(self, *_: Any) -> NoReturn:
        raise InvalidArgumentError(f"a field is not a condition: {_PAREN_HINT}")

    __and__ = __rand__ = __or__ = __ror__ = __invert__ = _no_logic

    def __bool__(self) -> NoReturn:
        raise InvalidArgumentError(
            "a field has no truth value",
            hint=f"compare it, e.g. t.{self.name} == True, or t.{self.name}.is_not_null()")
