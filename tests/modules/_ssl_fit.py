"""Shared pieces of the SSL module tests: tiny backbone, digits views, trainer, step recorder, resume."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lightning_tl.augment import SimCLRViews
from lightning_tl.datamodules import DigitsDataModule

#: A quarter-width timm ResNet-18 stem and stages (8-16 channels, 28k parameters) on 1-channel digits.
TINY: dict[str, Any] = {
    "backbone": "timm/resnet18",
    "backbone_kwargs": {"channels": [8, 8, 16, 16]},
    "in_channels": 1,
}


class Recorder(L.Callback):
    """After every training step: the loss, the logged metrics named in ``metrics`` and the state entries
    whose names start with one of ``keep``."""

    def __init__(self, keep: tuple[str, ...] = (), metrics: tuple[str, ...] = ()) -> None:
        self.keep, self.metrics = keep, metrics
        self.losses: list[float] = []
        self.logged: list[dict[str, float]] = []
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        self.losses.append(outputs["loss"].item())
        self.logged.append({k: float(trainer.callback_metrics[k]) for k in self.metrics})
        state = module.state_dict()
        self.states.append({k: v.detach().clone() for k, v in state.items() if k.startswith(self.keep)})


def data(**kwargs: Any) -> DigitsDataModule:
    """Digits at 16 px in batches of 16, two SimCLR views (crops of 40-100% of the area) unless ``views``."""
    return DigitsDataModule(
        **{"batch_size": 16, "image_size": 16, "views": SimCLRViews(crop_scale=(0.4, 1.0)), **kwargs}
    )


def trainer(tmp_path: Path, callbacks: list[L.Callback], **kwargs: Any) -> L.Trainer:
    return L.Trainer(
        **{
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": 2,
            "limit_train_batches": 3,
            "limit_val_batches": 0,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": tmp_path,
            "callbacks": callbacks,
            **kwargs,
        }
    )


def views(
    n: int = 8, sizes: tuple[int, ...] = (16, 16), seed: int = 0
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """A hand-made batch ``(views, labels)``: one (n, 1, s, s) view per entry of ``sizes``."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 1, s, s, generator=gen) for s in sizes], torch.arange(n) % 10


def checked_step(model: L.LightningModule, n: int = 8) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One training step on ``views(n)``, checked against the contract of the SSL modules' steps: a scalar
    loss with a graph, the first view's features (n, F) detached and the labels. Returns the output and
    the batch's two views concatenated (2n, 1, 16, 16), for the test's own reference loss."""
    (v1, v2), labels = views(n)
    out: Any = model.training_step(([v1, v2], labels), 0)
    assert out["loss"].ndim == 0 and out["loss"].requires_grad
    width = model.backbone.num_features  # type: ignore[union-attr]
    assert out["features"].shape == (n, width) and not out["features"].requires_grad
    assert torch.equal(out["labels"], labels)
    return out, torch.cat([v1, v2])


def assert_learns(model: L.LightningModule, tmp_path: Path, trained: L.LightningModule) -> None:
    """``model``'s loss falls by 20% in 8 Adam steps on one hand-made batch; ``trained`` fits 2 steps in a
    Trainer on digits views with finite losses."""
    torch.manual_seed(0)
    batch = views(16)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        out: Any = model.training_step(batch, 0)
        loss = out["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    recorder = Recorder()
    trainer(tmp_path, [recorder], max_epochs=1, limit_train_batches=2).fit(trained, data())
    assert len(recorder.losses) == 2 and all(torch.isfinite(torch.tensor(recorder.losses)))


def fit_and_resume(
    tmp_path: Path,
    make_model: Callable[[], L.LightningModule],
    stop_step: int,
    keep: tuple[str, ...],
    metrics: tuple[str, ...] = (),
    data_kwargs: dict[str, Any] | None = None,
    **trainer_kwargs: Any,
) -> tuple[Recorder, Recorder]:
    """An uninterrupted fit checkpointing at ``stop_step``, and a fit resumed from that checkpoint under
    another global seed; returns their recorders (the resumed one starts at ``stop_step``)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    full, resumed = Recorder(keep, metrics), Recorder(keep, metrics)
    every = ModelCheckpoint(dirpath=tmp_path, filename="{step}", every_n_train_steps=stop_step, save_top_k=-1)
    L.seed_everything(1)
    trainer(tmp_path / "full", [full, every], **trainer_kwargs).fit(make_model(), data(**(data_kwargs or {})))
    L.seed_everything(123)  # a different global seed must not matter: RNG states come from the checkpoint
    trainer(tmp_path / "resumed", [resumed], enable_checkpointing=False, **trainer_kwargs).fit(
        make_model(), data(**(data_kwargs or {})), ckpt_path=tmp_path / f"step={stop_step}.ckpt"
    )
    return full, resumed


def assert_same_run(full: Recorder, resumed: Recorder, stop_step: int) -> None:
    """The resumed run's losses, logged values and recorded states equal the uninterrupted run's."""
    assert resumed.losses == full.losses[stop_step:]
    assert resumed.logged == full.logged[stop_step:]
    assert len(resumed.states) == len(full.states) - stop_step
    for got, want in zip(resumed.states, full.states[stop_step:], strict=True):
        assert got.keys() == want.keys() and got
        for name in want:
            assert torch.equal(got[name], want[name]), name
