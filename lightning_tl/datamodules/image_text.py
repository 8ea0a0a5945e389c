"""(image, caption) pairs for CLIP: captioned Fashion-MNIST / digits (offline), a caption file of your
images, or WebDataset-style tar shards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from lightning_tl.augment import SupervisedAugment
from lightning_tl.datamodules.base import VisionDataModule
from lightning_tl.datamodules.caption_file import CaptionFile
from lightning_tl.datamodules.caption_shards import CaptionShards
from lightning_tl.datamodules.captions import (
    DIGIT_CAPTION_NAMES,
    DIGIT_TEMPLATES,
    FASHION_CAPTION_NAMES,
    FASHION_TEMPLATES,
    CaptionedImages,
    pick_caption,
)
from lightning_tl.datamodules.datasets import ImageSource, InMemoryImages, channel_mean_std
from lightning_tl.datamodules.digits import load_digits
from lightning_tl.datamodules.fashion_mnist import TRAIN_SIZE, find_files, load_fashion_mnist
from lightning_tl.datamodules.loader import ResumableDataLoader
from lightning_tl.datamodules.moved_args import check_removed_args
from lightning_tl.datamodules.sampling import SeededSampler, UnpaddedDistributedSampler
from lightning_tl.datamodules.splits import check_holdout, fraction_to_count
from lightning_tl.datamodules.tar_shards import ShardLoader, TarShards
from lightning_tl.tokenizers import create_tokenizer

#: CLIP's normalisation (Radford et al. 2021), what open_clip towers expect.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BUILT_IN = ("fashion_mnist", "digits")
#: Arguments of :class:`VisionDataModule` that image-caption pairs do not take -> why.
NOT_FOR_PAIRS = {
    "views": (
        "multi-view SSL recipes do not apply to image-caption pairs; the train augmentation of the "
        "images is augment: {class_path: lightning_tl.augment.SupervisedAugment, init_args: {...}}"
    ),
    "train_subset": (
        "a class-stratified labelled-data budget does not apply to image-caption pairs; list the pairs "
        "to train on in a CaptionFile"
    ),
}


class ImageTextDataset(Dataset):
    """Captioned source item -> ``{"image": (C, H, W) float, "text": (L,) int64, "label": int}``.

    With an ``(index, sample_seed)`` key (training, :class:`SeededSampler`), the image transform and
    the choice among the item's captions draw from a CPU generator seeded with ``sample_seed``, so
    a sample depends on nothing else; with an ``int`` key (evaluation) the first caption is used.
    """

    def __init__(self, source: Any, transform: Callable[[Tensor], Tensor], tokenizer: Any) -> None:
        self.source, self.transform, self.tokenizer = source, transform, tokenizer

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(key, tuple):
            index, seed = key
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(seed)
                image = self.transform(self.source.image(index))
                caption = pick_caption(self.source.captions(index))
        else:
            index = key
            image = self.transform(self.source.image(index))
            caption = self.source.captions(index)[0]
        text = self.tokenizer(caption)[0]  # (L,)
        return {"image": image, "text": text, "label": self.source.label(index)}


class ImageTextDataModule(VisionDataModule):
    """Image-caption batches ``{"image", "text", "label"}`` for :class:`~lightning_tl.modules.CLIP`.

    The pairs come from ``dataset``, one of:

    - ``"fashion_mnist"`` (default) / ``"digits"``: the built-in images with captions made from several
      templates per class ("a photo of a {}.", ...), a random one per sample. Fashion-MNIST holds out
      ``val_size`` train images and tests on its official test set; digits holds out ``holdout``
      fractions (stratified). Labels are the classes.
    - a :class:`~lightning_tl.datamodules.caption_file.CaptionFile`: a CSV/TSV/JSONL file of image paths
      and captions; ``holdout`` fractions of the rows are held out (fixed by ``seed``). Every row is
      checked here, before any model is built.
    - a :class:`~lightning_tl.datamodules.caption_shards.CaptionShards`: WebDataset-style tar files
      streamed by :class:`~lightning_tl.datamodules.tar_shards.TarShards`, split across ranks and
      workers by shard, with their own validation shards.

    Captions are tokenized with open_clip's tokenizer (``tokenizer``: None = CLIP's BPE, or an open_clip
    model name) to ``context_length`` tokens, which must equal the model's. Training batches are
    shuffled and augmented by ``augment`` (padded random crop, flip, policy) from per-sample seeds and
    resume exactly mid-epoch; evaluation batches use the first caption and the deterministic transform.

    Args:
        dataset: the source of the pairs (see above).
        root: Fashion-MNIST folder (see :class:`~lightning_tl.datamodules.FashionMNISTDataModule`);
            None = the Debian package's. Only with ``dataset="fashion_mnist"``.
        val_size: Fashion-MNIST train images held out for validation; None = 5,000.
        holdout: (val, test) fractions held out of digits or of a caption file; None = (0.1, 0.15)
            for digits, (0.1, 0.0) for a file. Shards have their own ``val`` shards.
        tokenizer, context_length: see above.
        normalize: (mean, std); None = exact train statistics for built-in data, CLIP's constants
            (what open_clip towers expect) for files and shards.
        image_size: image side; None = native for built-in data (required for files and shards).
        augment: per-sample train augmentation (:class:`~lightning_tl.augment.SupervisedAugment`:
            crop, flip, policy); batch mixing does not apply to pairs. None = crop and flip.
        batch_size, num_workers, rgb, seed, loader: see :class:`VisionDataModule`. Its ``views`` and
            ``train_subset`` do not apply to pairs.

    Example::

        >>> dm = ImageTextDataModule("digits", image_size=8, context_length=12, batch_size=16)
        >>> batch = next(iter(dm.train_dataloader()))
        >>> tuple(batch["image"].shape), tuple(batch["text"].shape), dm.class_names[:2]
        ((16, 1, 8, 8), (16, 12), ['zero', 'one'])
    """

    def __init__(
        self,
        dataset: Literal["fashion_mnist", "digits"] | CaptionFile | CaptionShards = "fashion_mnist",
        *,
        root: str | None = None,
        val_size: int | None = None,
        holdout: tuple[float, float] | None = None,
        tokenizer: str | None = None,
        context_length: int = 77,
        normalize: tuple[list[float], list[float]] | None = None,
        image_size: int | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
        rgb: bool = False,
        seed: int = 0,
        augment: SupervisedAugment | None = None,
        loader: dict[str, Any] | None = None,
        **removed: Any,
    ) -> None:
        owner = type(self).__name__
        for key, why in NOT_FOR_PAIRS.items():
            if key in removed:
                raise TypeError(f"{owner} has no argument {key!r}: {why}")
        check_removed_args(owner, removed)
        super().__init__(
            batch_size=batch_size,
            num_workers=num_workers,
            image_size=image_size,
            rgb=rgb,
            seed=seed,
            augment=augment,
            loader=loader,
        )
        if not (dataset in BUILT_IN or isinstance(dataset, (CaptionFile, CaptionShards))):
            raise ValueError(
                f"dataset must be one of {BUILT_IN}, a CaptionFile (a CSV/TSV/JSONL file of image paths and "
                f"captions) or CaptionShards (tar shards), got {dataset!r}"
            )
        self.dataset = dataset
        self._check_source_args(root, val_size, holdout, image_size)
        if augment is not None and augment.batch_level:
            raise ValueError(
                f"augment={augment!r} mixes batches (mixup, CutMix, noise), which image-caption batches do "
                "not do: set mixup_alpha, cutmix_alpha and noise_std to 0"
            )
        if normalize is not None and (len(normalize) != 2 or len(normalize[0]) != len(normalize[1])):
            raise ValueError(
                f"normalize must be [mean, std] with one value per channel each, or null; got {normalize}"
            )
        self.root = root
        self.val_size = val_size if val_size is not None else 5000
        if dataset == "digits":
            self.holdout: tuple[float, float] | None = check_holdout(holdout or (0.1, 0.15))
        elif isinstance(dataset, CaptionFile):
            self.holdout = check_holdout(holdout or (0.1, 0.0))
        else:
            self.holdout = None
        self.tokenizer = create_tokenizer(tokenizer, context_length)
        self.context_length = context_length
        self._fixed_stats = (list(normalize[0]), list(normalize[1])) if normalize is not None else None
        # read and check everything now, before any model is built
        self._files = dataset.read() if isinstance(dataset, CaptionFile) else None
        self._shards = dataset.train_files() if isinstance(dataset, CaptionShards) else None
        self._val_shards = dataset.val_files() if isinstance(dataset, CaptionShards) else None
        if dataset == "fashion_mnist":
            find_files(root)
        self._shard_loader: ShardLoader | None = None
        self.save_hyperparameters(ignore=["dataset"])
        # the source as plain data (checkpoints load with weights_only=True); no views for pairs
        self.hparams.pop("views", None)
        source = dataset if isinstance(dataset, str) else dataset.config()
        self.hparams["dataset"] = source
        self._hparams_initial["dataset"] = source  # type: ignore[attr-defined]  # what loggers record

    def _check_source_args(
        self, root: str | None, val_size: int | None, holdout: Any, image_size: int | None
    ) -> None:
        """Refuse arguments the chosen source does not read (nothing is silently ignored)."""
        name = self.dataset if isinstance(self.dataset, str) else type(self.dataset).__name__
        shards = isinstance(self.dataset, CaptionShards)
        validation = "the CaptionShards' val shards" if shards else "holdout"
        if self.dataset != "fashion_mnist":
            for key, value in (("root", root), ("val_size", val_size)):
                if value is not None:
                    raise ValueError(
                        f"{key} is an argument of the Fashion-MNIST pairs; dataset={name!r} does not read "
                        "it: drop it" + (f" (validation pairs: {validation})" if key == "val_size" else "")
                    )
        elif val_size is not None and not 0 <= val_size < TRAIN_SIZE:
            raise ValueError(f"val_size must be in [0, {TRAIN_SIZE}) images of the train set, got {val_size}")
        if holdout is not None and (self.dataset == "fashion_mnist" or shards):
            where = "val_size" if self.dataset == "fashion_mnist" else validation
            raise ValueError(f"dataset={name!r} holds out no fractions: drop holdout and use {where}")
        if not isinstance(self.dataset, str) and image_size is None:
            raise ValueError(f"image_size is required for {name} pairs (e.g. 224 for open_clip)")

    # ----------------------------------------------------------------- what the data is
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_names(self) -> list[str]:
        """Class names used in captions and zero-shot prompts (index = label); [] without labels."""
        if self.dataset == "fashion_mnist":
            return list(FASHION_CAPTION_NAMES)
        if self.dataset == "digits":
            return list(DIGIT_CAPTION_NAMES)
        assert isinstance(self.dataset, (CaptionFile, CaptionShards))
        return list(self.dataset.class_names or [])

    def _native_image_size(self) -> int:
        return 28 if self.dataset == "fashion_mnist" else 16

    def _native_channels(self) -> int:
        return 1 if isinstance(self.dataset, str) else 3

    def _load_splits(self) -> dict[str, ImageSource]:
        names: tuple[str, ...]
        templates: tuple[str, ...]
        plain: dict[str, InMemoryImages] | None = None
        if self.dataset == "fashion_mnist":
            plain = load_fashion_mnist(self.root, 28, self.val_size, self.seed)
            names, templates = FASHION_CAPTION_NAMES, FASHION_TEMPLATES
        elif self.dataset == "digits":
            assert self.holdout is not None
            plain = load_digits(self.image_size, self.holdout, self.seed)
            names, templates = DIGIT_CAPTION_NAMES, DIGIT_TEMPLATES
        if plain is not None:
            return {k: CaptionedImages(v, names, templates) for k, v in plain.items()}  # type: ignore[misc]
        if self._files is None:  # shards: no map-style splits
            return {}
        assert self.holdout is not None
        n = len(self._files)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        n_val, n_test = (fraction_to_count(fraction, n) for fraction in self.holdout)
        parts = {
            "val": order[:n_val],
            "test": order[n_val : n_val + n_test],
            "train": order[n_val + n_test :],
        }
        return {k: self._files.subset(v.sort().values) for k, v in parts.items()}  # type: ignore[misc]

    def _mean_std(self, train: ImageSource) -> tuple[list[float], list[float]]:
        if self._fixed_stats is not None:
            return self._fixed_stats
        if isinstance(train, CaptionedImages):
            return channel_mean_std(train.data.images)
        return list(CLIP_MEAN), list(CLIP_STD)

    def _resize_steps(self) -> list[Callable[[Tensor], Tensor]]:
        if self.dataset == "fashion_mnist" and self.image_size != 28:
            return [v2.Resize(self.image_size, antialias=True)]
        if not isinstance(self.dataset, str):
            return [v2.Resize(self.image_size, antialias=True), v2.CenterCrop(self.image_size)]
        return []

    def setup(self, stage: str | None = None) -> None:
        if self._splits is None and self._shards is not None:
            self._splits, (self._mean, self._std) = {}, self._fixed_stats or (list(CLIP_MEAN), list(CLIP_STD))
            if self.rgb and len(self._mean) == 1:
                self._mean, self._std = self._mean * 3, self._std * 3
            return
        super().setup(stage)

    # ----------------------------------------------------------------- loaders
    def train_dataloader(self) -> Any:
        """Shuffled, seeded, resumable batches of pairs (the last incomplete batch is dropped)."""
        transform = self.train_transform()
        if self._shards is not None:
            data = TarShards(self._shards, transform, self.tokenizer, shuffle=True, seed=self.seed)
            self._shard_loader = ShardLoader(data, self.batch_size, **self.loader_kwargs())
            if self._pending_loader_state is not None:
                self._shard_loader.load_state_dict(self._pending_loader_state)
                self._pending_loader_state = None
            return self._shard_loader
        source = self.splits()["train"]
        sampler = SeededSampler(len(source), shuffle=True, seed=self.seed, drop_last=True)
        if sampler.num_samples < self.batch_size:
            raise ValueError(
                f"the train split has {sampler.num_samples} pairs per process, fewer than batch_size="
                f"{self.batch_size}; lower batch_size"
            )
        dataset = ImageTextDataset(source, transform, self.tokenizer)
        loader = ResumableDataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True, **self.loader_kwargs()
        )
        if self._pending_loader_state is not None:
            loader.load_state_dict(self._pending_loader_state)
            self._pending_loader_state = None
        self._train_loader = loader
        return loader

    def val_dataloader(self) -> Any:
        if self._shards is not None:
            if self._val_shards is None:
                return []
            data = TarShards(
                self._val_shards, self.eval_transform(), self.tokenizer, shuffle=False, seed=self.seed
            )
            return ShardLoader(data, self.batch_size, even=False, **self.loader_kwargs())
        return self._eval_loader("val")

    def _eval_loader(self, split: str) -> DataLoader:
        if self._shards is not None:
            raise ValueError("tar shards have no test split; evaluate with the CaptionShards' val shards")
        dataset = ImageTextDataset(self.splits()[split], self.eval_transform(), self.tokenizer)
        sampler = UnpaddedDistributedSampler(len(dataset))
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, **self.loader_kwargs())

    def _current_train_loader(self) -> Any:
        if self._shards is not None:
            return self._shard_loader
        return super()._current_train_loader()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict.get("train_loader")
        if state and self._shards is not None and self._shard_loader is not None:
            self._shard_loader.load_state_dict(state)
            return
        super().load_state_dict(state_dict)
