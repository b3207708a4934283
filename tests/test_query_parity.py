"""Code written for the upstream DictDB's query layer runs unchanged.

Each section is one DictDB behaviour: callable conditions, And/Or/Not and
their errors, where= and aggregate type errors, paging, ``compute()``.  The
error tests check DictDB's words *and* that our advice follows them.  The
last section checks the shape of the query package itself: no import cycles,
no raw TypeError/ValueError raised for a user's mistake.
"""

from __future__ import annotations

import ast
import copy
import math
import os
import pickle
import random

import pytest

from dictdb_shm import And, Avg, Condition, Count, Max, Min, Not, Or, Sum
from dictdb_shm.errors import InvalidArgumentError
from dictdb_shm.query import (Accumulator, Agg, Aggregate, Field, Predicate, aggregate_rows,
                              as_predicate, compile_predicate, evaluate, normalize_paging,
                              page, shape_rows)

QUERY_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "dictdb_shm", "query")

age = Field("age")
name = Field("name")
ADA = {"id": 1, "name": "Ada", "age": 36}
BOB = {"id": 2, "name": "Bob", "age": 17}
NOBODY = {"id": 3}


@pytest.fixture
def people(table):
    table.insert([dict(ADA), dict(BOB), dict(NOBODY),
                  {"id": 4, "name": "Di", "age": 30}])
    return table


# --- 1. conditions are callable on a record ----------------------------------------

@pytest.mark.parametrize("cond, record, expected", [
    (age > 3, ADA, True),
    (age > 40, ADA, False),
    (age > 3, NOBODY, False),
    (And(age > 3, name == "Ada"), ADA, True),
    (And(age > 3, name == "Ada"), BOB, False),
    (Or(age < 18, name == "Ada"), BOB, True),
    (Or(age < 18, name == "Zed"), ADA, False),
    (Not(age > 20), BOB, True),
    (Not(age > 20), NOBODY, True),
    (Condition(age >= 18), ADA, True),
    (Condition(age >= 18), BOB, False),
    (~Condition(age >= 18) & name.startswith("B"), BOB, True),
])
def test_a_condition_called_on_a_record_returns_a_bool(cond, record, expected):
    assert cond(record) is expected
    assert cond(record) is expected       # the second call runs the kept matcher


def test_dictdb_style_filtering_of_selected_records(people):
    adults = people.age >= 18
    rows = people.select(order_by="id")
    assert [r["name"] for r in rows if adults(r)] == ["Ada", "Di"]
    assert [r["id"] for r in rows if Condition(adults)(r)] == [1, 4]
    assert [r["id"] for r in rows if Not(adults)(r)] == [2, 3]


def test_each_node_compiles_once_on_first_call(monkeypatch):
    builds = []
    real = evaluate.LEAF_BUILDERS["gt"]

    def counting(field, value):
        builds.append((field, value))
        return real(field, value)
    monkeypatch.setitem(evaluate.LEAF_BUILDERS, "gt", counting)

    node = age > 3
    assert builds == []                   # built lazily, not with the node
    for _ in range(3):
        assert node(ADA) is True
    assert builds == [("age", 3)]
    both = And(age > 5, name == "Ada")
    wrapped = Condition(both)
    for _ in range(3):
        assert wrapped(ADA) is True and both(BOB) is False
    assert builds == [("age", 3), ("age", 5)]     # Condition uses its node's matcher


def test_the_kept_matcher_is_not_pickled_nor_part_of_key_or_equality():
    node = (age > 3) & ~(name == "Bob")
    fresh = (age > 3) & ~(name == "Bob")
    before = pickle.dumps(node)
    key, digest = node.key(), hash(node)
    assert node(ADA) is True and Condition(node)(BOB) is False
    assert pickle.dumps(node) == before
    assert node.key() == key and hash(node) == digest
    assert node == fresh and fresh == node and len({node, fresh}) == 1
    for twin in (pickle.loads(before), copy.deepcopy(node), copy.copy(node)):
        assert twin == node and twin(ADA) is True and twin(BOB) is False


def test_compile_predicate_and_the_call_agree():
    node = Or(And(age >= 18, name.like("A%")), age.is_null())
    pred = compile_predicate(node)
    for record in (ADA, BOB, NOBODY, {"age": 20, "name": "Al"}, {"name": "Ann"}):
        assert pred(record) is node(record) is Condition(node)(record)


