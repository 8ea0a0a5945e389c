"""The compiled CPU view kernel: the same views as the eager ops, thread-count independent, clear errors.

The kernel reads the parameter table by the column layout of ``view_spec.PARAM_COLUMNS``, given to it as
``-D`` flags when it is compiled: the tests read and write tables by those names, and a permuted layout
must make the same views.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
import torch

from lightning_tl.augment import batch_ops as ops
from lightning_tl.augment import batch_views, cpu_kernel, view_spec
from lightning_tl.augment.batch_views import BatchViews, ViewSpec
from lightning_tl.augment.view_spec import NUM_PARAMS, PARAM_COLUMNS, c_defines
from lightning_tl.augment.view_spec import PARAM as P

BOX = slice(P["top"], P["top"] + 4)  # top, left, height, width


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


@pytest.mark.parametrize("blur", [False, True])
def test_kernel_matches_the_eager_steps_on_hard_pixels(blur: bool) -> None:
    """Grey pixels, ties between channels, 0 and 1: hue, saturation and contrast at their edge cases;
    whole-image crops (exact copies, mirrored when flipped) of images in any order, written to any
    output rows."""
    spec = ViewSpec(8, jitter_strength=1.0, jitter_prob=1.0, blur_prob=0.5, blur_kernel=5, solarize_prob=0.5)
    maker = BatchViews([spec], 3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25), cpu_kernel=False)
    table = maker.sample_params(torch.arange(48), 8, 8)[0].float()
    table[:, BOX] = torch.tensor([0.0, 0.0, 8.0, 8.0])  # the whole image: resampling is a copy
    flip = table[:, P["flip"]].bool()
    levels = torch.tensor([0.0, 0.5, 1.0, 0.25])
    x = levels[torch.randint(0, 4, (48, 3, 8, 8), generator=torch.Generator().manual_seed(1))]
    x[:8] = x[:8, :1]  # grey images: chroma 0 everywhere
    if blur:  # as BatchViews calls it: one block of views that all blur with the same kernel size
        table[:, P["blur"]] = 1.0
    rows, target = torch.randperm(48), torch.randperm(48)
    crops = torch.where(flip.view(-1, 1, 1, 1), x[rows].flip(-1), x[rows])
    eager = ops.normalize_(maker._colour_block(crops, table, 5 if blur else None), maker.mean, maker.std)
    kernels = ops.gaussian_kernels(table[:, P["sigma"]], 5) if blur else None
    out = torch.full((48, 3, 8, 8), float("nan"))
    cpu_kernel.views_from_images(x, rows, table, maker.mean, maker.std, kernels, out, target)
    torch.testing.assert_close(out[target], eager, atol=1e-5, rtol=0)
    solar = table[:, P["solar"]]
    assert flip.any() and not flip.all() and solar.any() and not solar.all()
    as_bf16 = torch.empty(48, 3, 8, 8, dtype=torch.bfloat16)
    cpu_kernel.views_from_images(x, rows, table, maker.mean, maker.std, kernels, as_bf16, target)
    assert torch.equal(as_bf16, out.to(torch.bfloat16))  # rounded as torch rounds


def test_one_channel_images_fill_three_channel_views() -> None:
    spec = ViewSpec(8, jitter_strength=1.0, jitter_prob=1.0)
    maker = BatchViews([spec], 3, cpu_kernel=False)
    table = maker.sample_params(torch.arange(5), 8, 8)[0].float()
    table[:, BOX] = torch.tensor([0.0, 0.0, 8.0, 8.0])  # whole image
    table[:, P["flip"]] = 0.0
    x = torch.rand(5, 1, 8, 8)
    eager = ops.normalize_(maker._colour_block(x.repeat(1, 3, 1, 1), table, None), maker.mean, maker.std)
    out = torch.empty(5, 3, 8, 8)
    rows = torch.arange(5)
    cpu_kernel.views_from_images(x, rows, table, maker.mean, maker.std, None, out, rows)
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize(("size", "height", "width"), [(20, 24, 24), (16, 7, 30), (5, 40, 33), (12, 12, 12)])
def test_crops_equal_the_eager_resampling(size: int, height: int, width: int, dtype: torch.dtype) -> None:
    """Enlarging and shrinking (antialiased) crops of square and oblong images, flipped or not: the
    kernel's sparse filters give the eager dense matrix products' crops."""
    g = torch.Generator().manual_seed(size)
    n = 200
    images = torch.randint(0, 256, (50, 3, height, width), generator=g, dtype=torch.uint8)
    box_h = torch.randint(1, height + 1, (n,), generator=g)
    box_w = torch.randint(1, width + 1, (n,), generator=g)
    top = (torch.rand(n, generator=g) * (height - box_h + 1)).floor()
    left = (torch.rand(n, generator=g) * (width - box_w + 1)).floor()
    table = torch.zeros(n, NUM_PARAMS)  # no colour steps: the views are the crops
    table[:, BOX] = torch.stack([top, left, box_h.float(), box_w.float()], 1)
    table[:, P["flip"]] = (torch.rand(n, generator=g) < 0.5).float()
    rows = torch.randint(0, 50, (n,), generator=g)
    gain = 1 / 255 if dtype == torch.uint8 else 1.0
    source = images if dtype == torch.uint8 else images.float() / 255
    out = torch.empty(n, 3, size, size)
    cpu_kernel.views_from_images(
        source, rows, table, torch.zeros(3), torch.ones(3), None, out, torch.arange(n), gain
    )
    eager = ops.crop_views(images[rows], table[:, None, BOX], size, table[:, None, P["flip"]].bool(), 1 / 255)
    torch.testing.assert_close(out, eager[:, 0].transpose(1, 2), atol=1e-6, rtol=0)


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


def _assert_eager_fallback_warns(reason: str) -> None:
    """Default BatchViews warn once with ``reason`` and make the eager ops' views."""
    spec = ViewSpec(12, jitter_strength=1.0)
    images = _images(6, 3, 12)
    with pytest.warns(UserWarning, match=f"view kernel is unavailable.*{reason}"):
        views = BatchViews([spec], 3)(images, 3)
    assert torch.equal(views[0], BatchViews([spec], 3, cpu_kernel=False)(images, 3)[0])


