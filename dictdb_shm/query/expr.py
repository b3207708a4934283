"""The query tree and the DSL that builds it (``t.age >= 18``).

Owns: :class:`Field` (the DSL entry point), the predicate node classes
(:class:`Compare`, :class:`And`, :class:`Or`, :class:`Not`), the optional
:class:`Condition` wrapper, and :func:`as_predicate`, which turns a ``where=``
argument into a node.

Must never: evaluate anything against records, touch storage or bytes, or
hold closures.  A query is plain data so that a planner can walk it, a cache
can key on it, and it can be pickled to another process.

Shape a planner reads
---------------------
* ``Compare(field, op, value)`` -- every test on one field.  ``op`` is one of
  :data:`OPS`; ``value`` depends on ``op``:

  ============================  ===========================================
  op                            value
  ============================  ===========================================
  eq ne lt le gt ge             the constant
  in                            a tuple of constants
  between                       ``(lo, hi)``, both inclusive
  like ilike                    ``(pattern, escape)``; escape is ``None`` or
                                one character
  startswith endswith contains  the constant (a str; ``contains`` also takes
                                a list element)
  iequals icontains             the str as written (case is folded when the
  istartswith iendswith         predicate is compiled)
  is_null is_not_null           ``None``
  ============================  ===========================================

* ``And(*conds)`` / ``Or(*conds)`` -- ``.conds`` is a tuple of nodes; nested
  nodes of the same kind are flattened.  ``And()`` matches everything and
  ``Or()`` matches nothing.
* ``Not(cond)`` -- ``.cond`` is one node.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, NoReturn

from dictdb_shm.errors import InvalidArgumentError

__all__ = [
    "OPS",
    "COMPARISON_OPS",
    "CASE_INSENSITIVE_OPS",
    "Predicate",
    "Compare",
    "And",
    "Or",
    "Not",
    "Condition",
    "Field",
    "as_predicate",
]

COMPARISON_OPS: frozenset[str] = frozenset({"eq", "ne", "lt", "le", "gt", "ge"})
CASE_INSENSITIVE_OPS: frozenset[str] = frozenset(
    {"iequals", "icontains", "istartswith", "iendswith", "ilike"})
OPS: frozenset[str] = COMPARISON_OPS | CASE_INSENSITIVE_OPS | frozenset(
    {"in", "between", "like", "startswith", "endswith", "contains",
     "is_null", "is_not_null"})

_SYMBOLS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
# Ops whose constant must be a str: a non-str constant is always a caller bug,
# so it is reported when the query is built rather than silently never matching.
_STR_OPS = frozenset({"startswith", "endswith", "iequals", "icontains",
                      "istartswith", "iendswith"})

_BOOL_HINT = ("a query condition has no truth value: combine conditions with & and | "
              "instead of and/or, use ~ instead of not, wrap each comparison in "
              "parentheses, and write 1 < t.x < 5 as t.x.between(1, 5) "
              "(or (t.x > 1) & (t.x < 5))")


def _freeze(value: Any) -> Any:
    """A hashable stand-in for *value*, tagged by type.

    The tag keeps ``x == 1``, ``x == 1.0`` and ``x == True`` apart so that a
    result cache never hands back rows for a query that was merely
    Python-equal.
    """
    tname = type(value).__name__
    if isinstance(value, (list, tuple)):
        return (tname, tuple(_freeze(v) for v in value))
    if isinstance(value, dict):
        items = [(_freeze(k), _freeze(v)) for k, v in value.items()]
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


def _reject_query_object(value: Any, what: str) -> None:
    if isinstance(value, (Field, Predicate, Condition)):
        raise InvalidArgumentError(f"{what} must be a constant, not {type(value).__name__} "
                        f"({value!r}); comparing two fields is not supported")


_SCALARS = frozenset({int, float, str, bool, bytes, type(None)})


def _normalize_value(op: str, value: Any) -> Any:
    """Check and canonicalise *value* for *op* so equal queries have equal keys."""
    if type(value) in _SCALARS and op in COMPARISON_OPS:
        return value          # the common case, decided without the checks below
    if op in ("is_null", "is_not_null"):
        if value is not None:
            raise InvalidArgumentError(f"{op} takes no value, got {value!r}")
        return None
    if op == "in":
        if isinstance(value, (str, bytes, bytearray, dict)) or not isinstance(value, Iterable):
            raise InvalidArgumentError(f"is_in() expects a list, tuple or set of values, "
                            f"got {type(value).__name__}")
        values = list(value)
        for v in values:
            _reject_query_object(v, "an is_in() value")
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
        lo, hi = value
        _reject_query_object(lo, "between()'s low bound")
        _reject_query_object(hi, "between()'s high bound")
        return (copy.deepcopy(lo), copy.deepcopy(hi))
    if op in ("like", "ilike"):
        if isinstance(value, str):
            value = (value, None)
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise InvalidArgumentError(f"{op} expects a pattern str, got {value!r}")
        pattern, escape = value
        if not isinstance(pattern, str):
            raise InvalidArgumentError(
                f"{op}() pattern must be a str, got {type(pattern).__name__}")
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
    if op in _STR_OPS:
        if not isinstance(value, str):
            raise InvalidArgumentError(f"{op}() expects a str, got {type(value).__name__}")
        return value
    _reject_query_object(value, "the compared value")
    if isinstance(value, (list, dict)):
        # The caller may keep mutating their list; the node must not change.
        return copy.deepcopy(value)
    return value


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


class Predicate:
    """Base of every node: immutable, picklable, compared by :meth:`key`.

    Subclasses define ``__slots__``, ``_make_key`` and ``__reduce__``.
    """

    __slots__ = ("_key",)

    def key(self) -> tuple:
        """A hashable tuple that is equal for structurally equal queries.

        Computed on first use: most queries are built, run once and dropped,
        and never hashed or compared.
        """
        try:
            return self._key
        except AttributeError:
            key = self._make_key()
            object.__setattr__(self, "_key", key)
            return key

    def _make_key(self) -> tuple:  # pragma: no cover - abstract
        raise NotImplementedError

    def _init_key(self) -> None:
        """Kept for subclasses' constructors; the key itself is made lazily."""

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        # A real bool, never NotImplemented: falling back would let Python try
        # Field.__eq__, which builds a node instead of answering.
        if not isinstance(other, Predicate):
            return False
        return self.key() == other.key()

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(self.key())

    def __bool__(self) -> NoReturn:
        raise TypeError(_BOOL_HINT)

    def __and__(self, other: Any) -> "And":
        if not isinstance(other, (Predicate, Condition)):
            return NotImplemented
        return And(self, other)

    def __rand__(self, other: Any) -> "And":
        if not isinstance(other, (Predicate, Condition)):
            return NotImplemented
        return And(other, self)

    def __or__(self, other: Any) -> "Or":
        if not isinstance(other, (Predicate, Condition)):
            return NotImplemented
        return Or(self, other)

    def __ror__(self, other: Any) -> "Or":
        if not isinstance(other, (Predicate, Condition)):
            return NotImplemented
        return Or(other, self)

    def __invert__(self) -> "Not":
        return Not(self)

    def _repr_operand(self) -> str:
        """The repr to use inside ``&``, ``|`` or ``~``."""
        return f"({self!r})"


