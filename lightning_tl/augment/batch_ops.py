"""Batched image operations with per-image parameters, on any device.

torchvision's functional ops apply one set of parameters to a whole batch; these apply a different
one to each image in a single call, so every view of a batch is made with a handful of tensor
kernels instead of a Python loop over images. Images are float (B, C, H, W) in [0, 1] with C in
{1, 3}; per-image parameters are (B,) tensors on the images' device. (Which images an op applies
to at all is the caller's choice: ``BatchViews`` passes only the selected rows.) Each op follows the
definition of the torchvision v2 functional op of the same name (e.g. ``adjust_contrast`` blends
with the mean of the grayscale image), so the two agree for the same parameters; tests check this.
Colour ops with a trailing underscore overwrite their input; the resampling ops (crop, blur) are
matrix products, optionally in bfloat16.
"""

from __future__ import annotations

import torch
from torch import Tensor

# ITU-R 601-2 luma weights, the ones torchvision's rgb_to_grayscale uses.
_LUMA = (0.2989, 0.587, 0.114)


def _per_image(values: Tensor) -> Tensor:
    return values.reshape(-1, 1, 1, 1)  # (B, 1, 1, 1): broadcasts over (C, H, W)


def resize_weights(
    start: Tensor, length: Tensor, size: int, full: int, reverse: Tensor | None = None
) -> Tensor:
    """Resampling matrices (K, size, full) that crop ``[start, start + length)`` of an axis and resize it.

    Row ``i`` holds the weights of output pixel ``i`` over the ``full`` input pixels: a triangle
    (bilinear) filter centred on the output pixel's position in the input, widened by the
    down-scaling factor when the crop shrinks (antialiasing), restricted to the crop and normalised
    to sum 1. This is the filter of torchvision's ``resize(..., antialias=True)`` (PIL's bilinear
    resampling); when the crop is enlarged it reduces to bilinear interpolation with
    ``align_corners=False`` and edge clamping.

    Args:
        start, length: (K,) crop offset and length in pixels (integer-valued).
        size: output length.
        full: input length.
        reverse: (K,) bool: mirror these rows' output (output pixel ``i`` takes ``size - 1 - i``'s weights).
    """
    scale = (length / size).unsqueeze(1)  # (K, 1): input pixels per output pixel
    inv_support = 1.0 / scale.clamp(min=1.0)  # (K, 1)
    out = torch.arange(size, device=start.device, dtype=start.dtype)  # (S,)
    if reverse is not None:
        out = torch.where(reverse.unsqueeze(1), size - 1 - out, out)  # (K, S)
    centre = start.unsqueeze(1) + (out + 0.5) * scale  # (K, S), in input pixel-edge coordinates
    pixel = torch.arange(full, device=start.device, dtype=start.dtype) + 0.5  # (F,) pixel centres
    # 1 - |distance| / support, as (pixel / support) - (centre / support): one pass over (K, S, F)
    weights = (pixel * inv_support).unsqueeze(1) - (centre * inv_support).unsqueeze(2)  # (K, S, F)
    weights.abs_().neg_().add_(1.0).clamp_(min=0.0)
    inside = (pixel >= start.unsqueeze(1)) & (pixel < (start + length).unsqueeze(1))  # (K, F)
    weights.mul_(inside.unsqueeze(1))  # only the crop's pixels contribute
    return weights.div_(weights.sum(dim=2, keepdim=True))


