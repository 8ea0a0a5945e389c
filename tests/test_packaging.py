"""What `pip install` gives a user: the wheel, installed outside the checkout, runs the kernel and recipes.

`make setup` installs editable, which once hid a wheel without the C kernel's source (every on-device
recipe crashed) and without its recipes. Here the wheel is built from a copy of the source files,
installed into an empty folder with pip, and run from a third empty folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from own_data import cache_hub_weights, labelled_folder

ROOT = Path(__file__).resolve().parents[1]
#: What the build needs from the checkout (the package, its recipes, the build files).
SOURCES = ["lightning_tl", "recipes", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md"]

KERNEL_CHECK = """
import sys
import torch
import lightning_tl
from lightning_tl.augment import SimCLRViews, cpu_kernel
from lightning_tl.datamodules import DigitsDataModule

assert lightning_tl.__file__.startswith(sys.argv[1]), lightning_tl.__file__
assert cpu_kernel.SOURCE.is_file() and cpu_kernel.available(), cpu_kernel.unavailable_reason()
dm = DigitsDataModule(views=SimCLRViews(on_device=True), image_size=8, batch_size=16)
dm.setup("fit")
batch = next(iter(dm.train_dataloader()))
views = dm.on_after_batch_transfer(batch, 0)[0]
assert len(views) == 2 and views[0].shape == (16, 1, 8, 8) and torch.isfinite(views[0]).all()
print("kernel views ok")
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the sources, pip-installed into a fresh folder; returns that folder."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        else:
            shutil.copy2(path, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(base / "dist"), str(source)]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    (wheel,) = (base / "dist").glob("lightning_tl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lightning_tl/augment/_cpu_views.c" in names and "lightning_tl/py.typed" in names
    recipes = sorted(str(p.relative_to(ROOT / "recipes")) for p in (ROOT / "recipes").rglob("*.yaml"))
    assert sorted(n.split("_recipes/", 1)[1] for n in names if "/_recipes/" in n) == recipes
    site = base / "site"
    install = [*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    return site


def _run(site: Path, cwd: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """Run with only the installed package importable from ``site`` (not the checkout)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "LIGHTNING_TL_CACHE": str(cwd / "kernel-cache"),  # compile the installed kernel source afresh
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(list(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_installed_wheel_builds_the_kernel_and_makes_views(installed: Path, tmp_path: Path) -> None:
    proc = _run(installed, tmp_path, sys.executable, "-c", KERNEL_CHECK, str(installed))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "kernel views ok" in proc.stdout
    assert list((tmp_path / "kernel-cache").glob("cpu_views_*.so"))  # built from the wheel's C source


def test_installed_command_lists_and_runs_recipes_in_an_empty_folder(installed: Path, tmp_path: Path) -> None:
    command = str(installed / "bin" / "lightning-tl")  # the console script pip wrote
    listing = _run(installed, tmp_path, command, "recipes")
    assert listing.returncode == 0, listing.stderr[-3000:]
    assert "simclr/digits" in listing.stdout
    assert str(installed / "lightning_tl" / "_recipes") in listing.stdout  # packaged, not the checkout
    fit = _run(installed, tmp_path, command, "fit", "--recipe", "simclr/digits", "--trainer.fast_dev_run=1")
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "fast_dev_run" in fit.stderr + fit.stdout


def test_installed_command_fine_tunes_cached_hub_weights_offline(installed: Path, tmp_path: Path) -> None:
    """The user's path end to end: the installed command fine-tunes timm's ImageNet tag on a folder of
    photos with HF_HUB_OFFLINE=1 and a filled cache (conftest's cache; weights written by the test)."""
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    cache_hub_weights()  # timm/resnet18.a1_in1k in the Hugging Face cache layout
    root = labelled_folder(tmp_path / "photos")
    command = str(installed / "bin" / "lightning-tl")
    small = ["--data.init_args.image_size=32", "--data.init_args.batch_size=4", "--trainer.max_epochs=1"]
    limits = ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]
    recipe = ["fit", "--recipe", "finetune/imagefolder", f"--data.init_args.root={root}"]
    fit = _run(installed, tmp_path, command, *recipe, *small, *limits)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert (tmp_path / "runs/finetune_imagefolder/checkpoints/last.ckpt").is_file()