def test_without_the_c_source_views_fall_back_to_eager_ops_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A package built without ``_cpu_views.c`` (the wheel once shipped none) degrades, it does not crash."""
    monkeypatch.setattr(cpu_kernel, "SOURCE", tmp_path / "_cpu_views.c")
    monkeypatch.setenv("LIGHTNING_TL_CACHE", str(tmp_path / "cache"))
    cpu_kernel._library.cache_clear()
    try:
        assert not cpu_kernel.available()
        assert "_cpu_views.c cannot be read" in cpu_kernel.unavailable_reason()
        _assert_eager_fallback_warns("cannot be read.*reinstall")
    finally:
        monkeypatch.undo()
        cpu_kernel._library.cache_clear()


def test_without_a_compiler_views_fall_back_to_eager_ops_with_a_warning(no_kernel: None) -> None:
    assert not cpu_kernel.available()
    assert "no-such-cc" in cpu_kernel.unavailable_reason()
    _assert_eager_fallback_warns("no-such-cc")
    spec = ViewSpec(12, jitter_strength=1.0)
    images = _images(6, 3, 12)
    with pytest.raises(RuntimeError, match=r"cpu_kernel=True.*no-such-cc.*cpu_kernel=None or False"):
        BatchViews([spec], 3, cpu_kernel=True)(images, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BatchViews([spec], 3, cpu_kernel=False)(images, 3)  # asked for the eager ops: no warning
    with pytest.raises(RuntimeError, match=r"unavailable: .*no-such-cc"):
        _call()


def _call(**changes: object) -> torch.Tensor:
    """views_from_images on 2 valid 4x4 RGB views of 5x6 images, with some arguments replaced."""
    table = torch.zeros(2, NUM_PARAMS)
    table[:, BOX] = torch.tensor([1.0, 2.0, 4.0, 4.0])
    args: dict[str, object] = {
        "images": torch.zeros(2, 3, 5, 6, dtype=torch.uint8),
        "rows": torch.arange(2),
        "table": table,
        "mean": torch.zeros(3),
        "std": torch.ones(3),
        "blur_kernels": None,
        "out": torch.zeros(2, 3, 4, 4),
        "target": torch.arange(2),
    }
    args.update(changes)
    return cpu_kernel.views_from_images(**args)  # type: ignore[arg-type]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="cpu_kernel must be None, True or False, got 'yes'"):
        BatchViews([ViewSpec(8)], 3, cpu_kernel="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"cpu_kernel=True.*resample_dtype=torch\.float64"):
        BatchViews([ViewSpec(8)], 3, cpu_kernel=True, resample_dtype=torch.float64)(_images(2, 3, 8), 0)
    BatchViews([ViewSpec(8)], 3, resample_dtype=torch.float64)(_images(2, 3, 8), 0)  # auto: eager ops
    assert _call().shape == (2, 3, 4, 4)
    box = torch.zeros(2, NUM_PARAMS)
    box[:, BOX] = torch.tensor([2.0, 2.0, 4.0, 4.0])  # rows 2..5 of 5
    for changes, match in [
        (
            {"images": torch.zeros(2, 3, 5, 6, dtype=torch.float64)},
            r"images must be a 4-d uint8 or float32 CPU tensor, got \(2, 3, 5, 6\) torch.float64",
        ),
        ({"out": torch.zeros(2, 3, 4, 8)[..., ::2]}, "contiguous=False"),
        ({"out": torch.zeros(2, 2, 4, 4)}, r"C in \(1, 3\) must match images"),
        (
            {"out": torch.zeros(2, 3, 4, 5)},
            r"must match images .* got out \(2, 3, 4, 5\) and images \(2, 3, 5, 6\)",
        ),
        ({"rows": torch.tensor([0, 2])}, r"rows must hold 2 indices in \[0, 2\)"),
        ({"target": torch.arange(3)}, r"target must hold 2 indices in \[0, 2\), got shape \(3,\)"),
        (
            {"table": torch.zeros(2, NUM_PARAMS - 3)},
            rf"table must be \(2, >= {NUM_PARAMS}\) parameter rows, got \(2, {NUM_PARAMS - 3}\)",
        ),
        ({"table": box}, r"crop box \[2.0, 2.0, 4.0, 4.0\] .* of view 0 is not whole pixels inside the 5x6"),
        ({"mean": torch.zeros(1)}, "mean and std need 3 values, got 1 and 3"),
        ({"blur_kernels": torch.ones(2, 9)}, r"kernel_size 9 is too large for 4x4 images"),
        ({"blur_kernels": torch.ones(2, 2)}, r"kernel_size must be a positive odd number, got 2"),
        (
            {"blur_kernels": torch.ones(3, 3)},
            r"blur_kernels must be \(2, k\), one kernel per view, got \(3, 3\)",
        ),
    ]:
        with pytest.raises(ValueError, match=match):
            _call(**changes)


def test_outputs_are_advised_as_huge_pages_where_linux_offers_them() -> None:
    out = cpu_kernel.empty_output((8, 3, 512, 512), torch.bfloat16)  # 12 MB: whole 2 MB pages inside
    assert out.shape == (8, 3, 512, 512) and out.dtype == torch.bfloat16 and out.is_contiguous()
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    offered = thp.exists() and "[never]" not in thp.read_text()
    assert cpu_kernel.advise_huge_pages(out) == offered  # madvise(MADV_HUGEPAGE) succeeds where THP is on
    assert not cpu_kernel.advise_huge_pages(torch.empty(1000))  # no whole 2 MB page inside: nothing to advise


def test_openmp_build_shares_pytorchs_runtime_and_the_plain_build_makes_the_same_views(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Built with OpenMP, the library uses the libgomp PyTorch loaded (one OpenMP runtime in the
    process); built without (a compiler without OpenMP), Python threads share the views instead."""
    assert cpu_kernel.uses_openmp()  # GCC here: the first flag set builds
    maps = [line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()]
    # GCC's runtime by its soname (scikit-learn's wheel maps a private copy under another name)
    runtimes = {path for path in maps if Path(path).name.startswith("libgomp.so")}
    assert len(runtimes) == 1, runtimes
    spec = ViewSpec(16, jitter_strength=1.0, grayscale_prob=0.2, blur_prob=0.5, blur_kernel=3)
    images = _images(40, 3, 20)
    with_openmp = BatchViews([spec] * 2, 3, cpu_kernel=True)(images, 5)
    monkeypatch.setenv("LIGHTNING_TL_OPENMP", "0")
    monkeypatch.setenv("LIGHTNING_TL_CACHE", str(tmp_path))
    cpu_kernel._library.cache_clear()
    try:
        assert not cpu_kernel.uses_openmp()
        threads = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            plain = BatchViews([spec] * 2, 3, cpu_kernel=True)(images, 5)
        finally:
            torch.set_num_threads(threads)
    finally:
        monkeypatch.undo()
        cpu_kernel._library.cache_clear()
    assert all(torch.equal(a, b) for a, b in zip(with_openmp, plain, strict=True))


