"""Captioned image sources for CLIP: annotation files (CSV/TSV/JSONL) + images, built-in captioned data.

A *captioned source* is an :class:`~lightning_tl.datamodules.datasets.ImageSource` (``image(i)``,
``label(i)``) that also has ``captions(i) -> list[str]``; training picks one caption per sample.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_tl.datamodules.datasets import InMemoryImages
from lightning_tl.datamodules.image_folder import decode

#: Training caption templates of the built-in data sets (several per class, as alt-text varies).
FASHION_TEMPLATES = (
    "a photo of a {}.",
    "a black and white photo of a {}.",
    "a low resolution photo of the {}.",
    "a grayscale picture of a {}, a piece of clothing.",
    "a product photo of a {}.",
    "a small photo of the {}.",
)
FASHION_CAPTION_NAMES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
DIGIT_TEMPLATES = (
    "a photo of the digit {}.",
    "a handwritten {}.",
    "the number {}, written by hand.",
    "a low resolution image of a handwritten digit {}.",
)
DIGIT_CAPTION_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def create_tokenizer(name: str | None = None, context_length: int = 77) -> Any:
    """open_clip's tokenizer for a model: CLIP's byte-pair encoding (bundled with open_clip, offline) or,
    for models with a Hugging Face text tower, that model's Hugging Face tokenizer (from the HF cache).

    Args:
        name: an open_clip model name (or ``hf-hub:org/name``) whose tokenizer to use
            (``open_clip.get_tokenizer``), or None for CLIP's ``SimpleTokenizer``.
        context_length: tokens per caption (start and end tokens included; longer captions are cut).

    Raises:
        ValueError: unknown model name or too short ``context_length``.
        ImportError: the model's tokenizer needs ``transformers``, which is not installed.
        WeightsNotCachedError: a Hugging Face tokenizer that is not cached (offline / no network).
    """
    import open_clip

    if context_length < 3:
        raise ValueError(f"context_length must be >= 3 (start, one token, end), got {context_length}")
    if name is None:
        return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)
    if not name.startswith("hf-hub:") and name not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip model {name!r} for the tokenizer; open_clip.list_models() lists them "
            "('hf-hub:org/name' for a model on the Hugging Face hub)"
        )
    from lightning_tl.modules._clip_towers import open_clip_config

    config = open_clip_config(name)  # checks transformers is there for a Hugging Face tokenizer
    try:
        tokenizer = open_clip.get_tokenizer(name, context_length=context_length)
    except OSError as err:  # transformers' AutoTokenizer: not cached and offline / no network
        from lightning_tl.weights import hf_cache_miss

        repo = str(config.get("text_cfg", {}).get("hf_tokenizer_name") or name)
        raise hf_cache_miss(f"the tokenizer of {name!r}", repo, err) from err
    return tokenizer


def tokenizer_kind(tokenizer: Any) -> str:
    """Which vocabulary ``tokenizer`` encodes with, in the words ``model_tokenizer`` of CLIP uses."""
    inner = getattr(tokenizer, "tokenizer", None)
    if type(tokenizer).__name__ == "HFTokenizer" and inner is not None:
        return f"Hugging Face tokenizer {getattr(inner, 'name_or_path', '?')!r}"
    if type(tokenizer).__name__ == "SimpleTokenizer":
        return "open_clip's CLIP BPE"
    return type(tokenizer).__name__


class CaptionedImages:
    """In-memory images with labels and class-name captions from ``templates`` (``template.format(name)``)."""

    def __init__(self, images: InMemoryImages, names: Sequence[str], templates: Sequence[str]) -> None:
        if not templates or any("{}" not in t for t in templates):
            raise ValueError(f"templates must be non-empty and each contain '{{}}', got {list(templates)}")
        self.data = images
        self.names = list(names)
        self.templates = list(templates)

    def __len__(self) -> int:
        return len(self.data)

    def image(self, index: int) -> Tensor:
        return self.data.image(index)  # (C, H, W) uint8

    def label(self, index: int) -> int:
        return self.data.label(index)

    def captions(self, index: int) -> list[str]:
        name = self.names[self.label(index)]
        return [t.format(name) for t in self.templates]

    def subset(self, indices: Tensor) -> CaptionedImages:
        return CaptionedImages(self.data.subset(indices), self.names, self.templates)


class CaptionedFiles:
    """Image files (decoded lazily to RGB uint8) with one caption each and optional labels (-1: none)."""

    def __init__(self, paths: list[str], captions: list[str], labels: list[int]) -> None:
        self.paths, self._captions, self.labels = paths, captions, labels

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> Tensor:
        return decode(self.paths[index], 3)  # (3, H, W)

    def label(self, index: int) -> int:
        return self.labels[index]

    def captions(self, index: int) -> list[str]:
        return [self._captions[index]]

    def subset(self, indices: Tensor) -> CaptionedFiles:
        rows = indices.tolist()
        return CaptionedFiles(
            [self.paths[i] for i in rows], [self._captions[i] for i in rows], [self.labels[i] for i in rows]
        )


def read_annotations(path: str) -> list[dict[str, Any]]:
    """Rows of a ``.csv`` / ``.tsv`` (header line) or ``.jsonl`` (one object per line) file."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"annotation file {path!r} does not exist")
    suffix = file.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number} is not valid JSON: {err}") from err
        return rows
    if suffix in (".csv", ".tsv"):
        with file.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    raise ValueError(f"annotation file {path!r} must end in .csv, .tsv or .jsonl")


def captioned_files(
    path: str,
    image_root: str | None,
    image_column: str,
    caption_column: str,
    label_column: str | None,
) -> CaptionedFiles:
    """Check and load an annotation file: every row needs an existing image and a non-empty caption.

    Raises:
        ValueError: no rows, missing columns, empty captions or non-integer labels (rows named), or
            image files that do not exist (the first ones listed, with the count).
    """
    rows = read_annotations(path)
    if not rows:
        raise ValueError(f"annotation file {path!r} has no rows: add one (image, caption) pair per line")
    columns = [image_column, caption_column] + ([label_column] if label_column else [])
    absent = [c for c in columns if c not in rows[0]]
    if absent:
        raise ValueError(
            f"{path!r} has no column(s) {absent}; its columns are {list(rows[0])}. Set image_column / "
            "caption_column / label_column"
        )
    root = Path(image_root) if image_root is not None else Path(path).parent
    paths, captions, labels, missing, empty = [], [], [], [], []
    for number, row in enumerate(rows, start=1):
        image = root / str(row[image_column])
        caption = str(row[caption_column] or "").strip()
        if not image.is_file():
            missing.append(str(image))
        if not caption:
            empty.append(number)
        paths.append(str(image))
        captions.append(caption)
        if label_column:
            try:
                labels.append(int(row[label_column]))
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"{path!r} row {number}: label {row[label_column]!r} is not an integer"
                ) from err
        else:
            labels.append(-1)
    if missing:
        raise ValueError(
            f"{len(missing)} image file(s) listed in {path!r} do not exist, e.g. {missing[:5]}; "
            "fix image_root "
            f"(now {str(root)!r}) or the paths in column {image_column!r}"
        )
    if empty:
        raise ValueError(f"{path!r} has empty captions in rows {empty[:10]}; every image needs a caption")
    return CaptionedFiles(paths, captions, labels)


def pick_caption(captions: list[str], generator: torch.Generator | None = None) -> str:
    """One caption, uniformly at random (from ``generator`` or torch's global RNG)."""
    if len(captions) == 1:
        return captions[0]
    return captions[int(torch.randint(len(captions), (), generator=generator))]