# --- 2. And/Or take two or more operands ------------------------------------------

@pytest.mark.parametrize("build", [lambda: And(), lambda: Or(), lambda: And(age > 1),
                                   lambda: Or(Condition(age > 1))])
def test_and_or_need_at_least_two_operands(build):
    with pytest.raises(ValueError, match="at least 2 operands") as info:
        build()
    assert isinstance(info.value, InvalidArgumentError)
    assert "pass a single condition as it is" in str(info.value)


def test_nested_junctions_still_flatten():
    a, b, c = age > 1, name == "x", age < 9
    assert And(And(a, b), c).conds == (a, b, c)
    assert And(a, And(b, c)).conds == (a, b, c)
    assert (a & b & c).conds == (a, b, c)
    assert Or(Or(a, b), Condition(Or(c, a))).conds == (a, b, c, a)
    assert And(Or(a, b), c).conds == (Or(a, b), c)   # another kind is not flattened
    assert And(And(a, b), c) == (a & b) & c == a & (b & c)


# --- 3. a non-condition in And/Or/Not ---------------------------------------------

@pytest.mark.parametrize("build, who", [
    (lambda: And(age >= 18, "invalid"), "And"),
    (lambda: Or("invalid", age >= 18), "Or"),
    (lambda: Not("invalid"), "Not"),
    (lambda: And(age > 1, lambda r: True), "And"),
    (lambda: Not(None), "Not"),
    (lambda: Condition(42), "Condition"),
])
def test_a_non_condition_operand_gets_dictdbs_words_then_our_advice(build, who):
    with pytest.raises(TypeError, match="Expected PredicateExpr or Condition") as info:
        build()
    text = str(info.value)
    assert isinstance(info.value, InvalidArgumentError)
    assert text.startswith("Expected PredicateExpr or Condition, got ")
    assert f"{who}() takes conditions built from table fields (e.g. t.age >= 18)" in text


def test_a_bare_field_operand_is_explained():
    with pytest.raises(TypeError, match="Expected PredicateExpr or Condition") as info:
        And(Field("active"), age > 1)
    assert "bare field 'active'" in str(info.value) and "t.active == True" in str(info.value)


# --- 4. where= of a wrong type ------------------------------------------------------

@pytest.mark.parametrize("bad", ["age > 3", 5, True, {"age": 3}, [age > 3], lambda r: True,
                                 Field("age")])
def test_where_of_a_wrong_type_gets_dictdbs_words_then_our_advice(bad):
    with pytest.raises(TypeError, match="must be a Condition or PredicateExpr") as info:
        as_predicate(bad)
    assert isinstance(info.value, InvalidArgumentError)
    assert "e.g. where=(t.age >= 18), or None" in str(info.value)


def test_table_calls_reject_a_wrong_where_with_dictdbs_words(people):
    for call in (lambda: people.select(where="age > 3"),
                 lambda: people.update({"x": 1}, where=3),
                 lambda: people.delete(where="everything"),
                 lambda: people.aggregate(n=Count(), where=[1])):
        with pytest.raises(TypeError, match="must be a Condition or PredicateExpr"):
            call()
    assert people.count() == 4


# --- 5. an aggregate that is not an Aggregate ---------------------------------------

@pytest.mark.parametrize("call", [
    lambda rows: aggregate_rows(rows, x="bad"),
    lambda rows: aggregate_rows(rows, group_by="name", x=sum),
    lambda rows: Accumulator({"n": Count(), "x": "bad"}),
])
def test_a_non_aggregate_gets_dictdbs_words_then_our_advice(call):
    with pytest.raises(TypeError, match="Expected Agg instance") as info:
        call([ADA, BOB])
    assert isinstance(info.value, InvalidArgumentError)
    assert "'x'" in str(info.value) and "Count(), Count(field), Sum(field)" in str(info.value)


def test_table_aggregate_rejects_a_non_aggregate(people):
    with pytest.raises(TypeError, match="Expected Agg instance for 'x', got str"):
        people.aggregate(x="bad")