def test_a_bad_openmp_switch_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTNING_TL_OPENMP", "yes")
    cpu_kernel._library.cache_clear()
    try:
        assert not cpu_kernel.available()
        assert cpu_kernel.unavailable_reason() == "LIGHTNING_TL_OPENMP must be 0 or 1, got 'yes'"
        needs = r"cpu_kernel=True\) needs the compiled CPU view kernel.*got 'yes'"
        with pytest.raises(RuntimeError, match=needs):
            BatchViews([ViewSpec(8)], 3, cpu_kernel=True)(_images(2, 3, 8), 0)
    finally:
        monkeypatch.undo()
        cpu_kernel._library.cache_clear()


# ----------------------------------------------------------------- one column layout for Python and C
def _kernel_columns() -> set[str]:
    """The columns the C source reads (``LTL_COL_<NAME>`` macros), lower-cased."""
    return {name.lower() for name in re.findall(r"\bLTL_COL_([A-Z]+)\b", cpu_kernel.SOURCE.read_text())}


def test_the_columns_are_described_once_and_passed_as_compiler_flags() -> None:
    at = 0
    for name, width in PARAM_COLUMNS:
        assert P[name] == at, name  # consecutive fields, in order
        at += width
    assert at == NUM_PARAMS and len(P) == len(PARAM_COLUMNS)
    expected = [f"-DLTL_COL_{name.upper()}={P[name]}" for name, _ in PARAM_COLUMNS]
    assert c_defines() == [*expected, f"-DLTL_NUM_PARAMS={NUM_PARAMS}"]
    # the kernel reads every column by its Python name; only sigma it never reads: its blur kernels
    # come ready-made from that column (ops.gaussian_kernels)
    assert _kernel_columns() <= set(P)
    assert set(P) - _kernel_columns() == {"sigma"}


