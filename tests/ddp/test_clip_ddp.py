"""CLIP with strategy="ddp" on 2 gloo processes: training and zero-shot accuracy equal one process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import RunScript

WORKER = Path(__file__).with_name("_clip_ddp_worker.py")


@pytest.mark.ddp
def test_clip_ddp_equals_single_process(tmp_path: Path, run_script: RunScript) -> None:
    run_script(WORKER, 1, 1, tmp_path, timeout=240)
    run_script(WORKER, 2, 1, tmp_path, timeout=240)
    single = torch.load(tmp_path / "d1_l1_rank0.pt")
    ranks = [torch.load(tmp_path / f"d2_l1_rank{r}.pt") for r in range(2)]
    for name, value in single["text"].items():
        assert torch.equal(ranks[0]["text"][name], ranks[1]["text"][name])  # replicas stay in sync
        # the gathered (local-loss) contrastive gradients equal the global batch's
        torch.testing.assert_close(ranks[0]["text"][name], value, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ranks[0]["logit_scale"], single["logit_scale"], rtol=1e-5, atol=1e-6)
    for r in ranks:  # zero-shot counts are summed over the ranks' unpadded shards
        assert r["metrics"]["zero_shot_top1"] == pytest.approx(single["metrics"]["zero_shot_top1"], abs=1e-6)
        assert r["metrics"]["zero_shot_top5"] == pytest.approx(single["metrics"]["zero_shot_top5"], abs=1e-6)
