"""The compiled CPU view kernel: the same views as the eager ops, thread-count independent, clear errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from lightning_tl.datamodules import batch_ops as ops
from lightning_tl.datamodules import cpu_kernel
from lightning_tl.datamodules.batch_views import BatchViews, ViewSpec


def _images(b: int, c: int, size: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, size, size), generator=g, dtype=torch.uint8)


@pytest.fixture
def no_kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A machine without a C compiler: the kernel cannot be built."""
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("LIGHTNING_TL_CACHE", str(tmp_path / "cache"))
    cpu_kernel._library.cache_clear()
    yield
    monkeypatch.undo()
    cpu_kernel._library.cache_clear()  # the next user builds (or loads) the real one again


def test_kernel_builds_here() -> None:
    assert cpu_kernel.available(), cpu_kernel.unavailable_reason()
    assert cpu_kernel.unavailable_reason() == ""


@pytest.mark.parametrize(("in_channels", "channels"), [(3, 3), (1, 1), (1, 3)])
def test_kernel_and_eager_ops_make_the_same_views(in_channels: int, channels: int) -> None:
    spec = ViewSpec(20, jitter_strength=1.0, jitter_prob=0.9, grayscale_prob=0.3, blur_prob=0.5,
                    blur_kernel=3, solarize_prob=0.2)  # fmt: skip
    images, seeds = _images(64, in_channels), torch.arange(64, dtype=torch.int64) * 13
    fused = BatchViews([spec] * 2, channels, cpu_kernel=True)(images, seeds)
    eager = BatchViews([spec] * 2, channels, cpu_kernel=False)(images, seeds)
    for f, e in zip(fused, eager, strict=True):
        torch.testing.assert_close(f, e, atol=5e-5, rtol=0)  # normalised views (std 0.5): 5e-5 ~ 0.006 level


@pytest.mark.parametrize("crop_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("blur", [False, True])
def test_kernel_matches_the_eager_steps_on_hard_pixels(blur: bool, crop_dtype: torch.dtype) -> None:
    """Grey pixels, ties between channels, 0 and 1: hue, saturation and contrast at their edge cases;
    crops read in their (H, C, W) layout, in any row order, written to any output rows."""
    spec = ViewSpec(8, jitter_strength=1.0, jitter_prob=1.0, blur_prob=0.5, blur_kernel=5, solarize_prob=0.5)
    maker = BatchViews([spec], 3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25), cpu_kernel=False)
    table = maker.sample_params(torch.arange(48), 8, 8)[0].float()
    levels = torch.tensor([0.0, 0.5, 1.0, 0.25])
    x = levels[torch.randint(0, 4, (48, 3, 8, 8), generator=torch.Generator().manual_seed(1))]
    x[:8] = x[:8, :1]  # grey images: chroma 0 everywhere
    if blur:  # as BatchViews calls it: one block of views that all blur with the same kernel size
        table[:, 15] = 1.0
    rows, target = torch.randperm(48), torch.randperm(48)
    eager = ops.normalize_(maker._colour_block(x[rows], table, 5 if blur else None), maker.mean, maker.std)
    kernels = ops.gaussian_kernels(table[:, 16], 5) if blur else None
    crops = x.transpose(1, 2).contiguous().to(crop_dtype)  # levels are exact in bfloat16
    out = torch.full((48, 3, 8, 8), float("nan"))
    cpu_kernel.views_from_crops(crops, rows, table, maker.mean, maker.std, kernels, out, target)
    torch.testing.assert_close(out[target], eager, atol=1e-5, rtol=0)
    assert table[:, 17].any() and not table[:, 17].all()  # solarised and plain views
    as_bf16 = torch.empty(48, 3, 8, 8, dtype=torch.bfloat16)
    cpu_kernel.views_from_crops(crops, rows, table, maker.mean, maker.std, kernels, as_bf16, target)
    assert torch.equal(as_bf16, out.to(torch.bfloat16))  # rounded as torch rounds


