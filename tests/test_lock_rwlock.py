"""The table lock: threads, reentrancy, upgrades and fork inside one
process; across processes, writers paused at the exact points where a
semaphore-based lock could be taken over, and handles of dropped tables."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time

import pytest

from conftest import wait_until
from dictdb_shm import DictDB, ForkedLockError, LockTimeoutError, LockUpgradeError, TableNotFoundError
from dictdb_shm.engine import layout as L


@pytest.fixture
def t(db_name):
    db = DictDB(db_name, lock_timeout=10)
    db.create_table("t")
    yield db.get_table("t")
    db.close()


def test_write_lock_is_reentrant_and_excludes_other_threads(t):
    events = []

    def other():
        t.insert({"id": 2})
        events.append("other wrote")

    with t._lock.write_lock():
        with t._lock.write_lock():
            t.insert({"id": 1})
        th = threading.Thread(target=other)
        th.start()
        th.join(0.3)
        assert th.is_alive() and events == []        # blocked behind our lock
        events.append("released")
    th.join(10)
    assert events == ["released", "other wrote"] and t.count() == 2


def test_readers_share_and_writers_wait(t):
    t.insert({"id": 1, "v": 0})
    inside = threading.Barrier(3, timeout=10)
    release = threading.Event()

    def reader():
        with t._lock.read_lock():
            inside.wait()
            release.wait(10)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for r in readers:
        r.start()
    inside.wait()                                     # two threads hold read locks at once
    done = threading.Event()
    writer = threading.Thread(target=lambda: (t.update({"v": 1}), done.set()))
    writer.start()
    assert not done.wait(0.3)                         # the writer waits for both readers
    late = []
    late_reader = threading.Thread(target=lambda: late.append(t.get(1)["v"]))
    late_reader.start()
    late_reader.join(0.3)
    assert late == []                                 # writer preference: new reads queue
    release.set()
    assert done.wait(10)
    for th in readers + [writer, late_reader]:
        th.join(10)
    assert late == [1] and t.get(1)["v"] == 1


def test_write_lock_blocks_readers_of_other_threads(t):
    t.insert({"id": 1, "v": "old"})
    seen = []
    with t._lock.write_lock():
        t.update({"v": "new"}, where=t.id == 1)
        th = threading.Thread(target=lambda: seen.append(t.get(1)["v"]))
        th.start()
        th.join(0.3)
        assert th.is_alive()
    th.join(10)
    assert seen == ["new"]


def test_upgrade_from_read_lock_is_refused(t):
    with t._lock.read_lock():
        with pytest.raises(LockUpgradeError):
            t.insert({"id": 1})
    t.insert({"id": 1})


def test_timeout_in_the_same_process(t):
    started = threading.Event()
    stop = threading.Event()

    def hold():
        with t._lock.write_lock():
            started.set()
            stop.wait(10)

    th = threading.Thread(target=hold)
    th.start()
    started.wait(10)
    with pytest.raises(LockTimeoutError) as info:
        t._lock.acquire_write(timeout=0.2)
    assert info.value.table == "t" and info.value.holder_pid == os.getpid()
    stop.set()
    th.join(10)


def test_forked_child_holds_nothing(t):
    t.insert({"id": 1})
    with t._lock.write_lock():
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                # The parent's block still holds the lock: the child must
                # neither re-enter nor wait (tests/test_fork.py has the rest).
                t._lock.acquire_write(timeout=0.3)
            except ForkedLockError:
                code = 0
            os._exit(code)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    pid = os.fork()
    if pid == 0:
        try:
            t.insert({"id": 2})
            os._exit(0 if t.get(2) == {"id": 2} else 1)
        except BaseException:
            os._exit(2)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        assert time.monotonic() < deadline, "forked writer hung"
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0 and t.get(2) == {"id": 2}


def test_reads_while_this_thread_writes_take_the_locked_path(t):
    """Inside write_lock() the table's seq is odd, so reads take the locked
    path; they must answer exactly like the lock-free one."""
    t.insert([{"id": i, "v": i} for i in range(10)])
    outside = (t.get(3), t.get([1]), t.get("x", "dflt"), t.select(where=t.v > 7), t.count())
    with t._lock.write_lock():
        inside = (t.get(3), t.get([1]), t.get("x", "dflt"), t.select(where=t.v > 7), t.count())
    assert inside == outside == ({"id": 3, "v": 3}, None, "dflt",
                                 [{"id": 8, "v": 8}, {"id": 9, "v": 9}], 10)


# ------------------------------------------ across processes: pauses and stale handles
def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return data[data.rfind(b")") + 2:].split()[0] == b"T"


@pytest.mark.parametrize("point", ["mutex_taken", "write_recorded"])
def test_a_paused_writer_is_never_taken_over(db_name, spawn, point):
    """A writer stopped right after taking the table (before or after it
    records itself) keeps it, however long the pause: another process times
    out instead of taking over, and both writes land once it resumes."""
    db = DictDB(db_name)
    t = db.create_table("t")
    paused = spawn("write_paused_at", db_name, "t", point)
    paused.expect("READY")
    wait_until(lambda: _stopped(paused.pid), 30, "the writer to stop itself")
    other = spawn("try_insert_with_timeout", db_name, "t", 2.5)
    result = json.loads(other.expect("RESULT", timeout=60))
    assert result["error"] is not None and "timed out" in result["error"], result
    assert t.count() == 0                       # nothing was written by anyone
    os.kill(paused.pid, signal.SIGCONT)
    paused.expect("RESULT", timeout=60)
    again = spawn("try_insert_with_timeout", db_name, "t", 10)
    assert json.loads(again.expect("RESULT", timeout=60)) == {"error": None}
    assert sorted(r["id"] for r in t.all() if isinstance(r["id"], str)) == ["paused"]
    assert t.count() == 2
    db.close()


def test_pausing_writers_at_random_loses_no_update(db_name, spawn):
    """Two processes increment one counter under write_lock(); one is paused
    (SIGSTOP) for longer than any grace period, at random moments, again and
    again.  Mutual exclusion means every increment counts."""
    db = DictDB(db_name, lock_timeout=60)
    t = db.create_table("c", primary_key="key")
    t.insert({"key": "counter", "value": 0})
    workers = [spawn("slow_increments", db_name, "c", 150, 2) for _ in range(2)]
    for w in workers:
        w.expect("READY")
    rng = random.Random(6)
    for _ in range(4):
        time.sleep(rng.uniform(0.05, 0.2))
        victim = rng.choice(workers)
        if victim.proc.poll() is not None:
            continue
        os.kill(victim.pid, signal.SIGSTOP)
        time.sleep(1.3)
        os.kill(victim.pid, signal.SIGCONT)
    for w in workers:
        w.expect("RESULT", timeout=120)
    assert t.get("counter")["value"] == 300
    db.close()


def test_a_handle_of_a_dropped_table_never_touches_the_table_in_its_slot(db_name, spawn):
    db = DictDB(db_name)
    tx = db.create_table("x")
    tx.insert({"id": 1})
    db.drop_table("x")
    ty = db.create_table("y")
    assert ty._store._base == tx._store._base        # the slot was reused
    holder = spawn("hold_lock", db_name, "y", "write")
    holder.expect("READY")
    words = L.words(db._att.catalog.buf)
    seq_w = ty._store._seq_w
    before = (words[seq_w], ty.lock.holder())
    for stale in (lambda: tx.get(1), lambda: tx.insert({"id": 2}), lambda: tx.count(),
                  lambda: tx.select(), lambda: tx.lock.acquire_write(timeout=1)):
        with pytest.raises(TableNotFoundError):
            stale()
    assert (words[seq_w], ty.lock.holder()) == before
    words.release()
    other = spawn("try_insert_with_timeout", db_name, "y", 2.5)
    result = json.loads(other.expect("RESULT", timeout=60))
    assert result["holder"] == holder.pid, result       # still y's one writer
    holder.kill()
    assert ty.insert({"id": 3}) == 3 and ty.count() == 1
    db.close()
