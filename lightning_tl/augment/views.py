"""View recipes: the random views a self-supervised method sees, as objects.

A recipe turns the data's image size and channel count into one :class:`~lightning_tl.augment.ViewSpec`
per view: global views first, then the smaller local (multi-crop) ones. The same recipe drives both
executors, the per-sample torchvision pipeline and the batched :class:`~lightning_tl.augment.BatchViews`,
so views are drawn from the same distributions whichever makes them. A datamodule takes one as
``views:`` (in YAML, ``class_path: lightning_tl.augment.BYOLViews`` with ``init_args``).

Recipes: :class:`SimCLRViews` (Chen et al. 2020), :class:`MoCoV2Views` (Chen, Fan, Girshick, He 2020),
:class:`BYOLViews` (Grill et al. 2020, asymmetric blur and solarisation), :class:`DINOViews` (Caron et al.
2021, two global and several local crops). Write your own by subclassing :class:`ViewRecipe` and
returning specs from :meth:`ViewRecipe.specs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning_tl.augment.view_spec import ViewSpec, blur_kernel_size, check_crop_scale, check_jitter_strength
from lightning_tl.config_object import ConfigObject

#: BYOL's and DINO's colour jitter (brightness, contrast, saturation, hue), Grill et al. 2020, table 6.
BYOL_JITTER = (0.4, 0.4, 0.2, 0.1)


class ViewRecipe(ConfigObject):
    """Base class of view recipes: :meth:`specs` lists one :class:`ViewSpec` per view.

    Args:
        hflip: random horizontal flips; None takes the datamodule's default (off for digits, whose
            mirror images are other glyphs, on elsewhere).
        on_device: make the views per batch on the model's device (True), per sample in the loader
            (False), or let the datamodule choose (None: batched for in-memory data sets).
    """

    def __init__(self, *, hflip: bool | None = None, on_device: bool | None = None) -> None:
        for name, value in (("hflip", hflip), ("on_device", on_device)):
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{name} must be true, false or null, got {value!r}")
        self.hflip = hflip
        self.on_device = on_device

    @property
    def num_global_views(self) -> int:
        """Views at the full image size: the first ones of :meth:`specs`."""
        raise NotImplementedError(f"{type(self).__name__} must define num_global_views")

    @property
    def num_local_views(self) -> int:
        """Smaller multi-crop views after the global ones."""
        return 0

    def __len__(self) -> int:
        """All views, global and local."""
        return self.num_global_views + self.num_local_views

    def specs(self, image_size: int, channels: int, hflip: bool = True) -> list[ViewSpec]:
        """One :class:`ViewSpec` per view for ``channels``-channel images of side ``image_size``.

        ``hflip`` is the datamodule's default, used when the recipe's own ``hflip`` is None.
        """
        raise NotImplementedError(f"{type(self).__name__} must define specs()")

    def view(
        self,
        size: int,
        channels: int,
        hflip: bool,
        crop_scale: tuple[float, float],
        blur_prob: float,
        solarize_prob: float = 0.0,
        **jitter: Any,
    ) -> ViewSpec:
        """A view of side ``size`` with the recipes' common parts: flip (``hflip`` when the recipe's is
        None) with probability 0.5, grayscale 0.2 on RGB, a blur kernel of 10% of the side; ``jitter``
        is ``jitter_strength=s`` or ``jitter=(b, c, s, h)``."""
        flip = self.hflip if self.hflip is not None else hflip
        return ViewSpec(
            size=size,
            crop_scale=crop_scale,
            hflip_prob=0.5 if flip else 0.0,
            grayscale_prob=0.2 if channels == 3 else 0.0,
            blur_prob=blur_prob,
            blur_kernel=blur_kernel_size(size),
            solarize_prob=solarize_prob,
            **jitter,
        )


def _check_count(name: str, value: int, least: int) -> None:
    if not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


def _check_prob(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


def _pair(values: Sequence[float]) -> tuple[float, float]:
    return (float(values[0]), float(values[1]))


def _jitter(magnitudes: Sequence[float]) -> tuple[float, float, float, float]:
    """Checked (brightness, contrast, saturation, hue) magnitudes."""
    if len(magnitudes) != 4:
        raise ValueError(
            f"jitter must be 4 magnitudes (brightness, contrast, saturation, hue), got {magnitudes}"
        )
    b, c, s, h = (float(m) for m in magnitudes)
    ViewSpec(1, jitter=(b, c, s, h))  # raises on negative magnitudes or hue > 0.5
    return (b, c, s, h)


class SimCLRViews(ViewRecipe):
    """``num_views`` independent draws of the SimCLR recipe, then ``local_views`` smaller ones.

    Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020, appendix A: random resized crop, flip, colour distortion of strength
    s (``ColorJitter(0.8s, 0.8s, 0.8s, 0.2s)`` with probability 0.8, then grayscale with probability
    0.2; brightness and contrast only on one channel), Gaussian blur with probability 0.5 (kernel 10%
    of the side; ``blur=None`` turns it on from 32 px), optional solarisation. Local views are
    multi-crop's (Caron et al., SwAV, NeurIPS 2020): the same recipe at ``local_image_size``
    (``image_size // 2`` by default) with crops of ``local_crop_scale``.

    Example::

        >>> [spec.size for spec in SimCLRViews(local_views=2).specs(32, channels=3)]
        [32, 32, 16, 16]
    """

    def __init__(
        self,
        num_views: int = 2,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        jitter_strength: float = 0.5,
        blur: bool | None = None,
        solarize_prob: float = 0.0,
        local_views: int = 0,
        local_image_size: int | None = None,
        local_crop_scale: tuple[float, float] = (0.05, 0.4),
        *,
        hflip: bool | None = None,
        on_device: bool | None = None,
    ) -> None:
        super().__init__(hflip=hflip, on_device=on_device)
        _check_count("num_views", num_views, 2)
        _check_count("local_views", local_views, 0)
        check_crop_scale(crop_scale)
        check_crop_scale(local_crop_scale, "local_crop_scale")
        check_jitter_strength(jitter_strength)
        _check_prob("solarize_prob", solarize_prob)
        if local_image_size is not None and local_image_size < 1:
            raise ValueError(
                f"local_image_size must be a positive number of pixels or null, got {local_image_size}"
            )
        self.num_views = num_views
        self.crop_scale = _pair(crop_scale)
        self.jitter_strength = jitter_strength
        self.blur = blur
        self.solarize_prob = solarize_prob
        self.local_views = local_views
        self.local_image_size = local_image_size
        self.local_crop_scale = _pair(local_crop_scale)

    @property
    def num_global_views(self) -> int:
        return self.num_views

    @property
    def num_local_views(self) -> int:
        return self.local_views

    def spec(self, size: int, channels: int, crop_scale: tuple[float, float], hflip: bool) -> ViewSpec:
        """One SimCLR view of side ``size`` (see the class docstring)."""
        blur = self.blur if self.blur is not None else size >= 32
        blur_prob = 0.5 if blur else 0.0
        return self.view(
            size,
            channels,
            hflip,
            crop_scale,
            blur_prob,
            self.solarize_prob,
            jitter_strength=self.jitter_strength,
        )

    def specs(self, image_size: int, channels: int, hflip: bool = True) -> list[ViewSpec]:
        local_size = self.local_image_size if self.local_image_size is not None else max(1, image_size // 2)
        glob = self.spec(image_size, channels, self.crop_scale, hflip)
        local = self.spec(local_size, channels, self.local_crop_scale, hflip)
        return [glob] * self.num_views + [local] * self.local_views


class MoCoV2Views(SimCLRViews):
    """MoCo v2's two views: SimCLR's recipe with crops of 20-100% of the area and blur always allowed.

    Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive Learning", arXiv:2003.04297:
    random resized crop (0.2, 1), ``ColorJitter(0.4, 0.4, 0.4, 0.1)`` with probability 0.8 (strength
    0.5), grayscale 0.2, Gaussian blur (sigma in [0.1, 2]) with probability 0.5, flip.
    """

    def __init__(
        self,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        jitter_strength: float = 0.5,
        blur: bool | None = True,
        *,
        hflip: bool | None = None,
        on_device: bool | None = None,
    ) -> None:
        super().__init__(2, crop_scale, jitter_strength, blur, hflip=hflip, on_device=on_device)


class BYOLViews(ViewRecipe):
    """BYOL's two asymmetric views: blur always on the first, rarely on the second, which is solarised.

    Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, table 6: random resized crop (0.08, 1),
    flip, ``ColorJitter(0.4, 0.4, 0.2, 0.1)`` with probability 0.8, grayscale 0.2, Gaussian blur with
    probability 1.0 / 0.1 (sigma in [0.1, 2], kernel 10% of the side... the paper's 23 px at 224),
    solarisation with probability 0 / 0.2.

    Example::

        >>> a, b = BYOLViews().specs(32, channels=3)
        >>> (a.blur_prob, b.blur_prob, a.solarize_prob, b.solarize_prob)
        (1.0, 0.1, 0.0, 0.2)
    """

    def __init__(
        self,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        jitter: tuple[float, float, float, float] = BYOL_JITTER,
        blur_probs: tuple[float, float] = (1.0, 0.1),
        solarize_probs: tuple[float, float] = (0.0, 0.2),
        *,
        hflip: bool | None = None,
        on_device: bool | None = None,
    ) -> None:
        super().__init__(hflip=hflip, on_device=on_device)
        check_crop_scale(crop_scale)
        for name, pair in (("blur_probs", blur_probs), ("solarize_probs", solarize_probs)):
            if len(pair) != 2:
                raise ValueError(f"{name} must hold one probability per view (2), got {pair}")
            for p in pair:
                _check_prob(name, p)
        self.crop_scale = _pair(crop_scale)
        self.jitter = _jitter(jitter)
        self.blur_probs = _pair(blur_probs)
        self.solarize_probs = _pair(solarize_probs)

    @property
    def num_global_views(self) -> int:
        return 2

    def specs(self, image_size: int, channels: int, hflip: bool = True) -> list[ViewSpec]:
        return [
            self.view(image_size, channels, hflip, self.crop_scale, blur, solar, jitter=self.jitter)
            for blur, solar in zip(self.blur_probs, self.solarize_probs, strict=True)
        ]


class DINOViews(ViewRecipe):
    """DINO's multi-crop: two global views (BYOL's pair) and ``local_views`` small crops.

    Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021: global
    crops of ``global_crop_scale`` (0.4, 1) of the area at the image size, the first always blurred,
    the second blurred with probability 0.1 and solarised with 0.2; local crops of
    ``local_crop_scale`` (0.05, 0.4) at ``local_image_size`` (96 / 224 of the side by default),
    blurred with probability 0.5. All: flip, ``ColorJitter(0.4, 0.4, 0.2, 0.1)`` with probability 0.8,
    grayscale 0.2. The paper uses 2 global and 10 local views (6 in its cheaper runs).

    Example::

        >>> [spec.size for spec in DINOViews(local_views=4).specs(224, channels=3)]
        [224, 224, 96, 96, 96, 96]
    """

    def __init__(
        self,
        local_views: int = 6,
        global_crop_scale: tuple[float, float] = (0.4, 1.0),
        local_crop_scale: tuple[float, float] = (0.05, 0.4),
        local_image_size: int | None = None,
        jitter: tuple[float, float, float, float] = BYOL_JITTER,
        *,
        hflip: bool | None = None,
        on_device: bool | None = None,
    ) -> None:
        super().__init__(hflip=hflip, on_device=on_device)
        _check_count("local_views", local_views, 0)
        check_crop_scale(global_crop_scale, "global_crop_scale")
        check_crop_scale(local_crop_scale, "local_crop_scale")
        if local_image_size is not None and local_image_size < 1:
            raise ValueError(
                f"local_image_size must be a positive number of pixels or null, got {local_image_size}"
            )
        self.local_views = local_views
        self.global_crop_scale = _pair(global_crop_scale)
        self.local_crop_scale = _pair(local_crop_scale)
        self.local_image_size = local_image_size
        self.jitter = _jitter(jitter)

    @property
    def num_global_views(self) -> int:
        return 2

    @property
    def num_local_views(self) -> int:
        return self.local_views

    def specs(self, image_size: int, channels: int, hflip: bool = True) -> list[ViewSpec]:
        def spec(size: int, scale: tuple[float, float], blur: float, solar: float = 0.0) -> ViewSpec:
            return self.view(size, channels, hflip, scale, blur, solar, jitter=self.jitter)

        local_size = self.local_image_size or max(1, round(image_size * 96 / 224))
        glob = [
            spec(image_size, self.global_crop_scale, 1.0),
            spec(image_size, self.global_crop_scale, 0.1, 0.2),
        ]
        return glob + [spec(local_size, self.local_crop_scale, 0.5)] * self.local_views
