"""Unsupervised domain adaptation data: labelled source + unlabelled target in every training step.

Training batches are ``{"source": (x_s (B_s, C, H, W), y_s (B_s,)), "target": x_t (B_t, C, H, W)}``
from a Lightning :class:`~lightning.pytorch.utilities.combined_loader.CombinedLoader` in
``max_size_cycle`` mode: an epoch is as long as the longer domain, the shorter one is cycled (each
cycle repeats that epoch's shuffled order, so a mid-epoch checkpoint resumes exactly). Target
*training* images come without labels: they are read through :class:`UnlabelledImages`, whose
``label`` is -1 and never looks at the target's labels, and the loader keeps only the images. Target
labels are used for validation and test only (``val_dataloader``/``test_dataloader`` return
``[source, target]`` loaders, dataloader_idx 0 and 1). The target may have no labels at all
(``num_classes`` 0, e.g. ``ImageFolderDataModule(labelled=False)``): its val/test items then carry
label -1, and :class:`~lightning_tl.modules.DANN` reports no target accuracy, only the domain one.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.combined_loader import CombinedLoader
from torch import Tensor
from torch.utils.data import DataLoader, default_collate

from lightning_tl.augment.counter_rng import mix_seed
from lightning_tl.datamodules.base import VisionDataModule
from lightning_tl.datamodules.datasets import AugmentedDataset, ImageSource
from lightning_tl.datamodules.loader import ResumableDataLoader
from lightning_tl.datamodules.sampling import SeededSampler

DOMAINS = ("source", "target")


class UnlabelledImages:
    """An image source with its labels hidden: ``image(i)`` from ``source``, ``label(i)`` always -1."""

    def __init__(self, source: ImageSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def image(self, index: int) -> Tensor:
        return self.source.image(index)

    def label(self, index: int) -> int:
        return -1


def images_only(items: list[tuple[Tensor, int]]) -> Tensor:
    """Collate ``(image, label)`` items into an image batch (B, C, H, W), dropping the labels."""
    return default_collate([image for image, _ in items])


class DomainAdaptationDataModule(L.LightningDataModule):
    """A labelled source domain and an unlabelled target domain, each a supervised VisionDataModule.

    Each domain keeps its own batch size, augmentation (``hflip``, ...), normalisation (the exact
    statistics of its own train split) and seeded, resumable sampler; the target's shuffling seed is
    derived from its ``seed`` (``mix_seed(seed, 1)``) so that two domains built from the same images
    (MNIST -> MNIST-M) are not drawn in the same order. Both must give images of the same shape:
    a grayscale source and an RGB target need ``rgb: true`` on the source (channels repeated, as the
    DANN paper fed MNIST), and both need the same ``image_size``.

    Args:
        source: labelled domain (supervised batches: ``views: null``).
        target: the domain to adapt to (``views: null``); its train labels are never loaded, and it
            may be unlabelled (``num_classes`` 0). A labelled target must have the source's classes.

    Example::

        >>> from lightning_tl.datamodules import DigitsDataModule
        >>> from lightning_tl.datamodules.blended import DigitsMDataModule
        >>> dm = DomainAdaptationDataModule(DigitsDataModule(rgb=True), DigitsMDataModule())
        >>> batch = next(iter(dm.train_dataloader()))[0]
        >>> tuple(batch["source"][0].shape), tuple(batch["target"].shape)
        ((256, 3, 16, 16), (256, 3, 16, 16))
    """

    def __init__(self, source: VisionDataModule, target: VisionDataModule) -> None:
        super().__init__()
        for name, dm in (("source", source), ("target", target)):
            if not isinstance(dm, VisionDataModule):
                raise TypeError(
                    f"{name} must be a VisionDataModule (e.g. DigitsDataModule), got {type(dm).__name__}"
                )
            if dm.num_views != 0:
                raise ValueError(
                    f"the {name} datamodule makes multi-view batches (num_views={dm.num_views}); domain "
                    f"adaptation trains on supervised batches: set its views: null"
                )
        if source.num_channels != target.num_channels:
            gray = "source" if source.num_channels == 1 else "target"
            raise ValueError(
                f"source images have {source.num_channels} channel(s), target images {target.num_channels}: "
                f"one backbone cannot take both. Set rgb: true on the {gray} datamodule to repeat its "
                "grayscale channel to 3 (as the DANN paper did for MNIST -> MNIST-M)"
            )
        if source.image_size != target.image_size:
            raise ValueError(
                f"source images are {source.image_size} px, target images {target.image_size} px; set the "
                "same image_size on both datamodules"
            )
        self.source = source
        self.target = target
        self._loaders: dict[str, ResumableDataLoader] | None = None
        self._pending: dict[str, Any] = {}
        self._said_unlabelled = False

    # ------------------------------------------------------------------ what the model is linked to
    @property
    def num_classes(self) -> int:
        """Classes of the (labelled) source domain."""
        return self.source.num_classes

    @property
    def num_channels(self) -> int:
        return self.source.num_channels

    @property
    def image_size(self) -> int:
        return self.source.image_size

    @property
    def batch_size(self) -> int:
        """Source images per step (the target adds ``target.batch_size`` more)."""
        return self.source.batch_size

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        self.source.prepare_data()
        self.target.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self.source.setup(stage)
        self.target.setup(stage)
        if len(self._target_train()) == 0:
            raise ValueError(
                "the target domain's train split is empty: domain adaptation needs unlabelled target "
                "images; check the target datamodule's data and train_subset"
            )
        if self.source.num_classes < 1:
            raise ValueError(
                "the source domain has no labels (num_classes 0); domain adaptation learns the classes from "
                "a labelled source (an image folder: one subfolder per class and labelled: true)"
            )
        if not self.target_labelled:
            if not self._said_unlabelled:  # setup runs more than once
                self._said_unlabelled = True
                rank_zero_info(
                    "DomainAdaptationDataModule: the target domain has no labels (num_classes 0), so no "
                    "target accuracy is reported; val/test target batches (label -1) still give the "
                    "domain accuracy"
                )
        elif self.source.num_classes != self.target.num_classes:
            raise ValueError(
                f"source has {self.source.num_classes} classes, target {self.target.num_classes}: the "
                "domains must share the label space for target accuracy to mean anything (an unlabelled "
                "target, e.g. ImageFolderDataModule(labelled=False), has none and is fine)"
            )
        elif self.source.class_names != self.target.class_names:
            raise ValueError(
                f"source classes {self.source.class_names} differ from target classes "
                f"{self.target.class_names}: label i must mean the same class in both domains for target "
                "accuracy to mean anything; name the class folders alike, or make the target unlabelled"
            )

    @property
    def target_labelled(self) -> bool:
        """Whether the target has labels (for val/test target accuracy; training never reads them)."""
        return self.target.num_classes > 0

    def _target_train(self) -> ImageSource:
        return self.target.splits()["train"]

    def train_dataloader(self) -> CombinedLoader:
        """``{"source": (x, y), "target": x}`` per step; the shorter domain is cycled."""
        self.setup("fit")
        target = self.target
        source_loader = self.source.train_dataloader()
        train = self._target_train()
        sampler = SeededSampler(len(train), shuffle=True, seed=mix_seed(target.seed, 1))
        target_loader = ResumableDataLoader(
            AugmentedDataset(UnlabelledImages(train), target.train_transform()),
            batch_size=target.batch_size,
            sampler=sampler,
            collate_fn=images_only,
            **target.loader_kwargs(),
        )
        self._loaders = {"source": source_loader, "target": target_loader}
        for name, state in self._pending.items():
            self._loaders[name].load_state_dict(state)
        self._pending = {}
        return CombinedLoader(dict(self._loaders), mode="max_size_cycle")

    def val_dataloader(self) -> list[DataLoader]:
        """Source (dataloader_idx 0) and target (1) validation splits, with labels."""
        return [self.source.val_dataloader(), self.target.val_dataloader()]

    def test_dataloader(self) -> list[DataLoader]:
        """Source (dataloader_idx 0) and target (1) test splits, with labels."""
        return [self.source.test_dataloader(), self.target.test_dataloader()]

    # ------------------------------------------------------------------ exact resume
    def state_dict(self) -> dict[str, Any]:
        """Both train loaders' positions (see :meth:`VisionDataModule.state_dict` for why here too)."""
        loaders = self._current_loaders()
        return {name: loader.state_dict() for name, loader in loaders.items()} if loaders else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for name in DOMAINS:
            state = state_dict.get(name)
            if not state:
                continue
            if self._loaders is not None:
                self._loaders[name].load_state_dict(state)
            else:
                self._pending[name] = state

    def _current_loaders(self) -> dict[str, ResumableDataLoader] | None:
        trainer = self.trainer
        combined = trainer.train_dataloader if trainer is not None else None
        if isinstance(combined, CombinedLoader) and isinstance(combined.iterables, dict):
            loaders = combined.iterables  # what the fit loop iterates (Lightning may re-create loaders)
            if all(isinstance(loaders.get(n), ResumableDataLoader) for n in DOMAINS):
                return {n: loaders[n] for n in DOMAINS}
        return self._loaders
