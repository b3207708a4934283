"""The worker pool of parallel queries: started once per process and
database and reused, ended with the last handle and at exit, healed after a
worker is SIGKILLed in the middle of a query."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from conftest import ROOT, wait_until
from dictdb_shm import Count, DictDB, ParallelQueryError, WorkerLostError
from dictdb_shm.crashpoints import ENV as PAUSE
from dictdb_shm.parallel import pool
from dictdb_shm.parallel.worker import TASK_POINT
from proctools import process_state


def _gone(pid: int) -> bool:
    return process_state(pid) in ("gone", "Z")


def _fill(t, n: int = 4000) -> None:
    t.insert([{"id": i, "name": f"user{i}", "v": i % 13} for i in range(n)])


def test_pool_is_reused_then_ended_with_the_last_handle(db_name):
    db = DictDB(db_name)
    t = db.create_table("t")
    _fill(t)
    want = t.select(where=t.name.contains("77"), workers=1)
    assert t.select(where=t.name.contains("77"), workers=3) == want
    pids = pool.running(db_name).pids()
    assert len(pids) == 2 and all(not _gone(p) for p in pids)
    assert t.aggregate(group_by="v", n=Count(), workers=3) == \
        t.aggregate(group_by="v", n=Count(), workers=1)
    top = [i for i in range(4000) if i % 13 == 4][:-3:-1]
    assert t.select(where=t.v == 4, order_by="-id", limit=2, workers=2) == [
        {"id": i, "name": f"user{i}", "v": 4} for i in top]
    assert pool.running(db_name).pids() == pids              # the same processes answered
    other = DictDB.attach(db_name)                          # a second handle ...
    other.close()                                           # ... closing keeps the pool
    assert pool.running(db_name).pids() == pids
    db.close()                                              # the last handle: the pool ends
    assert pool.running(db_name) is None
    wait_until(lambda: all(_gone(p) for p in pids), 10, "the workers to exit")


def test_worker_killed_mid_query_raises_then_the_pool_heals(db_name, monkeypatch):
    db = DictDB(db_name)
    t = db.create_table("t")
    _fill(t)
    want = t.select(where=t.name.contains("7"), order_by="-v", workers=1)
    # Armed only while the pool starts: its worker stops itself (SIGSTOP)
    # on receiving its part; this process is not armed (read at import).
    monkeypatch.setenv(PAUSE, TASK_POINT)
    outcome: list = []

    def query() -> None:
        try:
            outcome.append(t.select(where=t.name.contains("7"), order_by="-v", workers=2))
        except BaseException as exc:        # handed to the test below
            outcome.append(exc)
    runner = threading.Thread(target=query)
    runner.start()
    wait_until(lambda: pool.running(db_name) is not None and pool.running(db_name).pids()
               and process_state(pool.running(db_name).pids()[0]) == "T", 60,
               "the worker to stop inside the query")
    victim = pool.running(db_name).pids()[0]
    monkeypatch.delenv(PAUSE)
    os.kill(victim, signal.SIGKILL)
    runner.join(30)
    assert not runner.is_alive()
    assert isinstance(outcome[0], WorkerLostError) and isinstance(outcome[0], ParallelQueryError)
    assert str(victim) in str(outcome[0])
    assert pool.running(db_name) is None                    # ended, nothing left running
    t.insert({"id": 10**6, "name": "user777", "v": 12})      # the lock was released
    healed_rows = t.select(where=t.name.contains("7"), order_by="-v", workers=2)
    assert healed_rows == t.select(where=t.name.contains("7"), order_by="-v", workers=1)
    assert len(healed_rows) == len(want) + 1
    healed = pool.running(db_name).pids()
    assert healed and victim not in healed
    db.close()
    wait_until(lambda: all(_gone(p) for p in healed), 10, "the new worker to exit")


def test_script_without_main_guard_runs_once_and_its_workers_end_at_exit(db_name, tmp_path):
    script = tmp_path / "analysis.py"
    script.write_text(textwrap.dedent(f"""
        from dictdb_shm import DictDB
        from dictdb_shm.parallel import pool
        print("RAN", flush=True)
        db = DictDB({db_name!r})
        t = db.create_table("t", exist_ok=True)
        t.insert([{{"id": i, "name": f"n{{i}}"}} for i in range(2000)])
        assert t.select(where=t.name.contains("9"), workers=2) == \\
            t.select(where=t.name.contains("9"), workers=1)
        print("PIDS", *pool.running(db.name).pids(), flush=True)
    """))
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines.count("RAN") == 1, proc.stdout               # not run again in the worker
    pids = [int(p) for p in lines[-1].split()[1:]]
    assert len(pids) == 1
    wait_until(lambda: all(_gone(p) for p in pids), 10, "the worker to exit with its parent")


@pytest.mark.parametrize("how", ["SIGKILL"])
def test_workers_exit_when_their_parent_is_killed(db_name, spawn, how):
    db = DictDB(db_name)
    _fill(db.create_table("t"))
    w = spawn("parallel_query_then_wait", db_name, "t")
    pids = [int(p) for p in w.expect("RESULT").split()]
    assert pids and all(not _gone(p) for p in pids)
    os.kill(w.pid, signal.SIGKILL)
    wait_until(lambda: all(_gone(p) for p in pids), 10, "orphaned workers to exit")
    db.close()
