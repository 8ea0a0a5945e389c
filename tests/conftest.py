"""Shared test fixtures.

Every test runs against fresh, empty hub caches and offline: at import of this file (before anything
imports huggingface_hub, which reads these variables once) HF_HOME / HF_HUB_CACHE / TORCH_HOME point
into a temporary folder and HF_HUB_OFFLINE=1, so no test reaches the network or a real cache. Tests
fill these caches with weights they create (``tests/hub_cache.py``); subprocesses inherit them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

_CACHES = Path(tempfile.mkdtemp(prefix="lightning-tl-test-caches-"))
atexit.register(shutil.rmtree, _CACHES, ignore_errors=True)
os.environ["HF_HOME"] = str(_CACHES / "hf")
os.environ["HF_HUB_CACHE"] = str(_CACHES / "hf" / "hub")
os.environ["TORCH_HOME"] = str(_CACHES / "torch")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("HUGGINGFACE_HUB_CACHE", None)
if "huggingface_hub" in sys.modules:  # imported by a plugin first: point its constants here too
    from huggingface_hub import constants as _hf_constants

    _hf_constants.HF_HOME = os.environ["HF_HOME"]
    _hf_constants.HF_HUB_CACHE = os.environ["HF_HUB_CACHE"]
    _hf_constants.HF_HUB_OFFLINE = True

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
