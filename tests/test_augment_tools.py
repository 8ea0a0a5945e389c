"""Augmentation tools end to end: preview PNG, augsearch, and exact resume with a policy + mixup/CutMix."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from lightning_tl.augment import SeededBatch, SupervisedAugment, build_policy, parse_policy
from lightning_tl.augsearch import augment_search, random_policy
from lightning_tl.cli import main
from lightning_tl.datamodules import DigitsDataModule, ImageFolderDataModule
from lightning_tl.modules import ImageClassifier
from lightning_tl.preview import preview_size

TINY = {"backbone": "timm/test_resnet", "small_input": False, "lr": 0.05}


def _recipe(tmp_path: Path, policy: str = "autoaugment:svhn") -> Path:
    recipe = {
        "seed_everything": 0,
        "trainer": {"max_steps": 2, "accelerator": "cpu", "limit_val_batches": 2},
        "model": {"class_path": "lightning_tl.modules.ImageClassifier", "init_args": TINY},
        "data": {
            "class_path": "lightning_tl.datamodules.DigitsDataModule",
            "init_args": {
                "batch_size": 16,
                "image_size": 16,
                "rgb": True,
                "augment": {
                    "class_path": "lightning_tl.augment.SupervisedAugment",
                    "init_args": {"policy": policy},
                },
            },
        },
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_preview_writes_a_png_of_the_expected_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "grid.png"
    main(["preview", "--config", str(_recipe(tmp_path)), "--n", "5", "--images", "3", "--out", str(out)])
    with Image.open(out) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        assert image.size == preview_size(5, 3, 16) == (6 * (64 + 2) + 2, 28 + 3 * (64 + 2) + 2)
        pixels = torch.from_numpy(np.asarray(image)).float()
    assert pixels.std() > 10  # not blank
    assert "autoaugment:svhn" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # --config is required
        main(["preview", "--n", "2"])


def test_tiny_augsearch_emits_an_accepted_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "search.md"
    main(
        ["augsearch", "--config", str(_recipe(tmp_path, "none")), "--trials", "2", "--steps", "2",
         "--rungs", "2", "--sub-policies", "2", "--baseline", "", "--out", str(out)]
    )  # fmt: skip
    report = out.read_text()
    spec = report.split('policy: "')[1].split('"')[0]
    assert parse_policy(spec).source == "subpolicies" and build_policy(spec) is not None
    assert report.count("| ") >= 4 * 3 and "CPU-minutes" in report  # 2 trials in rung 0, 1 in rung 1
    assert spec in capsys.readouterr().out


def test_search_space_and_arguments() -> None:
    spec = random_policy(
        np.random.default_rng(0), sub_policies=3, ops_per_sub_policy=2, ops=("Rotate", "Invert")
    )
    parsed = parse_policy(spec)
    assert len(parsed.sub_policies) == 3 and all(len(sp) == 2 for sp in parsed.sub_policies)
    assert set(parsed.ops) <= {"Rotate", "Invert"}
    with pytest.raises(ValueError, match="unknown augmentation operation 'Spin'"):
        augment_search("unused.yaml", ops=("Spin",))
    with pytest.raises(ValueError, match="eta >= 2"):
        augment_search("unused.yaml", eta=1)


def _fit(steps: int, ckpt: str | None, save: str | None) -> list[float]:
    L.seed_everything(0)
    augment = SupervisedAugment("rand-m9-mstd0.5-inc1", mixup_alpha=0.4, cutmix_alpha=1.0, noise_std=0.05)
    dm = DigitsDataModule(batch_size=32, augment=augment)  # 1,257 train images: 40 batches per epoch
    model = ImageClassifier(in_channels=1, num_classes=10, **TINY)  # type: ignore[arg-type]
    losses: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
            losses.append(float(args[1]["loss"]))  # type: ignore[index]
            if save and trainer.global_step == 3:
                trainer.save_checkpoint(save)

    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, limit_val_batches=0,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()],
    )  # fmt: skip
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
    return losses


def test_resume_with_policy_and_mixing_is_exact(tmp_path: Path) -> None:
    ckpt = str(tmp_path / "mid.ckpt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = _fit(6, None, ckpt)
        resumed = _fit(6, ckpt, None)
    assert resumed == full[3:]


def test_image_folder_takes_a_policy_and_cutmix(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(6):
            pixels = torch.randint(0, 256, (20, 24, 3), generator=g, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.png")
    augment = SupervisedAugment("original", cutmix_alpha=1.0)
    dm = ImageFolderDataModule(
        str(tmp_path), image_size=16, batch_size=4, holdout=(0.2, 0.0), augment=augment
    )
    raw = next(iter(dm.train_dataloader()))
    assert isinstance(raw, SeededBatch) and raw.images.shape == (4, 3, 16, 16)
    x, targets = dm.on_after_batch_transfer(raw, 0)
    assert x.shape == (4, 3, 16, 16) and targets.shape == (4, 2)
    assert torch.allclose(targets.sum(1), torch.ones(4))
