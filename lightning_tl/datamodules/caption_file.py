"""A file of (image path, caption) rows, CSV/TSV with a header line or JSONL, as open_clip's CSV data.

:class:`CaptionFile` names the file and its columns; :meth:`CaptionFile.read` checks every row (images
exist, captions are not empty, labels are integers) and gives a :class:`CaptionedFiles` source whose
images are decoded lazily.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from torch import Tensor

from lightning_tl.config_object import ConfigObject
from lightning_tl.datamodules.image_folder import decode

SUFFIXES = (".csv", ".tsv", ".jsonl")


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


class CaptionFile(ConfigObject):
    """Pairs listed in a file: one row per image, with its path and its caption (and a label, optionally).

    The source of :class:`~lightning_tl.datamodules.ImageTextDataModule` for your own captioned images,
    the layout of open_clip's CSV data sets (``--csv-img-key filepath --csv-caption-key caption``).
    In YAML::

        dataset:
          class_path: lightning_tl.datamodules.CaptionFile
          init_args: {path: data/captions.csv, image_root: data/images}

    Args:
        path: a ``.csv`` / ``.tsv`` file with a header line, or a ``.jsonl`` file (one object per line).
        image_root: folder the image paths are relative to; None = the file's folder.
        image_column, caption_column: columns holding the image path and the caption.
        label_column: column of integer labels (for zero-shot evaluation and kNN monitors), or None.
        class_names: names of the labels, index = label (the zero-shot prompts' class names); needs
            ``label_column``.

    Example::

        >>> CaptionFile("captions.tsv", caption_column="title")
        CaptionFile(path='captions.tsv', image_root=None, ..., caption_column='title', ...)
    """

    def __init__(
        self,
        path: str,
        image_root: str | None = None,
        image_column: str = "filepath",
        caption_column: str = "caption",
        label_column: str | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        if not isinstance(path, str) or Path(path).suffix.lower() not in SUFFIXES:
            raise ValueError(f"path must be a file ending in one of {SUFFIXES}, got {path!r}")
        for name, value in (("image_column", image_column), ("caption_column", caption_column)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must name a column of {path!r}, got {value!r}")
        if label_column is not None and (not isinstance(label_column, str) or not label_column):
            raise ValueError(f"label_column must name a column of {path!r} or be None, got {label_column!r}")
        if class_names is not None and label_column is None:
            raise ValueError(
                f"class_names {list(class_names)} name the labels of a label column: set label_column too"
            )
        self.path = path
        self.image_root = image_root
        self.image_column = image_column
        self.caption_column = caption_column
        self.label_column = label_column
        self.class_names = list(class_names) if class_names is not None else None

    def read(self) -> CaptionedFiles:
        """Check and load every row: each needs an existing image and a non-empty caption.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: no rows, missing columns, empty captions or non-integer labels (rows named),
                or image files that do not exist (the first ones listed, with the count).
        """
        path = self.path
        rows = read_rows(path)
        if not rows:
            raise ValueError(f"annotation file {path!r} has no rows: add one (image, caption) pair per line")
        columns = [self.image_column, self.caption_column] + (
            [self.label_column] if self.label_column else []
        )
        absent = [c for c in columns if c not in rows[0]]
        if absent:
            raise ValueError(
                f"{path!r} has no column(s) {absent}; its columns are {list(rows[0])}. Set the "
                "CaptionFile's image_column / caption_column / label_column"
            )
        root = Path(self.image_root) if self.image_root is not None else Path(path).parent
        paths, captions, labels, missing, empty = [], [], [], [], []
        for number, row in enumerate(rows, start=1):
            image = root / str(row[self.image_column])
            caption = str(row[self.caption_column] or "").strip()
            if not image.is_file():
                missing.append(str(image))
            if not caption:
                empty.append(number)
            paths.append(str(image))
            captions.append(caption)
            labels.append(self._label(row, number))
        if missing:
            raise ValueError(
                f"{len(missing)} image file(s) listed in {path!r} do not exist, e.g. {missing[:5]}; fix the "
                f"CaptionFile's image_root (now {str(root)!r}) or the paths in column {self.image_column!r}"
            )
        if empty:
            raise ValueError(f"{path!r} has empty captions in rows {empty[:10]}; every image needs a caption")
        return CaptionedFiles(paths, captions, labels)

    def _label(self, row: dict[str, Any], number: int) -> int:
        if self.label_column is None:
            return -1
        try:
            return int(row[self.label_column])
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"{self.path!r} row {number}: label {row[self.label_column]!r} is not an integer"
            ) from err


def read_rows(path: str) -> list[dict[str, Any]]:
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
    raise ValueError(f"annotation file {path!r} must end in one of {SUFFIXES}")
