"""Unit tests for dictdb_shm.query.aggregate (no shared memory)."""

from __future__ import annotations

import math
import pickle
import random

import pytest

from dictdb_shm.query import (
    Accumulator,
    Aggregate,
    Avg,
    Count,
    Max,
    Min,
    Sum,
    aggregate_rows,
)

EMPLOYEES = [
    {"id": 1, "name": "Ann", "dept": "IT", "salary": 75000},
    {"id": 2, "name": "Ben", "dept": "HR", "salary": 65000},
    {"id": 3, "name": "Cat", "dept": "IT", "salary": 85000},
    {"id": 4, "name": "Dan", "dept": "IT", "salary": 70000},
]

SALES = [
    {"region": "East", "product": "A", "amount": 100},
    {"region": "East", "product": "A", "amount": 150},
    {"region": "East", "product": "B", "amount": 200},
    {"region": "West", "product": "A", "amount": 120},
]


# --- the aggregates as data ---------------------------------------------------------

def test_aggregates_are_plain_comparable_picklable_data():
    aggs = [Count(), Count("x"), Sum("x"), Avg("x"), Min("x"), Max("x")]
    for agg in aggs:
        back = pickle.loads(pickle.dumps(agg))
        assert type(back) is type(agg) and back == agg and hash(back) == hash(agg)
        assert back.field == agg.field
    assert Count() != Count("x")
    assert Sum("x") != Avg("x")
    assert Min("x") != Min("y")
    assert len(set(aggs)) == 6
    assert [repr(a) for a in aggs] == ["Count()", "Count('x')", "Sum('x')", "Avg('x')",
                                       "Min('x')", "Max('x')"]
    assert [a.kind for a in aggs] == ["count", "count", "sum", "avg", "min", "max"]


def test_aggregates_are_immutable_and_validate_field():
    with pytest.raises(AttributeError):
        Sum("x").field = "y"
    for cls in (Sum, Avg, Min, Max):
        with pytest.raises(TypeError):
            cls(None)
        with pytest.raises(TypeError):
            cls(3)
    with pytest.raises(TypeError):
        Count(3)


# --- ungrouped --------------------------------------------------------------------------

def test_basic_aggregates():
    out = aggregate_rows(EMPLOYEES, count=Count(), total=Sum("salary"), average=Avg("salary"),
                         minimum=Min("salary"), maximum=Max("salary"))
    assert out == {"count": 4, "total": 295000, "average": 73750.0, "minimum": 65000,
                   "maximum": 85000}
    assert list(out) == ["count", "total", "average", "minimum", "maximum"]
    assert isinstance(out["average"], float)
    assert isinstance(out["total"], int)


def test_min_max_on_strings():
    assert aggregate_rows(EMPLOYEES, first=Min("name"), last=Max("name")) == \
        {"first": "Ann", "last": "Dan"}


def test_none_and_missing_values_are_skipped():
    rows = [{"id": 1, "v": 10}, {"id": 2, "v": None}, {"id": 3, "v": 20}, {"id": 4}]
    out = aggregate_rows(rows, rows_=Count(), n=Count("v"), s=Sum("v"), a=Avg("v"),
                         lo=Min("v"), hi=Max("v"))
    assert out == {"rows_": 4, "n": 2, "s": 30, "a": 15.0, "lo": 10, "hi": 20}


def test_aggregates_of_nothing():
    empty = aggregate_rows([], n=Count(), nv=Count("v"), s=Sum("v"), a=Avg("v"),
                           lo=Min("v"), hi=Max("v"))
    assert empty == {"n": 0, "nv": 0, "s": None, "a": None, "lo": None, "hi": None}
    all_none = aggregate_rows([{"v": None}, {}], n=Count(), nv=Count("v"), s=Sum("v"),
                              a=Avg("v"), lo=Min("v"), hi=Max("v"))
    assert all_none == {"n": 2, "nv": 0, "s": None, "a": None, "lo": None, "hi": None}


def test_sum_of_zeros_is_zero_not_none():
    assert aggregate_rows([{"v": 0}, {"v": 0}], s=Sum("v")) == {"s": 0}


