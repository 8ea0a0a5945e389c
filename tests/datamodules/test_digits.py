"""DigitsDataModule: batches, splits, determinism across workers and RNG state, argument errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lightning_tl.augment import BYOLViews, DINOViews, MoCoV2Views, SimCLRViews, SupervisedAugment, ViewSpec
from lightning_tl.augment.views import ViewRecipe
from lightning_tl.datamodules import DigitsDataModule, VisionDataModule


def _first_batch(dm: DigitsDataModule) -> list:
    """The first train batch as the model sees it (after the on-device view hook)."""
    return dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)


def test_supervised_batches_and_properties() -> None:
    dm = DigitsDataModule(batch_size=32)
    assert isinstance(dm, VisionDataModule)
    assert (dm.num_classes, dm.num_channels, dm.image_size) == (10, 1, 16)
    assert dm.class_names == [str(d) for d in range(10)]
    x, y = _first_batch(dm)
    assert x.shape == (32, 1, 16, 16) and x.dtype == torch.float32
    assert y.shape == (32,) and y.dtype == torch.int64
    vx, vy = next(iter(dm.val_dataloader()))
    assert vx.shape == (32, 1, 16, 16) and vy.dtype == torch.int64
    tx, _ = next(iter(dm.test_dataloader()))
    assert tx.shape == (32, 1, 16, 16)
    # normalised with the train split's statistics: the whole train split has mean 0, std 1
    train = dm.labelled_dataset("train")
    xs = torch.stack([train[i][0] for i in range(len(train))])
    assert xs.mean().abs() < 1e-4 and (xs.std() - 1).abs() < 1e-3


@pytest.mark.parametrize("on_device", [True, False])
@pytest.mark.parametrize("num_views", [2, 3])
@pytest.mark.parametrize("rgb", [False, True])
def test_ssl_batches(num_views: int, rgb: bool, on_device: bool) -> None:
    dm = DigitsDataModule(batch_size=16, views=SimCLRViews(num_views, on_device=on_device), rgb=rgb)
    assert dm.device_views == on_device and dm.num_views == num_views
    views, y = _first_batch(dm)
    channels = 3 if rgb else 1
    assert dm.num_channels == channels
    assert isinstance(views, list) and len(views) == num_views
    assert all(v.shape == (16, channels, 16, 16) and v.dtype == torch.float32 for v in views)
    assert y.shape == (16,) and y.dtype == torch.int64
    for a in range(num_views):
        for b in range(a + 1, num_views):
            assert not torch.equal(views[a], views[b])
    if rgb:
        x, _ = next(iter(dm.val_dataloader()))
        assert x.shape[1] == 3 and torch.equal(x[:, 0], x[:, 2])  # repeated channel
    loader = dm.train_dataloader()
    assert loader.drop_last and len(loader) == len(dm.labelled_dataset("train")) // 16


def test_native_size_and_upsampling() -> None:
    assert DigitsDataModule(image_size=None).image_size == 8
    x, _ = next(iter(DigitsDataModule(image_size=None, batch_size=4).val_dataloader()))
    assert x.shape == (4, 1, 8, 8)
    x, _ = next(iter(DigitsDataModule(image_size=32, batch_size=4).val_dataloader()))
    assert x.shape == (4, 1, 32, 32)


def _splits(seed: int) -> dict:
    return DigitsDataModule(seed=seed).splits()


def _rows(split) -> list[tuple[bytes, int]]:
    return [(im.numpy().tobytes(), int(y)) for im, y in zip(split.images, split.labels, strict=True)]


def test_splits_sizes_stratified_disjoint_and_seeded() -> None:
    splits = _splits(0)
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes == {"train": 1797 - 270 - 270, "val": 270, "test": 270}
    for name in ("val", "test"):
        counts = torch.bincount(splits[name].labels, minlength=10)
        assert counts.min() >= 26 and counts.max() <= 28  # ~27 per class
    train_rows = set(_rows(splits["train"]))
    overlap = sum(row in train_rows for row in _rows(splits["val"]) + _rows(splits["test"]))
    assert overlap == 0  # by content (load_digits has no duplicate images)
    assert torch.equal(_splits(0)["val"].images, splits["val"].images)
    assert not torch.equal(_splits(1)["val"].images, splits["val"].images)


def test_batches_independent_of_workers_and_global_rng() -> None:
    torch.manual_seed(123)
    a = _first_batch(DigitsDataModule(batch_size=64, views=SimCLRViews(), seed=5))
    state = torch.get_rng_state()
    torch.manual_seed(999)
    b = _first_batch(DigitsDataModule(batch_size=64, views=SimCLRViews(), seed=5, num_workers=2))
    for va, vb in zip(a[0], b[0], strict=True):
        assert torch.equal(va, vb)
    assert torch.equal(a[1], b[1])
    torch.set_rng_state(state)
    _first_batch(DigitsDataModule(batch_size=64, views=SimCLRViews(), seed=5))
    assert torch.equal(torch.get_rng_state(), state)  # augmentation does not consume the global RNG
    c = _first_batch(DigitsDataModule(batch_size=64, views=SimCLRViews(), seed=6))
    assert not torch.equal(c[0][0], a[0][0])


def test_labelled_dataset_items_and_bad_split() -> None:
    dm = DigitsDataModule(batch_size=8)
    ds = dm.labelled_dataset("val")
    x, y = ds[0]
    assert x.shape == (1, 16, 16) and x.dtype == torch.float32 and isinstance(y, int)
    vx, vy = next(iter(dm.val_dataloader()))
    assert torch.equal(vx[0], x) and int(vy[0]) == y
    with pytest.raises(
        ValueError, match=r"'validation'.*\('train', 'val', 'test'\)|\('train', 'val', 'test'\).*'validation'"
    ):
        dm.labelled_dataset("validation")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"num_workers": -1}, r"num_workers must be >= 0 \(0 loads in the main process\), got -1"),
        ({"seed": -1}, "seed must be >= 0, got -1"),
        ({"holdout": (0.6, 0.5)}, r"holdout fractions .* leave a train split.*got holdout=\[0\.6, 0\.5\]"),
        ({"holdout": (0.1,)}, r"holdout must be \[val_fraction, test_fraction\]"),
        ({"loader": {"persistent_workers": True}}, "persistent_workers=True needs num_workers >= 1"),
        ({"loader": {"shuffle": True}}, r"loader options \['shuffle'\] are not passed through; allowed:"),
        ({"image_size": 0}, "image_size must be a positive number of pixels or None"),
        ({"train_subset": 0}, "train_subset must be >= 1"),
        ({"views": "simclr"}, r"views must be a view recipe such as lightning_tl\.augment\.SimCLRViews\(\)"),
        ({"views": ViewSpec(16)}, "views must be a view recipe"),
        ({"augment": "trivialaugment"}, "augment must be a lightning_tl.augment.SupervisedAugment, got"),
        (
            {"views": SimCLRViews(), "augment": SupervisedAugment()},
            "applies to supervised batches; with views=SimCLRViews.* Drop one of them",
        ),
    ],
)
def test_bad_arguments_raise_in_init(kwargs: dict, match: str) -> None:
    """Recipe arguments (crop_scale, local views, ...) are the recipes' to check: augment/test_views.py."""
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(**kwargs)


