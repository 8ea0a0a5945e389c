"""ChannelsLast: the module's 4-D tensors become NHWC before the optimizers exist; training is unchanged."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from _standins import DigitsStandIn
from torch import Tensor, nn

from lightning_tl.callbacks import ChannelsLast


class ConvNet(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),  # C > 1: NCHW and NHWC strides differ
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(8, 10)
        self.losses: list[float] = []
        self.formats: list[bool] = []

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        self.formats.append(self.net[3].weight.is_contiguous(memory_format=torch.channels_last))
        loss = nn.functional.cross_entropy(self.head(self.net(x)), y)
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def _fit(callbacks: list[pl.Callback], **kwargs: object) -> tuple[ConvNet, pl.Trainer]:
    torch.manual_seed(0)
    model = ConvNet()
    trainer = pl.Trainer(
        max_steps=4,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,  # type: ignore[arg-type]
    )
    trainer.fit(model, datamodule=DigitsStandIn())
    return model, trainer


def test_weights_are_channels_last_and_training_is_unchanged(tmp_path: object) -> None:
    plain, _ = _fit([], enable_checkpointing=False)
    nhwc, trainer = _fit([ChannelsLast()], default_root_dir=tmp_path)
    assert nhwc.formats == [True] * 4 and plain.formats == [False] * 4
    torch.testing.assert_close(torch.tensor(nhwc.losses), torch.tensor(plain.losses), rtol=1e-5, atol=1e-6)
    state = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=False)["state_dict"]
    fresh = ConvNet()
    fresh.load_state_dict(state)  # an NHWC checkpoint loads into an NCHW module with equal values
    torch.testing.assert_close(fresh.net[3].weight, nhwc.net[3].weight)
