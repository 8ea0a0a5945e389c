"""Users' own data, generated for tests: image folders, an unlabelled target folder, a captions CSV.

The files are real PNGs and JPEGs of several sizes (20x30 up to 90x70 px), so the data path decodes,
resizes and batches images of arbitrary shapes, as with photos a user copies into a folder.
:data:`OWN_DATA_RECIPE_ARGS` maps each "your own data" recipe to the overrides it needs on such data
(``tests/test_cli.py`` runs every recipe with ``--trainer.fast_dev_run=true``); the recipes that
fine-tune ImageNet weights get random ones of the same architecture in the test session's hub cache.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from hub_cache import REVISION, fill_hf_safetensors, half, hf_repo_folder
from PIL import Image

#: (height, width) of the generated images, cycled over the files.
SIZES = ((20, 30), (48, 36), (90, 70), (33, 64), (70, 90))
CLASSES = ("cat", "dog", "eel")
#: The ImageNet weights of the fine-tuning and DANN recipes (timm's Hugging Face repo ``timm/<tag>``).
HUB_TAG = "resnet18.a1_in1k"


def image_bytes(seed: int, size: tuple[int, int], fmt: str) -> bytes:
    """An RGB image (a colour gradient plus noise, different per ``seed``) encoded as PNG or JPEG."""
    rng = np.random.default_rng(seed)
    h, w = size
    ramp = np.linspace(0, 1, h * w).reshape(h, w, 1) * rng.uniform(0, 255, (1, 1, 3))  # (H, W, 3)
    pixels = np.clip(ramp + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def write_image(path: Path, seed: int, size: tuple[int, int]) -> Path:
    """Write a PNG or JPEG (chosen by the suffix) to ``path``, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    path.write_bytes(image_bytes(seed, size, fmt))
    return path


def truncate(path: Path, keep: float = 0.6) -> Path:
    """Cut ``path`` to the first ``keep`` fraction of its bytes (an interrupted copy or download)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def labelled_folder(root: Path, per_class: int = 6, corrupt: bool = False) -> Path:
    """``root/<class>/...`` for 3 classes, PNGs and JPEGs of several sizes; "dog" nests its images.

    "dog" keeps its files in ``dog/indoor/sofa/`` and ``dog/outdoor/`` (nested class folders). With
    ``corrupt=True`` one more file, ``eel/broken.png``, is a truncated PNG.
    """
    seed = 0
    for name in CLASSES:
        for i in range(per_class):
            sub = {0: "", 1: "indoor/sofa/", 2: "outdoor/"}[i % 3] if name == "dog" else ""
            suffix = ".jpg" if i % 2 else ".png"
            write_image(root / name / f"{sub}{name}{i}{suffix}", seed, SIZES[seed % len(SIZES)])
            seed += 1
    if corrupt:
        truncate(write_image(root / "eel" / "broken.png", seed, (64, 64)))
    return root


def unlabelled_folder(root: Path, count: int = 12) -> Path:
    """Any tree of images (no class structure): the unlabelled target domain of DANN, or SimCLR's data."""
    for i in range(count):
        sub = "day1/" if i % 2 else "day2/raw/"
        write_image(root / f"{sub}img{i}{'.jpg' if i % 3 else '.png'}", 1000 + i, SIZES[i % len(SIZES)])
    return root


def captions_csv(root: Path, count: int = 12) -> Path:
    """``root/captions.csv`` (columns filepath, caption) with images under ``root/images/``."""
    path = root / "captions.csv"
    root.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["filepath", "caption"])
        for i in range(count):
            name = f"images/{i:03d}{'.jpg' if i % 2 else '.png'}"
            write_image(root / name, 2000 + i, SIZES[i % len(SIZES)])
            writer.writerow([name, f"a {CLASSES[i % 3]} photographed on day {i}, seen from the side"])
    return path


def cache_hub_weights(tag: str = HUB_TAG) -> Path:
    """Random weights in the Hugging Face cache where timm's loader finds ``timm/<tag>`` (offline).

    Only inside a test: ``tests/conftest.py`` points ``HF_HUB_CACHE`` at a temporary folder and sets
    ``HF_HUB_OFFLINE=1``; anywhere else this would put random weights in the user's real cache.
    """
    import timm

    if "PYTEST_CURRENT_TEST" not in os.environ or os.environ.get("HF_HUB_OFFLINE") != "1":
        raise RuntimeError(
            "cache_hub_weights writes random weights into the hub cache: call it in tests only"
        )
    path = hf_repo_folder(f"timm/{tag}") / "snapshots" / REVISION / "model.safetensors"
    if path.is_file():
        return path
    return fill_hf_safetensors(f"timm/{tag}", "model.safetensors", half(timm.create_model(tag).state_dict()))


def _finetune_args(tmp: Path) -> list[str]:
    cache_hub_weights()
    return [
        f"--data.init_args.root={labelled_folder(tmp / 'photos')}",
        "--data.init_args.image_size=32",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
    ]


def _simclr_args(tmp: Path) -> list[str]:
    return [
        f"--data.init_args.root={unlabelled_folder(tmp / 'photos')}",
        "--data.init_args.image_size=32",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
    ]


def _dann_args(tmp: Path) -> list[str]:
    cache_hub_weights()
    return [
        f"--data.init_args.source.init_args.root={labelled_folder(tmp / 'source')}",
        f"--data.init_args.target.init_args.root={unlabelled_folder(tmp / 'target')}",
        "--data.init_args.source.init_args.image_size=32",
        "--data.init_args.target.init_args.image_size=32",
        "--data.init_args.source.init_args.batch_size=4",
        "--data.init_args.target.init_args.batch_size=4",
        "--data.init_args.source.init_args.num_workers=0",
        "--data.init_args.target.init_args.num_workers=0",
    ]


def _clip_args(tmp: Path) -> list[str]:
    return [
        f"--data.init_args.dataset.path={captions_csv(tmp / 'pairs')}",
        "--data.init_args.image_size=32",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
    ]


#: recipe name (relative to recipes/) -> builds its data under a tmp folder, returns the CLI overrides.
OWN_DATA_RECIPE_ARGS: dict[str, Callable[[Path], list[str]]] = {
    "finetune/imagefolder.yaml": _finetune_args,
    "simclr/imagefolder.yaml": _simclr_args,
    "dann/imagefolders.yaml": _dann_args,
    "clip/captions_csv.yaml": _clip_args,
}
