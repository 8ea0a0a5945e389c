"""KNNMonitor and OnlineLinearProbe on 2 gloo processes (strategy="ddp") equal the single-process run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import RunScript

WORKER = Path(__file__).with_name("_callbacks_ddp_worker.py")


@pytest.mark.ddp
def test_knn_and_probe_under_ddp_equal_single_process(tmp_path: Path, run_script: RunScript) -> None:
    run_script(WORKER, 1, tmp_path, timeout=180)
    ddp_log = run_script(WORKER, 2, tmp_path, timeout=180)
    single = torch.load(tmp_path / "devices1_rank0.pt")
    ranks = [torch.load(tmp_path / f"devices2_rank{r}.pt") for r in range(2)]

    # kNN: the bank is gathered back into data-set order and counts are summed -> exactly equal
    assert [epoch for epoch, _ in single["knn_history"]] == [-1, 0, 1]
    for result in ranks:
        assert result["knn_history"] == single["knn_history"]

    # probe: both ranks stepped on the gathered global batch -> identical probes on the two ranks
    for name in single["probe"]:
        assert torch.equal(ranks[0]["probe"][name], ranks[1]["probe"][name])
    # ... equal to the single-process probe up to the summation order of the batch mean
    for name in single["probe"]:
        torch.testing.assert_close(ranks[0]["probe"][name], single["probe"][name], rtol=0, atol=1e-5)
    for ours, theirs in zip(ranks[0]["momentum"], single["momentum"], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    for result in ranks:
        assert result["probe_val_acc"] == single["probe_val_acc"]
        assert result["probe_val_top5"] == single["probe_val_top5"]
    assert single["probe_val_acc"] > 0.5

    # epoch-level logging of rank-identical values is synced (exactly), so Lightning does not warn
    assert "sync_dist=True" not in ddp_log
