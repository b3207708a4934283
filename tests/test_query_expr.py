"""Unit tests for dictdb_shm.query.expr, .operands and .evaluate (no shared memory)."""

from __future__ import annotations

import copy
import pickle
import random

import pytest

from dictdb_shm.query import (
    OPS,
    And,
    Compare,
    Condition,
    Field,
    Not,
    Or,
    Predicate,
    as_predicate,
    compile_predicate,
    like_prefix,
    referenced_fields,
)

age = Field("age")
name = Field("name")
tags = Field("tags")


def matches(cond, record) -> bool:
    return compile_predicate(cond)(record)


# --- building nodes ------------------------------------------------------------------

@pytest.mark.parametrize("node, op, value", [
    (age == 18, "eq", 18),
    (age != 18, "ne", 18),
    (age < 18, "lt", 18),
    (age <= 18, "le", 18),
    (age > 18, "gt", 18),
    (age >= 18, "ge", 18),
    (age.is_in([1, 2, 3]), "in", (1, 2, 3)),
    (age.between(1, 5), "between", (1, 5)),
    (name.like("A%"), "like", ("A%", None)),
    (name.like("A!%", escape="!"), "like", ("A!%", "!")),
    (name.ilike("a%"), "ilike", ("a%", None)),
    (name.startswith("A"), "startswith", "A"),
    (name.endswith("z"), "endswith", "z"),
    (name.contains("da"), "contains", "da"),
    (name.iequals("ADA"), "iequals", "ADA"),
    (name.icontains("D"), "icontains", "D"),
    (name.istartswith("a"), "istartswith", "a"),
    (name.iendswith("A"), "iendswith", "A"),
    (name.is_null(), "is_null", None),
    (name.is_not_null(), "is_not_null", None),
])
def test_field_methods_build_compare_nodes(node, op, value):
    assert type(node) is Compare
    assert (node.field, node.op, node.value) == (node.field, op, value)
    assert node.field in ("age", "name")
    assert node.op in OPS


def test_reflected_comparisons_keep_the_field_on_the_left():
    node = 18 <= age
    assert (node.field, node.op, node.value) == ("age", "ge", 18)
    node = 18 > age
    assert (node.field, node.op, node.value) == ("age", "lt", 18)
    node = "Ada" == name
    assert (node.field, node.op, node.value) == ("name", "eq", "Ada")


def test_and_or_not_operators_build_the_tree():
    a, b = age >= 18, name == "Ada"
    both = a & b
    assert type(both) is And and both.conds == (a, b)
    either = a | b
    assert type(either) is Or and either.conds == (a, b)
    neg = ~a
    assert type(neg) is Not and neg.cond == a
    assert And(a, b) == both and Or(a, b) == either and Not(a) == neg


def test_same_kind_junctions_are_flattened():
    a, b, c = age >= 18, name == "Ada", age < 65
    assert (a & b & c).conds == (a, b, c)
    assert (a & (b & c)).conds == (a, b, c)
    assert And(And(a, b), c) == And(a, b, c)
    assert (a | b | c).conds == (a, b, c)
    mixed = (a & b) | c
    assert type(mixed) is Or
    assert mixed.conds == (And(a, b), c)


def test_condition_wrapper_is_optional_and_nests():
    a = age >= 18
    assert Condition(a).expr is a
    assert Condition(Condition(a)).expr is a
    assert Condition(a) == Condition(Condition(a))
    assert hash(Condition(a)) == hash(Condition(Condition(a)))
    combined = Condition(a) & (name == "Ada")
    assert combined == And(a, name == "Ada")
    assert (name == "Ada") | Condition(a) == Or(name == "Ada", a)
    assert ~Condition(a) == Not(a)
    assert And(Condition(a), Condition(name == "x")).conds == (a, name == "x")
    assert Not(Condition(a)).cond is a


def test_condition_is_callable_on_a_record_like_dictdb():
    cond = Condition(age >= 18)
    assert cond({"age": 20}) is True
    assert cond({"age": 2}) is False
    assert cond({}) is False


def test_as_predicate_accepts_none_nodes_and_conditions():
    a = age >= 18
    assert as_predicate(None) is None
    assert as_predicate(a) is a
    assert as_predicate(Condition(a)) is a
    assert as_predicate(Condition(Condition(a))) is a


