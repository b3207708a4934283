"""Handles opened before fork (gunicorn --preload, fork pools): they work in
the child, or fail with ForkedLockError; never a hang or a wrong result.

Each test forks with os.fork, talks to the child through pipes with a
deadline on every read, and ends the child with os._exit (it never returns
into pytest).  tests/test_pools.py does the same through multiprocessing
and concurrent.futures, tests/test_web.py through gunicorn."""

from __future__ import annotations

import json
import os
import select
import signal
import threading
import time
from typing import Any, Callable

import pytest

from dictdb_shm import DictDB, ForkedLockError, attachment
from dictdb_shm.errors import LockTimeoutError

WAIT = 30


class Forked:
    """A forked child running ``body(send, receive)``; its messages are JSON lines."""

    def __init__(self, body: Callable[[Callable[[Any], None], Callable[[], Any]], None]) -> None:
        up_r, up_w = os.pipe()
        down_r, down_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.close(up_r)
                os.close(down_w)
                body(lambda msg: os.write(up_w, json.dumps(msg).encode() + b"\n"),
                     lambda: _read_line(down_r))
                code = 0
            except BaseException as exc:  # report what went wrong, never return
                try:
                    os.write(up_w, json.dumps(["crashed", repr(exc)]).encode() + b"\n")
                except OSError:
                    pass
            finally:
                os._exit(code)
        os.close(up_w)
        os.close(down_r)
        self._up, self._down = up_r, down_w

    def receive(self) -> Any:
        return _read_line(self._up)

    def send(self, msg: Any) -> None:
        os.write(self._down, json.dumps(msg).encode() + b"\n")

    def wait(self) -> int:
        deadline = time.monotonic() + WAIT
        while True:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"forked child {self.pid} hung")
            time.sleep(0.01)

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass

    def close(self) -> None:
        self.kill()
        for fd in (self._up, self._down):
            try:
                os.close(fd)
            except OSError:
                pass


def _read_line(fd: int) -> Any:
    data = b""
    deadline = time.monotonic() + WAIT
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError("no message within the deadline")
        chunk = os.read(fd, 1)
        if not chunk:
            raise EOFError(f"pipe closed after {data!r}")
        data += chunk
    return json.loads(data)


@pytest.fixture
def forks():
    started: list[Forked] = []

    def start(body):
        f = Forked(body)
        started.append(f)
        return f
    yield start
    for f in started:
        f.close()


@pytest.fixture
def db(db_name):
    d = DictDB(db_name, lock_timeout=10)
    d.create_table("t")
    yield d
    d.close()


def test_handles_opened_before_fork_work_in_the_child(db, forks):
    t = db.get_table("t")
    c = db.cache("c")
    t.insert({"id": 1, "n": 1})
    c.set("k", 1)

    def child(send, receive):
        t.insert({"id": 2, "n": 2})                 # the parent's Table handle
        t.update({"n": 10}, where=t.id == 1)
        send([t.get(1), c.incr("k", 5), c.get("k")])
        # A coordinator request from the child (a fresh connection of its own).
        db.create_table("made_in_child").insert({"id": 1})
        send(sorted(db.list_tables()))

    f = forks(child)
    assert f.receive() == [{"id": 1, "n": 10}, 6, 6]
    assert f.receive() == ["made_in_child", "t"]
    assert f.wait() == 0
    assert t.get(2) == {"id": 2, "n": 2} and c.get("k") == 6
    assert db.get_table("made_in_child").get(1) == {"id": 1}


def test_mappings_follow_growth_on_either_side_of_the_fork(db, forks):
    """The parent grows the table after the fork (new segments): the child's
    inherited handle maps them; then the child grows it and the parent sees it."""
    t = db.get_table("t")
    t.insert({"id": 0, "pad": "x" * 100})

    def child(send, receive):
        receive()
        send([t.count(), t.get(4999)["pad"][:3]])
        t.insert([{"id": 10_000 + i, "pad": "y" * 100} for i in range(5000)])
        send("grown")

    f = forks(child)
    t.insert([{"id": i, "pad": "p" * 100} for i in range(1, 5000)])
    f.send("grown")
    assert f.receive() == [5000, "ppp"]
    assert f.receive() == "grown"
    assert f.wait() == 0
    assert t.count() == 10_000 and t.get(14_999)["pad"] == "y" * 100


