"""``lightning-tl preview``: a PNG grid of train images and what the recipe's augmentation makes of them.

Row ``i`` shows train image ``i`` as stored (resized and channel-repeated as the model sees it,
first column), then ``--n`` augmented views from the datamodule's supervised augmentation
(padded crop, flip, then the ``policy``), each drawn with its own seed. The title names the policy.
mixup/CutMix/noise act on whole batches on the device and are not part of the per-image views.

Example::

    lightning-tl preview --config recipes/augment/fashion_mnist_randaugment.yaml --n 8 --out grid.png
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import lightning as L
import torch
import yaml
from jsonargparse import ArgumentParser
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision.utils import make_grid

from lightning_tl.datamodules import VisionDataModule
from lightning_tl.datamodules.sampling import sample_seed

TITLE_HEIGHT = 28  # pixels of the title strip above the grid
PADDING = 2  # pixels between tiles (make_grid's padding)
MIN_TILE = 64  # small images are enlarged (nearest neighbour) to at least this side


def load_datamodule(config: str, policy: str | None = None) -> L.LightningDataModule:
    """Instantiate the ``data:`` section of a recipe YAML (``class_path`` + ``init_args``).

    ``policy`` replaces the policy of its ``augment:`` (a :class:`~lightning_tl.augment.SupervisedAugment`,
    added when the recipe has none), e.g. ``"trivialaugment"``.
    """
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {config!r} does not exist")
    recipe = yaml.safe_load(path.read_text()) or {}
    data = recipe.get("data")
    if not isinstance(data, dict) or "class_path" not in data:
        raise ValueError(
            f"{config} has no `data:` section with a class_path; preview needs the recipe's datamodule"
        )
    init_args = dict(data.get("init_args") or {})
    if policy is not None:
        augment = init_args.get("augment") or {"class_path": "lightning_tl.augment.SupervisedAugment"}
        augment = {**augment, "init_args": {**(augment.get("init_args") or {}), "policy": policy}}
        init_args["augment"] = augment
    data = {"class_path": data["class_path"], "init_args": init_args}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(L.LightningDataModule, "data", required=True)
    cfg = parser.parse_object({"data": data})
    return parser.instantiate_classes(cfg).data


def _tile_scale(size: int) -> int:
    return max(1, math.ceil(MIN_TILE / size))


def preview_size(n_views: int, n_images: int, image_size: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG that :func:`preview_image` makes."""
    tile = image_size * _tile_scale(image_size)
    width = (n_views + 1) * (tile + PADDING) + PADDING
    return width, TITLE_HEIGHT + n_images * (tile + PADDING) + PADDING


def preview_image(dm: VisionDataModule, n_views: int = 8, n_images: int = 4, seed: int = 0) -> Image.Image:
    """The grid as a PIL image: originals in the first column, ``n_views`` augmented views after them."""
    if n_views < 1 or n_images < 1:
        raise ValueError(f"need n_views >= 1 and n_images >= 1, got {n_views}, {n_images}")
    if not isinstance(dm, VisionDataModule):
        raise TypeError(f"preview needs a VisionDataModule (ours or a subclass), got {type(dm).__name__}")
    if dm.views is not None:
        raise ValueError(
            f"preview shows the supervised augmentation; this recipe makes SSL views ({dm.views!r})"
        )
    train = dm.splits()["train"]
    if n_images > len(train):
        raise ValueError(f"n_images={n_images} but the train split has {len(train)} images")
    augment = dm.augment_transform()
    plain = dm.plain_steps()
    tiles: list[Tensor] = []
    for i in range(n_images):
        image = train.image(i)
        original = image
        for step in plain:
            original = step(original)
        tiles.append(original)
        for v in range(n_views):
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(sample_seed(seed, v, i))
                tiles.append(augment(image))
    batch = torch.stack([t if t.shape[0] == 3 else t.expand(3, -1, -1) for t in tiles])  # (N, 3, S, S)
    scale = _tile_scale(batch.shape[-1])
    batch = batch.repeat_interleave(scale, dim=-1).repeat_interleave(scale, dim=-2)  # nearest enlargement
    grid = make_grid(batch, nrow=n_views + 1, padding=PADDING, pad_value=255)  # (3, H, W) uint8
    body = Image.fromarray(grid.permute(1, 2, 0).contiguous().numpy())
    canvas = Image.new("RGB", (body.width, body.height + TITLE_HEIGHT), "white")
    canvas.paste(body, (0, TITLE_HEIGHT))
    policy = dm.augment.policy if dm.augment is not None else "none"
    title = f"policy: {policy}  |  {type(dm).__name__}: original + {n_views} views"
    ImageDraw.Draw(canvas).text((4, 8), title, fill="black")
    return canvas


def main(argv: list[str]) -> None:
    """``lightning-tl preview --config RECIPE [--n N] [--images K] [--policy SPEC] [--out PNG]``."""
    parser = argparse.ArgumentParser(prog="lightning-tl preview", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="recipe YAML whose data: section is previewed")
    parser.add_argument("--n", type=int, default=8, help="augmented views per image")
    parser.add_argument("--images", type=int, default=4, help="train images (rows)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the views")
    parser.add_argument("--policy", default=None, help="policy spec replacing the recipe's")
    parser.add_argument("--out", default="preview.png", help="output PNG path")
    args = parser.parse_args(argv)
    dm = load_datamodule(args.config, policy=args.policy)
    image = preview_image(dm, args.n, args.images, args.seed)  # type: ignore[arg-type]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out, format="PNG")
    policy = dm.augment.policy if isinstance(dm, VisionDataModule) and dm.augment is not None else "none"
    print(f"wrote {args.out} ({image.width}x{image.height}): policy {policy!r}")