def test_ssl_batch_larger_than_split_raises() -> None:
    with pytest.raises(ValueError, match="lower batch_size"):
        DigitsDataModule(batch_size=4096, views=SimCLRViews()).train_dataloader()


def test_hyperparameters_saved_as_plain_data() -> None:
    dm = DigitsDataModule(batch_size=8, views=SimCLRViews(3, hflip=True), seed=3)
    assert dm.hparams["batch_size"] == 8 and dm.hparams["seed"] == 3
    assert dm.hparams["views"] == SimCLRViews(3, hflip=True).config() and dm.hparams["augment"] is None
    assert tuple(dm.hparams["holdout"]) == (0.15, 0.15)
    augment = SupervisedAugment("trivialaugment", mixup_alpha=0.2)
    supervised = DigitsDataModule(augment=augment, loader={"pin_memory": True})
    assert supervised.hparams["views"] is None and supervised.hparams["augment"] == augment.config()
    assert supervised.hparams["loader"] == {"pin_memory": True}
    assert DigitsDataModule().hparams["augment"] == SupervisedAugment().config()  # the default, spelled out


def test_num_views_counts_global_and_local_views() -> None:
    assert DigitsDataModule().num_views == 0 and not DigitsDataModule().device_views
    assert DigitsDataModule(views=SimCLRViews(3, local_views=2)).num_views == 5
    assert DigitsDataModule(views=DINOViews(local_views=4)).num_views == 6
    with pytest.raises(ValueError, match=r"makes supervised batches: it has no views \(views: null\)"):
        DigitsDataModule().view_specs()