@pytest.mark.parametrize("bad", [True, 1, "age >= 18", {"age": 18}, lambda r: True, [age == 1]])
def test_as_predicate_rejects_everything_else_with_a_hint(bad):
    with pytest.raises(TypeError, match=r"t\.age >= 18"):
        as_predicate(bad)


def test_as_predicate_explains_a_bare_field():
    with pytest.raises(TypeError, match="bare field 'age'"):
        as_predicate(age)


def test_combining_with_non_conditions_is_a_type_error():
    with pytest.raises(TypeError):
        (age > 1) & True
    with pytest.raises(TypeError):
        1 | (age > 1)
    with pytest.raises(TypeError, match="conditions built from table fields"):
        And(age > 1, "x")
    with pytest.raises(TypeError):
        Not(None)
    with pytest.raises(TypeError):
        Condition("age > 1")


def test_bool_of_a_node_raises_with_a_hint():
    with pytest.raises(TypeError, match="use & and \\| instead of and/or|& and \\|"):
        bool(age > 1)
    with pytest.raises(TypeError, match="instead of and/or"):
        (age > 1) and (age < 5)  # noqa: B015 - the mistake under test
    with pytest.raises(TypeError, match="between"):
        1 < age < 5  # noqa: B015
    with pytest.raises(TypeError, match="instead of and/or"):
        not Condition(age > 1)


def test_precedence_mistake_on_field_gets_a_parenthesis_hint():
    with pytest.raises(TypeError, match="parentheses"):
        age >= 18 & name  # noqa: B015 - parses as age >= (18 & name)
    with pytest.raises(TypeError, match="parentheses"):
        ~age
    with pytest.raises(TypeError, match="compare it"):
        bool(age)


def test_field_is_not_hashable_and_comparing_fields_is_rejected():
    with pytest.raises(TypeError):
        hash(age)
    with pytest.raises(TypeError, match="comparing two fields"):
        age == Field("other")  # noqa: B015
    with pytest.raises(TypeError, match="constant"):
        age < (name == "x")  # noqa: B015


def test_nodes_are_immutable():
    node = age >= 18
    with pytest.raises(AttributeError):
        node.value = 3
    with pytest.raises(AttributeError):
        (node & node).conds = ()
    with pytest.raises(AttributeError):
        Not(node).cond = node
    with pytest.raises(AttributeError):
        Condition(node).expr = node
    with pytest.raises(AttributeError):
        age.name = "x"


def test_node_keeps_its_own_copy_of_mutable_constants():
    values = [1, 2]
    in_node = age.is_in(values)
    eq_node = tags == values
    values.append(3)
    assert in_node.value == (1, 2)
    assert eq_node.value == [1, 2]
    assert matches(eq_node, {"tags": [1, 2]})


def test_is_in_set_input_is_canonical():
    assert name.is_in({"b", "a", "c"}) == name.is_in(["a", "b", "c"])
    assert name.is_in({"b", "a", "c"}).value == ("a", "b", "c")
    # Mixed types cannot be sorted by <; still deterministic, still works.
    node = name.is_in({1, "a"})
    assert set(node.value) == {1, "a"}
    assert pickle.loads(pickle.dumps(node)) == node


@pytest.mark.parametrize("build", [
    lambda: Compare("age", "approx", 1),
    lambda: Compare(3, "eq", 1),
    lambda: name.startswith(5),
    lambda: name.iequals(None),
    lambda: name.like(3),
    lambda: age.is_in("abc"),
    lambda: age.is_in(5),
    lambda: Compare("age", "between", (1, 2, 3)),
    lambda: name.like("abc!", escape="!"),
    lambda: name.like("a", escape="ab"),
    lambda: name.like("a", escape="%"),
    lambda: Compare("age", "is_null", 3),
    lambda: Field(3),
])
def test_bad_node_arguments_are_rejected(build):
    with pytest.raises((TypeError, ValueError)):
        build()


# --- structure: equality, hashing, pickling ------------------------------------------------