class Compare(Predicate):
    """One test on one field: ``Compare("age", "ge", 18)`` is ``age >= 18``."""

    __slots__ = ("field", "op", "value")
    field: str
    op: str
    value: Any

    def __init__(self, field: str, op: str, value: Any = None) -> None:
        if not isinstance(field, str):
            raise InvalidArgumentError(f"field name must be a str, got {type(field).__name__}")
        if op not in OPS:
            raise InvalidArgumentError(f"unknown operator {op!r}; expected one of {sorted(OPS)}")
        object.__setattr__(self, "field", field)
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "value", _normalize_value(op, value))
        self._init_key()

    def _make_key(self) -> tuple:
        return ("Compare", self.field, self.op, _freeze(self.value))

    def __reduce__(self) -> tuple:
        return (Compare, (self.field, self.op, self.value))

    def __repr__(self) -> str:
        f = _field_repr(self.field)
        op, v = self.op, self.value
        if op in _SYMBOLS:
            return f"{f} {_SYMBOLS[op]} {v!r}"
        if op in ("is_null", "is_not_null"):
            return f"{f}.{op}()"
        if op == "in":
            return f"{f}.is_in({list(v)!r})"
        if op == "between":
            return f"{f}.between({v[0]!r}, {v[1]!r})"
        if op in ("like", "ilike"):
            pattern, escape = v
            if escape is None:
                return f"{f}.{op}({pattern!r})"
            return f"{f}.{op}({pattern!r}, escape={escape!r})"
        return f"{f}.{op}({v!r})"

    def _repr_operand(self) -> str:
        if self.op in _SYMBOLS:
            return f"({self!r})"
        return repr(self)


def _field_repr(name: str) -> str:
    return name if name.isidentifier() else f"Field({name!r})"


def _unwrap(cond: Any, who: str) -> Predicate:
    if isinstance(cond, Condition):
        return cond.expr
    if isinstance(cond, Predicate):
        return cond
    raise InvalidArgumentError(f"{who}() takes conditions built from table fields "
                    f"(e.g. t.age >= 18), got {_describe(cond)}")


