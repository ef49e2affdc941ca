"""Shared helpers of the benchmark-script tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
SRC = BENCH.parent / "src"


def _run_script(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``benchmarks/<script>`` in a fresh interpreter (the source tree on PYTHONPATH, one
    thread); fails the test with the end of its stderr when it exits non-zero."""
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                         text=True, env=env, timeout=timeout)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.fixture
def run_script():
    """:func:`_run_script`: ``run_script("fmnist_semi.py", "--smoke", ...)``."""
    return _run_script
