"""Unit tests for dictdb_shm.query.shape (no shared memory)."""

from __future__ import annotations

import math
import random

import pytest

from dictdb_shm.errors import InvalidArgumentError
from dictdb_shm.query import (
    distinct_rows,
    normalize_paging,
    order_rows,
    page,
    parse_order_by,
    project,
    projector,
    shape_rows,
    sort_key,
)


def ids(rows):
    return [r["id"] for r in rows]


PEOPLE = [
    {"id": 1, "name": "Cy", "dept": "IT", "age": 40},
    {"id": 2, "name": "Ada", "dept": "HR", "age": 36},
    {"id": 3, "name": "Bo", "dept": "IT"},               # no age
    {"id": 4, "name": "Di", "dept": "HR", "age": None},  # None age
    {"id": 5, "name": "Ed", "dept": "IT", "age": 36},
]


# --- parse_order_by -------------------------------------------------------------------

def test_parse_order_by():
    assert parse_order_by(None) == []
    assert parse_order_by("") == []
    assert parse_order_by([]) == []
    assert parse_order_by("age") == [("age", False)]
    assert parse_order_by("-age") == [("age", True)]
    assert parse_order_by("+age") == [("age", False)]
    assert parse_order_by(["dept", "-age"]) == [("dept", False), ("age", True)]
    assert parse_order_by(("a", "b")) == [("a", False), ("b", False)]


@pytest.mark.parametrize("bad, exc", [
    (5, TypeError), (["a", 3], TypeError), ("-", ValueError), (["a", ""], ValueError),
    ({"a": 1}, TypeError),
])
def test_parse_order_by_rejects_bad_input(bad, exc):
    with pytest.raises(exc):
        parse_order_by(bad)


# --- order_rows -----------------------------------------------------------------------

def test_order_ascending_puts_missing_and_none_last_in_input_order():
    assert ids(order_rows(PEOPLE, "age")) == [2, 5, 1, 3, 4]


def test_order_descending_puts_missing_and_none_first():
    assert ids(order_rows(PEOPLE, "-age")) == [3, 4, 1, 2, 5]


def test_order_by_string_field():
    assert ids(order_rows(PEOPLE, "name")) == [2, 3, 1, 4, 5]
    assert ids(order_rows(PEOPLE, "-name")) == [5, 4, 1, 3, 2]


def test_multi_key_order_with_mixed_directions():
    assert ids(order_rows(PEOPLE, ["dept", "-age"])) == [4, 2, 3, 1, 5]
    assert ids(order_rows(PEOPLE, ["-dept", "age", "-id"])) == [5, 1, 3, 2, 4]


def test_order_is_stable_for_ties():
    rows = [{"id": i, "k": i % 2} for i in range(8)]
    assert ids(order_rows(rows, "k")) == [0, 2, 4, 6, 1, 3, 5, 7]
    # Descending reverses the keys, not the ties.
    assert ids(order_rows(rows, "-k")) == [1, 3, 5, 7, 0, 2, 4, 6]


def test_order_none_or_empty_keeps_order_and_returns_a_new_list():
    rows = list(PEOPLE)
    out = order_rows(rows, None)
    assert out == rows and out is not rows
    assert order_rows(iter(rows), []) == rows


def test_order_does_not_mutate_input():
    rows = list(PEOPLE)
    before = [dict(r) for r in rows]
    order_rows(rows, ["-age", "name"])
    assert rows == before and ids(rows) == [1, 2, 3, 4, 5]


def test_order_mixed_types_does_not_raise():
    rows = [{"id": 1, "v": "b"}, {"id": 2, "v": 3}, {"id": 3, "v": None},
            {"id": 4, "v": [1, "x"]}, {"id": 5, "v": 1.5}, {"id": 6, "v": "a"},
            {"id": 7, "v": {"k": 1}}, {"id": 8}, {"id": 9, "v": True},
            {"id": 10, "v": b"z"}, {"id": 11, "v": [1, 2]}]
    # numbers (True == 1), then str, bytes, lists, dicts; missing/None last.
    assert ids(order_rows(rows, "v")) == [9, 5, 2, 6, 1, 10, 11, 4, 7, 3, 8]
    assert ids(order_rows(rows, "-v")) == [3, 8, 7, 4, 11, 10, 1, 6, 2, 5, 9]