def crop_views(
    images: Tensor,
    boxes: Tensor,
    size: int,
    flip: Tensor | None = None,
    gain: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """V resized crops of every image at once: (B, V, size, C, size) in ``dtype`` (rows, channels, columns).

    Separable resampling with per-crop matrices from :func:`resize_weights`: a batched matrix
    product over rows (all V crops of an image share its pixels, so nothing is copied per crop),
    then one over columns. The result equals torchvision's ``resized_crop(..., antialias=True)`` on
    each image. (``torchvision.ops.roi_align`` would be the other batched choice, but it samples
    pixels outside the box at the crop's border and averages a box filter when shrinking.)

    Args:
        images: (B, C, H, W) of any real dtype (converted to float32 here).
        boxes: (B, V, 4) ``(top, left, height, width)`` in whole pixels.
        size: output side.
        flip: (B, V) bool: mirror these crops left to right (free: their column weights are reversed).
        gain: multiplies every pixel (e.g. 1 / 255 for uint8 images), folded into the weights.
        dtype: of the matrix products and the result. ``torch.bfloat16`` runs them several times
            faster on CPUs with AMX and on GPUs, within about one uint8 level of float32 (uint8
            pixels are exact in bfloat16; the weights and results are rounded to 8 significant bits).
    """
    b, c, height, width = images.shape
    v = boxes.shape[1]
    x = torch.empty(b, height, c, width, device=images.device, dtype=dtype)  # one pass: layout and dtype
    x.copy_(images.permute(0, 2, 1, 3))
    exact = torch.promote_types(dtype, torch.float32)  # weights are built at least in float32
    top, left, crop_h, crop_w = boxes.reshape(b * v, 4).to(exact).unbind(-1)  # each (B*V,)
    reverse = None if flip is None else flip.reshape(-1)
    rows = resize_weights(top, crop_h, size, height)  # (B*V, S, H)
    if gain != 1.0:
        rows.mul_(gain)
    cols = resize_weights(left, crop_w, size, width, reverse)  # (B*V, S, W)
    rows, cols = rows.to(dtype), cols.to(dtype)
    t = torch.bmm(rows.view(b, v * size, height), x.view(b, height, c * width))  # (B, V*S, C*W)
    out = torch.bmm(t.view(b * v, size * c, width), cols.transpose(1, 2))  # (B*V, S*C, S)
    return out.view(b, v, size, c, size)


def resized_crop(
    images: Tensor, boxes: Tensor, size: int, source: Tensor | None = None, flip: Tensor | None = None
) -> Tensor:
    """Crop ``boxes`` out of ``images`` and resize each crop to ``size`` x ``size`` (see :func:`crop_views`).

    Args:
        images: float (N, C, H, W).
        boxes: (K, 4) ``(top, left, height, width)`` in whole pixels, one row per output crop.
        size: output side.
        source: (K,) int64 index into ``images`` of each box's image; default ``arange(K)`` (K == N).
        flip: (K,) bool: mirror these crops left to right.

    Returns:
        (K, C, size, size) in the dtype of ``images``.
    """
    crops = images if source is None else images.index_select(0, source)  # (K, C, H, W)
    out = crop_views(
        crops, boxes.unsqueeze(1), size, None if flip is None else flip.unsqueeze(1), dtype=images.dtype
    )
    return out.squeeze(1).transpose(1, 2).to(images.dtype).contiguous()  # (K, C, S, S)


def hflip(images: Tensor) -> Tensor:
    """Mirror the images left to right."""
    return images.flip(-1)


def rgb_to_grayscale(images: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma; 1-channel images are returned as they are."""
    if images.shape[-3] == 1:
        return images
    r, g, b = images.unbind(-3)
    return r.mul(_LUMA[0]).add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2]).unsqueeze(-3)


def _luma_mean(images: Tensor) -> Tensor:
    """(B, 1, 1, 1) mean of each image's luma: the luma of its channel means (no luma image is built)."""
    means = images.mean(dim=(-2, -1))  # (B, C)
    if images.shape[-3] == 3:
        means = means @ torch.tensor(_LUMA, device=images.device, dtype=images.dtype).unsqueeze(1)  # (B, 1)
    return means.view(-1, 1, 1, 1)


def _blend_(images: Tensor, other: Tensor, ratio: Tensor) -> Tensor:
    """``ratio * images + (1 - ratio) * other`` clipped to [0, 1], written into ``images``."""
    ratio = _per_image(ratio)
    return images.mul_(ratio).add_(other * (1.0 - ratio)).clamp_(0.0, 1.0)


# The in-place ops below (trailing underscore) overwrite their float input, which must own its memory;
# the plain names are their out-of-place versions. BatchViews runs the in-place ones on cache-sized
# blocks of rows, so a colour op costs one or two passes over memory the CPU already holds.


def adjust_brightness_(images: Tensor, factor: Tensor) -> Tensor:
    """``images * factor`` clipped to [0, 1], in place; ``factor`` (B,) >= 0."""
    return images.mul_(_per_image(factor)).clamp_(0.0, 1.0)


def adjust_contrast_(images: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with the mean of its grayscale version, in place; ``factor`` (B,) >= 0."""
    return _blend_(images, _luma_mean(images), factor)


def adjust_saturation_(images: Tensor, factor: Tensor) -> Tensor:
    """Blend each RGB image with its grayscale version, in place; 1-channel images are unchanged."""
    if images.shape[-3] == 1:
        return images
    return _blend_(images, rgb_to_grayscale(images), factor)


def _hue_sixths(images: Tensor, value: Tensor, chroma: Tensor) -> Tensor:
    """Hue in sixths of the circle, (B, 1, H, W) in (-1, 5], measured from the maximal channel.

    Ties go to red, then green (the hexcone model's convention). Grey pixels (chroma 0) get hue 0
    there, as in torchvision: every channel difference is 0, and the tiny divisor keeps it finite.
    """
    r, g, b = images[:, 0:1], images[:, 1:2], images[:, 2:3]  # each (B, 1, H, W)
    inv = chroma.clamp(min=torch.finfo(chroma.dtype).tiny).reciprocal_()
    from_r = (g - b).mul_(inv)
    from_g = (b - r).mul_(inv).add_(2.0)
    from_b = (r - g).mul_(inv).add_(4.0)
    return torch.where(value == r, from_r, torch.where(value == g, from_g, from_b))


# The hexcone's hsv -> rgb as triangle waves of the hue h in sixths, h in [0, 6): channel n is
# low + chroma * clamp(sign_n * |h - centre_n| + offset_n, 0, 1) (red peaks at 0, green at 2, blue at 4).
_WAVE = ((3.0, 2.0, 4.0), (1.0, -1.0, -1.0), (-1.0, 2.0, 2.0))  # centres, signs, offsets for R, G, B


def _from_sixths(sixths: Tensor, low: Tensor, chroma: Tensor, out: Tensor | None = None) -> Tensor:
    """RGB (B, 3, H, W) from hue in sixths (B, 1, H, W) in [0, 6), minimum and chroma (B, 1, H, W)."""
    centre, sign, offset = (
        torch.tensor(v, device=sixths.device, dtype=sixths.dtype).view(1, 3, 1, 1) for v in _WAVE
    )
    wave = (sixths - centre).abs_().mul_(sign).add_(offset).clamp_(0.0, 1.0).mul_(chroma)  # (B, 3, H, W)
    return torch.add(low, wave, out=out) if out is not None else low + wave


def rgb_to_hsv(images: Tensor) -> Tensor:
    """RGB (B, 3, H, W) in [0, 1] -> HSV (B, 3, H, W), hue in [0, 1) (the hexcone model)."""
    value = images.amax(dim=-3, keepdim=True)  # (B, 1, H, W)
    chroma = value - images.amin(dim=-3, keepdim=True)
    hue = torch.where(chroma == 0, 0.0, torch.remainder(_hue_sixths(images, value, chroma) / 6.0, 1.0))
    saturation = chroma / torch.where(value == 0, torch.ones_like(value), value)
    return torch.cat([hue, saturation, value], dim=-3)


def hsv_to_rgb(images: Tensor) -> Tensor:
    """HSV (B, 3, H, W) with hue in [0, 1) -> RGB (B, 3, H, W) in [0, 1]."""
    hue, saturation, value = images[:, 0:1], images[:, 1:2], images[:, 2:3]  # each (B, 1, H, W)
    chroma = value * saturation
    return _from_sixths(hue * 6.0, value - chroma, chroma)


def adjust_hue_(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue of each RGB image by ``shift`` (B,) in [-0.5, 0.5], in place; 1-channel unchanged.

    Value and chroma stay, the hue turns: the hexcone round trip of torchvision's ``adjust_hue``
    without materialising HSV images.
    """
    if images.shape[-3] == 1:
        return images
    value = images.amax(dim=-3, keepdim=True)  # (B, 1, H, W)
    low = images.amin(dim=-3, keepdim=True)
    chroma = value - low
    sixths = _hue_sixths(images, value, chroma).add_(6.0 * _per_image(shift)).remainder_(6.0)
    return _from_sixths(sixths, low, chroma, out=images)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """``images * factor`` clipped to [0, 1]; ``factor`` (B,) >= 0."""
    return adjust_brightness_(images.clone(), factor)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with the mean of its grayscale version; ``factor`` (B,) >= 0."""
    return adjust_contrast_(images.clone(), factor)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """Blend each RGB image with its grayscale version; 1-channel images are unchanged."""
    return adjust_saturation_(images.clone(), factor)


def adjust_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue of each RGB image by ``shift`` (B,) in [-0.5, 0.5]; 1-channel images unchanged."""
    return adjust_hue_(images.clone(), shift)


def grayscale(images: Tensor) -> Tensor:
    """Each image's luma repeated on every channel (the same shape as ``images``)."""
    return rgb_to_grayscale(images).expand_as(images)


def gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    """Normalised 1-D Gaussian kernels (B, kernel_size) for the standard deviations ``sigma`` (B,)."""
    half = (kernel_size - 1) / 2
    x = torch.linspace(-half, half, kernel_size, device=sigma.device, dtype=sigma.dtype)  # (k,)
    kernels = torch.exp(-0.5 * (x / sigma.unsqueeze(1)) ** 2)  # (B, k)
    return kernels / kernels.sum(dim=1, keepdim=True)


def blur_matrices(sigma: Tensor, kernel_size: int, length: int) -> Tensor:
    """Banded (B, length, length) matrices of 1-D Gaussian blurs with reflect padding folded in.

    Row ``i`` holds the weights of output pixel ``i`` over the input pixels: tap ``j`` of the kernel
    lands on pixel ``i + j - kernel_size // 2``, mirrored at the borders (``F.pad``'s "reflect").
    """
    pad = kernel_size // 2
    kernels = gaussian_kernels(sigma, kernel_size)  # (B, k)
    source = torch.arange(length, device=sigma.device).view(-1, 1) + torch.arange(
        kernel_size, device=sigma.device
    )
    source = (source - pad).abs()  # mirrored at the start
    source = torch.where(source >= length, 2 * (length - 1) - source, source)  # and at the end; (L, k)
    b = kernels.shape[0]
    matrices = torch.zeros(b, length, length, device=sigma.device, dtype=sigma.dtype)
    return matrices.scatter_add_(
        2, source.expand(b, length, kernel_size), kernels.unsqueeze(1).expand(b, length, kernel_size)
    )


def check_blur_kernel(kernel_size: int, height: int, width: int) -> None:
    """Raise if ``kernel_size`` is not a positive odd number that reflect padding allows on the images."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    if kernel_size // 2 >= min(height, width):
        raise ValueError(
            f"kernel_size {kernel_size} is too large for {height}x{width} images: reflect padding needs "
            f"kernel_size // 2 < {min(height, width)}; use a smaller blur kernel"
        )


def gaussian_blur(
    images: Tensor, sigma: Tensor, kernel_size: int, dtype: torch.dtype | None = None
) -> Tensor:
    """Separable Gaussian blur with a different ``sigma`` (B,) per image, reflect padding.

    ``dtype`` (default: the images') is that of the matrix products and the result (see
    :func:`crop_views` for ``torch.bfloat16``).

    Two batched matrix products with the banded matrices of :func:`blur_matrices`, one per axis.
    On a CPU this beats one grouped convolution per direction (a group per image plane) on chunks
    of 32-96 px images, where the grouped convolution pays a cost per plane.
    """
    b, c, h, w = images.shape
    check_blur_kernel(kernel_size, h, w)
    dtype = dtype or images.dtype
    sigma = sigma.to(torch.promote_types(dtype, torch.float32))  # matrices built at least in float32
    rows = blur_matrices(sigma, kernel_size, h).to(dtype)  # (B, H, H)
    cols = rows if w == h else blur_matrices(sigma, kernel_size, w).to(dtype)  # (B, W, W)
    x = torch.bmm(images.to(dtype).reshape(b, c * h, w), cols.transpose(1, 2))  # blur each row: (B, C*H, W)
    return rows.unsqueeze(1) @ x.view(b, c, h, w)  # then each column: (B, C, H, W)


def solarize(images: Tensor, threshold: float = 0.5) -> Tensor:
    """Invert the pixels >= ``threshold``."""
    return torch.where(images >= threshold, 1.0 - images, images)


def normalize_(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``(images - mean) / std`` in place, with per-channel ``mean`` and ``std`` (C,)."""
    return images.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))


def normalize(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``(images - mean) / std`` with per-channel ``mean`` and ``std`` (C,)."""
    return normalize_(images.clone(), mean, std)
