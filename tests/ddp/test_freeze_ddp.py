"""FreezeSchedule on 2 gloo processes: ranks agree on the frozen state and parameters stay in sync."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import RunScript

WORKER = Path(__file__).with_name("_freeze_ddp_worker.py")


@pytest.mark.ddp
def test_gradual_unfreezing_under_ddp_keeps_ranks_in_sync(tmp_path: Path, run_script: RunScript) -> None:
    run_script(WORKER, "find_unused", tmp_path, timeout=240)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ranks[0]["losses"] != ranks[1]["losses"]  # each rank saw its own half of every batch
    assert ranks[0]["flags"] == ranks[1]["flags"] and len(ranks[0]["flags"]) == 8
    assert ranks[0]["history"] == ranks[1]["history"]
    assert [step for step, _, _ in ranks[0]["history"]] == [0, 2, 5]
    final = [r["final"] for r in ranks]
    for name, value in final[0].items():
        if "running" not in name and "num_batches" not in name:
            assert torch.equal(value, final[1][name]), name  # parameters in sync
    # (trained BN statistics are rank-local after the last forward: DDP broadcasts rank 0's before each)
    initial = ranks[0]["initial"]
    # backbone.0 never unfrozen: bit-identical on both ranks, BN statistics included; backbone.1: moved
    for result in final:
        assert all(torch.equal(result[k], initial[k]) for k in initial if k.startswith("backbone.0."))
    assert not torch.equal(final[0]["backbone.1.0.weight"], initial["backbone.1.0.weight"])


@pytest.mark.ddp
def test_bitfit_under_ddp_keeps_ranks_in_sync(tmp_path: Path, run_script: RunScript) -> None:
    """Biases of frozen groups train from the first step on both ranks; weights stay bit-identical."""
    run_script(WORKER, "bitfit", tmp_path, timeout=240)
    ranks = [torch.load(tmp_path / f"bitfit_rank{r}.pt") for r in range(2)]
    assert ranks[0]["flags"] == ranks[1]["flags"] and ranks[0]["history"] == ranks[1]["history"]
    final, initial = [r["final"] for r in ranks], ranks[0]["initial"]
    for name, value in final[0].items():
        if "running" not in name and "num_batches" not in name:  # (unfrozen groups' BN stats: rank-local)
            assert torch.equal(value, final[1][name]), name
    # backbone.0 never unfrozen: its conv and BN weights and BN statistics fixed, its biases moved
    fixed = [k for k in initial if k.startswith("backbone.0.") and not k.endswith("bias")]
    assert fixed and all(torch.equal(final[0][k], initial[k]) for k in fixed)
    for bias in ("backbone.0.0.bias", "backbone.0.1.bias"):
        assert not torch.equal(final[0][bias], initial[bias]), bias


@pytest.mark.ddp
def test_plain_ddp_without_find_unused_parameters_is_refused(tmp_path: Path, run_script: RunScript) -> None:
    run_script(WORKER, "plain", tmp_path, timeout=240)
    for rank in range(2):
        error = torch.load(tmp_path / f"plain_rank{rank}.pt")["error"]
        assert "ddp_find_unused_parameters_true" in error
