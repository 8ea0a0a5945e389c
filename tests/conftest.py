"""Shared test fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

RunScript = Callable[..., str]


@pytest.fixture
def run_script(tmp_path: Path) -> RunScript:
    """Run a Python script in a subprocess (cwd ``tmp_path``, one thread per process); return its stderr.

    Multi-process tests use it: Lightning's ``strategy="ddp"`` re-runs the script for every rank,
    which needs a real script, not a pytest function.
    """

    def run(script: Path, *args: object, timeout: float = 300) -> str:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
        proc = subprocess.run(
            [sys.executable, str(script), *map(str, args)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc.stderr

    return run
