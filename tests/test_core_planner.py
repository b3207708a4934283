"""The planner's choice of access path (core/planner.py), on query trees alone."""

from __future__ import annotations

from dictdb_shm.core.planner import SCAN, Plan, choose
from dictdb_shm.query import Field

a, b, c, id_ = Field("a"), Field("b"), Field("c"), Field("id")
IDX = {"a": "hash", "b": "sorted"}


def test_primary_key_lookups():
    assert choose(id_ == 3, "id", {}) == Plan("pk", value=[3])
    assert choose(id_.is_in([1, 2, 1, [9]]), "id", {}) == Plan("pk", value=[1, 2])
    assert choose(id_ > 3, "id", {}) == SCAN


def test_indexes_by_kind():
    assert choose(a == 1, "id", IDX) == Plan("index", "a", "eq", 1)
    assert choose(a.is_in([1, 2]), "id", IDX) == Plan("index", "a", "in", (1, 2))
    assert choose(a > 1, "id", IDX) == SCAN                    # hash: no ranges
    assert choose(b.between(1, 5), "id", IDX) == Plan("index", "b", "between", (1, 5))
    assert choose(b <= 2, "id", IDX) == Plan("index", "b", "le", 2)
    assert choose(c == 1, "id", IDX).kind == "search"      # no index: byte search
    assert choose(None, "id", IDX) == SCAN


def test_and_prefers_keys_then_smallest_equality_then_ranges():
    assert choose((b > 1) & (a == 2), "id", IDX).field == "a"
    assert choose((a == 2) & (id_ == 7), "id", IDX) == Plan("pk", value=[7])
    counts = {("a", 2): 500, ("b", 3): 4}
    est = lambda f, op, v: counts.get((f, v))              # noqa: E731
    assert choose((a == 2) & (b == 3), "id", IDX, est).field == "b"
    assert choose((a == 2) & (b == 3), "id", IDX).field == "a"   # no estimate: first
    assert choose((c == 1) & (b < 3), "id", IDX) == Plan("index", "b", "lt", 3)


def test_or_and_not_scan():
    assert choose((a == 1) | (a == 2), "id", IDX) == SCAN
    assert choose(~(a == 1), "id", IDX) == SCAN


def test_string_equalities_without_index_are_searched():
    assert choose(c == "x", "id", IDX) == Plan("search", "c", "eq", "x")
    assert choose((c > 1) & (c.is_in(["x", b"y"])), "id", IDX) == \
        Plan("search", "c", "in", ("x", b"y"))
    assert choose(c == 5, "id", IDX) == Plan("search", "c", "eq", 5)
    assert choose(c.is_in(["x", [5]]), "id", IDX) == SCAN   # lists compare element-wise
    assert choose(c == float("nan"), "id", IDX) == SCAN
    assert choose((a == "k") & (c == "x"), "id", IDX).kind == "index"