def _every_kind_of_node() -> list[Predicate]:
    return [
        age == 18, age != 18, age < 18, age <= 18.5, age > -1, age >= 0,
        tags == ["a", {"b": 1}],
        age.is_in([1, 2, [3]]), age.between("a", "m"),
        name.like("A%_"), name.like("a!%b", escape="!"), name.ilike("%x%"),
        name.startswith("A"), name.endswith("z"), name.contains("da"), tags.contains(3),
        name.iequals("ADA"), name.icontains("D"), name.istartswith("a"), name.iendswith("A"),
        name.is_null(), name.is_not_null(),
        And(age > 1, name == "x"), Or(age < 1, age > 9), Not(name.is_null()),
        ((age >= 18) & (name == "Ada")) | ~(tags.contains("x") & (age < 3)),
    ]


@pytest.mark.parametrize("node", _every_kind_of_node(), ids=repr)
def test_nodes_pickle_round_trip(node):
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(node, protocol=protocol))
        assert type(back) is type(node)
        assert back == node
        assert hash(back) == hash(node)
        assert back.key() == node.key()
        assert repr(back) == repr(node)
    assert copy.deepcopy(node) == node


def test_condition_and_field_pickle():
    cond = Condition((age >= 18) & name.like("A%"))
    assert cond({"age": 20, "name": "Ada"})  # fills the compiled cache
    back = pickle.loads(pickle.dumps(cond))
    assert back == cond and back.expr == cond.expr
    assert back({"age": 20, "name": "Ada"}) is True
    f = pickle.loads(pickle.dumps(age))
    assert type(f) is Field and f.name == "age"
    assert (f >= 3) == (age >= 3)


def test_pickled_query_evaluates_the_same():
    node = ((age >= 18) & name.ilike("a_a")) | tags.contains("vip")
    back = pickle.loads(pickle.dumps(node))
    records = [{"age": 30, "name": "ADA"}, {"age": 3, "name": "ada"},
               {"tags": ["vip"]}, {"age": 30, "name": "Adam"}, {}]
    assert [matches(node, r) for r in records] == [matches(back, r) for r in records]
    assert [matches(back, r) for r in records] == [True, False, True, False, False]


def test_structural_equality_and_hash_key_a_cache():
    q1 = (age >= 18) & (name == "Ada")
    q2 = (Field("age") >= 18) & (Field("name") == "Ada")
    assert q1 == q2 and hash(q1) == hash(q2)
    cache = {q1: "rows"}
    assert cache[q2] == "rows"
    assert q1 in [age > 0, q2]
    assert len({q1, q2, age >= 18}) == 2
    assert q1 != (name == "Ada") & (age >= 18)  # child order is part of the structure
    assert (age == 1) != (age == 2)
    assert (age == 1) != (Field("other") == 1)
    assert (age < 1) != (age <= 1)
    assert Not(age == 1) != (age == 1)
    assert And(age == 1, age == 2) != Or(age == 1, age == 2)


def test_keys_distinguish_constants_python_would_call_equal():
    assert (age == 1) != (age == 1.0)
    assert (age == 1) != (age == True)  # noqa: E712
    assert (tags == [1]) != (tags == (1,))
    assert hash(tags == [1, {"a": [2]}]) == hash(tags == [1, {"a": [2]}])
    # Equal dict constants are one query whatever order their keys were written in.
    assert (tags == {"a": 1, "b": 2}) == (tags == {"b": 2, "a": 1})
    assert hash(tags == {"a": 1, "b": 2}) == hash(tags == {"b": 2, "a": 1})


def test_comparing_a_node_with_other_things_is_false_not_an_error():
    node = age == 1
    assert (node == age) is False
    assert (node == 1) is False
    assert (node != "x") is True
    assert (node == None) is False  # noqa: E711
    assert (Condition(node) == node) is False


def test_repr_reads_like_the_dsl():
    assert repr((age >= 18) & (name == "Ada")) == "(age >= 18) & (name == 'Ada')"
    assert repr((age < 1) | name.like("A%")) == "(age < 1) | name.like('A%')"
    assert repr(~(age > 5)) == "~(age > 5)"
    assert repr(~name.is_null()) == "~name.is_null()"
    assert repr(age.between(1, 5)) == "age.between(1, 5)"
    assert repr(age.is_in([1, 2])) == "age.is_in([1, 2])"
    assert repr(name.like("a!%", escape="!")) == "name.like('a!%', escape='!')"
    assert repr(((age > 1) & (age < 5)) | (name == "x")) == \
        "((age > 1) & (age < 5)) | (name == 'x')"
    assert repr(Field("first name") == "A") == "Field('first name') == 'A'"
    assert repr(Condition(age == 1)) == "Condition(age == 1)"
    assert repr(age) == "Field('age')"


