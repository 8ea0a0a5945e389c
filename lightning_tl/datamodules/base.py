"""Base class of the image datamodules: supervised or multi-view batches, deterministic and resumable.

Data path: a subclass loads uint8 (C, H, W) image *sources* for the train/val/test splits;
:class:`~lightning_tl.datamodules.datasets.AugmentedDataset` applies a torchvision v2 transform per
item; the train loader is a :class:`ResumableDataLoader` over a :class:`SeededSampler`, eval
loaders use :class:`UnpaddedDistributedSampler`. With on-device views, train items stay uint8
(:class:`~lightning_tl.datamodules.datasets.RawViewDataset`) and :meth:`on_after_batch_transfer`
makes every view of the batch at once with :class:`~lightning_tl.augment.BatchViews`. What the
augmentation is comes from two objects of :mod:`lightning_tl.augment`: ``views`` (a view recipe, for
self-supervised batches) and ``augment`` (supervised crop, flip, policy and batch mixing).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import lightning
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from lightning_tl.augment import BatchMixing, BatchViews, SeededBatch, SupervisedAugment, ViewRecipe, ViewSpec
from lightning_tl.augment.batch import batch_seed
from lightning_tl.augment.transforms import (
    MultiViewTransform,
    RepeatChannels,
    eval_transform,
    normalize,
    view_transform,
)
from lightning_tl.datamodules.datasets import (
    AugmentedDataset,
    ImageSource,
    InMemoryImages,
    RawViewDataset,
    SeededItems,
    channel_mean_std,
)
from lightning_tl.datamodules.loader import ResumableDataLoader
from lightning_tl.datamodules.moved_args import check_removed_args
from lightning_tl.datamodules.sampling import SeededSampler, UnpaddedDistributedSampler
from lightning_tl.datamodules.splits import stratified_split

SPLITS = ("train", "val", "test")
#: DataLoader options a datamodule passes through from ``loader`` (the rest it sets itself).
LOADER_OPTIONS = ("pin_memory", "persistent_workers", "prefetch_factor", "timeout", "multiprocessing_context")


class VisionDataModule(lightning.LightningDataModule):
    """Image classification / self-supervised datamodule with exact, worker-independent augmentation.

    Train batches are ``(images (B, C, H, W) float32, labels (B,) int64)`` augmented by ``augment``
    (default: padded random crop and flip) when ``views`` is None, or ``(views, labels)`` with
    ``views`` a list of float32 (B, C, H, W) tensors, one per :class:`~lightning_tl.augment.ViewSpec`
    of the recipe (global views first, then the smaller local ones); the last incomplete batch is then
    dropped. Val/test batches are always ``(images, labels)`` with the deterministic eval transform.

    SSL views are made either per sample in the loader (torchvision v2 on each image) or for the
    whole batch at once after it reaches the model's device (:class:`~lightning_tl.augment.BatchViews`:
    same recipe, same sampling distributions, many times faster): the recipe's ``on_device`` (None
    picks the batched path for in-memory data sets such as digits and Fashion-MNIST, the per-sample
    one for image folders, whose batched path first resizes each file to ``image_size``).

    Every train sample's augmentation is seeded from ``(seed, epoch, index)`` (per sample, or per
    batch from its samples' seeds on the device), so batches do not depend on ``num_workers``, on
    worker order or on the global RNG, and a run resumed from a checkpoint, also one saved in the
    middle of an epoch, sees exactly the batches it would have seen.

    Args:
        batch_size: per-process batch size.
        num_workers: DataLoader worker processes.
        image_size: side of the images the model sees; ``None`` keeps the data's native size.
        rgb: repeat 1-channel images to 3 channels (for RGB-only backbones).
        seed: seed of the splits, the shuffling and the augmentations.
        views: a view recipe (:class:`~lightning_tl.augment.SimCLRViews`, ``BYOLViews``, ``DINOViews``,
            ``MoCoV2Views`` or your own :class:`~lightning_tl.augment.ViewRecipe`) for multi-view
            self-supervised batches, or None for supervised batches.
        augment: supervised augmentation (:class:`~lightning_tl.augment.SupervisedAugment`: crop, flip,
            policy, mixup/CutMix/noise); None = ``SupervisedAugment()``. Not used with ``views``.
        train_subset: keep only this many train images, a class-stratified subset drawn with ``seed``
            (labelled-data budgets such as 100 / 1,000 / 10,000); normalisation stays that of the full split.
        loader: further DataLoader options, any of ``pin_memory``, ``persistent_workers``,
            ``prefetch_factor``, ``timeout``, ``multiprocessing_context``.
    """

    #: Horizontal flips when a recipe leaves ``hflip`` unset (digits turn it off).
    default_hflip = True

    def __init__(
        self,
        *,
        batch_size: int = 256,
        num_workers: int = 0,
        image_size: int | None = None,
        rgb: bool = False,
        seed: int = 0,
        views: ViewRecipe | None = None,
        augment: SupervisedAugment | None = None,
        train_subset: int | None = None,
        loader: dict[str, Any] | None = None,
        **removed: Any,
    ) -> None:
        super().__init__()
        check_removed_args(type(self).__name__, removed)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 (0 loads in the main process), got {num_workers}")
        if image_size is not None and image_size < 1:
            raise ValueError(
                f"image_size must be a positive number of pixels or None (native size), got {image_size}"
            )
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if train_subset is not None and train_subset < 1:
            raise ValueError(
                f"train_subset must be >= 1 images or None (the whole split), got {train_subset}"
            )
        if views is not None and not isinstance(views, ViewRecipe):
            raise ValueError(
                f"views must be a view recipe such as lightning_tl.augment.SimCLRViews(), got {views!r}"
            )
        if augment is not None and not isinstance(augment, SupervisedAugment):
            raise ValueError(f"augment must be a lightning_tl.augment.SupervisedAugment, got {augment!r}")
        if views is not None and augment is not None:
            raise ValueError(
                f"augment={augment!r} applies to supervised batches; with views={views!r} the view recipe "
                "is the augmentation. Drop one of them."
            )
        loader = dict(loader or {})
        unknown = sorted(set(loader) - set(LOADER_OPTIONS))
        if unknown:
            raise ValueError(
                f"loader options {unknown} are not passed through; allowed: {list(LOADER_OPTIONS)} "
                "(batch_size and num_workers are arguments of their own; sampling is the datamodule's)"
            )
        if loader.get("persistent_workers") and num_workers == 0:
            raise ValueError(
                "persistent_workers=True needs num_workers >= 1; set num_workers or drop persistent_workers"
            )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.rgb = rgb
        self.seed = seed
        self.views = views
        self.augment = augment if augment is not None or views is not None else SupervisedAugment()
        self.loader = loader
        self.train_subset = train_subset
        self._image_size = image_size
        self._splits: dict[str, ImageSource] | None = None
        self._mean: list[float] | None = None
        self._std: list[float] | None = None
        self._train_loader: ResumableDataLoader | None = None
        self._batch_views: BatchViews | None = None
        self._pending_loader_state: dict[str, Any] | None = None
        self._mixing: BatchMixing | None = None

    def save_hyperparameters(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Lightning's, with the ``views``/``augment`` objects saved as plain ``class_path`` dicts
        (checkpoints hold no objects: they load with ``weights_only=True``)."""
        kwargs["ignore"] = [*kwargs.get("ignore", []), "views", "augment"]
        frame = inspect.currentframe()
        super().save_hyperparameters(*args, frame=frame.f_back if frame is not None else None, **kwargs)
        self._hparams["views"] = self.views.config() if self.views is not None else None
        self._hparams["augment"] = self.augment.config() if self.augment is not None else None
        resolved = {"image_size": self._image_size, "loader": dict(self.loader)}
        for name in ("batch_size", "num_workers", "image_size", "rgb", "seed", "train_subset", "loader"):
            self._hparams.setdefault(name, resolved.get(name, getattr(self, name)))  # forwarded, not passed

    # ----------------------------------------------------------------- subclass interface
    # A subclass defines class_names, NATIVE_SIZE and NATIVE_CHANNELS (or _native_image_size and
    # _native_channels) and _load_splits; num_classes, _mean_std and _resize_steps have defaults for
    # labelled in-memory data.
    #: Side and channels of the stored images, for data sets whose images all have one shape.
    NATIVE_SIZE: int | None = None
    NATIVE_CHANNELS: int | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes (0 for unlabelled data); default: the number of class names."""
        return len(self.class_names)

    @property
    def class_names(self) -> list[str]:
        """Class names, index = label."""
        raise NotImplementedError(f"{type(self).__name__} must define class_names")

    def _native_image_size(self) -> int:
        """Side of the stored images when ``image_size`` is None (default: ``NATIVE_SIZE``)."""
        if self.NATIVE_SIZE is None:
            raise NotImplementedError(f"{type(self).__name__} must define NATIVE_SIZE or _native_image_size")
        return self.NATIVE_SIZE

    def _native_channels(self) -> int:
        """1 for grayscale data, 3 for colour (default: ``NATIVE_CHANNELS``)."""
        if self.NATIVE_CHANNELS is None:
            raise NotImplementedError(
                f"{type(self).__name__} must define NATIVE_CHANNELS or _native_channels"
            )
        return self.NATIVE_CHANNELS

    def _load_splits(self) -> dict[str, ImageSource]:
        """Sources for "train", "val" and "test"; in-memory ones already at ``image_size``."""
        raise NotImplementedError(f"{type(self).__name__} must define _load_splits")

    def _mean_std(self, train: ImageSource) -> tuple[list[float], list[float]]:
        """Normalisation constants; default: exact statistics of an in-memory train split."""
        if not isinstance(train, InMemoryImages):
            raise NotImplementedError(
                f"{type(self).__name__} must define _mean_std for {type(train).__name__}"
            )
        return channel_mean_std(train.images)

    def _resize_steps(self) -> list[Callable[[Tensor], Tensor]]:
        """Steps that bring a stored image to (C, image_size, image_size) for eval and supervised training."""
        return []

    def _device_view_steps(self) -> list[Callable[[Tensor], Tensor]]:
        """Steps that give every stored image one shape before batched on-device views (none in memory)."""
        return []

    def _device_views_by_default(self) -> bool:
        """Whether a recipe's ``on_device=None`` picks the batched path: yes for in-memory images."""
        return isinstance(self.splits()["train"], InMemoryImages)

    # ----------------------------------------------------------------- resolved properties
    @property
    def image_size(self) -> int:
        """Side of the images in every batch (the native size when constructed with ``image_size=None``)."""
        return self._image_size if self._image_size is not None else self._native_image_size()

    @property
    def num_views(self) -> int:
        """Views per image in a train batch (global and local); 0 for supervised batches."""
        return len(self.views) if self.views is not None else 0

    @property
    def device_views(self) -> bool:
        """True when SSL views are made per batch on the device (the recipe's ``on_device`` resolved)."""
        if self.views is None:
            return False
        if self.views.on_device is None:
            return self._device_views_by_default()
        return self.views.on_device

    @property
    def num_channels(self) -> int:
        """Channels in every batch: 3 with ``rgb=True`` or colour data, else 1."""
        return 3 if self.rgb else self._native_channels()

    @property
    def mean(self) -> list[float]:
        """Per-channel normalisation mean (available after ``setup``)."""
        self.splits()
        assert self._mean is not None
        return self._mean

    @property
    def std(self) -> list[float]:
        """Per-channel normalisation std (available after ``setup``)."""
        self.splits()
        assert self._std is not None
        return self._std

    # ----------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        """Load all three splits once (cheap: in-memory arrays or file lists)."""
        if self._splits is not None:
            return
        splits = self._load_splits()
        mean, std = self._mean_std(splits["train"])
        if self.rgb and len(mean) == 1:
            mean, std = mean * 3, std * 3
        if self.train_subset is not None:
            train = splits["train"]
            if self.train_subset > len(train):
                raise ValueError(
                    f"train_subset={self.train_subset} but the train split has {len(train)} images; lower it"
                )
            labels = [train.label(i) for i in range(len(train))]
            keep = stratified_split(labels, [self.train_subset], self.seed)[1]
            splits = {**splits, "train": train.subset(keep)}  # type: ignore[attr-defined]
        self._splits, self._mean, self._std = splits, mean, std

    def state_dict(self) -> dict[str, Any]:
        """Position of the train loader in its epoch, so a mid-epoch checkpoint resumes exactly.

        Lightning also saves the loader's own ``state_dict`` (it is ``_Stateful``), but it does not
        load it back when ``trainer.estimated_stepping_batches`` was used in ``configure_optimizers``
        (Lightning issue #20550): the datamodule's state is restored before that, so it is kept here too.
        """
        loader = self._current_train_loader()
        return {"train_loader": loader.state_dict()} if loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Apply the saved train-loader position to the next (or the current, not yet iterated) loader."""
        state = state_dict.get("train_loader")
        if not state:
            return
        if self._train_loader is not None:  # created before the restore (Lightning's early setup_data)
            self._train_loader.load_state_dict(state)
        else:
            self._pending_loader_state = state

    def _current_train_loader(self) -> ResumableDataLoader | None:
        trainer = self.trainer
        if trainer is not None:
            loader = trainer.train_dataloader  # what the fit loop iterates (Lightning may re-create loaders)
            if isinstance(loader, ResumableDataLoader):
                return loader
        return self._train_loader

    def splits(self) -> dict[str, ImageSource]:
        """The "train", "val" and "test" image sources (loaded on first use, as in :meth:`setup`)."""
        if self._splits is None:
            self.setup()
        assert self._splits is not None
        return self._splits

    # ----------------------------------------------------------------- transforms
    def _channel_steps(self) -> list[Callable[[Tensor], Tensor]]:
        return [RepeatChannels(3)] if self.rgb else []

    def eval_transform(self) -> v2.Compose:
        """uint8 (C, H, W) -> float (num_channels, image_size, image_size), deterministic."""
        tail = eval_transform(self.num_channels, self.mean, self.std)
        return v2.Compose([*self._resize_steps(), *self._channel_steps(), tail])

    def view_specs(self) -> list[ViewSpec]:
        """The random recipe of each SSL view (``views.specs`` at this data's size and channels)."""
        if self.views is None:
            raise ValueError(f"{type(self).__name__} makes supervised batches: it has no views (views: null)")
        return self.views.specs(self.image_size, self.num_channels, self.default_hflip)

    def plain_steps(self) -> list[Callable[[Tensor], Tensor]]:
        """Deterministic uint8 steps before any augmentation: resize (folders), channel repeat (``rgb``)."""
        return [*self._resize_steps(), *self._channel_steps()]

    def augment_transform(self) -> v2.Compose:
        """Supervised augmentation uint8 (C, H, W) -> uint8 (num_channels, image_size, image_size).

        :meth:`plain_steps`, then ``augment``'s padded random crop, flip and policy
        (:meth:`~lightning_tl.augment.SupervisedAugment.steps`). ``lightning-tl preview`` shows its output.
        """
        augment = self.augment if self.augment is not None else SupervisedAugment()
        return v2.Compose([*self.plain_steps(), *augment.steps(self.image_size, self.default_hflip)])

    @property
    def mixing(self) -> BatchMixing:
        """The per-batch mixing of supervised training (``augment``'s mixup, CutMix, noise)."""
        if self._mixing is None:
            augment = self.augment if self.augment is not None else SupervisedAugment()
            self._mixing = augment.mixing(self.num_classes if augment.mixes else 0)
        return self._mixing

    def train_transform(self) -> Callable[[Tensor], Any]:
        """Supervised: :meth:`augment_transform` + normalisation; SSL: a :class:`MultiViewTransform`."""
        if self.views is None:
            return v2.Compose([self.augment_transform(), normalize(self.num_channels, self.mean, self.std)])
        views = [
            v2.Compose([*self._channel_steps(), view_transform(spec, self.num_channels, self.mean, self.std)])
            for spec in self.view_specs()
        ]
        return MultiViewTransform(views)

    def batch_views(self) -> BatchViews:
        """The batched view generator used by :meth:`on_after_batch_transfer` (on-device views)."""
        return BatchViews(self.view_specs(), self.num_channels, self.mean, self.std)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Turn a :class:`~lightning_tl.augment.SeededBatch` train batch into ``[views, labels]`` (SSL) or
        mixed ``[images, targets]`` (supervised) on its device; pass other batches on.

        Each image's views are drawn from its own sample seed (fixed by ``(seed, epoch, index)``), as
        in the per-sample path, so they do not depend on the batch or the process they land in.
        """
        if not isinstance(batch, SeededBatch):
            return batch
        if self.views is None:  # supervised batch with mixing: mix on the device, seeded by the batch
            images, targets = self.mixing(batch.images, batch.labels, batch_seed(batch.seeds))
            if self.trainer is not None:  # soft targets too: cross_entropy wants them in the logits' dtype
                images, targets = self.trainer.precision_plugin.convert_input((images, targets))
            return [images, targets]
        views = self._batch_views_cached()(batch.images, batch.seeds)
        if self.trainer is not None:  # Lightning converts inputs before the transfer; do it for the views
            views = self.trainer.precision_plugin.convert_input(views)  # e.g. float64 / bf16 "-true"
        return [views, batch.labels]

    def _batch_views_cached(self) -> BatchViews:
        if self._batch_views is None:
            self._batch_views = self.batch_views()
        return self._batch_views

    # ----------------------------------------------------------------- datasets and loaders
    def labelled_dataset(self, split: str) -> Dataset:
        """Items ``(x float (C, H, W) normalised with the eval transform, y int)`` of ``split``.

        ``split`` is "train", "val" or "test"; used e.g. to build a kNN feature bank from "train".
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return AugmentedDataset(self.splits()[split], self.eval_transform())

    def train_dataloader(self) -> ResumableDataLoader:
        """Shuffled, seeded, resumable train batches (see the class docstring for their structure)."""
        source = self.splits()["train"]
        ssl = self.views is not None
        sampler = SeededSampler(len(source), shuffle=True, seed=self.seed, drop_last=ssl)
        if ssl and sampler.num_samples < self.batch_size:
            raise ValueError(
                f"the train split has {sampler.num_samples} images per process, fewer than batch_size="
                f"{self.batch_size}; multi-view batches drop the incomplete last batch, so no batch would "
                f"be left: lower batch_size"
            )
        dataset: Dataset
        if self.device_views:
            steps = self._device_view_steps()
            dataset = RawViewDataset(source, v2.Compose(steps) if steps else None)
        else:
            dataset = AugmentedDataset(source, self.train_transform())
            if not ssl and self.mixing.active:  # items carry their seeds to the on-device VRM
                dataset = SeededItems(dataset)
        loader = ResumableDataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=ssl,
            **self.loader_kwargs(),
        )
        if self._pending_loader_state is not None:  # resuming: continue the saved epoch
            loader.load_state_dict(self._pending_loader_state)
            self._pending_loader_state = None
        self._train_loader = loader
        return loader

    def val_dataloader(self) -> DataLoader:
        """Val split in order, eval transform; under DDP each index is on exactly one rank."""
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test split in order, eval transform; under DDP each index is on exactly one rank."""
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        """The test split, for ``predict`` (e.g. exporting features)."""
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> DataLoader:
        dataset = AugmentedDataset(self.splits()[split], self.eval_transform())
        sampler = UnpaddedDistributedSampler(len(dataset))
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, **self.loader_kwargs())

    def loader_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of every DataLoader this datamodule makes (besides dataset, batch and sampler).

        ``num_workers``, the ``loader`` options, and a private ``generator`` seeded with ``seed``: a
        DataLoader draws its workers' base seed from it whenever an iterator is created, which would
        otherwise consume the global RNG (and shift it on resume). Datamodules that wrap this one (domain
        pairs, image-text) build their loaders with it too.
        """
        return {
            "generator": torch.Generator().manual_seed(self.seed),
            "num_workers": self.num_workers,
            "pin_memory": False,
            "persistent_workers": False,
            **self.loader,
        }
