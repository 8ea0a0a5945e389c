"""Pairs in WebDataset-style tar shards, as open_clip's ``--train-data`` / ``--val-data`` with webdataset."""

from __future__ import annotations

from typing import Any

from lightning_tl.config_object import ConfigObject
from lightning_tl.datamodules.tar_shards import expand_shards


class CaptionShards(ConfigObject):
    """Pairs streamed from tar shards: ``{key}.jpg|png|webp`` + ``{key}.txt`` (+ ``{key}.cls``, a label).

    The source of :class:`~lightning_tl.datamodules.ImageTextDataModule` for data too large for a file
    list. Shards are split across ranks and workers (:class:`~lightning_tl.datamodules.tar_shards.TarShards`),
    so there should be at least as many as processes x workers. In YAML::

        dataset:
          class_path: lightning_tl.datamodules.CaptionShards
          init_args: {train: "data/train-{0000..0127}.tar", val: data/val-0000.tar}

    Args:
        train: shards of the training pairs: paths, a glob (``data/*.tar``) or a brace range
            (``data/{000..009}.tar``), or a list of them.
        val: shards of the validation pairs (same forms), or None for no validation.
        class_names: names of the ``.cls`` labels, index = label (the zero-shot prompts' class names).

    Example::

        >>> CaptionShards("train-{000..009}.tar").config()["init_args"]
        {'train': 'train-{000..009}.tar', 'val': None, 'class_names': None}
    """

    def __init__(
        self,
        train: str | list[str],
        val: str | list[str] | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        self.train = _shard_spec("train", train)
        self.val = _shard_spec("val", val) if val is not None else None
        self.class_names = list(class_names) if class_names is not None else None

    def train_files(self) -> list[str]:
        """The train shard files; raises ValueError when one is missing or a pattern matches none."""
        return expand_shards(self.train)

    def val_files(self) -> list[str] | None:
        """The validation shard files, or None without ``val``."""
        return expand_shards(self.val) if self.val is not None else None


def _shard_spec(name: str, value: Any) -> str | list[str]:
    """``value`` checked as one shard path / pattern or a non-empty list of them."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items or not all(isinstance(i, str) and i for i in items):
        raise ValueError(
            f"{name} must be a shard path, a glob or a brace range, or a list of them; got {value!r}"
        )
    return value if isinstance(value, str) else list(value)