# --- evaluation ---------------------------------------------------------------------

@pytest.mark.parametrize("cond, record, expected", [
    (age == 30, {"age": 30}, True),
    (age == 30, {"age": 31}, False),
    (age == 30, {"age": 30.0}, True),
    (age == "30", {"age": 30}, False),
    (age != 30, {"age": 31}, True),
    (age != 30, {"age": 30}, False),
    (age != 30, {"age": "thirty"}, True),
    (age != 30, {"age": None}, True),
    (age < 30, {"age": 29}, True),
    (age < 30, {"age": 30}, False),
    (age <= 30, {"age": 30}, True),
    (age > 30, {"age": 31}, True),
    (age > 30, {"age": 30}, False),
    (age >= 30, {"age": 30}, True),
    (age >= 30, {"age": 29.9}, False),
    (name < "b", {"name": "abc"}, True),
    (name > "b", {"name": "abc"}, False),
    (tags == ["a", "b"], {"tags": ["a", "b"]}, True),
    (tags == ["a", "b"], {"tags": ["b", "a"]}, False),
    (age.is_in([1, 2, 3]), {"age": 2}, True),
    (age.is_in([1, 2, 3]), {"age": 4}, False),
    (age.is_in([]), {"age": 4}, False),
    (tags.is_in([["a"], ["b"]]), {"tags": ["b"]}, True),
    (tags.is_in([["a"], ["b"]]), {"tags": ["c"]}, False),
    (age.between(18, 65), {"age": 18}, True),
    (age.between(18, 65), {"age": 65}, True),
    (age.between(18, 65), {"age": 66}, False),
    (age.between(18, 65), {"age": 17.99}, False),
    (age.between(65, 18), {"age": 30}, False),
    (name.between("a", "c"), {"name": "b"}, True),
    (name.is_null(), {"name": None}, True),
    (name.is_null(), {"name": ""}, False),
    (name.is_not_null(), {"name": None}, False),
    (name.is_not_null(), {"name": 0}, True),
    (name.startswith("Ad"), {"name": "Ada"}, True),
    (name.startswith("ad"), {"name": "Ada"}, False),
    (name.endswith("da"), {"name": "Ada"}, True),
    (name.contains("d"), {"name": "Ada"}, True),
    (name.contains("x"), {"name": "Ada"}, False),
    (tags.contains("vip"), {"tags": ["a", "vip"]}, True),
    (tags.contains("vi"), {"tags": ["a", "vip"]}, False),
    (tags.contains(3), {"tags": [1, 2, 3]}, True),
    (tags.contains(3), {"tags": "123"}, False),
    (name.iequals("ada"), {"name": "ADA"}, True),
    (name.iequals("ada"), {"name": "ADAM"}, False),
    (name.iequals("straße"), {"name": "STRASSE"}, True),
    (name.icontains("DA"), {"name": "ada"}, True),
    (name.istartswith("AD"), {"name": "adam"}, True),
    (name.istartswith("DA"), {"name": "adam"}, False),
    (name.iendswith("AM"), {"name": "adam"}, True),
])
def test_leaf_semantics(cond, record, expected):
    assert matches(cond, record) is expected


MISSING_NEVER_MATCHES = [
    age == 1, age != 1, age < 1, age <= 1, age > 1, age >= 1, age == None,  # noqa: E711
    age.is_in([None, 1]), age.between(None, 5), age.like("%"), age.ilike("%"),
    age.startswith(""), age.endswith(""), age.contains(""), age.iequals(""),
    age.icontains(""), age.istartswith(""), age.iendswith(""), age.is_not_null(),
]


@pytest.mark.parametrize("cond", MISSING_NEVER_MATCHES, ids=repr)
def test_a_missing_field_matches_no_test(cond):
    assert matches(cond, {"other": 1}) is False
    assert matches(cond, {}) is False


