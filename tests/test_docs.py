"""Every ```python block of docs/usage.md runs, in a fresh interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "usage.md")
BLOCKS = re.findall(r"```python\n(.*?)```", open(DOC).read(), re.S)


def test_docs_have_examples():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("n", range(len(BLOCKS)))
def test_doc_example_runs(n):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", BLOCKS[n]], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, f"example {n} failed:\n{BLOCKS[n]}\n{proc.stderr}"
