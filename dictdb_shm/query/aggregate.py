"""Aggregates (Count, Sum, Avg, Min, Max) and grouping over matched rows.

Owns: the aggregate descriptions (plain, picklable data), their running
states, DictDB's ``compute(values)`` on each, the :class:`Accumulator` that
groups rows and can be merged with another one, and :func:`aggregate_rows`.

Must never: filter rows, touch storage or bytes, or keep references to the
rows it has seen.  States are plain lists of plain values so a partial result
computed in one process can be sent to another and merged there.

Decisions (following DictDB where it says)
------------------------------------------
* ``Count()`` counts rows; ``Count(f)`` counts rows where ``f`` is present and
  not ``None``.
* ``Sum``/``Avg``/``Min``/``Max`` skip missing and ``None`` values; ``Sum`` and
  ``Avg`` also skip non-numbers (bools count as 0/1, as in Python's sum).
* Over no values, ``Sum``, ``Avg``, ``Min`` and ``Max`` give ``None`` (DictDB
  documents ``None`` for Sum, not 0) and ``Count`` gives 0.
* ``Avg`` is a float.  ``Min``/``Max`` over values that do not order against
  each other use :func:`dictdb_shm.query.shape.sort_key` instead of raising.
* With ``group_by``, a missing group field groups as ``None``; group values
  are matched with ``==`` (so ``1`` and ``1.0`` are one group); groups come
  out in the order they were first seen.

``compute(values)`` and ``aggregate()``
---------------------------------------
``agg.compute(values)`` is DictDB's call: it takes values already taken out
of the rows (``None`` standing for a missing field) and follows DictDB to
the letter.  ``None`` is skipped, except that ``Count()`` counts every value
(one per row); with nothing left Sum, Avg, Min and Max give ``None`` and
Count gives 0.  Sum and Avg add with ``+`` and Min and Max use ``min`` and
``max``, so a value that does not add, or values that do not order against
each other, are an InvalidArgumentError (DictDB raises a TypeError; this is
one).  ``aggregate()`` and :class:`Accumulator` read rows, can be split over
processes and merged, and are lenient where compute() is strict: Sum and Avg
skip non-numbers, Min and Max order mixed values as above.  On values both
accept -- numbers and bools, or values of one type that orders, without NaN
-- the two agree: ``Sum("v").compute([r.get("v") for r in rows])`` equals
``aggregate_rows(rows, s=Sum("v"))["s"]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable, ClassVar, NoReturn

from dictdb_shm.errors import InvalidArgumentError
from dictdb_shm.query.shape import _hashable, sort_key

__all__ = ["Aggregate", "Agg", "Count", "Sum", "Avg", "Min", "Max", "Accumulator",
           "aggregate_rows"]


class Aggregate:
    """Base of the aggregates: an immutable ``(kind, field)`` pair.

    The running state is a plain list the aggregate owns the layout of:
    :meth:`start` makes one, :meth:`step` folds a row into it,
    :meth:`merge` folds another state into it, :meth:`finish` reads it out.
    :meth:`compute` is DictDB's one-shot call over plain values (see the
    module docstring for how it relates to aggregating rows).
    """

    __slots__ = ("field",)
    kind: ClassVar[str] = ""
    field: str | None

    def __init__(self, field: str) -> None:
        if not isinstance(field, str):
            raise InvalidArgumentError(f"{type(self).__name__}() needs a field name (str), "
                                       f"got {field!r}")
        object.__setattr__(self, "field", field)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> tuple:
        return (type(self), (self.field,))

    def key(self) -> tuple:
        return (self.kind, self.field)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Aggregate) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.field!r})"

    def start(self) -> list:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, state: list, row: Mapping[str, Any]) -> None:  # pragma: no cover
        raise NotImplementedError

    def merge(self, state: list, other: list) -> None:  # pragma: no cover
        raise NotImplementedError

    def finish(self, state: list) -> Any:  # pragma: no cover
        raise NotImplementedError

    def compute(self, values: Iterable[Any]) -> Any:  # pragma: no cover
        raise NotImplementedError


# DictDB's name for the base class, so isinstance checks written for it work.
Agg = Aggregate


def _present(values: Iterable[Any]) -> list[Any]:
    return [v for v in values if v is not None]


class Count(Aggregate):
    """``Count()`` counts rows; ``Count("f")`` counts present, non-None ``f``."""

    __slots__ = ()
    kind = "count"

    def __init__(self, field: str | None = None) -> None:
        if field is None:
            object.__setattr__(self, "field", None)
        else:
            super().__init__(field)

    def __repr__(self) -> str:
        return "Count()" if self.field is None else f"Count({self.field!r})"

    def start(self) -> list:
        return [0]

    def step(self, state: list, row: Mapping[str, Any]) -> None:
        if self.field is None or row.get(self.field) is not None:
            state[0] += 1

    def merge(self, state: list, other: list) -> None:
        state[0] += other[0]

    def finish(self, state: list) -> int:
        return state[0]

    def compute(self, values: Iterable[Any]) -> int:
        """How many values (``Count()``) or non-None values (``Count(f)``)."""
        if self.field is None:
            return sum(1 for _ in values)
        return sum(1 for v in values if v is not None)


class _Total(Aggregate):
    """State ``[total, n]``: n tells "no values" apart from "sums to 0"."""

    __slots__ = ()

    def start(self) -> list:
        return [0, 0]

    def step(self, state: list, row: Mapping[str, Any]) -> None:
        v = row.get(self.field)  # type: ignore[arg-type]
        if isinstance(v, (int, float)):
            state[0] += v
            state[1] += 1

    def merge(self, state: list, other: list) -> None:
        state[0] += other[0]
        state[1] += other[1]

    def _add(self, present: list[Any]) -> Any:
        try:
            return sum(present)
        except TypeError as exc:
            raise InvalidArgumentError(
                f"{self!r}.compute() adds numbers only: {exc}",
                hint="drop the other values first; aggregate() skips them") from exc


class Sum(_Total):
    """Sum of the numeric values; ``None`` when there are none."""

    __slots__ = ()
    kind = "sum"

    def finish(self, state: list) -> int | float | None:
        return state[0] if state[1] else None

    def compute(self, values: Iterable[Any]) -> Any:
        """Sum of the non-None values; ``None`` when there are none."""
        present = _present(values)
        return self._add(present) if present else None


class Avg(_Total):
    """Mean of the numeric values (a float); ``None`` when there are none."""

    __slots__ = ()
    kind = "avg"

    def finish(self, state: list) -> float | None:
        return state[0] / state[1] if state[1] else None

    def compute(self, values: Iterable[Any]) -> Any:
        """Mean of the non-None values; ``None`` when there are none."""
        present = _present(values)
        return self._add(present) / len(present) if present else None


def _less(a: Any, b: Any) -> bool:
    """``a < b`` in :func:`sort_key` order, using plain ``<`` when it is exact."""
    try:
        if a < b:
            return True
    except TypeError:
        return sort_key(a) < sort_key(b)
    # NaN compares false both ways; sort_key puts it after every other number.
    return b != b and a == a


class _Extreme(Aggregate):
    """State ``[best or None]``: None never gets in, so it means "no values"."""

    __slots__ = ()
    _better: ClassVar[Callable[[Any, Any], bool]]
    _pick: ClassVar[Callable[[list[Any]], Any]]     # DictDB's compute: min or max

    def start(self) -> list:
        return [None]

    def step(self, state: list, row: Mapping[str, Any]) -> None:
        v = row.get(self.field)  # type: ignore[arg-type]
        if v is None:
            return
        cur = state[0]
        if cur is None or type(self)._better(v, cur):
            state[0] = v

    def merge(self, state: list, other: list) -> None:
        v = other[0]
        if v is None:
            return
        if state[0] is None or type(self)._better(v, state[0]):
            state[0] = v

    def finish(self, state: list) -> Any:
        return state[0]

    def compute(self, values: Iterable[Any]) -> Any:
        """The extreme non-None value by ``<``; ``None`` when there is none."""
        present = _present(values)
        if not present:
            return None
        try:
            return type(self)._pick(present)
        except TypeError as exc:
            raise InvalidArgumentError(
                f"{self!r}.compute() needs values that order against each other: {exc}",
                hint="aggregate() orders mixed types instead (numbers, then str, ...)"
            ) from exc


class Min(_Extreme):
    """Smallest present, non-None value; ``None`` when there is none."""

    __slots__ = ()
    kind = "min"
    _better = staticmethod(_less)
    _pick = staticmethod(min)


class Max(_Extreme):
    """Largest present, non-None value; ``None`` when there is none."""

    __slots__ = ()
    kind = "max"
    _better = staticmethod(lambda a, b: _less(b, a))
    _pick = staticmethod(max)


def _group_fields(group_by: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if group_by is None:
        return None
    if isinstance(group_by, str):
        return (group_by,)
    if isinstance(group_by, (list, tuple)) and group_by:
        for g in group_by:
            if not isinstance(g, str):
                raise InvalidArgumentError(
                    f"group_by entries must be field names (str), got {g!r}")
        if len(set(group_by)) != len(group_by):
            raise InvalidArgumentError(f"group_by names a field twice: {list(group_by)!r}")
        return tuple(group_by)
    raise InvalidArgumentError(f"group_by takes a field name or a non-empty list of them, "
                               f"got {group_by!r}")


class Accumulator:
    """Running aggregates over rows, optionally grouped; mergeable.

    Several processes can each fill an Accumulator built from the same
    aggregates and ``group_by``, pickle it, and one of them :meth:`merge` the
    others into its own before calling :meth:`result`.
    """

    def __init__(self, aggs: Mapping[str, Aggregate],
                 group_by: str | Sequence[str] | None = None) -> None:
        self.aggs: dict[str, Aggregate] = {}
        for alias, agg in aggs.items():
            if not isinstance(agg, Aggregate):
                # DictDB's words first, so code matching DictDB's message keeps working.
                raise InvalidArgumentError(
                    f"Expected Agg instance for {alias!r}, got {type(agg).__name__}: "
                    f"pass Count(), Count(field), Sum(field), Avg(field), Min(field) or "
                    "Max(field), e.g. n=Count()")
            self.aggs[alias] = agg
        self.group_by = _group_fields(group_by)
        if self.group_by is not None:
            clash = set(self.group_by) & set(self.aggs)
            if clash:
                raise InvalidArgumentError(f"aggregate name(s) {sorted(clash)} clash with "
                                           f"group_by fields; pick other names")
        self._setup()
        # Ungrouped: one state list per aggregate.  Grouped: frozen group
        # values -> (group values as seen, state lists), in first-seen order.
        self.states: list[list] = [a.start() for a in self.aggs.values()]
        self.groups: dict[Any, tuple[tuple, list[list]]] = {}

    def _setup(self) -> None:
        self._aggs = tuple(self.aggs.values())
        self._steps = tuple(a.step for a in self._aggs)

    def __getstate__(self) -> dict:
        return {"aggs": self.aggs, "group_by": self.group_by,
                "states": self.states, "groups": list(self.groups.values())}

    def __setstate__(self, state: dict) -> None:
        self.aggs = state["aggs"]
        self.group_by = state["group_by"]
        self.states = state["states"]
        self._setup()
        # Keys are rebuilt, not pickled: they may hold process-local sentinels.
        self.groups = {_group_key(values): (values, states)
                       for values, states in state["groups"]}

    def _new_states(self) -> list[list]:
        return [a.start() for a in self._aggs]

    def add(self, row: Mapping[str, Any]) -> None:
        """Fold one row in."""
        self.add_rows((row,))

    def add_rows(self, rows: Iterable[Mapping[str, Any]]) -> "Accumulator":
        """Fold rows in; returns self."""
        steps = self._steps
        if self.group_by is None:
            pairs = tuple(zip(steps, self.states))
            for row in rows:
                for step, state in pairs:
                    step(state, row)
            return self
        fields = self.group_by
        groups = self.groups
        single = fields[0] if len(fields) == 1 else None
        for row in rows:
            if single is not None:
                values: tuple = (row.get(single),)
            else:
                values = tuple([row.get(f) for f in fields])
            try:
                entry = groups.get(values)
                k = values
            except TypeError:  # a group value is a list or dict
                k = _group_key(values)
                entry = groups.get(k)
            if entry is None:
                entry = groups[k] = (values, self._new_states())
            for step, state in zip(steps, entry[1]):
                step(state, row)
        return self

    def merge(self, other: "Accumulator") -> "Accumulator":
        """Fold another accumulator's partial results into this one; returns self."""
        if other.aggs != self.aggs or other.group_by != self.group_by:
            raise InvalidArgumentError("can only merge accumulators built from the same "
                                       "aggregates and group_by")
        aggs = self._aggs
        if self.group_by is None:
            for agg, mine, theirs in zip(aggs, self.states, other.states):
                agg.merge(mine, theirs)
            return self
        for k, (values, theirs) in other.groups.items():
            entry = self.groups.get(k)
            if entry is None:
                # Copied so later merges into self never alias other's lists.
                self.groups[k] = (values, [list(s) for s in theirs])
            else:
                for agg, mine, t in zip(aggs, entry[1], theirs):
                    agg.merge(mine, t)
        return self

    def result(self) -> dict[str, Any] | list[dict[str, Any]]:
        """``{alias: value}``, or with group_by one such dict per group."""
        aliases = list(self.aggs)
        if self.group_by is None:
            return {alias: agg.finish(s)
                    for alias, agg, s in zip(aliases, self._aggs, self.states)}
        out = []
        for values, states in self.groups.values():
            row = dict(zip(self.group_by, values))
            for alias, agg, s in zip(aliases, self._aggs, states):
                row[alias] = agg.finish(s)
            out.append(row)
        return out


def _group_key(values: tuple) -> Any:
    try:
        hash(values)
        return values
    except TypeError:
        return _hashable(values)


def aggregate_rows(rows: Iterable[Mapping[str, Any]],
                   group_by: str | Sequence[str] | None = None,
                   **aggs: Aggregate) -> dict[str, Any] | list[dict[str, Any]]:
    """``aggregate_rows(rows, n=Count(), avg=Avg("age"))`` -> ``{"n": .., "avg": ..}``.

    With ``group_by`` (a field name or a list of them) returns a list of dicts,
    each holding the group's field values and the aggregates.
    """
    return Accumulator(aggs, group_by).add_rows(rows).result()
