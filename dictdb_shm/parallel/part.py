"""One part of a parallel query: what travels to a worker and how it runs.

Owns: ``PartTask`` (plain, picklable data: the part of the heap, the query
tree, the narrowing, what to produce) and running it over a store, in the
calling process (``rows``, ``partial``) or in a worker (``answer``, whose
bytes the caller turns back with ``decode``).  Must never: take a lock,
touch bytes (the store's ``part_records`` and ``pack_part`` do), or shape
or merge results (merge.py).

A select's part answers with its matches as the store packs them (their
stored msgpack bodies, one decode in the caller); an aggregate's with its
partial Accumulator, pickled.  Workers are this process's own children on
a private pipe, so their pickles are trusted.
"""

from __future__ import annotations

import pickle
from itertools import islice
from typing import Any, NamedTuple

from dictdb_shm.parallel.plan import Narrowing
from dictdb_shm.query import Accumulator, Aggregate, Predicate, compile_predicate


class PartTask(NamedTuple):
    part: Any                           # the store's ScanPart (engine/ranges.py)
    where: Predicate | None
    narrowing: Narrowing
    stop: int | None = None             # select: at most this many matches
    aggs: dict[str, Aggregate] | None = None     # aggregate: the aggregates (None: a select)
    group_by: Any = None


def _records(store: Any, task: PartTask) -> Any:
    found = store.part_records(task.part, task.narrowing.holding, task.narrowing.containing)
    return found if task.where is None else filter(compile_predicate(task.where), found)


def rows(store: Any, task: PartTask) -> list[dict]:
    """In the calling process: the part's matches, in heap order."""
    return list(islice(_records(store, task), task.stop))


def partial(store: Any, task: PartTask) -> Accumulator:
    """The part's aggregates, grouped as asked, to merge with the others'."""
    return Accumulator(task.aggs or {}, task.group_by).add_rows(_records(store, task))


def answer(store: Any, task: PartTask) -> bytes:
    """In a worker: the part's answer as bytes for ``decode``."""
    if task.aggs is not None:
        return pickle.dumps(partial(store, task), pickle.HIGHEST_PROTOCOL)
    keep = None if task.where is None else compile_predicate(task.where)
    n = task.narrowing
    return store.pack_part(task.part, keep, task.stop, n.holding, n.containing)


def decode(store: Any, task: PartTask, payload: bytes) -> Any:
    """A worker's ``answer`` back as ``rows`` or ``partial`` would give it."""
    if task.aggs is not None:
        return pickle.loads(payload)
    return store.unpack_part(payload)
