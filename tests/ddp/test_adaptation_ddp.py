"""DANN, CDAN and MCC on 2 gloo processes (strategy="ddp").

DANN's and CDAN's losses are per example: the DDP run equals the single-process run on the global batch
(the same global batches; the mean gradient over ranks is the global-batch gradient; the reversal
schedule counts global optimizer steps; validation metrics are synced over ranks). CDAN+E's weight
normalisation and MCC's class-confusion matrix are statistics of each rank's batch (the papers define
them per mini-batch): the DDP run equals one process that computes those terms on each rank's half of
the global batch and averages them (DDP averages the per-rank gradients), and differs from the
global-batch run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import RunScript

WORKER = Path(__file__).with_name("_adaptation_ddp_worker.py")


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.mark.ddp
@pytest.mark.parametrize(
    ("method", "reference"), [("dann", "global"), ("cdan", "global"), ("mcc_cdan_e", "per_rank")]
)
def test_ddp_equals_single_process_with_per_rank_batch_terms(
    method: str, reference: str, tmp_path: Path, run_script: RunScript
) -> None:
    run_script(WORKER, method, reference, 1, tmp_path, timeout=240)
    run_script(WORKER, method, "global", 2, tmp_path, timeout=240)
    single = torch.load(tmp_path / f"{method}_{reference}_devices1_rank0.pt")
    ranks = [torch.load(tmp_path / f"{method}_global_devices2_rank{r}.pt") for r in range(2)]
    assert set(single["metrics"]) == {"val_source_acc", "val_target_acc", "val_domain_acc"}
    for result in ranks:
        for name, value in single["state"].items():  # weights, and the randomized map's fixed matrices
            torch.testing.assert_close(result["state"][name], value, rtol=0, atol=1e-6, msg=name)
        assert result["coeff"] == single["coeff"]
        assert result["metrics"] == pytest.approx(single["metrics"], abs=1e-6)
    if method == "mcc_cdan_e":
        assert "multilinear_map.random_features" in single["state"]
        run_script(WORKER, method, "global", 1, tmp_path, timeout=240)
        whole = torch.load(tmp_path / f"{method}_global_devices1_rank0.pt")
        assert _max_difference(whole["state"], single["state"]) > 2e-5  # the batch terms are per rank (2e-4)
