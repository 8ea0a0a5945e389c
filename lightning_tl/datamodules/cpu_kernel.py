"""A compiled CPU kernel for the per-view steps of :class:`~lightning_tl.datamodules.batch_views.BatchViews`.

On a CPU the eager path runs each of ColorJitter's four positions x four ops as separate tensor
kernels over gathered rows (dozens of passes over memory for the hue rotation alone) and blurs
with products of banded matrices (a multiply-add per pixel pair of a row, most of them zero). The
C file next to this module (``_cpu_views.c``) runs every view's own jitter sequence, grayscale,
blur (only the kernel's taps), solarisation and normalisation on its own memory while it is in
cache, with the same arithmetic, and builds the crop matrices computing only the taps inside each
filter's support. It is compiled once per machine with the system C compiler
(``$CC``, else ``cc``/``gcc``), cached under ``$LIGHTNING_TL_CACHE`` (default
``~/.cache/lightning_tl``) and called through :mod:`ctypes`; rows are shared among
``torch.get_num_threads()`` Python threads (ctypes releases the GIL during the call).

Without a working C compiler :func:`available` is False and BatchViews keeps the eager path; the
reason is in :func:`unavailable_reason`.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("_cpu_views.c")
# -fno-trapping-math lets the compiler vectorise the hue loop's selects (results are unchanged: it only
# drops floating-point exception traps); -march=native is not known to every compiler.
_FLAG_SETS = (["-O3", "-fno-trapping-math", "-march=native"], ["-O3", "-fno-trapping-math"])
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
            [compiler, *flags, "-fPIC", "-shared", "-o", str(partial), str(SOURCE)],
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
    errors = []
    for flags in _FLAG_SETS:
        parts = (SOURCE.read_text(), compiler, " ".join(flags), platform.machine(), _cpu_flags())
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
    """Set the C signatures of the library's two entry points."""
    lib.ltl_views.restype = ctypes.c_int
    lib.ltl_views.argtypes = [
        ctypes.c_void_p,  # crops
        ctypes.c_int,  # crops are bfloat16
        ctypes.c_int64,  # crop channels
        ctypes.c_void_p,  # crop of each view (int64)
        ctypes.c_void_p,  # output
        ctypes.c_int,  # output is bfloat16
        ctypes.c_void_p,  # output row of each view (int64)
        ctypes.c_void_p,  # table
        ctypes.c_int64,  # table stride
        ctypes.c_void_p,  # blur kernels or NULL
        ctypes.c_int64,  # taps
        ctypes.c_void_p,  # mean
        ctypes.c_void_p,  # std
        *[ctypes.c_int64] * 5,  # begin, end, c, h, w
    ]
    lib.ltl_resize_weights.restype = ctypes.c_int
    lib.ltl_resize_weights.argtypes = [
        ctypes.c_void_p,  # start
        ctypes.c_void_p,  # length
        ctypes.c_void_p,  # reverse (uint8) or NULL
        *[ctypes.c_int64] * 4,  # begin, end, size, full
        ctypes.c_float,  # gain
        ctypes.c_void_p,  # output
        ctypes.c_int,  # output is bfloat16
    ]
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


def unavailable_reason() -> str:
    """Why :func:`available` is False ("" when it is True)."""
    available()
    return _reason