def test_sum_and_avg_skip_non_numbers_and_count_bools():
    rows = [{"v": 1}, {"v": "2"}, {"v": [3]}, {"v": 2.5}, {"v": True}]
    out = aggregate_rows(rows, s=Sum("v"), a=Avg("v"), n=Count("v"))
    assert out == {"s": 4.5, "a": 1.5, "n": 5}


def test_min_max_mixed_types_do_not_raise():
    rows = [{"v": "b"}, {"v": 3}, {"v": [1]}, {"v": 1.5}, {"v": "a"}]
    # numbers order before strings, strings before lists (shape.sort_key).
    assert aggregate_rows(rows, lo=Min("v"), hi=Max("v")) == {"lo": 1.5, "hi": [1]}


def test_min_max_with_nan():
    rows = [{"v": math.nan}, {"v": 3.0}, {"v": 1.0}]
    out = aggregate_rows(rows, lo=Min("v"), hi=Max("v"))
    assert out["lo"] == 1.0 and math.isnan(out["hi"])
    out = aggregate_rows(list(reversed(rows)), lo=Min("v"), hi=Max("v"))
    assert out["lo"] == 1.0 and math.isnan(out["hi"])


def test_no_aggregates_gives_empty_dict():
    assert aggregate_rows(EMPLOYEES) == {}


def test_non_aggregate_is_rejected():
    with pytest.raises(TypeError, match="'total'"):
        aggregate_rows(EMPLOYEES, total="salary")
    with pytest.raises(TypeError):
        aggregate_rows(EMPLOYEES, total=sum)


# --- grouped ----------------------------------------------------------------------------

def test_group_by_one_field_in_first_seen_order():
    out = aggregate_rows(EMPLOYEES, group_by="dept", count=Count(), total=Sum("salary"),
                         avg=Avg("salary"), top=Max("salary"))
    assert out == [
        {"dept": "IT", "count": 3, "total": 230000, "avg": 230000 / 3, "top": 85000},
        {"dept": "HR", "count": 1, "total": 65000, "avg": 65000.0, "top": 65000},
    ]
    assert list(out[0]) == ["dept", "count", "total", "avg", "top"]


def test_group_by_several_fields():
    out = aggregate_rows(SALES, group_by=["region", "product"], count=Count(),
                         total=Sum("amount"))
    assert out == [
        {"region": "East", "product": "A", "count": 2, "total": 250},
        {"region": "East", "product": "B", "count": 1, "total": 200},
        {"region": "West", "product": "A", "count": 1, "total": 120},
    ]
    assert aggregate_rows(SALES, group_by=("product", "region"), n=Count())[0] == \
        {"product": "A", "region": "East", "n": 2}


def test_missing_and_none_group_values_form_one_none_group():
    rows = [{"k": "a", "v": 1}, {"v": 2}, {"k": None, "v": 3}, {"k": "a", "v": 4}]
    out = aggregate_rows(rows, group_by="k", n=Count(), s=Sum("v"))
    assert out == [{"k": "a", "n": 2, "s": 5}, {"k": None, "n": 2, "s": 5}]


def test_group_values_match_with_python_equality():
    rows = [{"k": 1, "v": 1}, {"k": 1.0, "v": 2}, {"k": "1", "v": 3}]
    out = aggregate_rows(rows, group_by="k", s=Sum("v"))
    assert out == [{"k": 1, "s": 3}, {"k": "1", "s": 3}]


def test_unhashable_group_values():
    rows = [{"tags": ["a", "b"], "v": 1}, {"tags": ["a", "b"], "v": 2},
            {"tags": ["b"], "v": 4}, {"tags": {"x": [1]}, "v": 8}, {"tags": {"x": [1]}, "v": 16}]
    out = aggregate_rows(rows, group_by="tags", s=Sum("v"), n=Count())
    assert out == [{"tags": ["a", "b"], "s": 3, "n": 2}, {"tags": ["b"], "s": 4, "n": 1},
                   {"tags": {"x": [1]}, "s": 24, "n": 2}]
    out = aggregate_rows(rows, group_by=["tags", "none"], n=Count())
    assert [g["n"] for g in out] == [2, 1, 2]


def test_group_by_with_no_rows_or_no_aggregates():
    assert aggregate_rows([], group_by="dept", n=Count()) == []
    assert aggregate_rows(EMPLOYEES, group_by="dept") == [{"dept": "IT"}, {"dept": "HR"}]


