"""CDAN and CDAN+E: DANN whose discriminator is conditioned on the classifier's predictions.

Long, Cao, Wang, Jordan, "Conditional Adversarial Domain Adaptation", NeurIPS 2018. The domain
discriminator sees the multilinear map ``T(f, g)`` of the features ``f`` and the softmax prediction
``g`` (Sec. 3.1-3.2, :mod:`lightning_tl.nn.multilinear`), so aligning the domains aligns their
class-conditional structure; CDAN+E (Sec. 3.3) weights each example's discriminator loss by the
certainty of its prediction, ``w = 1 + exp(-H(g))``, to focus on transferable examples.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_tl.losses import certainty_weights
from lightning_tl.modules.dann import DANN
from lightning_tl.nn.multilinear import MAX_MULTILINEAR_DIM, RANDOMIZED_DIM, MultilinearMap

CONDITIONINGS = ("auto", "multilinear", "randomized")


def cdan_entropy_weights(probs: Tensor, is_target: Tensor) -> Tensor:
    """CDAN+E's per-example weights: ``1 + exp(-H(g))``, normalised to sum to 1 within each domain.

    Long et al. 2018 (entropy conditioning) weights each example of the discriminator loss by
    ``1 + exp(-H(g))``; as in the authors' released code, the weights are normalised to sum to 1 over
    the source examples and to 1 over the target examples of the batch, so each domain counts
    equally whatever its batch size. Constants for the gradient (see
    :func:`~lightning_tl.losses.certainty_weights`).

    Args:
        probs: (B, C) softmax predictions of source and target examples.
        is_target: (B,) 0 for source, 1 for target; both domains must be present.

    Returns:
        (B,) weights; those of each domain sum to 1.

    Example::

        >>> probs = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.5, 0.5]])
        >>> [round(float(w), 4) for w in cdan_entropy_weights(probs, torch.tensor([0, 0, 1]))]
        [0.5714, 0.4286, 1.0]
    """
    if is_target.shape != probs.shape[:1]:
        raise ValueError(f"is_target must have shape ({probs.shape[0]},), got {tuple(is_target.shape)}.")
    target = is_target.bool()
    if bool(target.all()) or not bool(target.any()):
        raise ValueError("CDAN+E's weights need source and target examples in the batch.")
    weights = certainty_weights(probs)  # (B,)
    source_total, target_total = weights[~target].sum(), weights[target].sum()
    return weights / torch.where(target, target_total, source_total)  # (B,)


class CDAN(DANN):
    """Conditional domain-adversarial training (CDAN, CDAN+E) with DANN's training step and schedules.

    Everything is :class:`~lightning_tl.modules.DANN`'s (backbone, classifier, reversal layer and its
    coefficient schedule, optimizer, lr annealing, logs, exact resume) except what the domain
    classifier sees: ``T(f, g)`` with ``f`` the backbone features and ``g = softmax(logits)`` of
    source and target images (``domain_hidden`` sizes its MLP). The paper's minimax objective treats
    ``g = G(x)`` as part of the adversarially trained network, so the reversed gradient would reach
    ``g`` too; by default ``g`` is detached (``detach_predictions=True``), as in the authors'
    released code, and the reversed gradient reaches the classifier only through the features;
    ``detach_predictions=False`` follows the objective. With ``entropy_conditioning`` (CDAN+E) the
    discriminator loss is ``(sum_source w_i l_i + sum_target w_j l_j) / 2`` with
    :func:`cdan_entropy_weights` (each domain's weights sum to 1; constants for the gradient); plain
    CDAN takes the mean over the batch, the same thing for equal weights and batch sizes.

    Under DDP everything is per example except CDAN+E's normalisation, which is over each rank's own
    batch (as the paper's is over its mini-batch); the random matrices of the randomized map are
    buffers, identical on every rank and saved in checkpoints.

    Args:
        conditioning: "multilinear": ``f (x) g`` (d_f * C values); "randomized": the randomized map
            of ``randomized_dim`` values; "auto" (the paper's rule): multilinear when
            ``d_f * C <= multilinear_max_dim``, else randomized; None: ``f`` alone (DANN).
        entropy_conditioning: CDAN+E.
        randomized_dim: d of the randomized map (1024 in the paper).
        multilinear_max_dim: the "auto" threshold (4096 in the paper).
        detach_predictions: no gradient from the discriminator into ``g``.
        map_seed: seed of the randomized map's random matrices.
        **kwargs: :class:`~lightning_tl.modules.DANN`'s arguments (``adversarial: false`` needs
            ``conditioning: null``: there is no discriminator to condition).

    Example::

        >>> from lightning_tl.nn import SmallConvNet
        >>> model = CDAN(backbone=SmallConvNet(in_chans=3), entropy_conditioning=True)
        >>> model.multilinear_map.output_size  # 768 * 10 > 4096: randomized
        1024
    """

    def __init__(
        self,
        conditioning: Literal["auto", "multilinear", "randomized"] | None = "auto",
        entropy_conditioning: bool = False,
        randomized_dim: int = RANDOMIZED_DIM,
        multilinear_max_dim: int = MAX_MULTILINEAR_DIM,
        detach_predictions: bool = True,
        map_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if conditioning is not None and conditioning not in CONDITIONINGS:
            raise ValueError(
                f"conditioning must be one of {CONDITIONINGS} or None (features only, as DANN), got "
                f"{conditioning!r}"
            )
        if randomized_dim < 1 or multilinear_max_dim < 1:
            raise ValueError(
                f"randomized_dim and multilinear_max_dim must be >= 1 (the paper: 1024 and 4096), got "
                f"{randomized_dim} and {multilinear_max_dim}"
            )
        if not kwargs.get("adversarial", True) and (conditioning is not None or entropy_conditioning):
            raise ValueError(
                f"{type(self).__name__}(adversarial=False) has no discriminator to condition: set "
                "conditioning: null and entropy_conditioning: false, or use DANN(adversarial=False) for "
                "the source-only baseline"
            )
        super().__init__(**kwargs)  # calls build_discriminator_input, which reads these from hparams

    @property
    def needs_target_logits(self) -> bool:
        hp: Any = self.hparams
        return self.adversarial and (hp.conditioning is not None or hp.entropy_conditioning)

    def build_discriminator_input(self, feature_dim: int, num_classes: int) -> int:
        hp: Any = self.hparams  # save_hyperparameters has collected this class's arguments too
        if hp.conditioning is None:
            return feature_dim
        randomized = hp.conditioning == "randomized" or (
            hp.conditioning == "auto" and feature_dim * num_classes > hp.multilinear_max_dim
        )
        output_dim = hp.randomized_dim if randomized else None
        self.multilinear_map = MultilinearMap(feature_dim, num_classes, output_dim, hp.map_seed)
        return self.multilinear_map.output_size

    def discriminator_input(self, features: Tensor, logits: Tensor | None) -> Tensor:
        hp: Any = self.hparams
        if hp.conditioning is None:
            return features
        if logits is None:
            raise ValueError("CDAN's discriminator is conditioned on the class logits: pass them")
        probs = F.softmax(logits, dim=1)  # (B, C)
        return self.multilinear_map(features, probs.detach() if hp.detach_predictions else probs)

    def domain_loss(self, d_logits: Tensor, is_target: Tensor, logits: Tensor | None) -> Tensor:
        hp: Any = self.hparams
        if not hp.entropy_conditioning:
            return super().domain_loss(d_logits, is_target, logits)
        assert logits is not None  # needs_target_logits: the step classifies every example
        weights = cdan_entropy_weights(F.softmax(logits.detach().float(), dim=1), is_target)  # (B,)
        losses = F.binary_cross_entropy_with_logits(d_logits, is_target.to(d_logits.dtype), reduction="none")
        return (weights * losses).sum() / 2