def test_is_null_matches_missing_and_none_and_eq_none_only_present_none():
    assert matches(age.is_null(), {}) is True
    assert matches(age.is_null(), {"age": None}) is True
    assert matches(age.is_null(), {"age": 0}) is False
    assert matches(age == None, {"age": None}) is True  # noqa: E711
    assert matches(age == None, {}) is False  # noqa: E711


def test_not_is_plain_negation_so_it_matches_missing_fields():
    assert matches(Not(age > 5), {}) is True
    assert matches(~(age > 5), {"age": 3}) is True
    assert matches(~(age > 5), {"age": 9}) is False
    assert matches(~(age > 5), {"age": "text"}) is True
    assert matches(~~(age > 5), {}) is False
    assert matches(~age.is_null(), {}) is False


@pytest.mark.parametrize("cond, value", [
    (age < 5, "abc"), (age > 5, "abc"), (age <= 5, None), (age >= 5, None),
    (age < 5, [1]), (age > 5, {"a": 1}), (age.between(1, 10), "5"),
    (age.between(1, 10), None), (name < "b", 3), (name > "b", b"c"),
    (age.is_in([1, 2]), [1]), (age.is_in([1, 2]), {"a": 1}),
    (age.like("1%"), 10), (age.ilike("%"), None), (age.startswith("1"), 10),
    (age.endswith("0"), 10), (age.contains("1"), 10), (age.iequals("1"), 1),
    (age.icontains("a"), ["a"]), (age.istartswith("a"), b"abc"),
    (age.iendswith("a"), {"a": 1}), (age.contains("a"), b"abc"),
    (age.startswith("a"), b"abc"), (age.contains(1), "123"),
])
def test_values_of_another_type_do_not_match_and_do_not_raise(cond, value):
    assert matches(cond, {"age": value}) is False


def test_logic_nodes():
    adult_ada = (age >= 18) & (name == "Ada")
    assert matches(adult_ada, {"age": 36, "name": "Ada"}) is True
    assert matches(adult_ada, {"age": 3, "name": "Ada"}) is False
    assert matches(adult_ada, {"name": "Ada"}) is False
    either = (age >= 18) | (name == "Ada")
    assert matches(either, {"name": "Ada"}) is True
    assert matches(either, {"age": 18}) is True
    assert matches(either, {"age": 17, "name": "Bob"}) is False
    many = And(age > 1, age > 2, age > 3, age > 4, age < 10)
    assert matches(many, {"age": 5}) is True
    assert matches(many, {"age": 4}) is False
    any_of = Or(age == 1, age == 2, age == 3, age == 4, name == "x")
    assert matches(any_of, {"name": "x"}) is True
    assert matches(any_of, {"age": 5}) is False


def test_compile_predicate_none_and_condition_and_bad_input():
    always = compile_predicate(None)
    assert always({}) is True and always({"a": 1}) is True
    pred = compile_predicate(Condition(Condition(age > 1)))
    assert pred({"age": 2}) is True and pred({"age": 0}) is False
    with pytest.raises(TypeError, match=r"t\.age >= 18"):
        compile_predicate(lambda r: True)


def test_every_operator_has_an_evaluator():
    from dictdb_shm.query.evaluate import LEAF_BUILDERS, LEAF_COSTS
    assert set(LEAF_BUILDERS) == set(OPS)
    assert set(LEAF_COSTS) == set(OPS)


# --- LIKE ---------------------------------------------------------------------------

