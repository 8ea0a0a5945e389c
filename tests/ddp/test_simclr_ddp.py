"""SimCLR trained by 2 gloo processes equals the single-process run on the global batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import RunScript

WORKER = Path(__file__).with_name("_simclr_ddp_worker.py")


@pytest.mark.ddp
def test_ddp_losses_and_weights_equal_single_process(tmp_path: Path, run_script: RunScript) -> None:
    run_script(WORKER, 1, tmp_path)
    run_script(WORKER, 2, tmp_path)
    single = torch.load(tmp_path / "devices1_rank0.pt")
    ranks = [torch.load(tmp_path / f"devices2_rank{r}.pt") for r in range(2)]
    assert len(single["losses"]) == 3
    for result in ranks:
        # mean of the ranks' shares of the loss = the global-batch loss, at every step
        assert result["losses"] == pytest.approx(single["losses"], rel=1e-12)
    for name, value in single["params"].items():
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name
        # three optimizer steps later the weights still agree: the gradients were the global ones
        torch.testing.assert_close(ranks[0]["params"][name], value, rtol=1e-9, atol=1e-12, msg=name)
