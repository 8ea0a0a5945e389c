"""CDAN's multilinear conditioning: the discriminator sees features and predictions together.

Long, Cao, Wang, Jordan, "Conditional Adversarial Domain Adaptation", NeurIPS 2018, Sec. 3.1-3.2:
the domain discriminator of CDAN takes ``T(f, g)``, a joint representation of the features ``f``
(d_f) and the classifier's prediction ``g`` (C), rather than ``f`` alone, so it can align the
multimodal (class-conditional) structure of the two domains.

* the multilinear map ``T(f, g) = f (x) g``: the outer product, flattened to ``d_f * C`` values;
* the randomized multilinear map ``T(f, g) = (R_f f) . (R_g g) / sqrt(d)`` (element-wise product)
  with random matrices ``R_f`` (d, d_f) and ``R_g`` (d, C) drawn once and kept fixed; its inner
  products approximate those of the full map in expectation (paper, Theorem 1). The paper uses the
  full map when ``d_f * C <= 4096`` and the randomized one with ``d = 1024`` otherwise.

:func:`multilinear_map` computes either; :class:`MultilinearMap` holds the random matrices as
buffers, drawn from their own seeded generator (the same on every rank and in every run with the
same ``seed``, independent of the global RNG) and saved in checkpoints.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

#: The paper's rule: the full map up to this many dimensions, the randomized one above.
MAX_MULTILINEAR_DIM = 4096
#: The randomized map's output size ``d`` in the paper.
RANDOMIZED_DIM = 1024


def multilinear_map(
    features: Tensor, predictions: Tensor, random_matrices: tuple[Tensor, Tensor] | None = None
) -> Tensor:
    """CDAN's ``T(f, g)``: the flattened outer product, or its randomized version.

    Args:
        features: (B, d_f) features ``f``.
        predictions: (B, C) class predictions ``g`` (softmax probabilities in CDAN).
        random_matrices: ``(R_f (d, d_f), R_g (d, C))`` for the randomized map; None for the full map.

    Returns:
        (B, d_f * C) with entry ``[b, j * C + c] = f[b, j] * g[b, c]``, or (B, d) equal to
        ``(f @ R_f.T) * (g @ R_g.T) / sqrt(d)``.

    Example::

        >>> multilinear_map(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.25, 0.75]]))
        tensor([[0.2500, 0.7500, 0.5000, 1.5000]])
    """
    if features.ndim != 2 or predictions.ndim != 2 or features.shape[0] != predictions.shape[0]:
        raise ValueError(
            f"features must be (B, d_f) and predictions (B, C) with the same B, got "
            f"{tuple(features.shape)} and {tuple(predictions.shape)}."
        )
    if random_matrices is None:
        return (features[:, :, None] * predictions[:, None, :]).flatten(1)  # (B, d_f, C) -> (B, d_f * C)
    r_f, r_g = random_matrices
    if (
        r_f.ndim != 2
        or r_g.shape != (r_f.shape[0], predictions.shape[1])
        or r_f.shape[1] != features.shape[1]
    ):
        raise ValueError(
            f"random matrices must be R_f (d, {features.shape[1]}) and R_g (d, {predictions.shape[1]}), "
            f"got {tuple(r_f.shape)} and {tuple(r_g.shape)}."
        )
    projected_f = features @ r_f.to(features.dtype).T  # (B, d)
    projected_g = predictions @ r_g.to(predictions.dtype).T  # (B, d)
    return projected_f * projected_g / math.sqrt(r_f.shape[0])  # (B, d)


class MultilinearMap(nn.Module):
    """:func:`multilinear_map` as a module; with ``output_dim`` set, the randomized map with fixed matrices.

    The random matrices have independent standard normal entries (the paper allows any symmetric
    distribution with unit variance, e.g. Gaussian or uniform), drawn in ``__init__`` from a
    generator seeded with ``seed``. They are persistent buffers: saved in checkpoints, moved with the
    module, identical on every DDP rank (DDP also broadcasts rank 0's buffers).

    Args:
        feature_dim: d_f.
        num_classes: C.
        output_dim: d of the randomized map (1024 in the paper); None for the full ``d_f * C`` map.
        seed: seed of the random matrices.

    Example::

        >>> T = MultilinearMap(768, 10, output_dim=1024)
        >>> T(torch.randn(4, 768), torch.softmax(torch.randn(4, 10), 1)).shape, T.output_size
        (torch.Size([4, 1024]), 1024)
    """

    random_features: Tensor
    random_predictions: Tensor

    def __init__(
        self, feature_dim: int, num_classes: int, output_dim: int | None = None, seed: int = 0
    ) -> None:
        super().__init__()
        if feature_dim < 1 or num_classes < 1:
            raise ValueError(
                f"feature_dim and num_classes must be >= 1, got {feature_dim} and {num_classes}."
            )
        if output_dim is not None and output_dim < 1:
            raise ValueError(f"output_dim must be >= 1 (1024 in the CDAN paper) or None, got {output_dim}.")
        self.feature_dim, self.num_classes, self.output_dim = feature_dim, num_classes, output_dim
        self.randomized = output_dim is not None
        if output_dim is not None:
            gen = torch.Generator().manual_seed(seed)
            self.register_buffer("random_features", torch.randn(output_dim, feature_dim, generator=gen))
            self.register_buffer("random_predictions", torch.randn(output_dim, num_classes, generator=gen))

    @property
    def output_size(self) -> int:
        """Width of ``T(f, g)``: d, or ``d_f * C``."""
        return self.output_dim if self.output_dim is not None else self.feature_dim * self.num_classes

    def forward(self, features: Tensor, predictions: Tensor) -> Tensor:
        """Features (B, d_f) and predictions (B, C) -> (B, output_size)."""
        if features.shape[1:] != (self.feature_dim,) or predictions.shape[1:] != (self.num_classes,):
            raise ValueError(
                f"expected features (B, {self.feature_dim}) and predictions (B, {self.num_classes}), got "
                f"{tuple(features.shape)} and {tuple(predictions.shape)}."
            )
        matrices = (self.random_features, self.random_predictions) if self.randomized else None
        return multilinear_map(features, predictions, matrices)

    def extra_repr(self) -> str:
        kind = f"randomized, output_dim={self.output_dim}" if self.randomized else "full"
        return f"feature_dim={self.feature_dim}, num_classes={self.num_classes}, {kind}"
