"""Each batched op equals torchvision's functional op applied image by image with the same parameters."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from lightning_tl.augment import batch_ops as ops

B = 12


def _images(channels: int, h: int = 20, w: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, channels, h, w, generator=g)  # (B, C, H, W) in [0, 1]


def _factors(lo: float, hi: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(B, generator=g)  # (B,)


def _per_image(fn, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return torch.stack([fn(x[i], float(params[i])) for i in range(x.shape[0])])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    ("batched", "reference", "lo", "hi"),
    [
        (ops.adjust_brightness, TF.adjust_brightness, 0.0, 2.0),
        (ops.adjust_contrast, TF.adjust_contrast, 0.0, 2.0),
        (ops.adjust_saturation, TF.adjust_saturation, 0.0, 2.0),
        (ops.adjust_hue, TF.adjust_hue, -0.5, 0.5),
    ],
)
def test_colour_ops_match_torchvision(batched, reference, lo: float, hi: float, channels: int) -> None:  # type: ignore[no-untyped-def]
    x, f = _images(channels), _factors(lo, hi)
    torch.testing.assert_close(batched(x, f), _per_image(reference, x, f), atol=3e-6, rtol=0)


def test_hsv_round_trip_and_grey_pixels() -> None:
    x = _images(3)
    x[0] = 0.5  # a grey image: saturation 0, hue defined as 0
    hsv = ops.rgb_to_hsv(x)
    assert hsv[0, 0].abs().max() == 0 and hsv[0, 1].abs().max() == 0
    assert float(hsv[:, 0].min()) >= 0 and float(hsv[:, 0].max()) < 1
    torch.testing.assert_close(ops.hsv_to_rgb(hsv), x, atol=2e-6, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_grayscale_flip_solarize_normalize(channels: int) -> None:
    x = _images(channels)
    if channels == 3:
        expected = torch.stack([TF.rgb_to_grayscale(x[i], 3) for i in range(B)])
        torch.testing.assert_close(ops.grayscale(x), expected, atol=1e-6, rtol=0)
    assert all(torch.equal(ops.hflip(x)[i], TF.horizontal_flip(x[i])) for i in range(B))
    assert all(torch.equal(ops.solarize(x)[i], TF.solarize(x[i], 0.5)) for i in range(B))
    mean, std = torch.rand(channels), torch.rand(channels) + 0.5
    torch.testing.assert_close(
        ops.normalize(x, mean, std), TF.normalize(x, mean.tolist(), std.tolist()), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("kernel", [1, 3, 5, 7, 39])
def test_blur_matches_torchvision(kernel: int) -> None:
    x, sigma = _images(3), _factors(0.1, 2.0)
    expected = torch.stack(
        [TF.gaussian_blur(x[i], [kernel, kernel], [float(sigma[i])] * 2) for i in range(B)]
    )
    torch.testing.assert_close(ops.gaussian_blur(x, sigma, kernel), expected, atol=2e-6, rtol=0)
    with pytest.raises(ValueError, match="odd"):
        ops.gaussian_blur(x, sigma, 4)
    with pytest.raises(ValueError, match="kernel_size 41 is too large for 20x24"):
        ops.gaussian_blur(x, sigma, 41)


@pytest.mark.parametrize("size", [5, 8, 16, 32, 40])
def test_resized_crop_matches_torchvision_antialiased(size: int) -> None:
    x = _images(3, 20, 24)
    g = torch.Generator().manual_seed(size)
    h = torch.randint(1, 21, (B,), generator=g)
    w = torch.randint(1, 25, (B,), generator=g)
    top = (torch.rand(B, generator=g) * (21 - h)).floor().long()
    left = (torch.rand(B, generator=g) * (25 - w)).floor().long()
    boxes = torch.stack([top, left, h, w], dim=1)  # (B, 4): crops that shrink and crops that enlarge
    expected = torch.stack(
        [TF.resized_crop(x[i], *boxes[i].tolist(), [size, size], antialias=True) for i in range(B)]
    )
    torch.testing.assert_close(ops.resized_crop(x, boxes.double(), size), expected, atol=2e-6, rtol=0)
    flip = torch.arange(B) % 2 == 0
    flipped = ops.resized_crop(x, boxes.double(), size, flip=flip)
    expected = torch.stack([TF.horizontal_flip(e) if f else e for e, f in zip(expected, flip, strict=True)])
    torch.testing.assert_close(flipped, expected, atol=2e-6, rtol=0)


def test_resized_crop_with_source_index_and_uint8_scale() -> None:
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    boxes = torch.tensor([[0, 0, 28, 28], [2, 3, 10, 20], [5, 5, 20, 20], [0, 0, 28, 28]]).double()
    source = torch.tensor([2, 0, 0, 1])
    out = ops.resized_crop(images.float() / 255, boxes, 28, source)  # (4, 1, 28, 28)
    assert out.shape == (4, 1, 28, 28)
    torch.testing.assert_close(out[0], images[2].float() / 255, atol=1e-6, rtol=0)  # the identity crop
    ref = TF.resized_crop(images[0], 2, 3, 10, 20, [28, 28], antialias=True).float() / 255  # uint8 path
    assert (out[1] - ref).abs().max() <= 1 / 255 + 1e-6  # within uint8 rounding of torchvision


def test_crop_views_equals_one_crop_at_a_time_with_gain_and_flips() -> None:
    images = torch.randint(0, 256, (5, 3, 20, 24), dtype=torch.uint8)
    g = torch.Generator().manual_seed(3)
    h, w = torch.randint(1, 21, (5, 3), generator=g), torch.randint(1, 25, (5, 3), generator=g)
    top = (torch.rand(5, 3, generator=g) * (21 - h)).floor()
    left = (torch.rand(5, 3, generator=g) * (25 - w)).floor()
    boxes = torch.stack([top, left, h.double(), w.double()], dim=2)  # (B, V, 4)
    flip = torch.rand(5, 3, generator=g) < 0.5
    out = ops.crop_views(images, boxes, 12, flip, gain=1 / 255)  # (B, V, S, C, S)
    assert out.shape == (5, 3, 12, 3, 12) and out.dtype == torch.float32
    x = images.float() / 255
    for i in range(5):
        for v in range(3):
            expected = TF.resized_crop(x[i], *boxes[i, v].long().tolist(), [12, 12], antialias=True)
            expected = TF.horizontal_flip(expected) if flip[i, v] else expected
            torch.testing.assert_close(out[i, v].transpose(0, 1), expected, atol=2e-6, rtol=0)


@pytest.mark.parametrize(
    ("in_place", "out_of_place", "lo", "hi"),
    [
        (ops.adjust_brightness_, ops.adjust_brightness, 0.0, 2.0),
        (ops.adjust_contrast_, ops.adjust_contrast, 0.0, 2.0),
        (ops.adjust_saturation_, ops.adjust_saturation, 0.0, 2.0),
        (ops.adjust_hue_, ops.adjust_hue, -0.5, 0.5),
    ],
)
def test_in_place_colour_ops_overwrite_their_input(in_place, out_of_place, lo: float, hi: float) -> None:  # type: ignore[no-untyped-def]
    x, f = _images(3), _factors(lo, hi)
    expected = out_of_place(x, f)
    assert not torch.equal(expected, x)  # the out-of-place op leaves x alone
    y = x.clone()
    assert in_place(y, f).data_ptr() == y.data_ptr()
    torch.testing.assert_close(y, expected, atol=0, rtol=0)


def test_bfloat16_resampling_stays_within_two_uint8_levels() -> None:
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    boxes = torch.tensor([0.0, 0.0, 32.0, 32.0]).repeat(16, 2, 1)
    boxes[:, 1] = torch.tensor([3.0, 5.0, 17.0, 21.0])  # the second view enlarges a crop
    exact = ops.crop_views(images, boxes, 24, gain=1 / 255)
    fast = ops.crop_views(images, boxes, 24, gain=1 / 255, dtype=torch.bfloat16)
    assert fast.dtype == torch.bfloat16
    error = (fast.float() - exact).abs() * 255  # in uint8 levels
    assert float(error.max()) <= 2.5 and float(error.mean()) <= 0.5
    x, sigma = _images(3), _factors(0.1, 2.0)
    blurred = ops.gaussian_blur(x, sigma, 5, dtype=torch.bfloat16)
    assert blurred.dtype == torch.bfloat16
    assert float((blurred.float() - ops.gaussian_blur(x, sigma, 5)).abs().max()) * 255 <= 2.5