def test_digits_do_not_flip_unless_asked() -> None:
    """A mirrored digit is often another glyph: flips are off for digits whatever the recipe, unless set."""
    assert DigitsDataModule.default_hflip is False and VisionDataModule.default_hflip is True
    for recipe in (SimCLRViews(), MoCoV2Views(), BYOLViews(), DINOViews(local_views=1)):
        assert {s.hflip_prob for s in DigitsDataModule(views=recipe).view_specs()} == {0.0}
    assert {s.hflip_prob for s in DigitsDataModule(views=BYOLViews(hflip=True)).view_specs()} == {0.5}
    assert not any("Flip" in repr(step) for step in DigitsDataModule().augment_transform().transforms)
    flipped = DigitsDataModule(augment=SupervisedAugment(hflip=True)).augment_transform()
    assert any("HorizontalFlip" in repr(step) for step in flipped.transforms)


class HalfSize(ViewRecipe):
    """A user's recipe: a full-size and a half-size view."""

    @property
    def num_global_views(self) -> int:
        return 1

    @property
    def num_local_views(self) -> int:
        return 1

    def specs(self, image_size: int, channels: int, hflip: bool = True) -> list[ViewSpec]:
        flip = 0.5 if (self.hflip if self.hflip is not None else hflip) else 0.0
        return [
            ViewSpec(image_size, hflip_prob=flip),
            ViewSpec(image_size // 2, hflip_prob=flip, blur_prob=0.5),
        ]


@pytest.mark.parametrize("on_device", [True, False])
@pytest.mark.parametrize(
    ("recipe", "sizes"),
    [
        (SimCLRViews(local_views=2), [16, 16, 8, 8]),
        (MoCoV2Views(), [16, 16]),
        (BYOLViews(), [16, 16]),
        (DINOViews(local_views=2), [16, 16, 7, 7]),  # round(16 * 96 / 224)
        (HalfSize(), [16, 8]),
    ],
    ids=lambda r: type(r).__name__ if isinstance(r, ViewRecipe) else "",
)
def test_every_recipe_makes_its_views_per_sample_and_on_the_device(
    recipe: ViewRecipe, sizes: list[int], on_device: bool
) -> None:
    recipe.on_device = on_device
    dm = DigitsDataModule(batch_size=8, views=recipe, rgb=True)
    assert dm.device_views == on_device and [s.size for s in dm.view_specs()] == sizes
    views, y = _first_batch(dm)
    assert [tuple(v.shape) for v in views] == [(8, 3, s, s) for s in sizes]
    assert all(v.dtype == torch.float32 and bool(torch.isfinite(v).all()) for v in views)
    assert y.shape == (8,)


def test_epochs_with_persistent_workers_match_main_process() -> None:
    def fingerprints(**kwargs: Any) -> list[list[float]]:
        # per-sample views: the augmentation runs in the worker processes
        dm = DigitsDataModule(batch_size=256, views=SimCLRViews(on_device=False), **kwargs)
        loader = dm.train_dataloader()
        out = []
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)
            out.append([float(views[0].sum()) for views, _ in loader])
        return out

    main = fingerprints()
    assert main[0] != main[1]  # a new permutation and new augmentations each epoch
    assert fingerprints(num_workers=2, loader={"persistent_workers": True}) == main
