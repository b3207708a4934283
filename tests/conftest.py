"""Test infrastructure shared by every test module.

* ``db_name``: a fresh database name; the database is destroyed after the
  test whether it passed or not, and nothing of it may stay in /dev/shm.
* ``table``: an empty table "t" in such a database.
* ``spawn``: start ``tests/workers.py SCENARIO ARGS`` as an unrelated process
  (a new interpreter, not a fork); every wait on it has a timeout, and it is
  SIGKILLed at teardown if still running.
* A hang guard: a test running longer than HANG_GUARD seconds dumps every
  thread's stack and ends the run, so a deadlock fails CI instead of hanging it.
"""

from __future__ import annotations

import faulthandler
import itertools
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Iterator

import pytest

from dictdb_shm import names
from dictdb_shm.coordinator import client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKERS = os.path.join(ROOT, "tests", "workers.py")
HANG_GUARD = 300
_counter = itertools.count()
RUN_TAG = f"t{os.getpid()}x{secrets.token_hex(2)}"


@pytest.fixture(autouse=True)
def hang_guard() -> Iterator[None]:
    faulthandler.dump_traceback_later(HANG_GUARD, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def new_db_name() -> str:
    return f"{RUN_TAG}-{next(_counter)}"


@pytest.fixture
def db_name() -> Iterator[str]:
    name = new_db_name()
    try:
        yield name
    finally:
        client.destroy(name)
        assert names.shm_entries(name) == [], "destroy() left objects in /dev/shm"


@pytest.fixture
def table(db_name: str) -> Iterator:
    """An empty table "t" (primary key "id") in a fresh named database."""
    from dictdb_shm import DictDB
    db = DictDB(db_name)
    db.create_table("t")
    yield db.get_table("t")
    db.close()


class Worker:
    """A running ``tests/workers.py`` process and its stdout lines."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.pid = proc.pid
        self._buf = b""
        self.lines: list[str] = []

    def read_line(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"worker {self.pid} printed nothing for {timeout} s")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)  # type: ignore[union-attr]
                if not chunk:
                    raise EOFError(f"worker {self.pid} exited ({self.proc.wait(5)}): "
                                   f"{self._buf.decode()!r} {self.stderr()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        text = line.decode()
        self.lines.append(text)
        return text

    def expect(self, prefix: str, timeout: float = 60) -> str:
        line = self.read_line(timeout)
        assert line.startswith(prefix), f"worker {self.pid} said {line!r}, expected {prefix!r}"
        return line[len(prefix):].strip()

    def finish(self, timeout: float = 120) -> str:
        """Wait for exit 0 and return the rest of stdout."""
        out, err = self.proc.communicate(timeout=timeout)
        rest = (self._buf + out).decode()
        assert self.proc.returncode == 0, f"worker {self.pid} failed: {err.decode()}"
        return rest

    def send(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stderr(self) -> str:
        try:
            return self.proc.stderr.read().decode()  # type: ignore[union-attr]
        except Exception:
            return ""


def spawner(script: str) -> Iterator:
    """Start ``script scenario args...`` workers; kill and close them all at
    the end (the body of the ``spawn`` fixtures)."""
    started: list[Worker] = []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)

    def start(scenario: str, *args: object) -> Worker:
        proc = subprocess.Popen([sys.executable, script, scenario, *map(str, args)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env,
                                start_new_session=True)
        w = Worker(proc)
        started.append(w)
        return w

    yield start
    for w in started:
        w.kill()
        for stream in (w.proc.stdin, w.proc.stdout, w.proc.stderr):
            if stream:
                stream.close()


@pytest.fixture
def spawn() -> Iterator:
    yield from spawner(WORKERS)


needs_private_shm = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"),
    reason="needs root and unshare for a private, small /dev/shm")


def run_with_small_shm(script: str, size: str, timeout: float = 300) -> dict:
    """Run the Python ``script`` in a private mount namespace whose /dev/shm
    is a tmpfs of ``size`` (``"1m"``, ``"100m"``), with a runtime directory of
    its own, and return the JSON object it prints last.  The real /dev/shm
    is untouched; whatever the script leaves goes with the namespace."""
    runtime = tempfile.mkdtemp(prefix="dictdb_rt_")
    env = dict(os.environ, DICTDB_SHM_RUNTIME_DIR=runtime, DICTDB_SHM_START_TIMEOUT="600",
               PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    try:
        proc = subprocess.run(
            ["unshare", "-m", "sh", "-c",
             f'mount --make-rprivate / && mount -t tmpfs -o size={size} tmpfs /dev/shm '
             '&& exec "$0" -c "$1"', sys.executable, script],
            env=env, capture_output=True, timeout=timeout)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove and report anything this run left in /dev/shm."""
    leaked = [n for n in os.listdir(names.SHM_DIR) if RUN_TAG in n]
    for entry in leaked:
        db = entry.split("dictdb_", 1)[1].split(".", 1)[0]
        client.destroy(db)
    if leaked:
        print(f"\nLEAK: tests left {leaked} in /dev/shm", file=sys.stderr)
        session.exitstatus = 1
