"""BYOL, SimSiam, Barlow Twins, VICReg and DINO trained by 2 gloo processes equal one process on the
global batch.

Exact where each method is defined on the global batch: the losses are per-image means (BYOL, SimSiam,
DINO) or take their batch statistics over every rank (Barlow Twins, VICReg with ``gather=True``), DINO's
centre is updated from the global batch, and the EMA teachers follow identical weights on every rank.
Per process by design: batch-norm statistics (backbone, heads, teachers), which the single-process
reference reproduces rank by rank (see the worker); SyncBatchNorm would make them global on GPUs. So the
running statistics differ between ranks (DDP re-broadcasts rank 0's to the students before each forward;
a teacher's are the EMA of its own rank's) and are left out of the comparison: only evaluation-mode
features of a teacher would see them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

WORKER = Path(__file__).with_name("_ssl_modules_ddp_worker.py")
METHODS = ["BYOL", "SimSiam", "BarlowTwins", "VICReg", "DINO"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the worker once in one process and once in two (all five methods each); load the results."""
    out = tmp_path_factory.mktemp("ssl_ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    for devices in (1, 2):
        proc = subprocess.run(
            [sys.executable, str(WORKER), str(devices), str(out)],
            env=env, cwd=out, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
    return {
        "single": torch.load(out / "devices1_rank0.pt"),
        "ranks": [torch.load(out / f"devices2_rank{r}.pt") for r in range(2)],
    }


@pytest.mark.ddp
@pytest.mark.parametrize("method", METHODS)
def test_ddp_equals_single_process_on_the_global_batch(runs: dict[str, Any], method: str) -> None:
    single = runs["single"][method]
    ranks = [r[method] for r in runs["ranks"]]
    assert len(single["losses"]) == 3
    for result in ranks:  # the loss synced over ranks = the global-batch loss, at every step
        assert result["losses"] == pytest.approx(single["losses"], rel=1e-10)
    # DINO's centre and the teachers: the same on both ranks and equal to the single process, every step
    for step, (a, b, want) in enumerate(
        zip(ranks[0]["states"], ranks[1]["states"], single["states"], strict=True)
    ):
        assert a.keys() == b.keys() == want.keys()
        for name in want:
            if "running_" in name or "num_batches" in name:
                continue  # batch-norm statistics: per rank by design (the teacher averages each rank's own)
            assert torch.equal(a[name], b[name]), (step, name)
            torch.testing.assert_close(a[name], want[name], rtol=1e-9, atol=1e-12, msg=f"{step} {name}")
    if method in ("BYOL", "DINO"):
        assert any(k.startswith("teacher_head.") for k in single["states"][0])
    if method == "DINO":
        assert not torch.equal(
            single["states"][0]["criterion.center"], single["states"][-1]["criterion.center"]
        )
    # three optimizer steps later the weights (student and teacher) still agree: the gradients were global
    assert ranks[0]["params"].keys() == single["params"].keys()
    for name, value in single["params"].items():
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name
        torch.testing.assert_close(ranks[0]["params"][name], value, rtol=1e-9, atol=1e-12, msg=name)
