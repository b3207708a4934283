"""The query tree and its compilation (query/field.py's Field builds it: ``t.age >= 18``).

Owns: the node classes
(:class:`Compare`, :class:`And`, :class:`Or`, :class:`Not`), the optional
:class:`Condition` wrapper, :func:`as_predicate` (a ``where=`` argument to a
node), and turning a tree into one matcher: :func:`compile_predicate`, and
``node(record)``, which compiles the node on its first call and keeps it.

Must never: test a record itself (every closure comes from evaluate.py),
touch storage or bytes.  A query is plain data so that a planner can walk it,
a cache can key on it, and it can be pickled to another process; the one
closure a node may hold, its cached matcher, takes no part in its key, its
equality or its pickle.

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

* ``And(*conds)`` / ``Or(*conds)`` -- ``.conds`` is a tuple of two or more
  nodes; nested nodes of the same kind are flattened.  As in DictDB, fewer
  than two operands is an error.
* ``Not(cond)`` -- ``.cond`` is one node.

How a node is compiled
----------------------
Each node class builds its own matcher (``_build_matcher``) from
evaluate.py's closures: a Compare asks for its operator's closure, And and Or
combine their children's (cheapest first), Not negates its child's.
:func:`compile_predicate` builds afresh on every call, so a query run once
pays nothing for a cache; ``node(record)`` builds once per node and keeps
the result in the node.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, ClassVar, NoReturn

from dictdb_shm.errors import InvalidArgumentError
from dictdb_shm.query.evaluate import (LEAF_BUILDERS, LEAF_COSTS, Matcher, all_of, any_of,
                                       match_all, negation)
from dictdb_shm.query.operands import (CASE_INSENSITIVE_OPS, COMPARISON_OPS, OPS, SCALARS,
                                       freeze, normalize_value)

__all__ = ["OPS", "COMPARISON_OPS", "CASE_INSENSITIVE_OPS", "Predicate", "Compare", "And",
           "Or", "Not", "Condition", "FieldRef", "as_predicate", "compile_predicate",
           "referenced_fields"]

_SYMBOLS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}

_BOOL_HINT = ("combine conditions with & and | instead of and/or, use ~ instead of not, "
              "wrap each comparison in parentheses, and write 1 < t.x < 5 as "
              "t.x.between(1, 5) (or (t.x > 1) & (t.x < 5))")


def _constant(op: str, value: Any) -> Any:
    """*value* checked and canonicalised for *op*; a Field or a node is refused."""
    value = normalize_value(op, value)
    if op == "in":
        for v in value:
            _reject_query_part(v, "an is_in() value")
    elif op == "between":
        _reject_query_part(value[0], "between()'s low bound")
        _reject_query_part(value[1], "between()'s high bound")
    elif op in COMPARISON_OPS or op == "contains":
        _reject_query_part(value, "the compared value")
    return value


def _reject_query_part(value: Any, what: str) -> None:
    if isinstance(value, (FieldRef, _Combinable)):
        raise InvalidArgumentError(f"{what} must be a constant, not {type(value).__name__} "
                                   f"({value!r}); comparing two fields is not supported")


class _Combinable:
    """``&``, ``|``, ``~`` and "no truth value": shared by the nodes and Condition."""

    __slots__ = ()

    def __and__(self, other: Any) -> "And":
        return _join(And, self, other)

    def __rand__(self, other: Any) -> "And":
        return _join(And, other, self)

    def __or__(self, other: Any) -> "Or":
        return _join(Or, self, other)

    def __ror__(self, other: Any) -> "Or":
        return _join(Or, other, self)

    def __invert__(self) -> "Not":
        return Not(self)

    def __bool__(self) -> NoReturn:
        raise InvalidArgumentError("a query condition has no truth value", hint=_BOOL_HINT)


def _join(kind: type, left: Any, right: Any) -> Any:
    # NotImplemented lets Python try the other operand, then raise its TypeError.
    if not (isinstance(left, _Combinable) and isinstance(right, _Combinable)):
        return NotImplemented
    return kind(left, right)


def _by_cost(node: "Predicate") -> int:
    # A plain function: as a sort key it is cheaper than operator.methodcaller.
    return node._cost()


class Predicate(_Combinable):
    """Base of every node: immutable, picklable, compared by :meth:`key`,
    and callable on a record.

    Subclasses define ``__slots__``, ``_make_key``, ``__reduce__``,
    ``_build_matcher`` and ``_cost``.
    """

    __slots__ = ("_key", "_matcher")

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

    # Hot path when a caller filters records itself: after the first call,
    # one slot read and the matcher.
    def __call__(self, record: Mapping[str, Any]) -> bool:
        """Whether *record* matches; compiled on the first call, then kept."""
        try:
            matcher = self._matcher
        except AttributeError:
            matcher = self._build_matcher()
            object.__setattr__(self, "_matcher", matcher)
        return matcher(record)

    def _build_matcher(self) -> Matcher:  # pragma: no cover - abstract
        raise NotImplementedError

    def _cost(self) -> int:  # pragma: no cover - abstract
        """Relative cost of testing one record; And/Or run cheap children first."""
        raise NotImplementedError

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

    def _repr_operand(self) -> str:
        """The repr to use inside ``&``, ``|`` or ``~``."""
        return f"({self!r})"


class Compare(Predicate):
    """One test on one field: ``Compare("age", "ge", 18)`` is ``age >= 18``."""

    __slots__ = ("field", "op", "value")
    field: str
    op: str
    value: Any

    # Hot path: a node is built for every query.
    def __init__(self, field: str, op: str, value: Any = None) -> None:
        if not isinstance(field, str):
            raise InvalidArgumentError(f"field name must be a str, got {type(field).__name__}")
        if op not in OPS:
            raise InvalidArgumentError(f"unknown operator {op!r}; expected one of {sorted(OPS)}")
        if type(value) not in SCALARS or op not in COMPARISON_OPS:
            value = _constant(op, value)
        object.__setattr__(self, "field", field)
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "value", value)

    def _make_key(self) -> tuple:
        return ("Compare", self.field, self.op, freeze(self.value))

    def __reduce__(self) -> tuple:
        return (Compare, (self.field, self.op, self.value))

    def _build_matcher(self) -> Matcher:
        return LEAF_BUILDERS[self.op](self.field, self.value)

    def _cost(self) -> int:
        return LEAF_COSTS[self.op]

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
    # DictDB's words first, so code matching DictDB's message keeps working.
    raise InvalidArgumentError(f"Expected PredicateExpr or Condition, got {_describe(cond)}: "
                               f"{who}() takes conditions built from table fields "
                               f"(e.g. t.age >= 18)")


class _Junction(Predicate):
    __slots__ = ("conds",)
    conds: tuple[Predicate, ...]
    _symbol: ClassVar[str] = ""
    _combine: ClassVar[Callable[[list[Matcher]], Matcher]]

    def __init__(self, *conds: Predicate | Condition) -> None:
        who = type(self).__name__
        if len(conds) < 2:
            raise InvalidArgumentError(
                f"{who}() requires at least 2 operands, got {len(conds)}: pass a single "
                f"condition as it is, e.g. where=(t.age >= 18)")
        flat: list[Predicate] = []
        for c in conds:
            node = _unwrap(c, who)
            # (a & b) & c becomes And(a, b, c): planners see one level, and
            # differently grouped but identical queries get the same key.
            if type(node) is type(self):
                flat.extend(node.conds)  # type: ignore[attr-defined]
            else:
                flat.append(node)
        object.__setattr__(self, "conds", tuple(flat))

    def _make_key(self) -> tuple:
        return (type(self).__name__, tuple(c.key() for c in self.conds))

    def __reduce__(self) -> tuple:
        return (type(self), self.conds)

    def _build_matcher(self) -> Matcher:
        return self._combine([c._build_matcher() for c in sorted(self.conds, key=_by_cost)])

    def _cost(self) -> int:
        return sum(c._cost() for c in self.conds)

    def __repr__(self) -> str:
        return f" {self._symbol} ".join(c._repr_operand() for c in self.conds)


class And(_Junction):
    """True when every condition is true; takes two or more."""

    __slots__ = ()
    _symbol = "&"
    _combine = staticmethod(all_of)


class Or(_Junction):
    """True when any condition is true; takes two or more."""

    __slots__ = ()
    _symbol = "|"
    _combine = staticmethod(any_of)


class Not(Predicate):
    """The logical negation of one condition (see evaluate.py for missing fields)."""

    __slots__ = ("cond",)
    cond: Predicate

    def __init__(self, cond: Predicate | Condition) -> None:
        object.__setattr__(self, "cond", _unwrap(cond, "Not"))

    def _make_key(self) -> tuple:
        return ("Not", self.cond.key())

    def __reduce__(self) -> tuple:
        return (Not, (self.cond,))

    def _build_matcher(self) -> Matcher:
        return negation(self.cond._build_matcher())

    def _cost(self) -> int:
        return self.cond._cost()

    def __repr__(self) -> str:
        return f"~{self.cond._repr_operand()}"

    def _repr_operand(self) -> str:
        return repr(self)


class Condition(_Combinable):
    """Optional wrapper kept for DictDB compatibility: ``Condition(t.age >= 18)``.

    Everything that takes a condition also takes the bare node;
    ``Condition(Condition(x))`` is the same as ``Condition(x)``.  Calling it on
    a record calls the node, which compiles itself once.
    """

    __slots__ = ("expr",)
    expr: Predicate

    def __init__(self, expr: Predicate | Condition) -> None:
        object.__setattr__(self, "expr", _unwrap(expr, "Condition"))

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("Condition is immutable")

    def key(self) -> tuple:
        return self.expr.key()

    def __call__(self, record: Mapping[str, Any]) -> bool:
        return self.expr(record)

    def __reduce__(self) -> tuple:
        return (Condition, (self.expr,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and self.expr == other.expr

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(("Condition", self.expr.key()))

    def __repr__(self) -> str:
        return f"Condition({self.expr!r})"


class FieldRef:
    """What this module knows of a field (query/field.py's Field): its name.
    Fields are refused as constants and as ``where=``, with advice."""

    __slots__ = ("name",)
    name: str


def _describe(obj: Any) -> str:
    if isinstance(obj, FieldRef):
        return (f"the bare field {obj.name!r} (compare it, e.g. t.{obj.name} == True "
                f"or t.{obj.name}.is_not_null())")
    if callable(obj) and not isinstance(obj, type):
        return (f"a function ({obj!r}); functions cannot be planned or sent to "
                f"other processes")
    return f"{type(obj).__name__} ({obj!r})"


def as_predicate(where: Any) -> Predicate | None:
    """Normalise a ``where=`` argument: ``None``, a node, or a :class:`Condition`.

    Returns the node (``None`` for no filter).  Anything else is an
    InvalidArgumentError (a TypeError) that starts with DictDB's words.
    """
    if where is None:
        return None
    if isinstance(where, Predicate):
        return where
    if isinstance(where, Condition):
        return where.expr
    raise InvalidArgumentError(f"where= must be a Condition or PredicateExpr, got "
                               f"{_describe(where)}; pass a condition built from table "
                               f"fields, e.g. where=(t.age >= 18), or None")


# Hot path: every query compiles its where= once.
def compile_predicate(where: Any) -> Matcher:
    """A ``where=`` argument compiled into one ``record -> bool``; ``None`` matches all.

    Builds a new matcher on every call (see "How a node is compiled" above).
    """
    node = as_predicate(where)
    if node is None:
        return match_all
    return node._build_matcher()


def referenced_fields(where: Any) -> set[str]:
    """Every field name the query tests."""
    found: set[str] = set()
    stack: list[Predicate] = []
    root = as_predicate(where)
    if root is not None:
        stack.append(root)
    while stack:
        n = stack.pop()
        if isinstance(n, Compare):
            found.add(n.field)
        elif isinstance(n, Not):
            stack.append(n.cond)
        elif isinstance(n, _Junction):
            stack.extend(n.conds)
    return found
