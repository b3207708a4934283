"""Whether a query is split, into how many parts, and along which access path.

Owns: the checks on the ``workers`` argument, what ``workers=None`` picks
(``AUTO_MIN_ROWS``, ``AUTO_MAX_WORKERS``), and which planner paths a split
can follow: a full scan or a searched scan (core/planner.py rules 6 and 7),
the decode-bound paths.  Must never: run queries, touch storage beyond
asking the store for its live count and index kinds, or start processes.

Paths that decode only the rows they return (primary-key lookups, hash and
sorted indexes, column indexes) are not split: they are answered in the
calling process, where they are already fast, exactly as with ``workers=1``.
"""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple

from dictdb_shm.core import planner
from dictdb_shm.errors import InvalidArgumentError
from dictdb_shm.query import Predicate

# workers=None splits a query over AUTO_MAX_WORKERS processes at most (and
# no more than this process may run on), and only for tables of at least
# AUTO_MIN_ROWS live records.  Below that a scan takes some tens of
# milliseconds in one process, and the round trips to the workers (a task
# out, the matches back, ~1 ms) plus holding the read lock for the whole
# query (writers wait) are no longer worth it.
AUTO_MIN_ROWS = 200_000
AUTO_MAX_WORKERS = 4
MAX_WORKERS = 64
# The calling process reads the first part itself, of CALLER_WEIGHT[kind]
# against 1 for each worker to start with.  The parts cost what their
# matches cost, not what their bytes do (the rows are not spread evenly),
# and a worker also packs what it sends, so each pool moves the weight
# towards the one that would have ended the caller's part and the slowest
# worker's together (``rebalanced``), at BALANCE_RATE, within the bounds.
# (For a select, the caller decodes the workers' matches after that, which
# no split can overlap.)
CALLER_WEIGHT = {"select": 1.0, "aggregate": 1.0}
BALANCE_RATE = 0.5
MIN_CALLER_WEIGHT, MAX_CALLER_WEIGHT = 0.25, 4.0


class Narrowing(NamedTuple):
    """How each part reads its records: all of them, or only those whose
    bytes hold ``holding`` (a str) or ``containing`` (``(field, values)``)."""

    holding: str | None = None
    containing: tuple[str, tuple] | None = None


FULL_SCAN = Narrowing()


def check_workers(workers: Any) -> None:
    """InvalidArgumentError unless ``workers`` is None or an int from 1 to MAX_WORKERS."""
    if workers is None:
        return
    if type(workers) is not int or not 1 <= workers <= MAX_WORKERS:
        raise InvalidArgumentError(
            f"workers must be None (the library decides) or an int from 1 to {MAX_WORKERS}, "
            f"not {workers!r}", hint="workers=1 runs the query in this process only")


def processes(workers: int | None, live_count: Callable[[], int]) -> int:
    """How many processes a query uses, the calling one included (1: not split)."""
    check_workers(workers)
    if workers is not None:
        return workers
    if live_count() < AUTO_MIN_ROWS:
        return 1
    cpus = len(os.sched_getaffinity(0))
    if cpus < 2:
        return 1
    return min(cpus, AUTO_MAX_WORKERS)


def shares(n: int, caller_weight: float) -> list[float]:
    """The relative sizes of the ``n`` parts, the calling process's first."""
    return [caller_weight] + [1.0] * (n - 1)


def rebalanced(weight: float, mine_s: float, theirs_s: float) -> float:
    """The caller's next weight, after a query in which its part of ``weight``
    took ``mine_s`` and the slowest worker's part (of weight 1) ``theirs_s``:
    towards the weight whose part would have taken as long as theirs."""
    if mine_s <= 0 or theirs_s <= 0:
        return weight
    target = min(max(weight * theirs_s / mine_s, MIN_CALLER_WEIGHT), MAX_CALLER_WEIGHT)
    return weight + BALANCE_RATE * (target - weight)


def narrowing_of(choice: planner.Plan) -> Narrowing | None:
    """How the parts of a query on the planner's path ``choice`` read their
    records, or None when that path is not split (see the module docstring)."""
    if choice.kind == "scan":
        return FULL_SCAN
    if choice.kind == "search" and choice.op == "contains":
        return Narrowing(holding=choice.value)
    if choice.kind == "search":
        return Narrowing(containing=(choice.field, tuple(choice.value) if choice.op == "in"
                                     else (choice.value,)))
    return None


def narrowing(node: Predicate | None, primary_key: str, store: Any) -> Narrowing | None:
    """Inside a read: ``narrowing_of`` the path the planner picks for ``node``."""
    if node is None:
        return FULL_SCAN
    return narrowing_of(planner.choose(node, primary_key, store.indexes(), store.index_estimate))


def parts(choice: planner.Plan, workers: int | None, live_count: Callable[[], int]) -> int:
    """Inside a read: how many processes a query on path ``choice`` uses (1: not split).

    Decided where the Table already chose its path, so that the many queries
    on a big table that an index answers pay nothing for ``workers=None``."""
    if workers == 1 or narrowing_of(choice) is None:
        return 1
    return processes(workers, live_count)


def parts_for(node: Predicate | None, primary_key: str, store: Any, workers: int | None) -> int:
    """Inside a read: ``parts`` for the path the planner picks for ``node``."""
    choice = planner.SCAN if node is None else planner.choose(
        node, primary_key, store.indexes(), store.index_estimate)
    return parts(choice, workers, store.live_count)
