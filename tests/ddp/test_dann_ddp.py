"""DANN on 2 gloo processes (strategy="ddp") equals the single-process run on the global batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import RunScript

WORKER = Path(__file__).with_name("_dann_ddp_worker.py")


@pytest.mark.ddp
def test_dann_under_ddp_equals_single_process(tmp_path: Path, run_script: RunScript) -> None:
    run_script(WORKER, 1, tmp_path, timeout=240)
    run_script(WORKER, 2, tmp_path, timeout=240)
    single = torch.load(tmp_path / "devices1_rank0.pt")
    ranks = [torch.load(tmp_path / f"devices2_rank{r}.pt") for r in range(2)]
    assert set(single["metrics"]) == {"val_source_acc", "val_target_acc", "val_domain_acc"}
    for result in ranks:
        # weights: the same global batches, the mean gradient over ranks = the global-batch gradient
        for name, value in single["state"].items():
            torch.testing.assert_close(result["state"][name], value, rtol=0, atol=1e-5, msg=name)
        assert result["coeff"] == single["coeff"]  # the schedule counts global optimizer steps
        # validation shards every index to one rank; the metrics are synced over ranks
        assert result["metrics"] == pytest.approx(single["metrics"], abs=1e-6)
