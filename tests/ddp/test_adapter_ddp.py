"""AdapterResNet on 2 gloo processes: each rank its own shard of every domain, adapters kept in sync."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import RunScript

WORKER = Path(__file__).with_name("_adapter_ddp_worker.py")


@pytest.mark.ddp
def test_multi_domain_adapters_under_ddp(tmp_path: Path, run_script: RunScript) -> None:
    run_script(WORKER, "mix", tmp_path, timeout=300)  # "alternate" works too (worker MODE)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # 64 images of "a" in batches of 8 over 2 ranks: 4 steps; "b" (32 images) starts over after 2
    assert [len(r["labels"]) for r in ranks] == [4, 4]
    seen = [sorted(x for step in r["labels"][:2] for x in step["b"]) for r in ranks]
    assert seen[0] != seen[1]  # each rank reads its own half of every domain
    initial, final = ranks[0]["initial"], [r["final"] for r in ranks]
    for name, value in final[0].items():
        if "running" in name or "num_batches" in name:
            continue  # BatchNorm statistics are rank-local (as in any DDP run without SyncBatchNorm)
        assert torch.equal(value, final[1][name]), name  # trained parameters in sync
        assert torch.equal(value, initial[name]) != ("domain_modules" in name), (
            name
        )  # only domain params move
