"""Multi-view SSL augmentation of a whole batch at once, with per-image random parameters.

:class:`BatchViews` turns a batch of uint8 images into any number of SimCLR-style views (random
resized crop, flip, colour jitter in random order, grayscale, Gaussian blur, solarisation,
normalisation) with a few batched kernels from :mod:`~lightning_tl.augment.batch_ops`, on the
device the images are on. The random parameters follow the sampling rules of the torchvision v2
transforms that the per-sample pipeline
(:func:`~lightning_tl.augment.transforms.view_transform`) uses, so both paths draw views from
the same distribution. Each image draws its parameters from its own counter-based random stream
(:mod:`~lightning_tl.augment.counter_rng`) seeded by the sampler's per-sample seed, so an image's
views do not depend on the other images in its batch, on the number of processes or on any global
random state, and a resumed run redraws them exactly.

Multi-crop (Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments" (SwAV), NeurIPS 2020) is a list of :class:`ViewSpec`: e.g. two global views and N
smaller local ones with their own size and crop scale.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from functools import cache, partial

import torch
from torch import Tensor

from lightning_tl.augment import batch_ops as ops
from lightning_tl.augment import counter_rng as rng
from lightning_tl.augment import cpu_kernel as kernel_lib
from lightning_tl.augment.view_spec import NUM_PARAMS, ViewSpec
from lightning_tl.augment.view_spec import PARAM as P

_CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes before its centre fallback


#: Uniform draws one view consumes: crop 2 x 10 tries + 2 placement, then 14 for the rest.
CROP_DRAWS = 2 * _CROP_ATTEMPTS + 2
VIEW_DRAWS = CROP_DRAWS + 14
#: Stream offset between views, so view v of an image uses draws [v * _VIEW_STRIDE, ...).
_VIEW_STRIDE = 64


def sample_crop_boxes(
    u: Tensor, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> Tensor:
    """Random resized crop boxes ``(top, left, h, w)`` (n, 4) float64, integer-valued, from uniforms.

    torchvision's ``RandomResizedCrop`` rule, vectorised: up to 10 tries of an area fraction
    uniform in ``scale`` and a log-uniform aspect ratio in ``ratio``, rounded to whole pixels; the
    first box that fits is placed uniformly at random; if none fits, a centre crop of the whole
    image clamped to ``ratio``.

    Args:
        u: (n, CROP_DRAWS) float64 uniforms in [0, 1): 10 area draws, 10 ratio draws, 2 placement draws.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    tries = _CROP_ATTEMPTS
    target = area * (scale[0] + (scale[1] - scale[0]) * u[:, :tries])  # (n, 10)
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, tries : 2 * tries])  # (n, 10)
    w = torch.round(torch.sqrt(target * aspect))  # (n, 10)
    h = torch.round(torch.sqrt(target / aspect))  # (n, 10)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # (n, 10)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # (n, 1): first box that fits
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)  # (n,)

    in_ratio = width / height
    if in_ratio < ratio[0]:
        fallback_w, fallback_h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fallback_w, fallback_h = round(height * ratio[1]), height
    else:
        fallback_w, fallback_h = width, height
    found = fits.any(dim=1)  # (n,)
    w = torch.where(found, w, torch.full_like(w, fallback_w))
    h = torch.where(found, h, torch.full_like(h, fallback_h))
    place = u[:, 2 * tries : 2 * tries + 2]  # (n, 2)
    top = torch.where(found, torch.floor(place[:, 0] * (height - h + 1)), (height - h) // 2)
    left = torch.where(found, torch.floor(place[:, 1] * (width - w + 1)), (width - w) // 2)
    return torch.stack([top, left, h, w], dim=1)  # (n, 4)


def sample_view_params(spec: ViewSpec, u: Tensor, height: int, width: int) -> Tensor:
    """Parameters of views drawn with ``spec`` from uniforms ``u`` (n, VIEW_DRAWS): (n, NUM_PARAMS)."""
    n = u.shape[0]
    table = torch.zeros(n, NUM_PARAMS, dtype=torch.float64, device=u.device)
    box = slice(P["top"], P["top"] + 4)  # top, left, height, width
    table[:, box] = sample_crop_boxes(u[:, :CROP_DRAWS], height, width, spec.crop_scale, spec.crop_ratio)
    v = u[:, CROP_DRAWS:]  # (n, 14)
    table[:, P["flip"]] = (v[:, 0] < spec.hflip_prob).double()
    table[:, P["jitter"]] = (v[:, 1] < spec.jitter_prob).double() if spec.jitters else 0.0
    *factors, hue = spec.jitter_magnitudes
    f = P["factors"]
    for op, m in enumerate(factors):  # brightness, contrast, saturation: uniform in [max(0, 1 - m), 1 + m]
        lo = max(0.0, 1.0 - m)
        table[:, f + op] = lo + (1.0 + m - lo) * v[:, 2 + op]
    table[:, f + 3] = hue * (2.0 * v[:, 5] - 1.0)  # hue shift in [-hue, hue]
    table[:, P["order"] : P["order"] + 4] = (
        v[:, 6:10].argsort(dim=1).double()
    )  # a uniformly random order of the 4 ops
    table[:, P["gray"]] = (v[:, 10] < spec.grayscale_prob).double()
    table[:, P["blur"]] = (v[:, 11] < spec.blur_prob).double()
    table[:, P["sigma"]] = spec.blur_sigma[0] + (spec.blur_sigma[1] - spec.blur_sigma[0]) * v[:, 12]
    table[:, P["solar"]] = (v[:, 13] < spec.solarize_prob).double()
    return table


class BatchViews:
    """Make ``len(specs)`` augmented views of every image in a batch, each image with its own parameters.

    Views of the same size are made together: on a GPU (or with ``cpu_kernel=False``) cropped with
    two batched matrix products and colour-transformed with batched tensor ops, so a batch costs a
    fixed handful of kernels whatever its size; on a CPU by one call of a compiled kernel per blur
    size. Computation runs in float32 on the images' device; the views are returned in ``dtype``.

    Args:
        specs: one :class:`ViewSpec` per output view (e.g. ``[global] * 2 + [local] * 4``).
        channels: channels of the output views (1 or 3); 1-channel input is repeated to 3 when needed.
        mean, std: per-channel normalisation (1 value, repeated, or ``channels`` values).
        dtype: floating dtype of the returned views (e.g. ``torch.bfloat16``).
        resample_dtype: dtype of the eager path's crop and blur matrix products.
            ``torch.bfloat16`` makes them several times faster on GPUs (and on CPUs with AMX), and
            the views differ from the float32 ones by about one uint8 level (the per-sample uint8
            pipeline rounds to whole levels after every op); the colour steps always run in
            float32. The CPU kernel resamples and blurs in float32 whatever this is (its sparse
            filters are faster than either dtype's matrix products); float64 selects the eager ops.
        cpu_kernel: on CPU tensors, make the views in the compiled kernel of
            :mod:`~lightning_tl.augment.cpu_kernel`: each view is resampled from its image over
            the resize filters' nonzero taps and runs its jitter, grayscale, blur (the kernel's
            taps only), solarisation and normalisation in a few passes while it is in cache,
            instead of dense matrix products and dozens of tensor kernels; the views equal the
            eager ones within about 1e-5 of the [0, 1] range. ``None`` (default): use it when it
            compiles, else the eager ops with a warning; ``True``: require it (an error says why
            it is unavailable); ``False``: eager ops only. GPU tensors always use the eager ops.

    Example::

        >>> images = torch.zeros(8, 1, 16, 16, dtype=torch.uint8)
        >>> views = BatchViews([ViewSpec(16)] * 2, channels=1)(images, seeds=0)
        >>> [tuple(v.shape) for v in views]
        [(8, 1, 16, 16), (8, 1, 16, 16)]
    """

    def __init__(
        self,
        specs: Sequence[ViewSpec],
        channels: int,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        dtype: torch.dtype = torch.float32,
        resample_dtype: torch.dtype = torch.float32,
        cpu_kernel: bool | None = None,
    ) -> None:
        if len(specs) == 0:
            raise ValueError("BatchViews needs at least one ViewSpec, got none")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
        mean, std = list(mean), list(std)
        mean, std = (mean * channels if len(mean) == 1 else mean), (std * channels if len(std) == 1 else std)
        if len(mean) != channels or len(std) != channels or any(s <= 0 for s in std):
            raise ValueError(
                f"mean and std need 1 or {channels} values (std > 0) for {channels}-channel views, "
                f"got mean={mean}, std={std}"
            )
        for name, value in (("dtype", dtype), ("resample_dtype", resample_dtype)):
            if not value.is_floating_point:
                raise ValueError(f"{name} must be a floating dtype such as torch.float32, got {value}")
        self.specs = list(specs)
        self.channels = channels
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)
        self.dtype = dtype
        self.resample_dtype = resample_dtype
        if cpu_kernel is not None and not isinstance(cpu_kernel, bool):
            raise ValueError(f"cpu_kernel must be None, True or False, got {cpu_kernel!r}")
        self.cpu_kernel = cpu_kernel

    def sample_params(self, seeds: Tensor, height: int, width: int) -> list[Tensor]:
        """The (B, NUM_PARAMS) parameters of every view; image ``i`` draws only from ``seeds[i]``'s stream."""
        return [
            sample_view_params(spec, rng.uniform(seeds, VIEW_DRAWS, offset=v * _VIEW_STRIDE), height, width)
            for v, spec in enumerate(self.specs)
        ]

    def __call__(self, images: Tensor, seeds: Tensor | int) -> list[Tensor]:
        """uint8 (or float in [0, 1]) images (B, C, H, W) -> list of views (B, channels, size, size).

        Args:
            images: the batch, on any device.
            seeds: (B,) int64 per-image seeds (e.g. the sampler's sample seeds), or one int from
                which per-image seeds are derived.
        """
        if images.ndim != 4 or images.shape[1] not in (1, self.channels):
            raise ValueError(
                f"images must be (B, C, H, W) with C = 1 or {self.channels}, got {tuple(images.shape)}"
            )
        b, _, height, width = images.shape
        if isinstance(seeds, int):
            seeds = rng.derive_seeds(seeds, b, device=images.device)
        if seeds.shape != (b,):
            raise ValueError(f"seeds must hold one seed per image, shape ({b},), got {tuple(seeds.shape)}")
        params = self.sample_params(seeds.to(images.device), height, width)
        views: list[Tensor | None] = [None] * len(self.specs)
        for size in dict.fromkeys(spec.size for spec in self.specs):  # one pass per output size
            members = [v for v, spec in enumerate(self.specs) if spec.size == size]
            table = torch.stack([params[v] for v in members], dim=1).float()  # (B, V, NUM_PARAMS)
            kernels = [self.specs[v].blur_kernel for v in members]
            out = self._views_of_one_size(images, table, size, kernels)  # (V*B, channels, size, size)
            for v, view in zip(members, out.split(b), strict=True):
                views[v] = view
        return [v for v in views if v is not None]

    def _views_of_one_size(self, images: Tensor, table: Tensor, size: int, kernels: list[int]) -> Tensor:
        """Crop, flip and colour V = ``len(kernels)`` views of each image; ``table``: (B, V, NUM_PARAMS).

        The rows are ordered so that views with the same blur kernel (or none) are adjacent. On a
        CPU with the compiled kernel, each such block is one kernel call that also makes the crops
        (:meth:`_kernel_views`). Otherwise the crops come from two batched matrix products and the
        rows are transformed in place a chunk at a time (gathered once, written once to their place
        in the output), so blur and normalisation run on whole chunks and the colour steps on
        memory the CPU already holds (on a GPU, a chunk is a whole block).
        """
        b, v = table.shape[:2]
        gain = 1.0 / 255.0 if images.dtype == torch.uint8 else 1.0
        table = table.reshape(b * v, table.shape[-1])  # row r: view r % V of image r // V
        distinct = list(dict.fromkeys(kernels))  # block 0: no blur; block k: blur with distinct[k - 1]
        slot = torch.tensor([distinct.index(k) + 1 for k in kernels], device=table.device).repeat(b)
        keys = torch.where(table[:, P["blur"]].bool(), slot, 0)  # (B*V,)
        order = torch.argsort(keys, stable=True)  # the rows of one block are adjacent
        values, counts = torch.unique_consecutive(keys[order], return_counts=True)
        target = order.remainder(v) * b + order.div(v, rounding_mode="floor")  # row in the view-major output
        shape = (b * v, self.channels, size, size)
        if images.device.type == "cpu":  # tens of MB written once: fewer page faults with huge pages
            out = kernel_lib.empty_output(shape, self.dtype)
        else:
            out = torch.empty(shape, dtype=self.dtype, device=images.device)
        if self._use_kernel(images.device):
            source = images if images.dtype in (torch.uint8, torch.float32) else images.float()
            return self._kernel_views(
                source, gain, v, table, order, values.tolist(), counts.tolist(), distinct, target, out
            )
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        boxes, flip = table[:, P["top"] : P["top"] + 4].view(b, v, 4), table[:, P["flip"]].view(b, v).bool()
        crops = ops.crop_views(images, boxes, size, flip, gain, self.resample_dtype)  # (B, V, S, C, S)
        crops = crops.view(b * v, size, crops.shape[3], size).transpose(1, 2)  # (B*V, C, S, S)
        # CPU: chunks that stay in cache; elsewhere (GPU): whole blocks, as few kernel launches as possible
        cpu = images.device.type == "cpu"
        chunk = max(1, _CHUNK_ELEMENTS // (self.channels * size * size)) if cpu else max(1, b * v)
        begin = 0
        for block, count in zip(values.tolist(), counts.tolist(), strict=True):
            kernel = distinct[block - 1] if block else None
            for start in range(begin, begin + count, chunk):
                rows = order[start : min(start + chunk, begin + count)]
                y = crops.index_select(0, rows).float()  # (n, C, S, S), owned and contiguous
                if y.shape[1] != self.channels:  # grayscale data for an RGB backbone
                    y = y.expand(-1, self.channels, -1, -1).contiguous()
                self._colour_block(y, table.index_select(0, rows), kernel)
                out.index_copy_(
                    0, target[start : start + len(rows)], ops.normalize_(y, mean, std).to(self.dtype)
                )
            begin += count
        return out

    def _kernel_views(
        self,
        images: Tensor,
        gain: float,
        v: int,
        table: Tensor,
        order: Tensor,
        values: list[int],
        counts: list[int],
        distinct: list[int],
        target: Tensor,
        out: Tensor,
    ) -> Tensor:
        """The compiled CPU kernel's path: each blur block of views in one call; a view is cropped
        from its image (row ``r`` of ``table`` is a view of image ``r // v``), transformed on a
        private copy in cache and written straight into its output row."""
        done = (
            out
            if out.dtype in (torch.float32, torch.bfloat16)
            else torch.empty_like(out, dtype=torch.float32)
        )
        begin = 0
        for block, count in zip(values, counts, strict=True):
            rows = order[begin : begin + count]
            params = table.index_select(0, rows)
            blur = None
            if block:  # views_from_images checks the kernel size against the views'
                blur = ops.gaussian_kernels(params[:, P["sigma"]], distinct[block - 1])
            kernel_lib.views_from_images(
                images,
                rows.div(v, rounding_mode="floor"),
                params,
                self.mean,
                self.std,
                blur,
                done,
                target[begin : begin + count],
                gain,
            )
            begin += count
        return done if done is out else out.copy_(done)

    def _colour_block(self, y: Tensor, table: Tensor, kernel: int | None) -> Tensor:
        """Jitter, grayscale, blur (with ``kernel``, or none) and solarise the rows of ``y``, in place.

        The eager ops (GPU tensors, or ``cpu_kernel=False``). ColorJitter applies its four ops in
        each image's own order: four rounds, each running every op on the rows that have it at that
        position.
        """
        jitter, order = table[:, P["jitter"]].bool(), table[:, P["order"] : P["order"] + 4]
        if bool(jitter.any()):
            for position in range(4):
                for op in range(4) if self.channels == 3 else range(2):  # saturation and hue need RGB
                    _on_rows(y, jitter & (order[:, position] == op), partial(_jitter_step, op, table))
        if self.channels == 3:
            _on_rows(y, table[:, P["gray"]], lambda rows, img: ops.grayscale(img))
        if kernel is not None:
            y.copy_(ops.gaussian_blur(y, table[:, P["sigma"]], kernel, self.resample_dtype))
        _on_rows(y, table[:, P["solar"]], lambda rows, img: ops.solarize(img))
        return y

    def _use_kernel(self, device: torch.device) -> bool:
        """Whether the compiled CPU kernel makes the views (see ``cpu_kernel``) of images on ``device``."""
        if self.cpu_kernel is False or device.type != "cpu":
            return False
        dtype = self.resample_dtype
        if dtype not in (torch.float32, torch.bfloat16):  # e.g. float64 resampling: eager ops, in float64
            if self.cpu_kernel:
                raise ValueError(
                    f"BatchViews(cpu_kernel=True) resamples in float32 (for resample_dtype float32 or "
                    f"bfloat16), got resample_dtype={dtype}; pass cpu_kernel=None or False to resample in it"
                )
            return False
        if kernel_lib.available():
            return True
        if self.cpu_kernel:
            raise RuntimeError(
                "BatchViews(cpu_kernel=True) needs the compiled CPU view kernel, which is unavailable: "
                f"{kernel_lib.unavailable_reason()}. Pass cpu_kernel=None or False to use the eager ops."
            )
        _warn_eager_once(kernel_lib.unavailable_reason())
        return False


@cache
def _warn_eager_once(reason: str) -> None:
    warnings.warn(
        f"BatchViews: the compiled CPU view kernel is unavailable ({reason}); using the eager ops "
        "(same views, slower). Pass cpu_kernel=False to silence this.",
        stacklevel=3,
    )


# In-place jitter ops, indexed as in the parameter table (brightness, contrast, saturation, hue).
_JITTER_OPS: tuple[Callable[[Tensor, Tensor], Tensor], ...] = (
    ops.adjust_brightness_,
    ops.adjust_contrast_,
    ops.adjust_saturation_,
    ops.adjust_hue_,
)
#: Elements of one chunk of rows transformed together on a CPU (4 MB of float32; larger chunks measured
#: no faster, much smaller ones slower: per-kernel overhead).
_CHUNK_ELEMENTS = 1 << 20


def _jitter_step(op: int, table: Tensor, rows: Tensor, img: Tensor) -> Tensor:
    return _JITTER_OPS[op](img, table[rows, P["factors"] + op])


def _on_rows(x: Tensor, selected: Tensor, step: Callable[[Tensor, Tensor], Tensor]) -> None:
    """``x[rows] = step(rows, x[rows])`` in place for the rows where ``selected`` (N,) is true."""
    rows = selected.bool().nonzero().squeeze(1)  # (n,)
    if rows.numel() == len(x):
        x.copy_(step(rows, x))
    elif rows.numel():
        x.index_copy_(0, rows, step(rows, x.index_select(0, rows)))
