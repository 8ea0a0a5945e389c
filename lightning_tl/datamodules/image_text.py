"""(image, caption) pairs for CLIP: annotation file + image folder, WebDataset-style tar shards, or
captioned Fashion-MNIST / digits (offline)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from lightning_tl.datamodules.base import VisionDataModule
from lightning_tl.datamodules.captions import (
    DIGIT_CAPTION_NAMES,
    DIGIT_TEMPLATES,
    FASHION_CAPTION_NAMES,
    FASHION_TEMPLATES,
    CaptionedImages,
    captioned_files,
    create_tokenizer,
    pick_caption,
)
from lightning_tl.datamodules.datasets import ImageSource, channel_mean_std
from lightning_tl.datamodules.digits import DigitsDataModule
from lightning_tl.datamodules.fashion_mnist import FashionMNISTDataModule
from lightning_tl.datamodules.loader import ResumableDataLoader
from lightning_tl.datamodules.sampling import SeededSampler, UnpaddedDistributedSampler
from lightning_tl.datamodules.splits import check_fractions, fraction_to_count
from lightning_tl.datamodules.tar_shards import ShardLoader, TarShards, expand_shards

#: CLIP's normalisation (Radford et al. 2021), what open_clip towers expect.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BUILT_IN = ("fashion_mnist", "digits")


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

    One of three sources:

    - ``dataset="fashion_mnist"`` / ``"digits"`` (default): the built-in images with captions made
      from several templates per class ("a photo of a {}.", ...), a random one per sample; splits as
      in :class:`FashionMNISTDataModule` / :class:`DigitsDataModule`. Labels are the classes.
    - ``annotations``: a CSV/TSV (header line) or JSONL file with an image path column (relative to
      ``image_root``, default the file's folder) and a caption column; ``val_fraction`` /
      ``test_fraction`` of the rows are held out (fixed by ``seed``). All paths are checked up front.
    - ``shards``: WebDataset-style tar files (``{key}.jpg|png|webp`` + ``{key}.txt`` [+ ``{key}.cls``])
      streamed by :class:`~lightning_tl.datamodules.tar_shards.TarShards`, split across ranks and
      workers by shard; ``val_shards`` for validation.

    Captions are tokenized with open_clip's tokenizer (``tokenizer``: None = CLIP's BPE, or an
    open_clip model name) to ``context_length`` tokens, which must equal the model's. Training
    batches are shuffled and augmented (padded random crop, flip) from per-sample seeds and resume
    exactly mid-epoch; evaluation batches use the first caption and the deterministic transform.

    Args:
        dataset: built-in captioned data set, or None when ``annotations`` or ``shards`` is given.
        root: Fashion-MNIST folder (see :class:`FashionMNISTDataModule`).
        annotations, image_root, image_column, caption_column, label_column: annotation-file source.
        class_names: names of the labels of an annotation file or shards (for zero-shot evaluation).
        shards, val_shards: tar shard paths, globs or ``{000..009}`` brace ranges.
        tokenizer, context_length: see above.
        val_size: Fashion-MNIST images held out of its train set.
        val_fraction, test_fraction: held-out fractions (digits and annotation files).
        image_size: image side; None = native for built-in data (required for files and shards).
        mean, std: normalisation; None = exact train statistics for built-in data, CLIP's constants
            (what open_clip towers expect) for files and shards.
        other arguments: see :class:`VisionDataModule`.
    """

    def __init__(
        self,
        dataset: str | None = "fashion_mnist",
        *,
        root: str | None = None,
        annotations: str | None = None,
        image_root: str | None = None,
        image_column: str = "filepath",
        caption_column: str = "caption",
        label_column: str | None = None,
        class_names: list[str] | None = None,
        shards: str | list[str] | None = None,
        val_shards: str | list[str] | None = None,
        tokenizer: str | None = None,
        context_length: int = 77,
        val_size: int = 5000,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        image_size: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
        rgb: bool = False,
        seed: int = 0,
        hflip: bool = True,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            num_workers=num_workers,
            image_size=image_size,
            rgb=rgb,
            seed=seed,
            hflip=hflip,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
        )
        given = [n for n, v in (("dataset", dataset), ("annotations", annotations), ("shards", shards)) if v]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one source of pairs: dataset (one of {BUILT_IN}), annotations (a CSV/TSV/"
                f"JSONL file of image paths and captions) or shards; got {given or 'none'} (set dataset: "
                "null when using annotations or shards)"
            )
        if dataset is not None and dataset not in BUILT_IN:
            raise ValueError(f"dataset must be one of {BUILT_IN} or None, got {dataset!r}")
        if dataset is None and image_size is None:
            raise ValueError(
                "image_size is required for annotation files and shards (e.g. 224 for open_clip)"
            )
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        check_fractions(val_fraction, test_fraction)
        self.tokenizer = create_tokenizer(tokenizer, context_length)
        self.context_length = context_length
        self.dataset, self.root, self.val_size = dataset, root, val_size
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self._class_names = list(class_names) if class_names is not None else None
        self._fixed_stats = (list(mean), list(std)) if mean is not None and std is not None else None
        self._files = None
        if annotations is not None:  # read and check every row now, before any model is built
            self._files = captioned_files(annotations, image_root, image_column, caption_column, label_column)
        self._shards = expand_shards(shards) if shards is not None else None
        self._val_shards = expand_shards(val_shards) if val_shards is not None else None
        if dataset == "fashion_mnist":
            FashionMNISTDataModule(root, val_size=val_size)  # checks the files exist
        self._shard_loader: ShardLoader | None = None
        self.save_hyperparameters()

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
        return list(self._class_names or [])

    def _native_image_size(self) -> int:
        return 28 if self.dataset == "fashion_mnist" else 16

    def _native_channels(self) -> int:
        return 1 if self.dataset is not None else 3

    def _load_splits(self) -> dict[str, ImageSource]:
        names: tuple[str, ...]
        templates: tuple[str, ...]
        if self.dataset == "fashion_mnist":
            inner = FashionMNISTDataModule(self.root, val_size=self.val_size, image_size=28, seed=self.seed)
            names, templates = FASHION_CAPTION_NAMES, FASHION_TEMPLATES
        elif self.dataset == "digits":
            inner = DigitsDataModule(  # type: ignore[assignment]
                val_fraction=self.val_fraction,
                test_fraction=self.test_fraction or 0.15,
                image_size=self.image_size,
                seed=self.seed,
            )
            names, templates = DIGIT_CAPTION_NAMES, DIGIT_TEMPLATES
        if self.dataset is not None:
            splits = inner._load_splits()
            return {k: CaptionedImages(v, names, templates) for k, v in splits.items()}  # type: ignore[arg-type,misc]
        if self._files is None:  # shards: no map-style splits
            return {}
        n = len(self._files)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        n_val, n_test = fraction_to_count(self.val_fraction, n), fraction_to_count(self.test_fraction, n)
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
        if self.dataset is None:
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
            self._shard_loader = ShardLoader(data, self.batch_size, **self._loader_kwargs())
            if self._pending_loader_state is not None:
                self._shard_loader.load_state_dict(self._pending_loader_state)
                self._pending_loader_state = None
            return self._shard_loader
        source = self._ensure_setup()["train"]
        sampler = SeededSampler(len(source), shuffle=True, seed=self.seed, drop_last=True)
        if sampler.num_samples < self.batch_size:
            raise ValueError(
                f"the train split has {sampler.num_samples} pairs per process, fewer than batch_size="
                f"{self.batch_size}; lower batch_size"
            )
        dataset = ImageTextDataset(source, transform, self.tokenizer)
        loader = ResumableDataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True, **self._loader_kwargs()
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
            return ShardLoader(data, self.batch_size, even=False, **self._loader_kwargs())
        return self._eval_loader("val")

    def _eval_loader(self, split: str) -> DataLoader:
        if self._shards is not None:
            raise ValueError("tar shards have no test split; evaluate with val_shards")
        dataset = ImageTextDataset(self._ensure_setup()[split], self.eval_transform(), self.tokenizer)
        sampler = UnpaddedDistributedSampler(len(dataset))
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, **self._loader_kwargs())

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
