"""The ``dictdb-shm`` command: every command against real databases and
processes, exit status 0 or 1 with one line on stderr (never a traceback),
progress bars only on a terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios

import pytest

from conftest import ROOT, wait_until
from dictdb_shm import DictDB
from dictdb_shm.coordinator import client

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dictdb_shm", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=ENV)


def user_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 1, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dictdb-shm: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture
def shop(db_name):
    db = DictDB(db_name)
    db.create_table("users")
    users = db.get_table("users")
    users.insert([{"name": f"u{i}", "age": i} for i in range(30)])
    users.create_index("age", "sorted")
    yield db
    db.close()


def test_ls_lists_the_database(shop):
    proc = cli("ls")
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.split()[0] == shop.name)
    assert "named" in line and " 1 " in f" {line} "


def test_stat_names_tables_lock_holders_and_attached_processes(shop, spawn):
    proc = cli("stat", shop.name)
    assert proc.returncode == 0, proc.stderr
    row = next(ln for ln in proc.stdout.splitlines() if ln.startswith("users"))
    assert " 30 " in row and "age:sorted" in row
    holder = spawn("hold_lock", shop.name, "users", "write")
    holder.expect("READY")
    proc = cli("stat", shop.name)                # a held table does not block stat
    assert proc.returncode == 0, proc.stderr
    row = next(ln for ln in proc.stdout.splitlines() if ln.startswith("users"))
    assert " 30 " in row and f"writer {holder.pid}" in row
    assert "python" in row                       # psutil named the holder
    attached = proc.stdout.split("attached processes:")[1]
    assert str(os.getpid()) in attached and str(holder.pid) in attached


def test_dump_load_and_backup(shop, tmp_path, db_name):
    for fmt in ("json", "pickle"):
        path = tmp_path / f"d.{fmt}"
        proc = cli("dump", shop.name, path, "--format", fmt)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr   # no bar: not a tty
        copy = f"{db_name}-{fmt}"
        try:
            assert cli("load", path, copy, "--format", fmt).returncode == 0
            assert DictDB.attach(copy).get_table("users").count() == 30
            user_error(cli("load", path, copy, "--format", fmt), "already exists")
        finally:
            client.destroy(copy)
    proc = cli("backup", shop.name, tmp_path / "bk")
    assert proc.returncode == 0, proc.stderr
    made = proc.stdout.strip()
    assert os.path.basename(made).startswith("dictdb_backup_") and made.endswith(".json")
    assert len(json.load(open(made))["tables"]["users"]["records"]) == 30


def test_user_errors_are_one_line(tmp_path):
    user_error(cli("stat", "no-such-db-here"), "no-such-db-here")
    user_error(cli("destroy", "no-such-db-here"), "no-such-db-here")
    user_error(cli("dump", "bad/name", tmp_path / "x"), "invalid database name")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    user_error(cli("load", bad, "loaded-from-bad"), str(bad))
    user_error(cli("load", tmp_path / "missing.json", "loaded-from-missing"), "missing.json")
    proc = cli("frobnicate")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr      # argparse's usage


def test_destroy_says_what_goes(shop):
    proc = cli("destroy", shop.name)
    assert proc.returncode == 0, proc.stderr
    assert "no path" in proc.stderr and "1 tables" in proc.stderr
    assert not client.catalog_exists(shop.name)


def test_serve_runs_a_durable_database_in_the_foreground(db_name, tmp_path):
    data = tmp_path / "data"
    serve = subprocess.Popen([sys.executable, "-m", "dictdb_shm", "serve", db_name, "--path",
                              str(data), "--durability", "always"], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: client.coordinator_running(db_name), 60, "serve to start")
        user_error(cli("serve", db_name), "already has a coordinator")
        db = DictDB.attach(db_name)                  # no path needed to attach
        db.create_table("t")
        db.get_table("t").insert({"kept": True})
        db.close()
        serve.send_signal(signal.SIGTERM)            # keeps the data: it has a path
        assert serve.wait(timeout=60) == 0
        log = serve.stderr.read().decode()
        assert "serving" in log                      # logging goes to stderr
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(timeout=30)
        serve.stderr.close()
    assert not client.catalog_exists(db_name)
    db = DictDB(db_name, path=data, durability="always")
    assert db.get_table("t").all() == [{"kept": True, "id": 1}]
    db.close()


def test_progress_bars_on_a_terminal(shop, tmp_path):
    master, slave = pty.openpty()
    # A fresh pty is 0 columns wide, which tqdm fills with nothing: make it 80.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "dictdb_shm", "dump", shop.name,
                                 str(tmp_path / "p.json")], env=ENV, stdout=subprocess.DEVNULL,
                                stderr=slave)
        os.close(slave)
        out = b""
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:              # the terminal closed with the process
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(master)
    assert b"dump" in out and b"rows" in out


def test_the_console_script_is_installed():
    script = os.path.join(os.path.dirname(sys.executable), "dictdb-shm")
    if not os.path.exists(script):
        pytest.skip("the package is not installed in this interpreter's environment")
    proc = subprocess.run([script, "ls"], capture_output=True, text=True, timeout=60, env=ENV)
    assert proc.returncode == 0 and "NAME" in proc.stdout
