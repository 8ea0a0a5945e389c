"""Several labelled data sets, one per visual domain, trained side by side (multi-domain learning)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader

from lightning_tl.datamodules.base import VisionDataModule


class MultiDomainDataModule(L.LightningDataModule):
    """One supervised :class:`VisionDataModule` per domain, e.g. digits and Fashion-MNIST.

    Train batches are ``{domain: (images (B, C, H, W), labels (B,))}`` with one batch of every
    domain (Lightning's ``CombinedLoader`` in ``max_size_cycle`` mode: an epoch ends when the
    largest domain is exhausted, smaller ones start over). Validation and test have one loader per
    domain, in the order of ``domains`` (``dataloader_idx`` = the domain's index). Each domain's
    loader keeps its own seeded, resumable position, saved in this datamodule's ``state_dict``.

    Args:
        domains: ``{name: datamodule}``; supervised (``views: null``), all with the same channels.

    Attributes:
        num_classes: ``{name: classes}``, linked by the CLI to the model's ``num_classes``.
        num_channels: channels of every domain's images.
    """

    def __init__(self, domains: Mapping[str, VisionDataModule]) -> None:
        super().__init__()
        if not domains:
            raise ValueError("MultiDomainDataModule needs at least one {name: datamodule} entry")
        for name, dm in domains.items():
            if not isinstance(dm, VisionDataModule):
                raise TypeError(f"domain {name!r} must be a VisionDataModule, got {type(dm).__name__}")
            if dm.num_views != 0:
                raise ValueError(
                    f"domain {name!r} has num_views={dm.num_views}; multi-domain training takes supervised "
                    "(images, labels) batches: set views: null"
                )
        channels = {name: dm.num_channels for name, dm in domains.items()}
        if len(set(channels.values())) > 1:
            raise ValueError(
                f"the domains' images have different channels {channels}; set rgb: true on the 1-channel ones"
            )
        self.domains = dict(domains)

    @property
    def num_classes(self) -> dict[str, int]:
        """Classes of every domain."""
        return {name: dm.num_classes for name, dm in self.domains.items()}

    @property
    def num_channels(self) -> int:
        """Channels shared by every domain."""
        return next(iter(self.domains.values())).num_channels

    def setup(self, stage: str | None = None) -> None:
        for dm in self.domains.values():
            dm.setup(stage)

    def train_dataloader(self) -> CombinedLoader:
        """``{domain: batch}`` per step over every domain's train loader."""
        return CombinedLoader({n: dm.train_dataloader() for n, dm in self.domains.items()}, "max_size_cycle")

    def val_dataloader(self) -> list[DataLoader]:
        return [dm.val_dataloader() for dm in self.domains.values()]

    def test_dataloader(self) -> list[DataLoader]:
        return [dm.test_dataloader() for dm in self.domains.values()]

    def predict_dataloader(self) -> list[DataLoader]:
        return [dm.predict_dataloader() for dm in self.domains.values()]

    def state_dict(self) -> dict[str, Any]:
        """Every domain's train-loader position (mid-epoch exact resume)."""
        return {name: dm.state_dict() for name, dm in self.domains.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        unknown = sorted(set(state_dict) - set(self.domains))
        if unknown:
            raise ValueError(f"checkpoint holds data state of domains {unknown} that this run does not have")
        for name, state in state_dict.items():
            self.domains[name].load_state_dict(state)