def test_agg_is_dictdbs_name_for_the_base_class():
    assert Agg is Aggregate
    assert all(isinstance(a, Agg) for a in (Count(), Sum("v"), Avg("v"), Min("v"), Max("v")))


# --- 6. paging ------------------------------------------------------------------------

@pytest.mark.parametrize("limit, offset, expected", [
    (2, -1, (2, 0)), (2, -100, (2, 0)), (-1, 0, (None, 0)), (-1, 3, (None, 3)),
    (0, 0, (0, 0)), (None, None, (None, 0)), (10**12, 5, (10**12, 5)),
])
def test_normalize_paging_reads_negatives_as_dictdb(limit, offset, expected):
    assert normalize_paging(limit, offset) == expected


@pytest.mark.parametrize("limit, offset", [
    ("2", 0), (2.0, 0), (True, 0), (None, "1"), (None, 1.5), (None, False), ([1], 0),
])
def test_paging_that_is_not_an_int_is_an_invalid_argument(limit, offset):
    for call in (lambda: normalize_paging(limit, offset), lambda: page([1], limit, offset),
                 lambda: shape_rows([{"a": 1}], limit=limit, offset=offset)):
        with pytest.raises(InvalidArgumentError, match="must be an int"):
            call()


def test_page_and_shape_rows_follow_dictdb():
    rows = [{"id": i} for i in range(1, 5)]
    assert page(rows, 2, -1) == rows[:2]
    assert page(rows, -1, 0) == rows
    assert shape_rows(rows, order_by="-id", limit=-1, offset=-1) == rows[::-1]
    assert shape_rows(rows, limit=-1, offset=2) == rows[2:]


@pytest.mark.parametrize("offset", [-1, -10, -100])
def test_select_with_a_negative_offset_as_dictdb_tests_it(people, offset):
    assert [r["id"] for r in people.select(order_by="id", limit=2, offset=offset)] == [1, 2]


def test_select_with_a_negative_limit_as_dictdb_tests_it(people):
    assert len(people.select(order_by="id", limit=-1)) == 4
    assert people.select(limit=0) == [] and people.select(order_by="id", limit=0) == []


def test_select_without_order_by_reads_negative_paging_as_dictdb(people):
    assert len(people.select(limit=-1)) == 4
    assert len(people.select(limit=2, offset=-1)) == 2


# --- 7. compute(values) ------------------------------------------------------------

@pytest.mark.parametrize("agg, values, expected", [
    (Count(), [1, 2, 3, None, 5], 5),
    (Count("name"), [1, 2, None, 3, None], 3),
    (Count(), [], 0),
    (Count("v"), [None, None], 0),
    (Sum("v"), [1, 2, 3, 4, 5], 15),
    (Sum("v"), [1, None, 2, None, 3], 6),
    (Sum("v"), [], None),
    (Sum("v"), [None, None], None),
    (Sum("v"), [0, 0], 0),
    (Sum("v"), [True, 2], 3),
    (Avg("v"), [2, 4, 6], 4.0),
    (Avg("v"), [2, None, 4, None, 6], 4.0),
    (Avg("v"), [], None),
    (Avg("v"), [None], None),
    (Min("v"), [5, 2, 8, 1, 9], 1),
    (Min("v"), [5, None, 2, None], 2),
    (Min("v"), [], None),
    (Min("v"), ["banana", "apple", "cherry"], "apple"),
    (Max("v"), [5, 2, 8, 1, 9], 9),
    (Max("v"), [5, None, 2, None], 5),
    (Max("v"), [None], None),
    (Max("v"), ["banana", "apple", "cherry"], "cherry"),
])
def test_compute_follows_dictdb(agg, values, expected):
    assert agg.compute(values) == expected
    assert type(agg.compute(values)) is type(expected)
    assert agg.compute(iter(values)) == expected        # any iterable, not only lists


@pytest.mark.parametrize("agg, values, words", [
    (Sum("v"), [1, "2"], "adds numbers only"),
    (Avg("v"), [[1], [2]], "adds numbers only"),
    (Min("v"), [3, "a"], "order against each other"),
    (Max("v"), [None, "a", 1.5], "order against each other"),
])
def test_compute_refuses_what_dictdb_cannot_compute(agg, values, words):
    with pytest.raises(TypeError, match=words) as info:
        agg.compute(values)
    assert isinstance(info.value, InvalidArgumentError)
    assert "aggregate()" in str(info.value)                 # where the lenient rule lives
    rows = [{"v": v} for v in values]
    aggregate_rows(rows, r=agg)                            # aggregate() does not raise