def test_order_ints_and_floats_together():
    rows = [{"id": i, "v": v} for i, v in enumerate([3, 1.5, -2, 2, 0.0, True])]
    assert [r["v"] for r in order_rows(rows, "v")] == [-2, 0.0, True, 1.5, 2, 3]


def test_order_nan_goes_after_other_numbers():
    rows = [{"id": 1, "v": 2.0}, {"id": 2, "v": math.nan}, {"id": 3, "v": -1.0},
            {"id": 4, "v": 10}, {"id": 5}]
    assert ids(order_rows(rows, "v")) == [3, 1, 4, 2, 5]
    assert ids(order_rows(rows, "-v")) == [5, 2, 4, 1, 3]


def test_order_matches_a_reference_on_random_data():
    rng = random.Random(7)
    pool = [None, 0, 1, 2, -5, 2.5, "a", "b", "B", "", [1], [0, "x"], "missing"]
    rows = []
    for i in range(300):
        r = {"id": i}
        for f in ("a", "b"):
            v = rng.choice(pool)
            if v != "missing":
                r[f] = v
        rows.append(r)

    def rank(v):
        return (1,) if v is None else (0, sort_key(v))

    # Reference: one sort with a composite key (negating ranks for descending
    # is impossible for general values, so descending b is done by a stable
    # sort on b reversed first).
    ref = sorted(rows, key=lambda r: rank(r.get("b")), reverse=True)
    ref = sorted(ref, key=lambda r: rank(r.get("a")))
    got = order_rows(rows, ["a", "-b"])
    assert ids(got) == ids(ref)


def test_sort_key_total_order():
    values = [3, "a", None, [1], {"a": 1}, b"x", 2.5, math.nan, ["a"], (1, 2)]
    keys = sorted(values, key=sort_key)
    assert keys[:3] == [2.5, 3, keys[2]] and math.isnan(keys[2])
    assert keys[3] == "a" and keys[4] == b"x"
    assert sort_key([1, None]) > sort_key([1, 2])


# --- projection -------------------------------------------------------------------

ROW = {"id": 1, "name": "Ada", "age": 36}


def test_project_none_returns_the_row_itself():
    assert project(ROW, None) is ROW


def test_project_list_of_names_fills_missing_with_none():
    assert project(ROW, ["name", "email"]) == {"name": "Ada", "email": None}
    assert list(project(ROW, ["age", "name"])) == ["age", "name"]


def test_project_aliases():
    assert project(ROW, {"who": "name", "years": "age"}) == {"who": "Ada", "years": 36}
    assert project(ROW, [("who", "name"), "age"]) == {"who": "Ada", "age": 36}
    assert project(ROW, {"x": "nope"}) == {"x": None}


def test_project_single_name_and_empty():
    assert project(ROW, "name") == {"name": "Ada"}
    assert project(ROW, []) == {}


def test_project_does_not_mutate_and_projector_reuses():
    row = dict(ROW)
    out = project(row, ["name"])
    out["name"] = "x"
    assert row == ROW
    p = projector({"n": "name"})
    assert [p(r) for r in PEOPLE[:2]] == [{"n": "Cy"}, {"n": "Ada"}]


@pytest.mark.parametrize("bad, exc", [
    (5, TypeError), ([1], TypeError), ([("a", "b", "c")], TypeError),
    (["a", "a"], ValueError), ([("x", "a"), ("x", "b")], ValueError), ({"a": 1}, TypeError),
])
def test_project_rejects_bad_columns(bad, exc):
    with pytest.raises(exc):
        project(ROW, bad)


# --- distinct -----------------------------------------------------------------------

def test_distinct_keeps_first_occurrence_in_order():
    rows = [{"d": "IT", "n": 1}, {"d": "HR"}, {"n": 1, "d": "IT"}, {"d": "HR"}, {"d": "X"}]
    out = distinct_rows(rows)
    assert out == [{"d": "IT", "n": 1}, {"d": "HR"}, {"d": "X"}]
    assert out[0] is rows[0] and out[1] is rows[1]


def test_distinct_handles_unhashable_values():
    rows = [{"t": [1, 2]}, {"t": [1, 2]}, {"t": [2, 1]}, {"t": {"a": [1]}},
            {"t": {"a": [1]}}, {"t": (1, [2])}, {"t": (1, [2])}, {"t": (1, 2)},
            {"t": [1, 2], "u": None}]
    out = distinct_rows(rows)
    assert out == [{"t": [1, 2]}, {"t": [2, 1]}, {"t": {"a": [1]}}, {"t": (1, [2])},
                   {"t": (1, 2)}, {"t": [1, 2], "u": None}]