class _Junction(Predicate):
    __slots__ = ("conds",)
    conds: tuple[Predicate, ...]
    _symbol = ""

    def __init__(self, *conds: Predicate | Condition) -> None:
        flat: list[Predicate] = []
        for c in conds:
            node = _unwrap(c, type(self).__name__)
            # (a & b) & c becomes And(a, b, c): planners see one level, and
            # differently grouped but identical queries get the same key.
            if type(node) is type(self):
                flat.extend(node.conds)  # type: ignore[attr-defined]
            else:
                flat.append(node)
        object.__setattr__(self, "conds", tuple(flat))
        self._init_key()

    def _make_key(self) -> tuple:
        return (type(self).__name__, tuple(c.key() for c in self.conds))

    def __reduce__(self) -> tuple:
        return (type(self), self.conds)

    def __repr__(self) -> str:
        if len(self.conds) < 2:
            return f"{type(self).__name__}({', '.join(repr(c) for c in self.conds)})"
        return f" {self._symbol} ".join(c._repr_operand() for c in self.conds)


class And(_Junction):
    """True when every condition is true (``And()`` is always true)."""

    __slots__ = ()
    _symbol = "&"


class Or(_Junction):
    """True when any condition is true (``Or()`` is always false)."""

    __slots__ = ()
    _symbol = "|"


class Not(Predicate):
    """The logical negation of one condition (see evaluate.py for missing fields)."""

    __slots__ = ("cond",)
    cond: Predicate

    def __init__(self, cond: Predicate | Condition) -> None:
        object.__setattr__(self, "cond", _unwrap(cond, "Not"))
        self._init_key()

    def _make_key(self) -> tuple:
        return ("Not", self.cond.key())

    def __reduce__(self) -> tuple:
        return (Not, (self.cond,))

    def __repr__(self) -> str:
        return f"~{self.cond._repr_operand()}"

    def _repr_operand(self) -> str:
        return repr(self)


class Condition:
    """Optional wrapper kept for DictDB compatibility: ``Condition(t.age >= 18)``.

    Everything that takes a condition also takes the bare node;
    ``Condition(Condition(x))`` is the same as ``Condition(x)``.  Calling it on a
    record evaluates it (compiled once, on first call).
    """

    __slots__ = ("expr", "_compiled")
    expr: Predicate

    def __init__(self, expr: Predicate | Condition) -> None:
        object.__setattr__(self, "expr", _unwrap(expr, "Condition"))
        object.__setattr__(self, "_compiled", None)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("Condition is immutable")

    def key(self) -> tuple:
        return self.expr.key()

    def __call__(self, record: dict) -> bool:
        compiled = self._compiled
        if compiled is None:
            # Imported here: evaluate.py imports this module.
            from dictdb_shm.query.evaluate import compile_predicate
            compiled = compile_predicate(self.expr)
            object.__setattr__(self, "_compiled", compiled)
        return compiled(record)

    def __reduce__(self) -> tuple:
        # The compiled closure stays behind; the receiver compiles its own.
        return (Condition, (self.expr,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and self.expr == other.expr

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(("Condition", self.expr.key()))

    def __bool__(self) -> NoReturn:
        raise TypeError(_BOOL_HINT)

    def __and__(self, other: Any) -> And:
        if not isinstance(other, (Predicate, Condition)):
            return NotImplemented
        return And(self, other)

    def __rand__(self, other: Any) -> And:
        if not isinstance(other, (Predicate, Condition)):
            return NotImplemented
        return And(other, self)

    def __or__(self, other: Any) -> Or:
        if not isinstance(other, (Predicate, Condition)):
            return NotImplemented
        return Or(self, other)

    def __ror__(self, other: Any) -> Or:
        if not isinstance(other, (Predicate, Condition)):
            return NotImplemented
        return Or(other, self)

    def __invert__(self) -> Not:
        return Not(self.expr)

    def __repr__(self) -> str:
        return f"Condition({self.expr!r})"


_PAREN_HINT = ("wrap each comparison in parentheses before combining: "
               "(t.age >= 18) & (t.name == 'Ada')")


class Field:
    """A named field; comparing it builds a :class:`Compare` node.

    Because ``==`` builds a node, a Field cannot be compared or hashed itself;
    use ``.name`` when you need to.
    """

    __slots__ = ("name",)
    name: str
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
        raise TypeError(f"a field has no truth value; compare it, e.g. "
                        f"t.{self.name} == True, or t.{self.name}.is_not_null()")


def _describe(obj: Any) -> str:
    if callable(obj) and not isinstance(obj, type):
        return (f"a function ({obj!r}); functions cannot be planned or sent to "
                f"other processes")
    return f"{type(obj).__name__} ({obj!r})"


def as_predicate(where: Any) -> Predicate | None:
    """Normalise a ``where=`` argument: ``None``, a node, or a :class:`Condition`.

    Returns the node (``None`` for no filter).  Anything else is a TypeError.
    """
    if where is None:
        return None
    if isinstance(where, Predicate):
        return where
    if isinstance(where, Condition):
        return where.expr
    if isinstance(where, Field):
        raise InvalidArgumentError(f"where= got the bare field {where.name!r}; compare it, e.g. "
                        f"where=(t.{where.name} == True) or t.{where.name}.is_not_null()")
    raise InvalidArgumentError(f"where= takes a condition built from table fields, e.g. "
                    f"where=(t.age >= 18), or None; got {_describe(where)}")