def test_compute_and_aggregate_agree_on_values_both_accept():
    rng = random.Random(7)
    pools = [[None, 0, 1, -3, 2.5, 10**20, True, False, -0.5],   # numbers and bools
             [None, "a", "b", "Ab", "", "zz"]]                   # one orderable type
    for _ in range(300):
        pool = rng.choice(pools)
        values = [rng.choice(pool) for _ in range(rng.randint(0, 8))]
        rows = [{"v": v} if v is not None or rng.random() < 0.5 else {} for v in values]
        aggs = [Count(), Count("v"), Min("v"), Max("v")]
        if pool is pools[0]:
            aggs += [Sum("v"), Avg("v")]
        for agg in aggs:
            got = agg.compute([r.get("v") for r in rows])
            want = aggregate_rows(rows, r=agg)["r"]
            assert got == want and type(got) is type(want), (agg, values)


def test_compute_on_nan_is_pythons_min_and_max():
    # DictDB's compute is min()/max(): NaN's place depends on where it stands.
    assert math.isnan(Min("v").compute([math.nan, 1.0]))
    assert Min("v").compute([1.0, math.nan]) == 1.0


# --- 8-10. the package itself ----------------------------------------------------

def _query_modules() -> dict[str, ast.Module]:
    out = {}
    for fname in sorted(os.listdir(QUERY_DIR)):
        if fname.endswith(".py"):
            with open(os.path.join(QUERY_DIR, fname)) as f:
                out[fname[:-3]] = ast.parse(f.read())
    return out


def _query_imports(tree: ast.Module) -> set[str]:
    """Every query module this one imports, wherever the import statement is
    (inside functions and ``if TYPE_CHECKING:`` included)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.level == 1:                               # from .x import y
                found.add(node.module.split(".")[0])
            elif node.module.startswith("dictdb_shm.query."):
                found.add(node.module.split(".")[2])
            elif node.module == "dictdb_shm.query":
                found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("dictdb_shm.query."):
                    found.add(alias.name.split(".")[2])
    return found


def test_no_import_cycles_inside_query():
    modules = _query_modules()
    graph = {m: _query_imports(t) & set(modules) - {"__init__"}
             for m, t in modules.items() if m != "__init__"}
    assert graph["expr"] >= {"evaluate", "operands"}        # the walk sees real imports
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, f"import cycle: {' -> '.join(path + (m,))}"
        if m in done:
            return
        for dep in graph[m]:
            visit(dep, path + (m,))
        done.add(m)
    for m in graph:
        visit(m, ())


def test_query_raises_no_raw_type_or_value_error():
    offenders = []
    for mod, tree in _query_modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and node.exc is not None:
                exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(exc, ast.Name) and exc.id in ("TypeError", "ValueError"):
                    offenders.append(f"{mod}.py:{node.lineno}")
    assert offenders == []


def test_dead_key_hook_is_gone():
    assert not hasattr(Predicate, "_init_key")


@pytest.mark.parametrize("call, words, kind", [
    (lambda: bool(age > 1), "instead of and/or", TypeError),
    (lambda: bool(age), "compare it", TypeError),
    (lambda: not Condition(age > 1), "no truth value", TypeError),
    (lambda: Sum(3), "needs a field name", TypeError),
    (lambda: aggregate_rows([], group_by=5, n=Count()), "group_by takes", TypeError),
    (lambda: aggregate_rows([], group_by=["a", 1], n=Count()), "field names", TypeError),
    (lambda: aggregate_rows([], group_by=["a", "a"], n=Count()), "twice", ValueError),
    (lambda: aggregate_rows([], group_by="a", a=Count()), "clash", ValueError),
    (lambda: Accumulator({"n": Count()}).merge(Accumulator({"m": Count()})),
     "same aggregates", ValueError),
])
def test_user_mistakes_are_invalid_argument_errors(call, words, kind):
    with pytest.raises(InvalidArgumentError, match=words) as info:
        call()
    assert isinstance(info.value, kind)
