"""Real gunicorn (4 sync workers) serving tests/webapp.py with the hooks of
dictdb_shm.contrib.gunicorn: without and with --preload, and recycling
workers with --max-requests 50.  2,000 requests from a bounded loopback
client give exact counts in the cache and in the table; a worker SIGKILLed
mid-request, holding a write lock and a read lock, leaves neither stuck
(checked by acquires that time out after 2 s)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

import gunicorn  # noqa: F401  (a test extra: pip install -e '.[test]')
import pytest

from conftest import ROOT, wait_until
from dictdb_shm import DictDB, LockTimeoutError, names

CONFIG = os.path.join(ROOT, "tests", "webapp_gunicorn.py")
REQUESTS, CLIENTS, TIMEOUT = 2000, 8, 10


class Server:
    """gunicorn on a loopback socket this test bound (passed as fd://)."""

    def __init__(self, db_name: str, *args: str, on_exit: str = "destroy") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.log = tempfile.TemporaryFile()
        env = dict(os.environ, WEBAPP_DB=db_name, WEBAPP_ON_EXIT=on_exit,
                   PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.path.join(ROOT, "tests"),
                                                          os.environ.get("PYTHONPATH")) if p))
        fd = self.sock.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", CONFIG, "-b", f"fd://{fd}", *args,
             "webapp:app"], pass_fds=(fd,), env=env, stdout=self.log, stderr=self.log,
            start_new_session=True)
        wait_until(self._answers, 60, "gunicorn to answer")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"gunicorn exited: {self.output()}")
        try:
            return self.get("/ping", timeout=2)[0] == 200
        except OSError:
            return False

    def get(self, path: str, timeout: float = TIMEOUT) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        finally:
            conn.close()

    def hits(self, n: int) -> list[dict]:
        """``n`` /hit requests from CLIENTS threads; each must succeed."""
        def one(_: int) -> dict:
            status, body = self.get("/hit")
            assert status == 200, body
            return body
        with ThreadPoolExecutor(CLIENTS) as ex:
            return list(ex.map(one, range(n), timeout=300))

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.sock.close()
        self.log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def serve(db_name):
    started: list[Server] = []

    def start(*args: str, **kw: str) -> Server:
        s = Server(db_name, *args, **kw)
        started.append(s)
        return s
    yield start
    for s in started:
        s.kill()
        s.stop()


def _exact(db_name: str, bodies: list[dict], total: int) -> set[int]:
    """Every counter value 1..total answered once; cache and table agree."""
    assert sorted(b["n"] for b in bodies) == list(range(total - len(bodies) + 1, total + 1))
    db = DictDB.attach(db_name)
    try:
        assert db.cache("hits").get("n") == total
        assert db.get_table("counts").get(1) == {"id": 1, "n": total}
    finally:
        db.close()
    return {b["pid"] for b in bodies}


@pytest.mark.slow
@pytest.mark.parametrize("args", [(), ("--preload",)], ids=["plain", "preload"])
def test_gunicorn_counts_are_exact_and_on_exit_runs(serve, db_name, args):
    on_exit = "keep" if not args else "destroy"
    server = serve(*args, on_exit=on_exit)
    pids = _exact(db_name, server.hits(REQUESTS), REQUESTS)
    assert 1 <= len(pids) <= 4
    server.stop()
    assert server.proc.returncode == 0, server.output()
    if on_exit == "destroy":
        assert names.shm_entries(db_name) == []
    else:
        kept = DictDB.attach(db_name)
        assert kept.get_table("counts").get(1)["n"] == REQUESTS
        kept.close()


@pytest.mark.slow
def test_gunicorn_max_requests_recycles_workers(serve, db_name):
    server = serve("--preload", "--max-requests", "50")
    pids = _exact(db_name, server.hits(REQUESTS), REQUESTS)
    assert len(pids) >= REQUESTS // 50            # no worker served more than 50
    server.stop()
    assert server.proc.returncode == 0, server.output()


@pytest.mark.slow
def test_worker_killed_mid_request_leaves_no_lock_stuck(serve, db_name):
    server = serve()
    db = DictDB.attach(db_name)
    counts, sessions = db.get_table("counts"), db.get_table("sessions")
    cache = db.cache("hits")
    failed = []

    def hold() -> None:
        try:
            server.get("/hold", timeout=60)
        except (OSError, http.client.HTTPException) as exc:   # the worker dies mid-request
            failed.append(exc)
    holder = threading.Thread(target=hold)
    holder.start()
    wait_until(lambda: cache.get("holder") is not None, 30, "a worker to take the locks")
    pid = cache.get("holder")
    with pytest.raises(LockTimeoutError):
        counts.lock.acquire_write(timeout=0.2)     # really held
    os.kill(pid, signal.SIGKILL)
    with counts.lock.write_lock(timeout=2), sessions.lock.write_lock(timeout=2):
        pass
    holder.join(60)
    assert failed and not holder.is_alive()
    _exact(db_name, server.hits(200), 200)          # the server goes on (a new worker)
    db.close()


def test_hooks_install_keep_the_configs_own_and_check_the_database(db_name):
    from dictdb_shm import DatabaseClosedError, InvalidArgumentError
    from dictdb_shm.contrib.gunicorn import DatabaseHooks
    calls = []
    namespace = {"on_starting": lambda server: calls.append("theirs"),
                 "on_exit": lambda server: calls.append("their exit")}
    hooks = DatabaseHooks(db_name, on_exit="keep",
                          setup=lambda db: calls.append(db.create_table("t", exist_ok=True)))
    hooks.install(namespace)
    namespace["on_starting"](None)
    assert calls[1:] == ["theirs"] and calls[0].table_name == "t"
    namespace["post_fork"](None, None)
    namespace["on_exit"](None)
    assert calls[-1] == "their exit"
    assert DictDB.attach(db_name).list_tables() == ["t"]          # kept
    destroying = DatabaseHooks(db_name)
    destroying.on_starting(None)
    DictDB.attach(db_name).destroy()                              # from outside
    with pytest.raises(DatabaseClosedError):
        destroying.post_fork(None, None)                          # a worker would not boot
    destroying.on_exit(None)                                      # nothing left to destroy
    with pytest.raises(InvalidArgumentError):
        DatabaseHooks(db_name, on_exit="later")
