"""multiprocessing.Pool and concurrent.futures.ProcessPoolExecutor with each
start method: handles passed to tasks pickle as names and reattach; under
fork, handles opened before the pool work in its workers.  Exact counts show
no update was lost or doubled."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest

import pool_tasks
from dictdb_shm import DictDB

TASKS, TIMES, WAIT = 8, 25, 120


@pytest.fixture
def handles(db_name):
    db = DictDB(db_name)
    table = db.create_table("counts")
    table.insert({"id": 1, "n": 0})
    cache = db.cache("hits")
    yield db, table, cache
    pool_tasks.PREOPENED.clear()
    db.close()


def _check(handles, pids):
    db, table, cache = handles
    assert table.get(1)["n"] == TASKS * TIMES
    assert cache.get("n") == TASKS * TIMES
    # Every worker that ran a task wrote its pid through the reattached db handle.
    assert {r["id"] for r in table.select() if r["id"] != 1} == {f"pid{p}" for p in pids}


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_pool_with_handles_as_arguments(handles, method):
    with multiprocessing.get_context(method).Pool(2) as pool:
        pids = pool.starmap_async(pool_tasks.bump, [(*handles, TIMES)] * TASKS).get(WAIT)
    _check(handles, pids)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_process_pool_executor_with_handles_as_arguments(handles, method):
    ctx = multiprocessing.get_context(method)
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        futures = [ex.submit(pool_tasks.bump, *handles, TIMES) for _ in range(TASKS)]
        pids = [f.result(timeout=WAIT) for f in futures]
    _check(handles, pids)


@pytest.mark.parametrize("kind", ["Pool", "ProcessPoolExecutor"])
def test_fork_workers_use_handles_opened_before_the_pool(handles, kind):
    db, table, cache = handles
    pool_tasks.PREOPENED.update(db=db, table=table, cache=cache)
    ctx = multiprocessing.get_context("fork")
    if kind == "Pool":
        # maxtasksperchild=2: workers are replaced while the test runs, each
        # new one forked from the parent with the same preopened handles.
        with ctx.Pool(2, maxtasksperchild=2) as pool:
            pids = pool.map_async(pool_tasks.bump_preopened, [TIMES] * TASKS).get(WAIT)
        assert len(set(pids)) >= TASKS // 2
    else:
        with ProcessPoolExecutor(2, mp_context=ctx) as ex:
            futures = [ex.submit(pool_tasks.bump_preopened, TIMES) for _ in range(TASKS)]
            pids = [f.result(timeout=WAIT) for f in futures]
    _check(handles, pids)