def _compiler() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc"):
        path = shutil.which(name) if name else None
        if path:
            return path
    pytest.fail("no C compiler, although test_kernel_builds_here needs one")


@pytest.mark.parametrize("missing", [None, *sorted(_kernel_columns())])
def test_the_kernel_source_refuses_to_compile_without_a_column_flag(missing: str | None) -> None:
    flags = [f for f in c_defines() if missing is None or not f.startswith(f"-DLTL_COL_{missing.upper()}=")]
    done = subprocess.run(
        [_compiler(), "-fsyntax-only", *flags, str(cpu_kernel.SOURCE)], capture_output=True, text=True
    )
    if missing is None:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode != 0
        assert "compile with the -DLTL_COL_* column flags" in done.stderr


def test_the_kernel_source_refuses_to_compile_without_any_flags() -> None:
    done = subprocess.run(
        [_compiler(), "-fsyntax-only", str(cpu_kernel.SOURCE)], capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "#error" in done.stderr and "lightning_tl.augment.view_spec.c_defines()" in done.stderr


#: Another layout of the same fields (the crop box stays four consecutive columns), after 2 spare ones.
PERMUTED = (
    ("spare", 2), ("solar", 1), ("sigma", 1), ("blur", 1), ("gray", 1), ("order", 4), ("factors", 4),
    ("jitter", 1), ("flip", 1), ("top", 1), ("left", 1), ("height", 1), ("width", 1),
)  # fmt: skip


def test_a_permuted_column_layout_makes_the_same_views(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Change PARAM_COLUMNS and the kernel, recompiled with the new flags, reads every field from its new
    column: the views are those of the usual layout, with the kernel and with the eager ops."""
    big = ViewSpec(16, jitter_strength=1.0, jitter_prob=0.9, grayscale_prob=0.3, blur_prob=0.5,
                   blur_kernel=3, solarize_prob=0.3)  # fmt: skip
    specs = [big, big, ViewSpec(8, crop_scale=(0.05, 0.4), blur_prob=0.5, blur_kernel=5)]
    images, seeds = _images(24, 3, 20), torch.arange(24, dtype=torch.int64) * 7

    def views(kernel: bool) -> list[torch.Tensor]:
        return BatchViews(specs, 3, mean=(0.4,), std=(0.3,), cpu_kernel=kernel)(images, seeds)

    usual = views(True), views(False)
    at = 0
    for name, width in PERMUTED:
        monkeypatch.setitem(P, name, at)  # the one dict every module reads
        at += width
    for module in (view_spec, batch_views, cpu_kernel):
        monkeypatch.setattr(module, "NUM_PARAMS", at)
    monkeypatch.setattr(view_spec, "PARAM_COLUMNS", PERMUTED)
    monkeypatch.setenv("LIGHTNING_TL_CACHE", str(tmp_path))
    cpu_kernel._library.cache_clear()
    try:
        assert "-DLTL_COL_TOP=16" in c_defines() and "-DLTL_NUM_PARAMS=20" in c_defines()
        table = BatchViews(specs, 3).sample_params(seeds, 20, 20)[0]  # (24, 20)
        assert table.shape == (24, 20) and bool((table[:, :2] == 0).all())  # spare columns untouched
        permuted = views(True), views(False)
        assert list(tmp_path.glob("cpu_views_*.so"))  # a kernel built with the permuted flags
    finally:
        monkeypatch.undo()
        cpu_kernel._library.cache_clear()
    for before, after in zip(usual, permuted, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    for kernel, eager in zip(*permuted, strict=True):
        torch.testing.assert_close(kernel, eager, atol=5e-5, rtol=0)
