"""MNIST-M-style blending: |photo crop - image| per channel, deterministic, labels kept."""

from __future__ import annotations

import pytest
import torch

from lightning_tl.datamodules import DigitsDataModule, FashionMNISTMDataModule
from lightning_tl.datamodules.blended import DigitsMDataModule, blend_with_photos, load_photos


def _photos() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (3, 12, 15), generator=g, dtype=torch.uint8) for _ in range(3)]


def test_every_output_is_the_absolute_difference_with_some_crop_of_some_photo() -> None:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (20, 1, 5, 6), generator=g, dtype=torch.uint8)
    photos = _photos()
    out = blend_with_photos(images, photos, seed=3)
    assert out.shape == (20, 3, 5, 6) and out.dtype == torch.uint8
    for i in range(20):  # brute force: one (photo, top, left) reproduces the output exactly
        matches = [
            (k, top, left)
            for k, p in enumerate(photos)
            for top in range(p.shape[1] - 5 + 1)
            for left in range(p.shape[2] - 6 + 1)
            if torch.equal(
                out[i], (p[:, top : top + 5, left : left + 6].int() - images[i].int()).abs().byte()
            )
        ]
        assert matches, f"image {i} is not |crop - image| for any crop"


def test_blending_is_deterministic_under_the_seed() -> None:
    images = torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8)
    photos = _photos()
    a, b = blend_with_photos(images, photos, 7), blend_with_photos(images, photos, 7)
    assert torch.equal(a, b)
    assert not torch.equal(a, blend_with_photos(images, photos, 8))


def test_constant_photo_gives_the_inverted_digit() -> None:
    images = torch.tensor([[[[0, 100], [200, 255]]]], dtype=torch.uint8)  # (1, 1, 2, 2)
    white = torch.full((3, 4, 4), 255, dtype=torch.uint8)
    out = blend_with_photos(images, [white], seed=0)
    assert torch.equal(out[0, 0], torch.tensor([[255, 155], [55, 0]], dtype=torch.uint8))
    assert torch.equal(out[0, 0], out[0, 2])


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="grayscale"):
        blend_with_photos(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), _photos(), 0)
    with pytest.raises(ValueError, match="photo 0"):
        blend_with_photos(torch.zeros(2, 1, 20, 20, dtype=torch.uint8), _photos(), 0)
    with pytest.raises(ValueError, match="at least one photo"):
        blend_with_photos(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), [], 0)
    with pytest.raises(ValueError, match="photo_scale"):
        DigitsMDataModule(photo_scale=0.0)
    with pytest.raises(ValueError, match="blend_seed"):
        DigitsMDataModule(blend_seed=-1)


def test_real_photos_are_colour_and_offline() -> None:
    photos = load_photos(0.5)
    assert len(photos) == 8
    assert all(p.dtype == torch.uint8 and p.shape[0] == 3 and min(p.shape[1:]) >= 100 for p in photos)


def test_digits_m_keeps_splits_and_labels_and_is_rgb() -> None:
    gray = DigitsDataModule(seed=4)
    colour = DigitsMDataModule(seed=4, blend_seed=2)
    assert colour.num_channels == 3 and colour.image_size == 16
    for split in ("train", "val", "test"):
        a, b = gray.splits()[split], colour.splits()[split]
        assert torch.equal(a.labels, b.labels)  # type: ignore[attr-defined]
        assert b.images.shape == (len(a), 3, 16, 16)  # type: ignore[attr-defined]
    again = DigitsMDataModule(seed=4, blend_seed=2).splits()["test"]
    assert torch.equal(again.images, colour.splits()["test"].images)  # type: ignore[attr-defined]
    other = DigitsMDataModule(seed=4, blend_seed=3).splits()["test"]
    assert not torch.equal(other.images, again.images)  # type: ignore[attr-defined]
    x, _ = next(iter(colour.train_dataloader()))
    assert x.shape == (256, 3, 16, 16) and len(colour.mean) == 3


def test_fashion_mnist_m_is_importable_and_rgb() -> None:
    dm = FashionMNISTMDataModule(val_size=1000, blend_seed=1)
    assert dm.num_channels == 3 and dm.num_classes == 10 and dm.hparams["blend_seed"] == 1
