"""How one record is tested: the closures a query compiles into.

Owns: the ``record -> bool`` closure for each operator
(:data:`LEAF_BUILDERS`) and its relative cost (:data:`LEAF_COSTS`), the
combinators :func:`all_of`, :func:`any_of` and :func:`negation`, the
matching rules below, and LIKE (:func:`like_prefix` included).

Must never: know the node classes (they build their matchers from this
module, so it cannot import them), touch storage, bytes or locks, mutate a
record, or raise while matching one.  Everything is decided when a closure
is built; the closures themselves do no per-record dispatch.

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

__all__ = ["Matcher", "LEAF_BUILDERS", "LEAF_COSTS", "match_all", "all_of", "any_of",
           "negation", "like_prefix"]

Matcher = Callable[[dict], bool]

_MISSING = object()


def match_all(record: dict) -> bool:
    """The matcher of "no filter"."""
    return True


def _match_none(record: dict) -> bool:
    return False


def negation(inner: Matcher) -> Matcher:
    return lambda r: not inner(r)


def all_of(preds: list[Matcher]) -> Matcher:
    """True when every matcher is; they run in the order given."""
    if not preds:
        return match_all
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda r: a(r) and b(r)
    if len(preds) == 3:
        a, b, c = preds
        return lambda r: a(r) and b(r) and c(r)
    ps = tuple(preds)

    def every(r: dict) -> bool:
        for p in ps:
            if not p(r):
                return False
        return True
    return every


def any_of(preds: list[Matcher]) -> Matcher:
    """True when some matcher is; they run in the order given."""
    if not preds:
        return _match_none
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda r: a(r) or b(r)
    if len(preds) == 3:
        a, b, c = preds
        return lambda r: a(r) or b(r) or c(r)
    ps = tuple(preds)

    def some(r: dict) -> bool:
        for p in ps:
            if p(r):
                return True
        return False
    return some


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
        return _match_none
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


# op -> builder(field name, value in the form expr.py's table gives) -> closure.
LEAF_BUILDERS: dict[str, Callable[[str, Any], Matcher]] = {
    "eq": _eq, "ne": _ne, "lt": _lt, "le": _le, "gt": _gt, "ge": _ge,
    "in": _in, "between": _between,
    "is_null": _is_null, "is_not_null": _is_not_null,
    "like": _like, "ilike": _ilike,
    "startswith": _startswith, "endswith": _endswith, "contains": _contains,
    "iequals": _iequals, "icontains": _icontains,
    "istartswith": _istartswith, "iendswith": _iendswith,
}

# op -> relative cost of testing one record (1 is the cheapest).  Matching
# never raises and has no side effects, so the children of an and/or may run
# in any order; callers run cheap tests first so that short-circuiting skips
# the regexes.
LEAF_COSTS: dict[str, int] = dict.fromkeys(LEAF_BUILDERS, 1) | {
    "like": 4, "ilike": 5, "iequals": 3, "icontains": 3, "istartswith": 3, "iendswith": 3,
    "between": 2, "in": 2}
