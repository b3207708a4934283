"""Every ```python block of docs/usage.md, docs/workers.md and README.md
runs, in a fresh interpreter.  README's example names its database "shop":
the test runs it on a fresh database name instead, destroyed afterwards.
docs/workers.md's blocks run as script files (pools with the spawn start
method re-import the main module by its path); its ```py blocks (files of a
gunicorn recipe, which tests/test_web.py runs for real) must compile."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "usage.md")
README = os.path.join(ROOT, "README.md")
BLOCKS = re.findall(r"```python\n(.*?)```", open(DOC).read(), re.S)
README_BLOCKS = re.findall(r"```python\n(.*?)```", open(README).read(), re.S)
WORKERS_DOC = os.path.join(ROOT, "docs", "workers.md")
WORKERS_BLOCKS = re.findall(r"```python\n(.*?)```", open(WORKERS_DOC).read(), re.S)
WORKERS_FILES = re.findall(r"```py\n(.*?)```", open(WORKERS_DOC).read(), re.S)


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)


def test_docs_have_examples():
    assert len(BLOCKS) >= 5 and len(WORKERS_BLOCKS) >= 4 and len(WORKERS_FILES) >= 2


@pytest.mark.parametrize("n", range(len(BLOCKS)))
def test_doc_example_runs(n):
    proc = _run(BLOCKS[n])
    assert proc.returncode == 0, f"example {n} failed:\n{BLOCKS[n]}\n{proc.stderr}"


@pytest.mark.parametrize("n", range(len(README_BLOCKS)))
def test_readme_example_runs(n, db_name):
    assert '"shop"' in README_BLOCKS[n], "README examples use the database name \"shop\""
    code = README_BLOCKS[n].replace('"shop"', repr(db_name))
    proc = _run(code)
    assert proc.returncode == 0, f"README example {n} failed:\n{code}\n{proc.stderr}"


@pytest.mark.parametrize("n", range(len(WORKERS_BLOCKS)))
def test_workers_doc_example_runs(n, tmp_path):
    script = tmp_path / f"workers_example_{n}.py"
    script.write_text(WORKERS_BLOCKS[n])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, f"example {n} failed:\n{WORKERS_BLOCKS[n]}\n{proc.stderr}"


@pytest.mark.parametrize("n", range(len(WORKERS_FILES)))
def test_workers_doc_recipe_files_compile(n):
    compile(WORKERS_FILES[n], f"docs/workers.md recipe file {n}", "exec")
