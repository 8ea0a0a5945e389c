"""scikit-learn's handwritten digits (1,797 real 8x8 images, 10 classes): the embedded default data set."""

from __future__ import annotations

import torch

from lightning_tl.datamodules.base import VisionDataModule
from lightning_tl.datamodules.datasets import ImageSource, InMemoryImages, resize_uint8
from lightning_tl.datamodules.splits import check_fractions, fraction_to_count, stratified_split


class DigitsDataModule(VisionDataModule):
    """The UCI handwritten digits shipped inside scikit-learn (``sklearn.datasets.load_digits``).

    1,797 grayscale 8x8 images with values 0..16, scaled to uint8 0..255 and upsampled (bilinear) to
    ``image_size`` (default 16: random crops of 8 px images keep too little of the digit). The
    train/val/test split is stratified by class and fixed by ``seed``. Normalisation constants are
    the exact mean/std of the train split. Nothing is ever downloaded.

    ``hflip`` defaults to False here: a mirrored digit is often another glyph (2 vs S/5), unlike
    the objects of natural-image data sets.

    Args:
        val_fraction, test_fraction: held-out fractions of the 1,797 images (stratified).
        image_size: side after upsampling; ``None`` keeps 8.
        other arguments: see :class:`VisionDataModule`.

    Example::

        >>> dm = DigitsDataModule(batch_size=32)
        >>> x, y = next(iter(dm.train_dataloader()))
        >>> tuple(x.shape), y.dtype
        ((32, 1, 16, 16), torch.int64)
    """

    NATIVE_SIZE = 8

    def __init__(
        self,
        *,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        image_size: int | None = 16,
        batch_size: int = 256,
        num_workers: int = 0,
        num_views: int = 0,
        rgb: bool = False,
        seed: int = 0,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        jitter_strength: float = 0.5,
        blur: bool | None = None,
        hflip: bool = False,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        augment_on_device: bool | None = None,
        local_views: int = 0,
        local_image_size: int | None = None,
        local_crop_scale: tuple[float, float] = (0.05, 0.4),
        solarize_prob: float = 0.0,
        train_subset: int | None = None,
        policy: str = "none",
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        switch_prob: float = 0.5,
        noise_std: float = 0.0,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            num_workers=num_workers,
            num_views=num_views,
            image_size=image_size,
            rgb=rgb,
            seed=seed,
            crop_scale=crop_scale,
            jitter_strength=jitter_strength,
            blur=blur,
            hflip=hflip,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            augment_on_device=augment_on_device,
            local_views=local_views,
            local_image_size=local_image_size,
            local_crop_scale=local_crop_scale,
            solarize_prob=solarize_prob,
            train_subset=train_subset,
            policy=policy,
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            mix_prob=mix_prob,
            switch_prob=switch_prob,
            noise_std=noise_std,
        )
        check_fractions(val_fraction, test_fraction)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.save_hyperparameters()

    @property
    def num_classes(self) -> int:
        return 10

    @property
    def class_names(self) -> list[str]:
        return [str(d) for d in range(10)]

    def _native_image_size(self) -> int:
        return self.NATIVE_SIZE

    def _native_channels(self) -> int:
        return 1

    def _load_splits(self) -> dict[str, ImageSource]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.from_numpy(digits.images)  # (N, 8, 8) float64 in [0, 16]
        images = (images * (255 / 16)).round().to(torch.uint8).unsqueeze(1)  # (N, 1, 8, 8)
        images = resize_uint8(images, self.image_size)  # (N, 1, S, S)
        labels = torch.from_numpy(digits.target).long()  # (N,)
        n = labels.numel()
        sizes = [fraction_to_count(self.val_fraction, n), fraction_to_count(self.test_fraction, n)]
        train, val, test = stratified_split(labels, sizes, seed=self.seed)
        data = InMemoryImages(images, labels)
        return {"train": data.subset(train), "val": data.subset(val), "test": data.subset(test)}
