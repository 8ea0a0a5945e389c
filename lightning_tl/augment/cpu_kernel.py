"""A compiled CPU kernel that makes the views of :class:`~lightning_tl.augment.batch_views.BatchViews`.

On a CPU the eager path crops with two dense batched matrix products per batch (a multiply-add per
pixel pair of a row and of a column, nearly all of them with zero weight), runs each of
ColorJitter's four positions x four ops as separate tensor kernels over gathered rows (dozens of
passes over memory for the hue rotation alone) and blurs with products of banded matrices. The C
file next to this module (``_cpu_views.c``) resamples each view straight from its uint8 source
image over the resize filters' nonzero taps only, then runs its own jitter sequence, grayscale,
blur (only the kernel's taps), solarisation and normalisation on its own memory while it is in
cache, with the same arithmetic, and writes it once to its output row. It is compiled once per
machine with the system C compiler (``$CC``, else ``cc``/``gcc``), cached under
``$LIGHTNING_TL_CACHE`` (default ``~/.cache/lightning_tl``) and called through :mod:`ctypes`
(which releases the GIL during the call). Views are shared among ``torch.get_num_threads()``
threads: built with OpenMP (GCC's ``-fopenmp``), those of the OpenMP runtime PyTorch already
loaded, so they do not compete for the cores with PyTorch's own threads (measured on a 16-core
machine, ``benchmarks/views_threads.py``: separate Python threads ran 2.8x slower at 16 threads than
at 8, while PyTorch's threads still spun after its last parallel kernel); otherwise as many Python
threads.
``LIGHTNING_TL_OPENMP=0`` builds without OpenMP (e.g. where PyTorch uses another OpenMP runtime,
which a second one would compete with).

Without a working C compiler (or without the C source, in a broken install) :func:`available` is
False and BatchViews keeps the eager path with one warning; the reason is in :func:`unavailable_reason`.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from lightning_tl.augment.batch_ops import check_blur_kernel
from lightning_tl.augment.view_spec import NUM_PARAMS, PARAM, c_defines

SOURCE = Path(__file__).with_name("_cpu_views.c")
# -fno-trapping-math lets the compiler vectorise the hue loop's selects (results are unchanged: it only
# drops floating-point exception traps); -march=native is not known to every compiler; -fopenmp needs
# the compiler's OpenMP runtime (GCC's libgomp, the one PyTorch's Linux wheels ship and load).
_FLAG_SETS = (
    ["-O3", "-fno-trapping-math", "-march=native", "-fopenmp"],
    ["-O3", "-fno-trapping-math", "-march=native"],
    ["-O3", "-fno-trapping-math"],
)
_reason = ""


def _cache_dir() -> Path:
    root = os.environ.get("LIGHTNING_TL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lightning_tl"
    )
    return Path(root)


def _cpu_flags() -> str:
    """The CPU's feature flags (Linux), so a library built with -march=native is not reused elsewhere."""
    try:
        with open("/proc/cpuinfo") as info:
            return next((line for line in info if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


def _compile(compiler: str, flags: list[str], target: Path) -> str:
    """Build the shared library at ``target`` (atomically); return the compiler's error, or ""."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".so", delete=False) as tmp:
        partial = Path(tmp.name)
    try:
        done = subprocess.run(
            [compiler, *flags, *c_defines(), "-fPIC", "-shared", "-o", str(partial), str(SOURCE)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            return done.stderr.strip() or f"{compiler} exited with {done.returncode}"
        os.replace(partial, target)  # other processes see a complete file or none
        return ""
    finally:
        partial.unlink(missing_ok=True)


@cache
def _library() -> ctypes.CDLL | None:
    global _reason
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        _reason = "no C compiler found (set CC or install gcc)"
        return None
    openmp = os.environ.get("LIGHTNING_TL_OPENMP", "1")
    if openmp not in ("0", "1"):
        _reason = f"LIGHTNING_TL_OPENMP must be 0 or 1, got {openmp!r}"
        return None
    try:
        source = SOURCE.read_text()
    except OSError as err:  # e.g. a package built without its C source
        _reason = f"the kernel source {SOURCE} cannot be read ({err.strerror or err}); reinstall lightning-tl"
        return None
    errors = []
    for flags in _FLAG_SETS if openmp == "1" else [f for f in _FLAG_SETS if "-fopenmp" not in f]:
        parts = (source, compiler, " ".join([*flags, *c_defines()]), platform.machine(), _cpu_flags())
        key = hashlib.sha256(b"\0".join(p.encode() for p in parts)).hexdigest()[:16]
        target = _cache_dir() / f"cpu_views_{key}.so"
        try:
            error = "" if target.exists() else _compile(compiler, flags, target)
            if not error:
                return _declare(ctypes.CDLL(str(target)))
        except (OSError, subprocess.SubprocessError) as err:
            error = str(err)
        errors.append(f"{compiler} {' '.join(flags)}: {error}")
    _reason = "compiling " + str(SOURCE) + " failed: " + " | ".join(errors)
    return None


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Set the C signatures of the library's entry points."""
    lib.ltl_views.restype = ctypes.c_int
    lib.ltl_views.argtypes = [
        ctypes.c_void_p,  # images
        ctypes.c_int,  # images are uint8 (else float32)
        *[ctypes.c_int64] * 3,  # image channels, height, width
        ctypes.c_float,  # gain
        ctypes.c_void_p,  # image of each view (int64)
        ctypes.c_void_p,  # output
        ctypes.c_int,  # output is bfloat16
        ctypes.c_void_p,  # output row of each view (int64)
        ctypes.c_void_p,  # table
        ctypes.c_int64,  # table stride
        ctypes.c_void_p,  # blur kernels or NULL
        ctypes.c_int64,  # taps
        ctypes.c_void_p,  # mean
        ctypes.c_void_p,  # std
        *[ctypes.c_int64] * 4,  # begin, end, channels, size
        ctypes.c_int,  # threads
    ]
    lib.ltl_openmp.restype = ctypes.c_int
    lib.ltl_openmp.argtypes = []
    return lib


def available() -> bool:
    """Whether the kernel is built (compiling it on the first call) and loadable on this machine."""
    return _library() is not None


def _loaded() -> ctypes.CDLL:
    """The library, or a RuntimeError saying why it cannot be built."""
    lib = _library()
    if lib is None:
        raise RuntimeError(f"the compiled CPU view kernel is unavailable: {_reason}")
    return lib


def uses_openmp() -> bool:
    """Whether the kernel was built with OpenMP and runs its views on PyTorch's OpenMP threads."""
    return bool(_loaded().ltl_openmp())


def unavailable_reason() -> str:
    """Why :func:`available` is False ("" when it is True)."""
    available()
    return _reason


@cache
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """Worker threads of this process (keyed by pid: a forked child must not reuse its parent's pool)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ltl-views")


def views_from_images(
    images: Tensor,
    rows: Tensor,
    table: Tensor,
    mean: Tensor,
    std: Tensor,
    blur_kernels: Tensor | None,
    out: Tensor,
    target: Tensor,
    gain: float = 1.0,
) -> Tensor:
    """BatchViews' views, written into ``out``: view ``i`` is the crop of image ``rows[i]`` in its
    table row (box, flip) resized to the side of ``out``, after its jitter (in its own op order),
    grayscale, blur, solarisation and normalisation, at ``out[target[i]]``.

    Args:
        images: (B, C_in, H, W) uint8 or float32 images, contiguous, on the CPU; times ``gain`` they
            are in [0, 1]. C_in = 1 is repeated to C.
        rows: (N,) int64 image of each view.
        table: (N, K) BatchViews parameter rows (K >= NUM_PARAMS), one per view; its crop boxes
            (top, left, height, width) are whole pixels inside the images.
        mean, std: (C,) normalisation.
        blur_kernels: (N, k) normalised 1-D Gaussian kernels (k odd, ``k // 2 < S``) for the views
            whose blur flag is set, or None: no view is blurred.
        out: (M, C, S, S) float32 or bfloat16, contiguous, on the CPU.
        target: (N,) int64 output row of each view.
        gain: multiplies every pixel (1 / 255 for uint8 images).

    Returns:
        ``out``.
    """
    lib = _loaded()
    if images.device.type != "cpu" or images.dtype not in (torch.uint8, torch.float32) or images.ndim != 4:
        raise ValueError(
            f"images must be a 4-d uint8 or float32 CPU tensor, got {tuple(images.shape)} {images.dtype} "
            f"on {images.device}"
        )
    if out.device.type != "cpu" or out.dtype not in _DTYPES or not out.is_contiguous() or out.ndim != 4:
        raise ValueError(
            f"out must be a contiguous 4-d float32 or bfloat16 CPU tensor, got {tuple(out.shape)} "
            f"{out.dtype} on {out.device} (contiguous={out.is_contiguous()})"
        )
    images = images.contiguous()
    _, c_in, height, width = images.shape
    c, size = out.shape[1], out.shape[2]
    if c not in (1, 3) or c_in not in (1, c) or out.shape[3] != size:
        raise ValueError(
            f"out (M, C, S, S) with C in (1, 3) must match images (B, C or 1, H, W): "
            f"got out {tuple(out.shape)} and images {tuple(images.shape)}"
        )
    n = len(rows)
    rows, target = _cpu_rows(rows, n, len(images), "rows"), _cpu_rows(target, n, len(out), "target")
    table = _cpu_float(table)
    if table.ndim != 2 or table.shape[0] != n or table.shape[1] < NUM_PARAMS:
        raise ValueError(f"table must be ({n}, >= {NUM_PARAMS}) parameter rows, got {tuple(table.shape)}")
    box = table[:, PARAM["top"] : PARAM["top"] + 4]  # (N, 4): top, left, height, width
    top, left, box_h, box_w = box.unbind(1)
    inside = (top >= 0) & (left >= 0) & (box_h >= 1) & (box_w >= 1)
    inside &= (top + box_h <= height) & (left + box_w <= width) & (box == box.floor()).all(1)
    if n and not bool(inside.all()):
        bad = int((~inside).nonzero()[0])
        raise ValueError(
            f"crop box {box[bad].tolist()} (top, left, height, width) of view {bad} is not whole "
            f"pixels inside the {height}x{width} images"
        )
    mean, std = _cpu_float(mean).reshape(-1), _cpu_float(std).reshape(-1)
    if mean.numel() != c or std.numel() != c:
        raise ValueError(f"mean and std need {c} values, got {mean.numel()} and {std.numel()}")
    taps = 0
    if blur_kernels is not None:
        blur_kernels = _cpu_float(blur_kernels)
        taps = blur_kernels.shape[-1]
        if blur_kernels.shape != (n, taps):
            raise ValueError(
                f"blur_kernels must be ({n}, k), one kernel per view, got {tuple(blur_kernels.shape)}"
            )
        check_blur_kernel(taps, size, size)

    def views(begin: int, end: int, threads: int = 1) -> int:
        return lib.ltl_views(
            images.data_ptr(),
            images.dtype == torch.uint8,
            c_in,
            height,
            width,
            gain,
            rows.data_ptr(),
            out.data_ptr(),
            out.dtype == torch.bfloat16,
            target.data_ptr(),
            table.data_ptr(),
            table.shape[1],
            None if blur_kernels is None else blur_kernels.data_ptr(),
            taps,
            mean.data_ptr(),
            std.data_ptr(),
            begin,
            end,
            c,
            size,
            threads,
        )

    # built with OpenMP, the C code shares the views among PyTorch's OpenMP threads itself
    codes = [views(0, n, torch.get_num_threads())] if lib.ltl_openmp() else _in_parallel(views, n)
    if any(codes):
        raise MemoryError(f"views_from_images could not allocate the scratch memory of a {size} px view")
    return out


_DTYPES = (torch.float32, torch.bfloat16)
_HUGE_PAGE = 1 << 21
_MADV_HUGEPAGE = 14  # Linux's madvise advice number


@cache
def _madvise() -> Callable[[int, int, int], int] | None:
    """libc's ``madvise`` on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def empty_output(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """``torch.empty(shape, dtype=dtype)`` on the CPU, with its whole 2 MB pages advised as huge pages.

    A batch of views is tens of MB of fresh memory, which the first write faults in one 4 KB page
    at a time: measured here (one thread, ``fill_``), 56 MB (512 RGB views of 96 px) took 15 ms to
    write into fresh memory and 6.5-7 ms after ``madvise(MADV_HUGEPAGE)``, against 3.6 ms into
    memory already mapped. The advice is only that (Linux with transparent huge pages in "madvise"
    or "always" mode; elsewhere nothing changes), and the tensor is the same either way.
    """
    out = torch.empty(shape, dtype=dtype)
    advise_huge_pages(out)
    return out


def advise_huge_pages(t: Tensor) -> bool:
    """Advise Linux to back the whole 2 MB pages inside ``t``'s memory with huge pages; whether it took
    the advice (False: too small, not Linux, or huge pages unavailable)."""
    madvise = _madvise()
    start = -(-t.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE
    end = (t.data_ptr() + t.nbytes) // _HUGE_PAGE * _HUGE_PAGE
    if madvise is None or t.device.type != "cpu" or end <= start:
        return False
    return madvise(start, end - start, _MADV_HUGEPAGE) == 0


def _in_parallel(work: Callable[[int, int], int], n: int) -> list[int]:
    """``work(begin, end)`` over ``range(n)`` cut into one contiguous share per thread; their return codes."""
    workers = max(1, min(torch.get_num_threads(), n))
    if workers == 1:
        return [work(0, n)]
    bounds = [n * i // workers for i in range(workers + 1)]
    pool = _pool(workers, os.getpid())
    return [job.result() for job in [pool.submit(work, bounds[i], bounds[i + 1]) for i in range(workers)]]


def _cpu_rows(index: Tensor, n: int, limit: int, name: str) -> Tensor:
    index = index.to(device="cpu", dtype=torch.int64).contiguous()
    if index.shape != (n,) or (n and (int(index.min()) < 0 or int(index.max()) >= limit)):
        raise ValueError(f"{name} must hold {n} indices in [0, {limit}), got shape {tuple(index.shape)}")
    return index


def _cpu_float(t: Tensor) -> Tensor:
    return t.to(device="cpu", dtype=torch.float32).contiguous()
