"""Process tools for the coordinator, names and security tests.

* ``spawn_paused``: conftest's ``spawn`` for workers armed with a crash point.
* ``coordinator_pid``, ``kill_coordinator``, ``wait_stopped``: find, kill and
  watch a database's coordinator.
* ``outcome``: a worker's ``RESULT``/``ERROR`` line from ``workers.attempt``.
* ``as_other_user``: run a function in a forked child under another uid and
  return what it returned (or the class and text of what it raised).
"""

from __future__ import annotations

import json
import os
import select
import signal
import traceback
from typing import Any, Callable

import pytest

from conftest import Worker, wait_until
from dictdb_shm.coordinator import client
from dictdb_shm.crashpoints import ENV as PAUSE
from dictdb_shm.engine.catalog import Catalog
from dictdb_shm.procinfo import is_alive

OTHER_UID = 65534


@pytest.fixture
def spawn_paused(request, monkeypatch) -> Callable[..., Worker]:
    """conftest's ``spawn``, whose workers (and the coordinators they start)
    stop themselves at crash point ``point``, a parameter of the test.  This
    process itself is not armed: the variable is set only while ``spawn``
    copies the environment."""
    monkeypatch.setenv(PAUSE, request.getfixturevalue("point"))
    start = request.getfixturevalue("spawn")
    monkeypatch.delenv(PAUSE)
    return start


def outcome(w: Worker, timeout: float = 60) -> tuple[str, str]:
    """("RESULT", "ok") or ("ERROR", "<class> <message>") from workers.attempt."""
    while True:
        line = w.read_line(timeout)
        if line != "READY":
            kind, _, rest = line.partition(" ")
            return kind, rest


def process_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return "gone"
    return data[data.rfind(b")") + 2:].split()[0].decode()


def coordinator_pid(db: str) -> int | None:
    """The live coordinator recorded in ``db``'s catalog header, if any."""
    cat = Catalog.attach(db, check_tables=False)
    try:
        pid, ticks = cat.coordinator()
    finally:
        cat.close()
    return pid if is_alive(pid, ticks) else None


def wait_stopped(db: str, timeout: float = 60) -> int:
    """The pid of ``db``'s coordinator once it has stopped itself (SIGSTOP)."""
    found: list[int] = []

    def stopped() -> bool:
        pid = coordinator_pid(db)
        if pid and process_state(pid) == "T":
            found.append(pid)
            return True
        return False

    wait_until(stopped, timeout, f"the coordinator of {db} to stop at its crash point")
    return found[-1]


def kill_coordinator(db: str, pid: int | None = None) -> None:
    pid = pid or coordinator_pid(db)
    assert pid, f"no coordinator runs for {db}"
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not client.coordinator_running(db), 30, "the coordinator to die")


def as_other_user(fn: Callable[[], Any], uid: int = OTHER_UID,
                  env: dict[str, str] | None = None, timeout: float = 60) -> dict:
    """Run ``fn`` in a forked child as ``uid``: {"value": ...} or
    {"error": class name, "text": str(exc), "is_permission": bool}."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.environ.update(env or {})
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                result = {"value": fn()}
            except BaseException as exc:
                result = {"error": type(exc).__name__, "text": str(exc),
                          "is_permission": isinstance(exc, PermissionError),
                          "trace": traceback.format_exc()}
            os.write(w, json.dumps(result, default=repr).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as f:
        while True:
            if not select.select([f], [], [], timeout)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise TimeoutError(f"the child as uid {uid} did not finish in {timeout} s")
            chunk = f.read1(65536)
            if not chunk:
                break
            chunks.append(chunk)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks) or b'{"error": "nothing"}')


needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root to act as another user")
