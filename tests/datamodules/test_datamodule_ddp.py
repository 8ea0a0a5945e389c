"""Under real DDP (2 gloo processes) Lightning keeps our samplers; val covers each image exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import RunScript

from lightning_tl.augment import SimCLRViews
from lightning_tl.datamodules import DigitsDataModule, ResumableDataLoader, SeededSampler
from lightning_tl.datamodules.datasets import RawViewDataset

WORKER = Path(__file__).with_name("_datamodule_ddp_worker.py")


@pytest.mark.ddp
def test_digits_under_ddp(tmp_path: Path, run_script: RunScript) -> None:
    run_script(WORKER, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for result in ranks:
        assert result["samplers"] == {"train": "SeededSampler", "val": "UnpaddedDistributedSampler"}

    # validation: the two shards together are the single-process val split, each image once
    dm = DigitsDataModule(batch_size=32, views=SimCLRViews(), seed=0)
    val = dm.labelled_dataset("val")
    expected = sorted((round(float(x.sum()), 3), y) for x, y in (val[i] for i in range(len(val))))
    assert sorted(ranks[0]["val"] + ranks[1]["val"]) == expected

    # training: rank r gets exactly the batches of SeededSampler(num_replicas=2, rank=r), whose
    # views the datamodule makes on the device (digits default to on-device views)
    assert dm.device_views
    train = RawViewDataset(dm.splits()["train"])
    for rank, result in enumerate(ranks):
        sampler = SeededSampler(len(train), seed=0, drop_last=True, num_replicas=2, rank=rank)
        loader = ResumableDataLoader(train, batch_size=32, sampler=sampler, drop_last=True)
        for (v0, v1, y), raw in zip(result["train"], loader, strict=False):
            views, labels = dm.on_after_batch_transfer(raw, 0)
            assert torch.equal(v0, views[0]) and torch.equal(v1, views[1]) and torch.equal(y, labels)
        assert len(result["train"]) == 3
    # the ranks saw different images
    assert not torch.equal(ranks[0]["train"][0][2], ranks[1]["train"][0][2])