@pytest.mark.parametrize("pattern, value, expected", [
    ("A%", "Ada", True),
    ("A%", "ada", False),
    ("%a", "Ada", True),
    ("%d%", "Ada", True),
    ("%x%", "Ada", False),
    ("A_a", "Ada", True),
    ("A_a", "Adda", False),
    ("___", "abc", True),
    ("___", "ab", False),
    ("%", "", True),
    ("%", "anything", True),
    ("", "", True),
    ("", "a", False),
    ("Ada", "Ada", True),
    ("Ada", "Adam", False),
    ("%%a%%", "bab", True),
    ("a%b%c", "aXXbYYc", True),
    ("a%b%c", "acb", False),
    ("a_%", "a", False),
    ("a_%", "ab", True),
    # regex metacharacters are literal
    ("a.c", "a.c", True),
    ("a.c", "abc", False),
    ("a.*", "a.*", True),
    ("a.*", "abc", False),
    ("(x)+%", "(x)+y", True),
    ("(x)+%", "xx", False),
    ("[ab]", "[ab]", True),
    ("[ab]", "a", False),
    ("^a$", "^a$", True),
    ("^a$", "a", False),
    ("\\d+", "\\d+", True),
    ("\\d+", "12", False),
    ("a|b", "a", False),
    ("a|b", "a|b", True),
    ("{1}?", "{1}?", True),
    ("50$%", "50$ off", True),
    # ...also where a wildcard forces the regex path, not just prefix/suffix shapes
    ("a.c_", "a.cd", True),
    ("a.c_", "abcd", False),
    ("_(x)+%", "a(x)+yz", True),
    ("_(x)+%", "axx", False),
    ("[ab]_%", "[ab]c", True),
    ("[ab]_%", "ac", False),
    ("%^a$_", "z^a$!", True),
    ("%^a$_", "a!", False),
    ("%\\d+_", "x\\d+1", True),
    ("%\\d+_", "x12", False),
    ("a|b_", "a|bc", True),
    ("a|b_", "a", False),
    ("_?*+{2}", "x?*+{2}", True),
    ("_?*+{2}", "x??", False),
    # % and _ also match newlines
    ("a%b", "a\nb", True),
    ("a_b", "a\nb", True),
])
def test_like_patterns(pattern, value, expected):
    assert matches(name.like(pattern), {"name": value}) is expected


def test_like_escape_character():
    pct = name.like("%!%", escape="!")
    assert matches(pct, {"name": "10%"}) is True
    assert matches(pct, {"name": "100"}) is False
    under = name.like("%!_v1%", escape="!")
    assert matches(under, {"name": "file_v1.txt"}) is True
    assert matches(under, {"name": "filev1.txt"}) is False
    assert matches(under, {"name": "fileXv1.txt"}) is False
    doubled = name.like("a!!b", escape="!")
    assert matches(doubled, {"name": "a!b"}) is True
    backslash = name.like("%\\%%", escape="\\")
    assert matches(backslash, {"name": "a%b"}) is True
    assert matches(backslash, {"name": "ab"}) is False
    # Without escape=, a backslash is an ordinary character.
    assert matches(name.like("a\\%"), {"name": "a\\xyz"}) is True
    assert matches(name.like("a\\%"), {"name": "a%"}) is False


@pytest.mark.parametrize("pattern, value, expected", [
    ("a%", "ADA", True),
    ("%D%", "ada", True),
    ("a_A", "AdA", True),
    ("x%", "ADA", False),
    ("STRASSE", "straße", True),
    ("[A]%", "[a]bc", True),
])
def test_ilike_patterns(pattern, value, expected):
    assert matches(name.ilike(pattern), {"name": value}) is expected


def test_like_prefix():
    assert like_prefix("abc%") == "abc"
    assert like_prefix("ab_c%") == "ab"
    assert like_prefix("%abc") == ""
    assert like_prefix("_abc") == ""
    assert like_prefix("abc") == "abc"
    assert like_prefix("a!%b%", escape="!") == "a%b"
    assert like_prefix("") == ""


def test_referenced_fields():
    q = ((age >= 18) & name.like("A%")) | ~tags.contains("x") | (age == 3)
    assert referenced_fields(q) == {"age", "name", "tags"}
    assert referenced_fields(Condition(age > 1)) == {"age"}
    assert referenced_fields(None) == set()


def test_matchers_return_real_bools():
    record = {"age": 5, "name": "Ada", "tags": ["x"]}
    for node in _every_kind_of_node():
        assert type(matches(node, record)) is bool, node


# --- randomised cross-check against a naive reference interpreter ------------------------

_ABSENT = object()


