"""A small convolutional feature extractor for 16-32 px images, the one of DANN's MNIST experiments."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class SmallConvNet(nn.Module):
    """Conv 5x5 -> ReLU -> max-pool 2x2, repeated, then a fixed ``grid x grid`` map flattened to features.

    With the defaults this is the feature extractor of Ganin et al.'s MNIST -> MNIST-M model
    ("Domain-Adversarial Training of Neural Networks", JMLR 2016, Fig. 4): two 5x5 convolutions with
    32 and 48 maps, each followed by ReLU and 2x2 max-pooling, giving a 48 x 4 x 4 = 768-d feature for a
    28 x 28 input. An adaptive average pool to ``grid x grid`` (the identity at 28 px) lets the same
    network take other sizes. Hundreds of times cheaper than a ResNet-18: what CPU benchmarks can afford.
    Use it wherever a :class:`~lightning_tl.backbones.Backbone` is accepted (it has ``num_features``).

    Args:
        in_chans: image channels.
        channels: output maps of each conv stage.
        kernel_size: convolution side (no padding, as in the paper).
        grid: side of the pooled map that is flattened.
        batch_norm: batch norm after each convolution (not in the paper).

    Example::

        >>> import torch
        >>> net = SmallConvNet(in_chans=3)
        >>> net(torch.zeros(2, 3, 28, 28)).shape, net.num_features
        (torch.Size([2, 768]), 768)
    """

    def __init__(
        self,
        in_chans: int = 3,
        channels: Sequence[int] = (32, 48),
        kernel_size: int = 5,
        grid: int = 4,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if in_chans < 1 or not channels or any(c < 1 for c in channels):
            raise ValueError(
                f"in_chans and channels must be >= 1, got in_chans={in_chans}, channels={channels}"
            )
        if kernel_size < 1 or grid < 1:
            raise ValueError(f"kernel_size and grid must be >= 1, got {kernel_size} and {grid}")
        layers: list[nn.Module] = []
        width = in_chans
        for out in channels:
            layers.append(nn.Conv2d(width, out, kernel_size, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            width = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.num_features = width * grid * grid
        self.min_size = self._min_size(len(channels), kernel_size)

    @staticmethod
    def _min_size(stages: int, kernel_size: int) -> int:
        size = 1
        for _ in range(stages):  # invert "conv (valid) then pool 2"
            size = 2 * size + kernel_size - 1
        return size

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_chans, H, W) -> (B, num_features)."""
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"SmallConvNet needs images of at least {self.min_size} px per side, got "
                f"{tuple(x.shape[-2:])}; "
                "raise the datamodule's image_size"
            )
        return self.pool(self.features(x)).flatten(1)  # (B, C * grid * grid)