def test_grouped_empty_aggregates_per_group():
    rows = [{"g": "a", "v": None}, {"g": "b", "v": 3}]
    out = aggregate_rows(rows, group_by="g", s=Sum("v"), a=Avg("v"), n=Count("v"))
    assert out == [{"g": "a", "s": None, "a": None, "n": 0}, {"g": "b", "s": 3, "a": 3.0, "n": 1}]


@pytest.mark.parametrize("group_by, exc", [
    ([], TypeError), (3, TypeError), (["a", 3], TypeError), (["a", "a"], ValueError),
])
def test_bad_group_by(group_by, exc):
    with pytest.raises(exc):
        aggregate_rows(EMPLOYEES, group_by=group_by, n=Count())


def test_alias_clashing_with_group_field_is_rejected():
    with pytest.raises(ValueError, match="dept"):
        aggregate_rows(EMPLOYEES, group_by="dept", dept=Count())


# --- merging partial results (the multi-process path) ------------------------------------

def _random_rows(seed, n):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        r = {"id": i}
        if rng.random() < 0.9:
            r["g"] = rng.choice(["a", "b", "c", None, ["l"]])
        if rng.random() < 0.8:
            r["v"] = rng.choice([None, 0, 1, 2, 3.5, -4, 10, "s"])
        rows.append(r)
    return rows


AGGS = {"n": Count(), "nv": Count("v"), "s": Sum("v"), "a": Avg("v"), "lo": Min("v"),
        "hi": Max("v")}


@pytest.mark.parametrize("group_by", [None, "g", ["g", "v"]])
def test_merged_partials_equal_a_single_pass(group_by):
    rows = _random_rows(42, 500)
    whole = aggregate_rows(rows, group_by=group_by, **AGGS)
    # Each "process" aggregates its slice; partials travel pickled.
    parts = [pickle.loads(pickle.dumps(Accumulator(AGGS, group_by).add_rows(rows[i:i + 97])))
             for i in range(0, len(rows), 97)]
    total = parts[0]
    for p in parts[1:]:
        total.merge(p)
    merged = total.result()
    if group_by is None:
        assert merged == whole
        assert merged["n"] == 500
    else:
        # Merging keeps first-seen order across parts, which is the single-pass order.
        assert merged == whole
        assert sum(g["n"] for g in merged) == 500


def test_merge_with_empty_partials():
    rows = _random_rows(3, 50)
    acc = Accumulator(AGGS, "g").merge(Accumulator(AGGS, "g")).add_rows(rows)
    acc.merge(Accumulator(AGGS, "g"))
    assert acc.result() == aggregate_rows(rows, group_by="g", **AGGS)
    empty = Accumulator(AGGS).merge(Accumulator(AGGS)).result()
    assert empty == {"n": 0, "nv": 0, "s": None, "a": None, "lo": None, "hi": None}


def test_merge_does_not_alias_the_other_accumulator():
    a = Accumulator({"n": Count()}, "g")
    b = Accumulator({"n": Count()}, "g").add_rows([{"g": 1}])
    a.merge(b)
    a.add({"g": 1})
    assert b.result() == [{"g": 1, "n": 1}]
    assert a.result() == [{"g": 1, "n": 2}]


def test_merge_requires_the_same_query():
    with pytest.raises(ValueError):
        Accumulator({"n": Count()}).merge(Accumulator({"n": Count("x")}))
    with pytest.raises(ValueError):
        Accumulator({"n": Count()}, "a").merge(Accumulator({"n": Count()}, "b"))


def test_add_one_row_at_a_time_matches_add_rows():
    rows = _random_rows(9, 80)
    acc = Accumulator(AGGS, ["g"])
    for r in rows:
        acc.add(r)
    assert acc.result() == aggregate_rows(rows, group_by="g", **AGGS)


def test_aggregate_state_methods_directly():
    s = Avg("v")
    st1, st2 = s.start(), s.start()
    for v in (1, 2):
        s.step(st1, {"v": v})
    s.step(st2, {"v": 6})
    s.merge(st1, st2)
    assert s.finish(st1) == 3.0
    m = Max("v")
    a, b = m.start(), m.start()
    m.step(b, {"v": 5})
    m.merge(a, b)
    m.merge(a, m.start())
    assert m.finish(a) == 5
    assert isinstance(Count(), Aggregate)