def _ref_leaf(op, v, x):
    """Straight-line statement of the documented rules, written independently."""
    if op == "is_null":
        return x is _ABSENT or x is None
    if op == "is_not_null":
        return x is not _ABSENT and x is not None
    if x is _ABSENT:
        return False
    if op == "eq":
        return x == v
    if op == "ne":
        return x != v
    if op in ("lt", "le", "gt", "ge", "between"):
        try:
            return {"lt": lambda: x < v, "le": lambda: x <= v, "gt": lambda: x > v,
                    "ge": lambda: x >= v, "between": lambda: v[0] <= x <= v[1]}[op]()
        except TypeError:
            return False
    if op == "in":
        return any(x == c for c in v)
    if not isinstance(x, str):
        return op == "contains" and isinstance(x, list) and v in x
    if op == "startswith":
        return x.startswith(v)
    if op == "endswith":
        return x.endswith(v)
    if op == "contains":
        return isinstance(v, str) and v in x
    if op == "iequals":
        return x.casefold() == v.casefold()
    if op == "icontains":
        return v.casefold() in x.casefold()
    if op == "istartswith":
        return x.casefold().startswith(v.casefold())
    if op == "iendswith":
        return x.casefold().endswith(v.casefold())
    if op in ("like", "ilike"):
        pattern = v[0]
        if op == "ilike":
            pattern, x = pattern.casefold(), x.casefold()
        return _ref_like(pattern, x)
    raise AssertionError(op)


def _ref_like(p, s):
    # Plain recursive matcher: no regex involved.
    if not p:
        return not s
    if p[0] == "%":
        return any(_ref_like(p[1:], s[i:]) for i in range(len(s) + 1))
    if not s:
        return False
    if p[0] == "_" or p[0] == s[0]:
        return _ref_like(p[1:], s[1:])
    return False


def _ref(node, record):
    if isinstance(node, Compare):
        return _ref_leaf(node.op, node.value, record.get(node.field, _ABSENT))
    if isinstance(node, And):
        return all(_ref(c, record) for c in node.conds)
    if isinstance(node, Or):
        return any(_ref(c, record) for c in node.conds)
    return not _ref(node.cond, record)


_VALUES = [None, 0, 1, 2, 2.5, -1, True, False, "", "a", "ab", "Ab", "ba", "a.b", "%",
           [1], ["a"], {"k": 1}, b"a"]
_STRS = ["", "a", "A", "b", "ab", "a.b", "%", "B"]
_PATTERNS = ["%", "a%", "%b", "_", "a_", "%a%", "a.b", "A%", "", "_%_"]


def _random_leaf(rng):
    f = Field(rng.choice(["x", "y"]))
    kind = rng.choice(["cmp", "in", "between", "str", "like", "null"])
    if kind == "cmp":
        v = rng.choice(_VALUES)
        return rng.choice([f == v, f != v, f < v, f <= v, f > v, f >= v])
    if kind == "in":
        return f.is_in(rng.sample(_VALUES, 3))
    if kind == "between":
        return f.between(rng.choice(_VALUES), rng.choice(_VALUES))
    if kind == "str":
        meth = rng.choice(["startswith", "endswith", "contains", "iequals", "icontains",
                           "istartswith", "iendswith"])
        return getattr(f, meth)(rng.choice(_STRS))
    if kind == "like":
        return getattr(f, rng.choice(["like", "ilike"]))(rng.choice(_PATTERNS))
    return rng.choice([f.is_null(), f.is_not_null()])


def _random_tree(rng, depth):
    if depth == 0 or rng.random() < 0.3:
        return _random_leaf(rng)
    kind = rng.choice(["and", "or", "not"])
    if kind == "not":
        return Not(_random_tree(rng, depth - 1))
    kids = [_random_tree(rng, depth - 1) for _ in range(rng.randint(2, 5))]
    return And(*kids) if kind == "and" else Or(*kids)


def test_compiled_predicates_agree_with_reference_interpreter():
    rng = random.Random(1234)
    records = [{}]
    for _ in range(60):
        r = {}
        for f in ("x", "y"):
            if rng.random() < 0.8:
                r[f] = rng.choice(_VALUES)
        records.append(r)
    checked = 0
    for _ in range(400):
        tree = _random_tree(rng, 3)
        pred = compile_predicate(tree)
        again = compile_predicate(pickle.loads(pickle.dumps(tree)))
        for r in records:
            expected = _ref(tree, r)
            assert pred(r) is expected, (tree, r)
            assert again(r) is expected, (tree, r)
            checked += 1
    assert checked == 400 * len(records)
