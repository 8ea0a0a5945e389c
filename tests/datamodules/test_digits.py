"""DigitsDataModule: batches, splits, determinism across workers and RNG state, argument errors."""

from __future__ import annotations

import pytest
import torch

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
    dm = DigitsDataModule(batch_size=16, num_views=num_views, rgb=rgb, augment_on_device=on_device)
    assert dm.device_views == on_device
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
    dm = DigitsDataModule(seed=seed)
    dm.setup()
    assert dm._splits is not None
    return dm._splits


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
    a = _first_batch(DigitsDataModule(batch_size=64, num_views=2, seed=5))
    state = torch.get_rng_state()
    torch.manual_seed(999)
    b = _first_batch(DigitsDataModule(batch_size=64, num_views=2, seed=5, num_workers=2))
    for va, vb in zip(a[0], b[0], strict=True):
        assert torch.equal(va, vb)
    assert torch.equal(a[1], b[1])
    torch.set_rng_state(state)
    _first_batch(DigitsDataModule(batch_size=64, num_views=2, seed=5))
    assert torch.equal(torch.get_rng_state(), state)  # augmentation does not consume the global RNG
    c = _first_batch(DigitsDataModule(batch_size=64, num_views=2, seed=6))
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
        ({"num_views": 1}, r"^num_views must be 0 \(supervised\) or >= 2 \(multi-view SSL\), got 1$"),
        ({"crop_scale": (0.9, 0.1)}, r"crop_scale.*\(0\.9, 0\.1\)"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "val_fraction=0.6"),
        ({"persistent_workers": True}, "num_workers >= 1"),
        ({"image_size": 0}, "image_size"),
        ({"jitter_strength": -1.0}, "jitter_strength"),
        ({"augment_on_device": True}, "augment_on_device=True makes multi-view SSL batches"),
        ({"num_views": 2, "local_views": -1}, "local_views=-1"),
        ({"local_views": 2}, "needs num_views >= 2"),
        ({"num_views": 2, "local_crop_scale": (0.0, 0.4)}, "crop_scale"),
        ({"num_views": 2, "local_image_size": 0}, "local_image_size"),
        ({"num_views": 2, "solarize_prob": 1.5}, "solarize_prob"),
    ],
)
def test_bad_arguments_raise_in_init(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(**kwargs)


def test_ssl_batch_larger_than_split_raises() -> None:
    with pytest.raises(ValueError, match="lower batch_size"):
        DigitsDataModule(batch_size=4096, num_views=2).train_dataloader()


def test_hyperparameters_saved() -> None:
    dm = DigitsDataModule(batch_size=8, num_views=2, seed=3)
    assert dm.hparams["batch_size"] == 8 and dm.hparams["num_views"] == 2 and dm.hparams["seed"] == 3
    assert dm.hparams["val_fraction"] == 0.15


def test_epochs_with_persistent_workers_match_main_process() -> None:
    def fingerprints(**kwargs: object) -> list[list[float]]:
        # per-sample views: the augmentation runs in the worker processes
        dm = DigitsDataModule(batch_size=256, num_views=2, augment_on_device=False, **kwargs)
        loader = dm.train_dataloader()
        out = []
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)
            out.append([float(views[0].sum()) for views, _ in loader])
        return out

    main = fingerprints()
    assert main[0] != main[1]  # a new permutation and new augmentations each epoch
    assert fingerprints(num_workers=2, persistent_workers=True) == main