@cache
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """Worker threads of this process (keyed by pid: a forked child must not reuse its parent's pool)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ltl-views")


def views_from_crops(
    crops: Tensor,
    rows: Tensor,
    table: Tensor,
    mean: Tensor,
    std: Tensor,
    blur_kernels: Tensor | None,
    out: Tensor,
    target: Tensor,
) -> Tensor:
    """BatchViews' per-view steps on crops, written into ``out``: view ``i`` is crop ``rows[i]`` after
    its jitter (in its own op order), grayscale, blur, solarisation and normalisation, at ``out[target[i]]``.

    Args:
        crops: (M, H, C_in, W) float32 or bfloat16 crops in [0, 1], contiguous, on the CPU (the layout
            of :func:`~lightning_tl.datamodules.batch_ops.crop_views`); C_in = 1 is repeated to C.
        rows: (N,) int64 crop of each view.
        table: (N, K) BatchViews parameter rows (K >= 18), one per view.
        mean, std: (C,) normalisation.
        blur_kernels: (N, k) normalised 1-D Gaussian kernels (k odd, ``k // 2 < min(H, W)``) for the
            views whose blur flag is set, or None: no view is blurred.
        out: (M_out, C, H, W) float32 or bfloat16, contiguous, on the CPU.
        target: (N,) int64 output row of each view.

    Returns:
        ``out``.
    """
    lib = _loaded()
    for name, t in (("crops", crops), ("out", out)):
        if t.device.type != "cpu" or t.dtype not in _DTYPES or not t.is_contiguous() or t.ndim != 4:
            raise ValueError(
                f"{name} must be a contiguous 4-d float32 or bfloat16 CPU tensor, got {tuple(t.shape)} "
                f"{t.dtype} on {t.device} (contiguous={t.is_contiguous()})"
            )
    _, h, c_in, w = crops.shape
    c = out.shape[1]
    if c not in (1, 3) or c_in not in (1, c) or tuple(out.shape[2:]) != (h, w):
        raise ValueError(
            f"out (M, C, H, W) with C in (1, 3) must match crops (M, H, C or 1, W): "
            f"got out {tuple(out.shape)} and crops {tuple(crops.shape)}"
        )
    n = len(rows)
    rows, target = _cpu_rows(rows, n, len(crops), "rows"), _cpu_rows(target, n, len(out), "target")
    table = _cpu_float(table)
    if table.ndim != 2 or table.shape[0] != n or table.shape[1] < 18:
        raise ValueError(f"table must be ({n}, >= 18) parameter rows, got {tuple(table.shape)}")
    mean, std = _cpu_float(mean).reshape(-1), _cpu_float(std).reshape(-1)
    if mean.numel() != c or std.numel() != c:
        raise ValueError(f"mean and std need {c} values, got {mean.numel()} and {std.numel()}")
    taps = 0
    if blur_kernels is not None:
        blur_kernels = _cpu_float(blur_kernels)
        taps = blur_kernels.shape[-1]
        if blur_kernels.shape != (n, taps) or taps % 2 == 0 or taps // 2 >= min(h, w):
            raise ValueError(
                f"blur_kernels must be ({n}, k) with k odd and k // 2 < {min(h, w)}, "
                f"got {tuple(blur_kernels.shape)}"
            )

    def views(begin: int, end: int) -> int:
        return lib.ltl_views(
            crops.data_ptr(),
            crops.dtype == torch.bfloat16,
            c_in,
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
            h,
            w,
        )

    if any(_in_parallel(views, n)):
        raise MemoryError(f"views_from_crops could not allocate {2 * c * h * w * 4} bytes of scratch memory")
    return out


def resize_weights(
    start: Tensor,
    length: Tensor,
    size: int,
    full: int,
    reverse: Tensor | None = None,
    gain: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """:func:`~lightning_tl.datamodules.batch_ops.resize_weights` (times ``gain``) on the CPU in ``dtype``
    (float32 or bfloat16), computing only the taps inside each output pixel's filter support."""
    lib = _loaded()
    if dtype not in _DTYPES:
        raise ValueError(f"resize_weights builds float32 or bfloat16 matrices, got {dtype}")
    start, length = _cpu_float(start).reshape(-1), _cpu_float(length).reshape(-1)
    n = start.numel()
    if length.numel() != n or size < 1 or full < 1:
        raise ValueError(
            f"start and length need one value per matrix and size, full >= 1: got {n} and {length.numel()} "
            f"values, size={size}, full={full}"
        )
    if reverse is not None:
        reverse = reverse.to(device="cpu", dtype=torch.uint8).contiguous().reshape(-1)
        if reverse.numel() != n:
            raise ValueError(f"reverse needs {n} flags, got {reverse.numel()}")
    out = torch.empty(n, size, full, dtype=dtype)

    def matrices(begin: int, end: int) -> int:
        return lib.ltl_resize_weights(
            start.data_ptr(),
            length.data_ptr(),
            None if reverse is None else reverse.data_ptr(),
            begin,
            end,
            size,
            full,
            gain,
            out.data_ptr(),
            dtype == torch.bfloat16,
        )

    if any(_in_parallel(matrices, n)):
        raise MemoryError(f"resize_weights could not allocate {full * 4} bytes of scratch memory")
    return out


_DTYPES = (torch.float32, torch.bfloat16)


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
