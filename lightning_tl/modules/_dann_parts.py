"""Small pieces of DANN, shared by CDAN and MCC: the paper's lr annealing, batch and backbone checks."""

from __future__ import annotations

from typing import Any

from torch import Tensor


def dann_lr_factor(step: int, total_steps: int, alpha: float = 10.0, beta: float = 0.75) -> float:
    """DANN's annealing ``1 / (1 + alpha p)^beta``, ``p = step / total_steps`` (Ganin et al. 2016, 5.2.2).

    The learning rate is ``mu_0`` times this factor: 1 at the start, ``11^-0.75 = 0.166`` at the end
    with the paper's alpha = 10, beta = 0.75.
    """
    p = min(1.0, step / max(1, total_steps))
    return float((1.0 + alpha * p) ** -beta)


class DANNAnnealing:
    """Picklable :class:`~torch.optim.lr_scheduler.LambdaLR` multiplier following :func:`dann_lr_factor`.

    ``LambdaLR`` counts optimizer steps and keeps the count in its ``state_dict``, so the schedule
    continues where it was after a resume.
    """

    def __init__(self, total_steps: int, alpha: float, beta: float) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total_steps, self.alpha, self.beta = total_steps, alpha, beta

    def __call__(self, step: int) -> float:
        return dann_lr_factor(step, self.total_steps, self.alpha, self.beta)


def split_domain_batch(
    batch: Any, uses_target: bool, method: str = "DANN"
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``{"source": (x_s, y_s), "target": x_t}`` (or ``(x, y)`` when the target is unused) -> parts.

    ``method`` names the module in the error message. Returns source images (B_s, C, H, W), source
    labels (B_s,) and target images (B_t, C, H, W) or None.
    """
    if isinstance(batch, dict) and set(batch) == {"source", "target"}:
        (x_s, y_s), x_t = batch["source"], batch["target"]
        if not isinstance(x_t, Tensor):
            raise ValueError(
                f"the target batch must be an image tensor (no labels), got {type(x_t).__name__}"
            )
        if x_t.shape[1:] != x_s.shape[1:]:
            raise ValueError(
                f"source images {tuple(x_s.shape[1:])} and target images {tuple(x_t.shape[1:])} differ in "
                "shape; give both datamodules the same image_size and channels (rgb: true on a grayscale one)"
            )
        return x_s, y_s, x_t
    if not uses_target and isinstance(batch, (tuple, list)) and len(batch) == 2:
        x_s, y_s = batch
        return x_s, y_s, None
    raise ValueError(
        f"{method} trains on {{'source': (images, labels), 'target': images}} batches from a "
        "DomainAdaptationDataModule"
        + ("" if uses_target else " or on plain (images, labels) batches")
        + f"; got {type(batch).__name__}"
    )