def test_distinct_uses_python_equality():
    assert distinct_rows([{"v": 1}, {"v": 1.0}, {"v": "1"}]) == [{"v": 1}, {"v": "1"}]
    assert distinct_rows([{"v": [1]}, {"v": (1,)}]) == [{"v": [1]}, {"v": (1,)}]
    assert distinct_rows([]) == []
    assert distinct_rows([{}, {}]) == [{}]


# --- page ---------------------------------------------------------------------------

def test_page():
    rows = list(range(10))
    assert page(rows, None, 0) == rows
    assert page(rows, 3) == [0, 1, 2]
    assert page(rows, 3, 8) == [8, 9]
    assert page(rows, None, 7) == [7, 8, 9]
    assert page(rows, 0, 2) == []
    assert page(rows, 5, 20) == []
    assert page(iter(rows), 2, 3) == [3, 4]
    assert page(rows, 2, None) == [0, 1]


def test_page_reads_negative_values_as_dictdb_does():
    rows = list(range(10))
    assert page(rows, 3, -1) == [0, 1, 2]           # negative offset: 0
    assert page(rows, -1, 8) == [8, 9]              # negative limit: no limit
    assert page(iter(rows), -5, -5) == rows


@pytest.mark.parametrize("limit, offset", [
    (1.5, 0), (None, "2"), (True, 0), (None, False), ("3", 0), (None, 1.0),
])
def test_page_rejects_paging_that_is_not_an_int(limit, offset):
    with pytest.raises(InvalidArgumentError, match="must be an int"):
        page([1, 2], limit, offset)


@pytest.mark.parametrize("limit, offset, expected", [
    (None, 0, (None, 0)), (5, 2, (5, 2)), (0, 0, (0, 0)), (-1, 3, (None, 3)),
    (4, -2, (4, 0)), (-7, -7, (None, 0)), (None, None, (None, 0)),
])
def test_normalize_paging(limit, offset, expected):
    assert normalize_paging(limit, offset) == expected


# --- shape_rows ------------------------------------------------------------------------

def test_shape_rows_defaults_return_all_rows_unchanged():
    out = shape_rows(PEOPLE)
    assert out == PEOPLE and all(a is b for a, b in zip(out, PEOPLE))


def test_shape_orders_by_a_field_that_is_not_projected():
    out = shape_rows(PEOPLE, columns=["name"], order_by="-age")
    assert out == [{"name": "Bo"}, {"name": "Di"}, {"name": "Cy"}, {"name": "Ada"},
                   {"name": "Ed"}]


def test_shape_order_then_page():
    out = shape_rows(PEOPLE, order_by="name", limit=2, offset=1)
    assert ids(out) == [3, 1]


def test_shape_distinct_happens_before_paging():
    rows = [{"d": d, "i": i} for i, d in enumerate(["IT", "IT", "HR", "IT", "HR", "Ops", "Ops"])]
    out = shape_rows(rows, columns=["d"], distinct=True, limit=3)
    assert out == [{"d": "IT"}, {"d": "HR"}, {"d": "Ops"}]
    out = shape_rows(rows, columns=["d"], distinct=True, offset=1)
    assert out == [{"d": "HR"}, {"d": "Ops"}]
    out = shape_rows(rows, columns=["d"], distinct=True, order_by="-d", limit=2, offset=1)
    assert out == [{"d": "IT"}, {"d": "HR"}]


def test_shape_distinct_on_projected_columns_with_aliases():
    out = shape_rows(PEOPLE, columns={"team": "dept"}, distinct=True, order_by="dept")
    assert out == [{"team": "HR"}, {"team": "IT"}]


def test_shape_accepts_iterators_and_validates_paging():
    assert ids(shape_rows(iter(PEOPLE), order_by="-id", limit=2)) == [5, 4]
    assert ids(shape_rows(iter(PEOPLE), limit=2)) == [1, 2]
    assert shape_rows(PEOPLE, limit=-1) == PEOPLE
    assert ids(shape_rows(PEOPLE, order_by="id", limit=2, offset=-3)) == [1, 2]
    with pytest.raises(InvalidArgumentError):
        shape_rows(PEOPLE, limit="2")
    with pytest.raises(TypeError):
        shape_rows(PEOPLE, order_by=3)
