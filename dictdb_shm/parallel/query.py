"""A parallel select or aggregate, from the Table's call to the merged answer.

Owns: the sequence of one parallel query, once the Table has decided to
split it (``plan.parts``, where it chose its access path): lease workers
(pool.py), take the table's read lock, split the committed heap
(``StorageEngine.partition``), send one part to each worker and read the
first part here, collect, merge (merge.py), release.  Must never: shape
select's rows (the Table does, after the merge, exactly as for
``workers=1``), touch bytes, or answer a query it does not split: it
returns None and the Table runs its one-process path.

Consistency and what a writer waits for: the caller holds the table's read
lock from before the split until every part has answered, and the workers
read the generation named in their part without any lock.  So all parts
see one committed state, and a writer of that table waits for the whole
query (the read lock's usual rules: while it waits, new readers of the table
wait too, and past its lock timeout it raises LockTimeoutError).  Writers
of other tables are not affected.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

from dictdb_shm.parallel import merge, part, plan, pool
from dictdb_shm.parallel.part import PartTask
from dictdb_shm.query import Accumulator, Aggregate, Predicate

_NOT_SPLIT = object()


def matching(db: str, store: Any, primary_key: str, node: Predicate | None,
             stop: int | None, n: int, wait: bool) -> list[dict] | None:
    """The records matching ``node`` (the first ``stop``), in the order a
    one-process scan gives, read by ``n`` processes (``plan.parts``); None
    when the query is not split after all (see ``_run``)."""
    def make(p: Any, narrowing: plan.Narrowing) -> PartTask:
        return PartTask(p, node, narrowing, stop)
    found = _run(db, store, primary_key, node, n, wait, make, part.rows)
    return None if found is None else merge.rows(found)


def aggregate(db: str, store: Any, primary_key: str, node: Predicate | None,
              group_by: Any, aggs: Mapping[str, Aggregate], n: int, wait: bool) -> Any:
    """``aggregate_rows`` of the matching records, computed by ``n``
    processes from partial states; None when the query is not split after all."""
    Accumulator(aggs, group_by)          # bad aggregates fail here, before any work
    named = dict(aggs)

    def make(p: Any, narrowing: plan.Narrowing) -> PartTask:
        return PartTask(p, node, narrowing, aggs=named, group_by=group_by)
    found = _run(db, store, primary_key, node, n, wait, make, part.partial)
    return None if found is None else merge.aggregates(found)


def _run(db: str, store: Any, primary_key: str, node: Predicate | None, n: int, wait: bool,
         make: Callable[[Any, plan.Narrowing], PartTask],
         here: Callable[[Any, PartTask], Any]) -> list | None:
    """Run the query over ``n`` processes.  None, and the Table runs it in one
    process, when no worker is free and ``wait`` is False (``workers=None``),
    or when under the lock the path or the heap no longer splits."""
    lease = pool.pool_of(db).lease(n - 1, wait=wait)
    if lease is None:
        return None

    kind = "select" if here is part.rows else "aggregate"

    def split_and_run(s: Any) -> Any:
        narrowing = plan.narrowing(node, primary_key, s)
        weight = lease.pool.caller_weight[kind]
        parts = s.partition(plan.shares(n, weight)) if narrowing is not None else None
        if not parts or len(parts) < 2:
            return _NOT_SPLIT
        tasks = [make(p, narrowing) for p in parts]
        lease.send(tasks[1:])
        started = time.perf_counter()
        mine = here(s, tasks[0])
        mine_s = time.perf_counter() - started
        answers = lease.collect()
        lease.pool.caller_weight[kind] = plan.rebalanced(weight, mine_s,
                                                         max(lease.worker_seconds))
        theirs = [part.decode(s, t, answer) for t, answer in zip(tasks[1:], answers)]
        return [mine, *theirs]
    try:
        with store.lock.read_lock():
            found = store.read(split_and_run)
    finally:
        lease.release()
    return None if found is _NOT_SPLIT else found