def test_one_channel_crops_fill_three_channel_views() -> None:
    spec = ViewSpec(8, jitter_strength=1.0, jitter_prob=1.0)
    maker = BatchViews([spec], 3, cpu_kernel=False)
    table = maker.sample_params(torch.arange(5), 8, 8)[0].float()
    x = torch.rand(5, 1, 8, 8)
    eager = ops.normalize_(maker._colour_block(x.repeat(1, 3, 1, 1), table, None), maker.mean, maker.std)
    out = torch.empty(5, 3, 8, 8)
    rows = torch.arange(5)
    cpu_kernel.views_from_crops(
        x.transpose(1, 2).contiguous(), rows, table, maker.mean, maker.std, None, out, rows
    )
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_resize_weights_equal_the_eager_matrices(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    for size, full in [(20, 24), (16, 7), (5, 40)]:  # enlarging and shrinking crops (antialiasing)
        length = torch.randint(1, full + 1, (300,), generator=g).float()
        start = (torch.rand(300, generator=g) * (full - length + 1)).floor()
        reverse = torch.rand(300, generator=g) < 0.5
        eager = (ops.resize_weights(start, length, size, full, reverse) * 0.25).to(dtype)
        fast = cpu_kernel.resize_weights(start, length, size, full, reverse, 0.25, dtype)
        assert fast.dtype == dtype and fast.shape == (300, size, full)
        tolerance = 1e-6 if dtype == torch.float32 else 1e-2  # bfloat16: a unit in the last place
        torch.testing.assert_close(fast.float(), eager.float(), atol=tolerance, rtol=tolerance)
        assert torch.equal(fast == 0, eager == 0)  # the same taps, none beyond the filter's support
    with pytest.raises(ValueError, match=r"float32 or bfloat16 matrices, got torch\.float16"):
        cpu_kernel.resize_weights(torch.zeros(2), torch.ones(2), 4, 4, dtype=torch.float16)
    with pytest.raises(ValueError, match="got 2 and 3 values, size=4, full=4"):
        cpu_kernel.resize_weights(torch.zeros(2), torch.ones(3), 4, 4)
    with pytest.raises(ValueError, match="reverse needs 2 flags, got 1"):
        cpu_kernel.resize_weights(torch.zeros(2), torch.ones(2), 4, 4, torch.ones(1, dtype=torch.bool))


def test_result_does_not_depend_on_the_thread_count() -> None:
    spec = ViewSpec(16, jitter_strength=1.0, grayscale_prob=0.2)
    images = _images(33, 3, 16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = BatchViews([spec] * 2, 3, cpu_kernel=True)(images, 7)
        torch.set_num_threads(2)
        two = BatchViews([spec] * 2, 3, cpu_kernel=True)(images, 7)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))


def test_without_a_compiler_views_fall_back_to_eager_ops_with_a_warning(no_kernel: None) -> None:
    assert not cpu_kernel.available()
    assert "no-such-cc" in cpu_kernel.unavailable_reason()
    spec = ViewSpec(12, jitter_strength=1.0)
    images = _images(6, 3, 12)
    with pytest.warns(UserWarning, match="view kernel is unavailable.*no-such-cc"):
        views = BatchViews([spec], 3)(images, 3)
    eager = BatchViews([spec], 3, cpu_kernel=False)(images, 3)
    assert torch.equal(views[0], eager[0])
    with pytest.raises(RuntimeError, match=r"cpu_kernel=True.*no-such-cc.*cpu_kernel=None or False"):
        BatchViews([spec], 3, cpu_kernel=True)(images, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BatchViews([spec], 3, cpu_kernel=False)(images, 3)  # asked for the eager ops: no warning
    with pytest.raises(RuntimeError, match=r"unavailable: .*no-such-cc"):
        _call()


def _call(**changes: object) -> torch.Tensor:
    """views_from_crops on 2 valid 4x4 RGB views, with some arguments replaced."""
    args: dict[str, object] = {
        "crops": torch.zeros(2, 4, 3, 4),
        "rows": torch.arange(2),
        "table": torch.zeros(2, 18),
        "mean": torch.zeros(3),
        "std": torch.ones(3),
        "blur_kernels": None,
        "out": torch.zeros(2, 3, 4, 4),
        "target": torch.arange(2),
    }
    args.update(changes)
    return cpu_kernel.views_from_crops(**args)  # type: ignore[arg-type]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="cpu_kernel must be None, True or False, got 'yes'"):
        BatchViews([ViewSpec(8)], 3, cpu_kernel="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"cpu_kernel=True.*resample_dtype=torch\.float64"):
        BatchViews([ViewSpec(8)], 3, cpu_kernel=True, resample_dtype=torch.float64)(_images(2, 3, 8), 0)
    BatchViews([ViewSpec(8)], 3, resample_dtype=torch.float64)(_images(2, 3, 8), 0)  # auto: eager ops
    assert _call().shape == (2, 3, 4, 4)
    for changes, match in [
        (
            {"crops": torch.zeros(2, 4, 3, 4, dtype=torch.float64)},
            r"crops must be .* got \(2, 4, 3, 4\) torch.float64",
        ),
        ({"crops": torch.zeros(2, 4, 3, 8)[..., ::2]}, "contiguous=False"),
        ({"out": torch.zeros(2, 2, 4, 4)}, r"C in \(1, 3\) must match crops"),
        (
            {"crops": torch.zeros(2, 5, 3, 4)},
            r"must match crops .* got out \(2, 3, 4, 4\) and crops \(2, 5, 3, 4\)",
        ),
        ({"rows": torch.tensor([0, 2])}, r"rows must hold 2 indices in \[0, 2\)"),
        ({"target": torch.arange(3)}, r"target must hold 2 indices in \[0, 2\), got shape \(3,\)"),
        ({"table": torch.zeros(2, 15)}, r"table must be \(2, >= 18\) parameter rows, got \(2, 15\)"),
        ({"mean": torch.zeros(1)}, "mean and std need 3 values, got 1 and 3"),
        ({"blur_kernels": torch.ones(2, 9)}, r"k odd and k // 2 < 4, got \(2, 9\)"),
        ({"blur_kernels": torch.ones(2, 2)}, r"blur_kernels must be \(2, k\).*got \(2, 2\)"),
    ]:
        with pytest.raises(ValueError, match=match):
            _call(**changes)
