"""Turns a query tree into a fast ``record -> bool`` predicate.

Owns: :func:`compile_predicate`, the matching rules below, and small read-only
walks of the tree (:func:`referenced_fields`, :func:`like_prefix`).

Must never: touch storage, bytes or locks, mutate a node or a record, or raise
while matching a record.  All tree inspection happens once, at compile time;
the returned closures do no per-record dispatch on node types.

Matching rules
--------------
* A **missing** field matches no test, ``!=`` included, and never raises.
  ``field == None`` therefore matches only a field that is present and
  ``None``; use ``is_null()`` for "missing or None".
* ``is_null()`` matches a missing field or a ``None`` value;
  ``is_not_null()`` matches a present, non-``None`` value.
* Present values use Python's ``==`` / ``!=`` (so ``1 == 1.0 == True``, and
  ``x != 3`` matches ``x = None``).  An ordering test between values that do
  not order (``"abc" < 5``, ``None < 3``) does not match.
* String tests (``like``, ``startswith``, the ``i*`` family, ...) match only
  str values.  ``contains`` also matches an element of a list value.
  Case-insensitive means ``str.casefold()`` on both sides.
* ``Not(x)`` is the plain logical negation of ``x``: ``Not(age > 5)`` matches
  records with no ``age`` at all.  This is not SQL's three-valued NULL logic;
  it is what DictDB does, and it keeps ``Not(Not(x)) == x`` in results.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from dictdb_shm.errors import InvalidArgumentError
from dictdb_shm.query.expr import And, Compare, Condition, Not, Or, Predicate, as_predicate

__all__ = ["Matcher", "compile_predicate", "referenced_fields", "like_prefix"]

Matcher = Callable[[dict], bool]

_MISSING = object()


def _always_true(record: dict) -> bool:
    return True


def _always_false(record: dict) -> bool:
    return False


def compile_predicate(node: Predicate | Condition | None) -> Matcher:
    """Compile *node* once into nested closures; ``None`` gives always-true."""
    node = as_predicate(node)
    if node is None:
        return _always_true
    return _compile(node)


def _compile(node: Predicate) -> Matcher:
    if isinstance(node, Compare):
        return _LEAF_BUILDERS[node.op](node.field, node.value)
    if isinstance(node, And):
        return _compile_and([_compile(c) for c in _cheapest_first(node.conds)])
    if isinstance(node, Or):
        return _compile_or([_compile(c) for c in _cheapest_first(node.conds)])
    if isinstance(node, Not):
        inner = _compile(node.cond)
        return lambda r: not inner(r)
    raise InvalidArgumentError(f"cannot compile {type(node).__name__} ({node!r})")


# --- ordering of sub-conditions ------------------------------------------------
# Matching never raises and has no side effects, so And/Or children may run in
# any order; running cheap tests first lets short-circuiting skip regexes.
_LEAF_COST = {"like": 4, "ilike": 5, "iequals": 3, "icontains": 3, "istartswith": 3,
              "iendswith": 3, "between": 2, "in": 2}


def _cost(node: Predicate) -> int:
    if isinstance(node, Compare):
        return _LEAF_COST.get(node.op, 1)
    if isinstance(node, Not):
        return _cost(node.cond)
    return sum(_cost(c) for c in node.conds)  # type: ignore[attr-defined]


def _cheapest_first(conds: tuple[Predicate, ...]) -> list[Predicate]:
    return sorted(conds, key=_cost)


def _compile_and(preds: list[Matcher]) -> Matcher:
    if not preds:
        return _always_true
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda r: a(r) and b(r)
    if len(preds) == 3:
        a, b, c = preds
        return lambda r: a(r) and b(r) and c(r)
    ps = tuple(preds)

    def all_of(r: dict) -> bool:
        for p in ps:
            if not p(r):
                return False
        return True
    return all_of


def _compile_or(preds: list[Matcher]) -> Matcher:
    if not preds:
        return _always_false
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda r: a(r) or b(r)
    if len(preds) == 3:
        a, b, c = preds
        return lambda r: a(r) or b(r) or c(r)
    ps = tuple(preds)

    def any_of(r: dict) -> bool:
        for p in ps:
            if p(r):
                return True
        return False
    return any_of


# --- leaves ----------------------------------------------------------------------
# Each builder takes (field name, node value) and returns a closure.  They are
# written out one by one, not through operator.*, because this is the per-record
# hot path.

def _eq(name: str, v: Any) -> Matcher:
    # _MISSING equals nothing, so a missing field fails without a branch.
    return lambda r: r.get(name, _MISSING) == v


def _ne(name: str, v: Any) -> Matcher:
    def ne(r: dict) -> bool:
        x = r.get(name, _MISSING)
        return x is not _MISSING and x != v
    return ne


def _lt(name: str, v: Any) -> Matcher:
    def lt(r: dict) -> bool:
        x = r.get(name, _MISSING)
        if x is _MISSING:
            return False
        try:
            return x < v
        except TypeError:
            return False
    return lt


def _le(name: str, v: Any) -> Matcher:
    def le(r: dict) -> bool:
        x = r.get(name, _MISSING)
        if x is _MISSING:
            return False
        try:
            return x <= v
        except TypeError:
            return False
    return le


def _gt(name: str, v: Any) -> Matcher:
    def gt(r: dict) -> bool:
        x = r.get(name, _MISSING)
        if x is _MISSING:
            return False
        try:
            return x > v
        except TypeError:
            return False
    return gt


def _ge(name: str, v: Any) -> Matcher:
    def ge(r: dict) -> bool:
        x = r.get(name, _MISSING)
        if x is _MISSING:
            return False
        try:
            return x >= v
        except TypeError:
            return False
    return ge


def _between(name: str, bounds: tuple[Any, Any]) -> Matcher:
    lo, hi = bounds

    def between(r: dict) -> bool:
        x = r.get(name, _MISSING)
        if x is _MISSING:
            return False
        try:
            return lo <= x <= hi
        except TypeError:
            return False
    return between


def _in(name: str, values: tuple[Any, ...]) -> Matcher:
    if not values:
        return _always_false
    try:
        members = frozenset(values)
    except TypeError:
        # Some constant is a list/dict: fall back to == against each one.
        def in_tuple(r: dict) -> bool:
            x = r.get(name, _MISSING)
            return x is not _MISSING and x in values
        return in_tuple

    def in_set(r: dict) -> bool:
        try:
            return r.get(name, _MISSING) in members
        except TypeError:
            # An unhashable value (list/dict) cannot equal a hashable constant.
            return False
    return in_set


def _is_null(name: str, _v: None) -> Matcher:
    return lambda r: r.get(name) is None


def _is_not_null(name: str, _v: None) -> Matcher:
    return lambda r: r.get(name) is not None


def _startswith(name: str, prefix: str) -> Matcher:
    def startswith(r: dict) -> bool:
        x = r.get(name)
        return isinstance(x, str) and x.startswith(prefix)
    return startswith


def _endswith(name: str, suffix: str) -> Matcher:
    def endswith(r: dict) -> bool:
        x = r.get(name)
        return isinstance(x, str) and x.endswith(suffix)
    return endswith


def _contains(name: str, item: Any) -> Matcher:
    item_is_str = isinstance(item, str)

    def contains(r: dict) -> bool:
        x = r.get(name)
        if isinstance(x, str):
            return item_is_str and item in x
        if isinstance(x, (list, tuple)):
            return item in x
        return False
    return contains


def _iequals(name: str, value: str) -> Matcher:
    folded = value.casefold()

    def iequals(r: dict) -> bool:
        x = r.get(name)
        return isinstance(x, str) and x.casefold() == folded
    return iequals


def _icontains(name: str, value: str) -> Matcher:
    folded = value.casefold()

    def icontains(r: dict) -> bool:
        x = r.get(name)
        return isinstance(x, str) and folded in x.casefold()
    return icontains


def _istartswith(name: str, value: str) -> Matcher:
    folded = value.casefold()

    def istartswith(r: dict) -> bool:
        x = r.get(name)
        return isinstance(x, str) and x.casefold().startswith(folded)
    return istartswith


def _iendswith(name: str, value: str) -> Matcher:
    folded = value.casefold()

    def iendswith(r: dict) -> bool:
        x = r.get(name)
        return isinstance(x, str) and x.casefold().endswith(folded)
    return iendswith


# --- LIKE ------------------------------------------------------------------------

def _like_tokens(pattern: str, escape: str | None) -> list[Any]:
    """Split a LIKE pattern into literal strs, ``None`` for ``%`` and
    ``Ellipsis`` for ``_`` (sentinels no literal can be mistaken for)."""
    tokens: list[Any] = []
    lit: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if escape is not None and ch == escape and i + 1 < n:
            lit.append(pattern[i + 1])
            i += 2
            continue
        if ch == "%" or ch == "_":
            if lit:
                tokens.append("".join(lit))
                lit = []
            if ch == "%":
                # Consecutive % are one wildcard; keeping one simplifies shapes.
                if not (tokens and tokens[-1] is None):
                    tokens.append(None)
            else:
                tokens.append(Ellipsis)
        else:
            lit.append(ch)
        i += 1
    if lit:
        tokens.append("".join(lit))
    return tokens


def like_prefix(pattern: str, escape: str | None = None) -> str:
    """The literal text a LIKE pattern must start with (``"ab%c"`` -> ``"ab"``).

    A planner can turn ``like`` into a range scan on a sorted index with it;
    an empty result means the pattern starts with a wildcard.
    """
    tokens = _like_tokens(pattern, escape)
    if tokens and isinstance(tokens[0], str):
        return tokens[0]
    return ""


def _like_matcher(pattern: str, escape: str | None, fold: bool) -> Callable[[str], bool]:
    """A ``str -> bool`` test for the pattern; *fold* means the caller folds
    the value, so literals are folded here once."""
    tokens = _like_tokens(pattern, escape)
    if fold:
        tokens = [t.casefold() if isinstance(t, str) else t for t in tokens]
    # Common shapes skip the regex engine entirely.
    if not tokens:
        return lambda s: s == ""
    if tokens == [None]:
        return lambda s: True
    if len(tokens) == 1 and isinstance(tokens[0], str):
        lit = tokens[0]
        return lambda s: s == lit
    if len(tokens) == 2 and isinstance(tokens[0], str) and tokens[1] is None:
        lit = tokens[0]
        return lambda s: s.startswith(lit)
    if len(tokens) == 2 and tokens[0] is None and isinstance(tokens[1], str):
        lit = tokens[1]
        return lambda s: s.endswith(lit)
    if (len(tokens) == 3 and tokens[0] is None and tokens[2] is None
            and isinstance(tokens[1], str)):
        lit = tokens[1]
        return lambda s: lit in s
    parts = []
    for t in tokens:
        if t is None:
            parts.append(".*")
        elif t is Ellipsis:
            parts.append(".")
        else:
            parts.append(re.escape(t))
    # DOTALL: % and _ must match newlines too, as any character would.
    fullmatch = re.compile("".join(parts), re.DOTALL).fullmatch
    return lambda s: fullmatch(s) is not None


def _like(name: str, value: tuple[str, str | None]) -> Matcher:
    test = _like_matcher(value[0], value[1], fold=False)

    def like(r: dict) -> bool:
        x = r.get(name)
        return isinstance(x, str) and test(x)
    return like


def _ilike(name: str, value: tuple[str, str | None]) -> Matcher:
    test = _like_matcher(value[0], value[1], fold=True)

    def ilike(r: dict) -> bool:
        x = r.get(name)
        return isinstance(x, str) and test(x.casefold())
    return ilike


_LEAF_BUILDERS: dict[str, Callable[[str, Any], Matcher]] = {
    "eq": _eq, "ne": _ne, "lt": _lt, "le": _le, "gt": _gt, "ge": _ge,
    "in": _in, "between": _between,
    "is_null": _is_null, "is_not_null": _is_not_null,
    "like": _like, "ilike": _ilike,
    "startswith": _startswith, "endswith": _endswith, "contains": _contains,
    "iequals": _iequals, "icontains": _icontains,
    "istartswith": _istartswith, "iendswith": _iendswith,
}


def referenced_fields(node: Predicate | Condition | None) -> set[str]:
    """Every field name the query tests."""
    found: set[str] = set()
    stack: list[Predicate] = []
    root = as_predicate(node)
    if root is not None:
        stack.append(root)
    while stack:
        n = stack.pop()
        if isinstance(n, Compare):
            found.add(n.field)
        elif isinstance(n, Not):
            stack.append(n.cond)
        elif isinstance(n, (And, Or)):
            stack.extend(n.conds)
    return found
