"""A run stopped at step k and resumed from its checkpoint sees the batches of an uninterrupted run."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_tl.augment import SimCLRViews
from lightning_tl.datamodules import DigitsDataModule


class RecordBatches(L.LightningModule):
    """Records a fingerprint of every training batch; the model itself does not matter."""

    def __init__(self, estimate_steps: bool) -> None:
        super().__init__()
        self.estimate_steps = estimate_steps
        self.layer = torch.nn.Linear(1, 1)
        self.seen: list[tuple[int, int, float, float, int]] = []

    def training_step(self, batch: list, batch_idx: int) -> torch.Tensor:
        views, y = batch
        self.seen.append(
            (self.current_epoch, batch_idx, float(views[0].sum()), float(views[1].sum()), int(y.sum()))
        )
        return self.layer(torch.ones(1, 1)).sum() * 0.0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.estimate_steps:  # as warmup-cosine schedules do; Lightning then skips loading
            assert self.trainer.estimated_stepping_batches > 0  # dataloader states (issue #20550)
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(
    tmp_path: Path,
    num_workers: int,
    limit: int | None,
    estimate: bool = False,
    stop: int | None = None,
    ckpt: str | None = None,
    on_device: bool = True,
) -> list:
    model = RecordBatches(estimate)
    callbacks = []
    if stop is not None:
        callbacks.append(
            ModelCheckpoint(tmp_path, filename="{step}", every_n_train_steps=stop, save_top_k=-1)
        )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        max_steps=stop if stop is not None else -1,
        limit_train_batches=limit,
        limit_val_batches=0,
        callbacks=callbacks,
        enable_checkpointing=stop is not None,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = DigitsDataModule(
        batch_size=128, views=SimCLRViews(on_device=on_device), num_workers=num_workers, seed=1
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, data, ckpt_path=ckpt)
    # Lightning recognises the loader as resumable (it warns about mid-epoch checkpoints otherwise)
    assert not [w for w in caught if "dataloader is not resumable" in str(w.message)]
    return model.seen


_FULL_RUNS: dict[tuple[int | None, bool], list] = {}


@pytest.mark.parametrize(
    ("num_workers", "limit", "stop", "estimate", "on_device"),
    [
        (0, None, 4, False, True),  # mid-epoch (9 batches per epoch): Lightning restores the loader
        (0, None, 4, True, True),  # same, but the loader state comes back through the datamodule
        (2, None, 13, True, True),  # mid-epoch, second epoch, worker processes
        (2, None, 9, False, True),  # end of epoch, worker processes
        (0, 5, 5, True, True),  # end of a shortened epoch (limit_train_batches)
        (2, None, 13, True, False),  # per-sample views in the workers
    ],
)
def test_resume_sees_the_same_batches(
    tmp_path: Path, num_workers: int, limit: int | None, stop: int, estimate: bool, on_device: bool
) -> None:
    key = (limit, on_device)
    if key not in _FULL_RUNS:  # batches do not depend on num_workers: one reference run per limit
        _FULL_RUNS[key] = _fit(tmp_path, 0, limit, on_device=on_device)
    full = _FULL_RUNS[key]
    head = _fit(tmp_path, num_workers, limit, estimate, stop=stop, on_device=on_device)
    ckpt = str(tmp_path / f"step={stop}.ckpt")
    tail = _fit(tmp_path, num_workers, limit, estimate, ckpt=ckpt, on_device=on_device)
    assert len(head) == stop
    assert head + tail == full


@pytest.mark.parametrize("on_device", [True, False])
def test_datamodule_state_round_trip(on_device: bool) -> None:
    data = DigitsDataModule(batch_size=128, views=SimCLRViews(on_device=on_device), seed=1)
    loader = data.train_dataloader()
    loader.sampler.set_epoch(1)
    batches = [data.on_after_batch_transfer(batch, 0)[0][0] for batch in loader]
    it = iter(loader)
    next(it), next(it)
    state = data.state_dict()
    assert state["train_loader"]["batches"] == 2 and state["train_loader"]["epoch"] == 1
    resumed = DigitsDataModule(batch_size=128, views=SimCLRViews(on_device=on_device), seed=1)
    resumed.load_state_dict(state)  # before the loader exists: applied when it is created
    rest = [resumed.on_after_batch_transfer(batch, 0)[0][0] for batch in resumed.train_dataloader()]
    assert len(rest) == len(batches) - 2
    assert all(torch.equal(a, b) for a, b in zip(rest, batches[2:], strict=True))
    assert DigitsDataModule().state_dict() == {}
