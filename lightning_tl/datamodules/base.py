"""Base class of the image datamodules: supervised or multi-view batches, deterministic and resumable.

Data path: a subclass loads uint8 (C, H, W) image *sources* for the train/val/test splits;
:class:`~lightning_tl.datamodules.datasets.AugmentedDataset` applies a torchvision v2 transform per
item; the train loader is a :class:`ResumableDataLoader` over a :class:`SeededSampler`, eval
loaders use :class:`UnpaddedDistributedSampler`. With on-device views, train items stay uint8
(:class:`~lightning_tl.datamodules.datasets.RawViewDataset`) and :meth:`on_after_batch_transfer`
makes every view of the batch at once with :class:`~lightning_tl.datamodules.batch_views.BatchViews`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from lightning_tl.datamodules.batch_views import BatchViews, ViewSpec
from lightning_tl.datamodules.datasets import (
    AugmentedDataset,
    ImageSource,
    InMemoryImages,
    RawViewDataset,
    RawViews,
    channel_mean_std,
)
from lightning_tl.datamodules.loader import ResumableDataLoader
from lightning_tl.datamodules.mixing import BatchMixing, MixItem, SeededItems, batch_seed, check_mixing_args
from lightning_tl.datamodules.policies import build_policy, parse_policy
from lightning_tl.datamodules.sampling import SeededSampler, UnpaddedDistributedSampler
from lightning_tl.datamodules.splits import stratified_split
from lightning_tl.datamodules.transforms import (
    MultiViewTransform,
    RepeatChannels,
    check_crop_scale,
    check_jitter_strength,
    eval_transform,
    light_augment_steps,
    normalize,
    simclr_view_spec,
    view_transform,
)

SPLITS = ("train", "val", "test")


class VisionDataModule(lightning.LightningDataModule):
    """Image classification / self-supervised datamodule with exact, worker-independent augmentation.

    Train batches are ``(images (B, C, H, W) float32, labels (B,) int64)`` with a light augmentation
    (random padded crop, flip) when ``num_views == 0``, or ``(views, labels)`` with ``views`` a list
    of ``num_views`` float32 (B, C, H, W) tensors, each drawn independently with the SimCLR recipe
    (:func:`~lightning_tl.datamodules.transforms.simclr_view_spec`), when ``num_views >= 2``, followed
    by ``local_views`` smaller multi-crop views; the last incomplete batch is then dropped.
    Val/test batches are always ``(images, labels)`` with the deterministic eval transform.

    SSL views are made either per sample in the loader (torchvision v2 on each image) or, with
    ``augment_on_device``, for the whole batch at once after it reaches the model's device
    (:class:`~lightning_tl.datamodules.batch_views.BatchViews`: same recipe, same sampling
    distributions, many times faster). ``augment_on_device=None`` picks the batched path for
    in-memory data sets (digits, Fashion-MNIST), the per-sample one for image folders (whose
    batched path first resizes each file to ``image_size``).

    Every train sample's augmentation is seeded from ``(seed, epoch, index)`` (per sample, or per
    batch from its samples' seeds on the device), so batches do not depend on ``num_workers``, on
    worker order or on the global RNG, and a run resumed from a checkpoint, also one saved in the
    middle of an epoch, sees exactly the batches it would have seen.

    Args:
        batch_size: per-process batch size.
        num_workers: DataLoader worker processes.
        num_views: 0 for supervised batches, >= 2 for multi-view SSL batches.
        image_size: side of the images the model sees; ``None`` keeps the data's native size.
        rgb: repeat 1-channel images to 3 channels (for RGB-only backbones).
        seed: seed of the splits, the shuffling and the augmentations.
        crop_scale: (min, max) area fraction of the SimCLR random resized crop.
        jitter_strength: SimCLR colour-distortion strength s in [0, 2.5].
        blur: SimCLR Gaussian blur; ``None`` = on when ``image_size >= 32``.
        hflip: random horizontal flips (SSL views and supervised training).
        train_subset: keep only this many train images, a class-stratified subset drawn with ``seed``
            (labelled-data budgets such as 100 / 1,000 / 10,000); normalisation stays that of the full split.
        pin_memory, persistent_workers: passed to the DataLoaders.
        augment_on_device: make SSL views per batch on the device (True), per sample in the loader
            (False), or choose (None, see above).
        local_views: extra small multi-crop views (SwAV, Caron et al. 2020) after the ``num_views`` ones.
        local_image_size: side of the local views; None = ``image_size // 2``.
        local_crop_scale: (min, max) area fraction of the local views' crops.
        solarize_prob: probability of solarising an SSL view (0 in SimCLR; BYOL uses 0 / 0.2).
        policy: augmentation policy of supervised training, applied per sample after the light crop/flip
            (:func:`~lightning_tl.datamodules.policies.build_policy`: ``autoaugment:cifar10``,
            ``rand-m9-mstd0.5-inc1``, ``trivialaugment``... or ``none``). Supervised only: with
            ``num_views >= 2`` the SSL view recipe is the augmentation, and a policy raises.
        mixup_alpha, cutmix_alpha, mix_prob, switch_prob, noise_std: vicinal risk options of
            supervised training (:class:`~lightning_tl.datamodules.mixing.BatchMixing`), applied per
            batch on the device in :meth:`on_after_batch_transfer`; with mixup/CutMix on, train batches
            carry soft targets (B, num_classes). Supervised only (raise with ``num_views >= 2``).
    """

    def __init__(
        self,
        *,
        batch_size: int = 256,
        num_workers: int = 0,
        num_views: int = 0,
        image_size: int | None = None,
        rgb: bool = False,
        seed: int = 0,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        jitter_strength: float = 0.5,
        blur: bool | None = None,
        hflip: bool = True,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        augment_on_device: bool | None = None,
        local_views: int = 0,
        local_image_size: int | None = None,
        local_crop_scale: tuple[float, float] = (0.05, 0.4),
        solarize_prob: float = 0.0,
        train_subset: int | None = None,
        policy: str = "none",
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        switch_prob: float = 0.5,
        noise_std: float = 0.0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 (0 loads in the main process), got {num_workers}")
        if num_views == 1 or num_views < 0:
            raise ValueError(f"num_views must be 0 (supervised) or >= 2 (multi-view SSL), got {num_views}")
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
        check_crop_scale(crop_scale)
        check_jitter_strength(jitter_strength)
        if augment_on_device and num_views == 0:
            raise ValueError(
                "augment_on_device=True makes multi-view SSL batches, but num_views=0 (supervised); "
                "set num_views >= 2 or drop augment_on_device"
            )
        if local_views < 0 or (local_views > 0 and num_views == 0):
            raise ValueError(
                f"local_views must be >= 0 and needs num_views >= 2 (multi-crop adds small views to the "
                f"global ones), got local_views={local_views} with num_views={num_views}"
            )
        if local_image_size is not None and local_image_size < 1:
            raise ValueError(
                f"local_image_size must be a positive number of pixels or None, got {local_image_size}"
            )
        check_crop_scale(local_crop_scale)
        if not 0 <= solarize_prob <= 1:
            raise ValueError(f"solarize_prob must be a probability in [0, 1], got {solarize_prob}")
        parse_policy(policy)  # a bad spec fails here, naming its bad token
        check_mixing_args(mixup_alpha, cutmix_alpha, mix_prob, switch_prob, noise_std)
        vrm = mixup_alpha > 0 or cutmix_alpha > 0 or noise_std > 0
        if num_views >= 2 and (policy.strip() != "none" or vrm):
            raise ValueError(
                f"policy={policy!r} and mixup/CutMix/noise apply to supervised batches (num_views: 0); with "
                f"num_views={num_views} the SSL view recipe is the augmentation (crop_scale, "
                "jitter_strength, blur, solarize_prob). Set policy: none and the VRM options to 0, or "
                "num_views: 0"
            )
        if persistent_workers and num_workers == 0:
            raise ValueError(
                "persistent_workers=True needs num_workers >= 1; set num_workers or drop persistent_workers"
            )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.num_views = num_views
        self.rgb = rgb
        self.seed = seed
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.jitter_strength = jitter_strength
        self.blur = blur
        self.hflip = hflip
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.augment_on_device = augment_on_device
        self.local_views = local_views
        self.local_crop_scale = (float(local_crop_scale[0]), float(local_crop_scale[1]))
        self.solarize_prob = solarize_prob
        self._local_image_size = local_image_size
        self.train_subset = train_subset
        self._image_size = image_size
        self._splits: dict[str, ImageSource] | None = None
        self._mean: list[float] | None = None
        self._std: list[float] | None = None
        self._train_loader: ResumableDataLoader | None = None
        self._batch_views: BatchViews | None = None
        self._pending_loader_state: dict[str, Any] | None = None
        self.policy = policy.strip()
        self._mixing_args = {
            "mixup_alpha": mixup_alpha,
            "cutmix_alpha": cutmix_alpha,
            "mix_prob": mix_prob,
            "switch_prob": switch_prob,
            "noise_std": noise_std,
        }
        self._mixing: BatchMixing | None = None

    # ----------------------------------------------------------------- subclass interface
    # A subclass defines num_classes, class_names, _native_image_size, _native_channels and
    # _load_splits; _mean_std and _resize_steps have defaults for in-memory data.
    @property
    def num_classes(self) -> int:
        """Number of classes (0 for unlabelled data)."""
        raise NotImplementedError(f"{type(self).__name__} must define num_classes")

    @property
    def class_names(self) -> list[str]:
        """Class names, index = label."""
        raise NotImplementedError(f"{type(self).__name__} must define class_names")

    def _native_image_size(self) -> int:
        """Side of the stored images when ``image_size`` is None."""
        raise NotImplementedError(f"{type(self).__name__} must define _native_image_size")

    def _native_channels(self) -> int:
        """1 for grayscale data, 3 for colour."""
        raise NotImplementedError(f"{type(self).__name__} must define _native_channels")

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
        """Whether ``augment_on_device=None`` picks the batched path: yes for in-memory images."""
        return isinstance(self._ensure_setup()["train"], InMemoryImages)

    # ----------------------------------------------------------------- resolved properties
    @property
    def image_size(self) -> int:
        """Side of the images in every batch (the native size when constructed with ``image_size=None``)."""
        return self._image_size if self._image_size is not None else self._native_image_size()

    @property
    def local_image_size(self) -> int:
        """Side of the local multi-crop views (``image_size // 2`` unless set)."""
        return self._local_image_size if self._local_image_size is not None else max(1, self.image_size // 2)

    @property
    def device_views(self) -> bool:
        """True when SSL views are made per batch on the device (``augment_on_device`` resolved)."""
        if self.num_views == 0:
            return False
        if self.augment_on_device is None:
            return self._device_views_by_default()
        return self.augment_on_device

    @property
    def num_channels(self) -> int:
        """Channels in every batch: 3 with ``rgb=True`` or colour data, else 1."""
        return 3 if self.rgb else self._native_channels()

    @property
    def mean(self) -> list[float]:
        """Per-channel normalisation mean (available after ``setup``)."""
        self._ensure_setup()
        assert self._mean is not None
        return self._mean

    @property
    def std(self) -> list[float]:
        """Per-channel normalisation std (available after ``setup``)."""
        self._ensure_setup()
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

    def _ensure_setup(self) -> dict[str, ImageSource]:
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
        """The random recipe of each SSL view: ``num_views`` global views, then ``local_views`` local ones."""

        def spec(size: int, crop_scale: tuple[float, float]) -> ViewSpec:
            return simclr_view_spec(
                size,
                self.num_channels,
                crop_scale=crop_scale,
                jitter_strength=self.jitter_strength,
                blur=self.blur,
                hflip=self.hflip,
                solarize_prob=self.solarize_prob,
            )

        local = spec(self.local_image_size, self.local_crop_scale)
        return [spec(self.image_size, self.crop_scale)] * self.num_views + [local] * self.local_views

    def augment_transform(self) -> v2.Compose:
        """Supervised augmentation uint8 (C, H, W) -> uint8 (num_channels, image_size, image_size).

        Resize (image folders), channel repeat (``rgb``), padded random crop, flip (``hflip``), then
        the ``policy``: the policy is applied "in addition to the standard baseline pre-processing"
        as in the AutoAugment paper (Cubuk et al. 2019). ``lightning-tl preview`` shows its output.
        """
        steps = light_augment_steps(self.image_size, self.hflip)
        return v2.Compose([*self._resize_steps(), *self._channel_steps(), *steps, build_policy(self.policy)])

    @property
    def mixing(self) -> BatchMixing:
        """The per-batch VRM of supervised training (mixup, CutMix, noise; see ``mixup_alpha``)."""
        if self._mixing is None:
            classes = (
                self.num_classes
                if self._mixing_args["mixup_alpha"] or self._mixing_args["cutmix_alpha"]
                else 0
            )
            self._mixing = BatchMixing(classes, **self._mixing_args)
        return self._mixing

    def train_transform(self) -> Callable[[Tensor], Any]:
        """Supervised: :meth:`augment_transform` + normalisation; SSL: a :class:`MultiViewTransform`."""
        if self.num_views == 0:
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
        """Turn a :class:`RawViews` train batch into ``[views, labels]`` on its device; pass others on.

        Each image's views are drawn from its own sample seed (fixed by ``(seed, epoch, index)``), as
        in the per-sample path, so they do not depend on the batch or the process they land in.
        """
        if isinstance(batch, MixItem):  # supervised batch with VRM: mix on the device, seeded by the batch
            images, targets = self.mixing(batch.images, batch.labels, batch_seed(batch.seeds))
            if self.trainer is not None:  # soft targets too: cross_entropy wants them in the logits' dtype
                images, targets = self.trainer.precision_plugin.convert_input((images, targets))
            return [images, targets]
        if not isinstance(batch, RawViews):
            return batch
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
        return AugmentedDataset(self._ensure_setup()[split], self.eval_transform())

    def train_dataloader(self) -> ResumableDataLoader:
        """Shuffled, seeded, resumable train batches (see the class docstring for their structure)."""
        source = self._ensure_setup()["train"]
        ssl = self.num_views >= 2
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
            **self._loader_kwargs(),
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
        dataset = AugmentedDataset(self._ensure_setup()[split], self.eval_transform())
        sampler = UnpaddedDistributedSampler(len(dataset))
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, **self._loader_kwargs())

    def _loader_kwargs(self) -> dict[str, Any]:
        # A private generator: a DataLoader draws its workers' base seed from it whenever an iterator
        # is created, which would otherwise consume the global RNG (and shift it on resume).
        return {
            "generator": torch.Generator().manual_seed(self.seed),
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
        }
