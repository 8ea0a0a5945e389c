"""MoCo trained by 2 gloo processes: identical queues on both ranks, equal to the single-process run;
shuffle-BN restores the original order."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import RunScript

WORKER = Path(__file__).with_name("_moco_ddp_worker.py")


@pytest.mark.ddp
def test_ddp_queue_losses_and_weights_equal_single_process(tmp_path: Path, run_script: RunScript) -> None:
    run_script(WORKER, 1, tmp_path)
    run_script(WORKER, 2, tmp_path)
    single = torch.load(tmp_path / "devices1_rank0.pt")
    ranks = [torch.load(tmp_path / f"devices2_rank{r}.pt") for r in range(2)]
    assert len(single["losses"]) == 4

    # both ranks hold the same queue, pointer and key head after every step (and key backbone after the last)
    assert any(k.startswith("key_backbone.") for k in ranks[0]["states"][-1])
    assert all(k.startswith(("queue.", "key_head.")) for k in ranks[0]["states"][0])
    for step, (a, b) in enumerate(zip(ranks[0]["states"], ranks[1]["states"], strict=True)):
        assert a.keys() == b.keys() and "queue.keys" in a
        for name in a:
            if "running_" in name or "num_batches" in name:
                continue  # per-rank BN statistics are made equal by DDP's buffer broadcast, not by us
            assert torch.equal(a[name], b[name]), (step, name)
    pointers = [int(s["queue.pointer"]) for s in ranks[0]["states"]]
    assert pointers == [16, 32, 8, 24]  # 16 keys a step into 40 slots: wraps mid-batch at step 3

    # ... and they equal the single process fed the same global batch: losses, queue, key encoder, weights
    for result in ranks:
        assert result["losses"] == pytest.approx(single["losses"], rel=1e-10)
    for step, (got, want) in enumerate(zip(ranks[0]["states"], single["states"], strict=True)):
        assert int(got["queue.pointer"]) == int(want["queue.pointer"])
        torch.testing.assert_close(
            got["queue.keys"], want["queue.keys"], rtol=1e-9, atol=1e-12, msg=str(step)
        )
        for name, value in want.items():
            if (
                name.startswith(("key_backbone.", "key_head."))
                and "running_" not in name
                and "num_b" not in name
            ):
                torch.testing.assert_close(got[name], value, rtol=1e-9, atol=1e-12, msg=f"{step} {name}")
    for name, value in single["params"].items():
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name
        torch.testing.assert_close(ranks[0]["params"][name], value, rtol=1e-9, atol=1e-12, msg=name)

    # shuffle-BN (run on uneven rows 3 + 5 in on_train_start) restores the original order
    shuffles = [r["shuffle"] for r in ranks]
    for s in shuffles:  # each rank gets back the encoding of its own rows, in its own order
        assert torch.equal(s["output"], 2 * s["input"] + 1)
    seen = torch.cat([s["seen"] for s in shuffles])
    every_row = torch.cat([s["input"] for s in shuffles])
    assert [len(s["seen"]) for s in shuffles] == [3, 5]  # each rank encodes as many rows as it gave
    # every row was encoded exactly once, and the encoder batches mixed rows of both ranks
    assert sorted(seen[:, 0].tolist()) == sorted(every_row[:, 0].tolist())
    assert any(not torch.equal(s["seen"].sort(0).values, s["input"]) for s in shuffles)