def test_child_forked_inside_a_write_block_gets_forked_lock_error(db, forks):
    t = db.get_table("t")

    def child(send, receive):
        # Still inside the parent's `with` block, which this process does not hold.
        try:
            t.insert({"id": 1})
            send("inserted")
        except ForkedLockError as exc:
            send(["ForkedLockError", exc.table, exc.holder_pid])
        try:
            t.get(1)                                 # the parent is mid-write: a read waits
        except ForkedLockError:
            send("read refused")
        receive()                                    # the parent has left its block
        t.lock.release_write()                       # leaving the inherited block: no-op
        t.insert({"id": 2})
        send(t.get(2))

    with t.lock.write_lock():
        f = forks(child)
        assert f.receive() == ["ForkedLockError", "t", os.getpid()]
        assert f.receive() == "read refused"
        t.insert({"id": 3})                          # the parent's block still works
    f.send("go")
    assert f.receive() == {"id": 2}
    assert f.wait() == 0
    assert sorted(r["id"] for r in t.select()) == [2, 3]


def test_a_grandchild_forked_inside_the_inherited_block_is_refused_too(db, forks):
    t = db.get_table("t")

    def child(send, receive):
        def grandchild(send_up, _):
            try:
                t.insert({"id": 1})
                send_up("inserted")
            except ForkedLockError as exc:
                send_up(["refused", exc.holder_pid])
        g = Forked(grandchild)
        send(g.receive())
        send(g.wait())

    with t.lock.write_lock():
        f = forks(child)
        assert f.receive() == ["refused", os.getpid()]   # the writer: its grandparent
        assert f.receive() == 0
    assert f.wait() == 0 and t.count() == 0


def test_child_forked_inside_a_read_block_reads_but_cannot_write(db, forks):
    t = db.get_table("t")
    t.insert({"id": 1})

    def child(send, receive):
        with t.lock.read_lock():                     # a read lock of its own: fine
            got = t.get(1)
        try:
            t.insert({"id": 2})
            send("inserted")
        except ForkedLockError:
            send(["refused", got])
        t.lock.release_read()                        # leaves the inherited block
        t.insert({"id": 2})
        send("inserted after leaving")

    with t.lock.read_lock():
        f = forks(child)
        assert f.receive() == ["refused", {"id": 1}]
    assert f.receive() == "inserted after leaving"
    assert f.wait() == 0 and t.get(2) == {"id": 2}


def test_thread_locks_held_by_another_thread_at_fork_are_new_in_the_child(db, forks):
    """A parent's thread inside DictDB/attachment code at the fork holds an
    in-process lock; that thread does not exist in the child."""
    held = threading.Event()
    release = threading.Event()

    def holder():
        with attachment._registry_lock, db._mutex, db._att._mutex:
            held.set()
            release.wait(WAIT)

    th = threading.Thread(target=holder)
    th.start()
    try:
        assert held.wait(WAIT)

        def child(send, receive):
            other = DictDB.attach(db.name)           # the registry lock
            other.get_table("t").insert({"id": 7})   # the handle's and attachment's locks
            db.create_table("u")
            send(db.get_table("u").count())

        f = forks(child)
        assert f.receive() == 0
        assert f.wait() == 0
    finally:
        release.set()
        th.join(WAIT)
    assert db.get_table("t").get(7) == {"id": 7}


@pytest.mark.parametrize("kind", ["write", "read"])
def test_a_killed_child_leaves_no_lock_behind(db, forks, kind):
    """The child records itself (its own pid), not its parent, as the holder,
    so its death is seen: a timed-out acquire proves nothing stays stuck."""
    t = db.get_table("t")
    t.insert({"id": 1, "n": 0})

    def child(send, receive):
        if kind == "write":
            t.lock.acquire_write()
            t.update({"n": 1}, where=t.id == 1)
        else:
            t.lock.acquire_read()
        send("holding")
        time.sleep(WAIT)

    f = forks(child)
    assert f.receive() == "holding"
    if kind == "write":
        assert t.lock.holder()[0] == f.pid
    with pytest.raises(LockTimeoutError):
        t.lock.acquire_write(timeout=0.2)            # a live holder is never taken over
    f.kill()
    with t.lock.write_lock(timeout=2):
        assert t.get(1) == {"id": 1, "n": 1 if kind == "write" else 0}
