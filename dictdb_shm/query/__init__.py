"""Queries as plain data: the DSL, its evaluation, result shaping and aggregates.

Owns: the public names of ``dictdb_shm.query``.  Must never: import storage,
lock or table code -- everything here works on plain dicts, so it can be
tested, pickled and run in any process.

Modules, each importing only those listed before it:

* :mod:`.operands` -- the operator names (``OPS``) and the checks on the
  value of one test.
* :mod:`.evaluate` -- the closures that test one record (``Matcher``), the
  matching rules, ``like_prefix``.
* :mod:`.expr` -- the node tree (``Compare``, ``And``, ``Or``, ``Not``),
  ``Condition``, ``as_predicate``, ``compile_predicate``,
  ``referenced_fields``; ``node(record)``.
* :mod:`.field` -- ``Field``, which builds the nodes: ``t.age >= 18``.
* :mod:`.shape` -- ``order_rows``, ``project``, ``distinct_rows``, ``page``,
  ``normalize_paging``, ``shape_rows``.
* :mod:`.aggregate` -- ``Count``, ``Sum``, ``Avg``, ``Min``, ``Max`` (with
  DictDB's ``compute``), ``Accumulator``, ``aggregate_rows``.
"""

from dictdb_shm.query.aggregate import (
    Accumulator,
    Agg,
    Aggregate,
    Avg,
    Count,
    Max,
    Min,
    Sum,
    aggregate_rows,
)
from dictdb_shm.query.evaluate import Matcher, like_prefix
from dictdb_shm.query.expr import (
    CASE_INSENSITIVE_OPS,
    COMPARISON_OPS,
    OPS,
    And,
    Compare,
    Condition,
    Not,
    Or,
    Predicate,
    as_predicate,
    compile_predicate,
    referenced_fields,
)
from dictdb_shm.query.field import Field
from dictdb_shm.query.shape import (
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

__all__ = [
    # expr
    "Field", "Predicate", "Compare", "And", "Or", "Not", "Condition", "as_predicate",
    "compile_predicate", "referenced_fields", "OPS", "COMPARISON_OPS",
    "CASE_INSENSITIVE_OPS",
    # evaluate
    "Matcher", "like_prefix",
    # shape
    "order_rows", "parse_order_by", "project", "projector", "distinct_rows", "page",
    "normalize_paging", "shape_rows", "sort_key",
    # aggregate
    "Agg", "Aggregate", "Count", "Sum", "Avg", "Min", "Max", "Accumulator",
    "aggregate_rows",
]
