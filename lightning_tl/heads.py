"""Heads put on top of a backbone: projection MLPs, linear classifiers, domain discriminators."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

Block = tuple[int, int, "nn.Module | None", "nn.Module | None"]


class ProjectionHead(nn.Module):
    """An MLP built from ``(in_dim, out_dim, norm, activation)`` blocks.

    Each block is a ``Linear`` (bias only when no norm follows it), then the optional norm, then the
    optional activation. The default is SimCLR's head (Chen et al. 2020, Sec. 2.1 and B.9): "a MLP with
    one hidden layer" g(h) = W2 ReLU(W1 h), with batch norm after the hidden layer as in SimCLR v2 and
    a 128-d output.

    Args:
        blocks: sequence of ``(in_dim, out_dim, norm, activation)``; norm/activation may be None.
    """

    def __init__(self, blocks: Sequence[Block]) -> None:
        super().__init__()
        if not blocks:
            raise ValueError("ProjectionHead needs at least one (in_dim, out_dim, norm, activation) block.")
        layers: list[nn.Module] = []
        for i, (in_dim, out_dim, norm, act) in enumerate(blocks):
            if i and blocks[i - 1][1] != in_dim:
                raise ValueError(
                    f"block {i} takes {in_dim} features but block {i - 1} gives {blocks[i - 1][1]}."
                )
            layers.append(nn.Linear(in_dim, out_dim, bias=norm is None))
            layers.extend(m for m in (norm, act) if m is not None)
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_dim) -> (B, out_dim)."""
        return self.layers(x)


class SimCLRProjectionHead(ProjectionHead):
    """SimCLR's projection head: ``num_layers`` Linear layers, BN + ReLU after every hidden one.

    Defaults follow the paper for ResNet-50 (2048-d hidden, 128-d output); ``num_layers=3`` gives
    SimCLR v2's deeper head (Chen et al., "Big Self-Supervised Models are Strong Semi-Supervised
    Learners", NeurIPS 2020).
    """

    def __init__(
        self, input_dim: int = 2048, hidden_dim: int = 2048, output_dim: int = 128, num_layers: int = 2
    ) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}.")
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        blocks: list[Block] = [
            (dims[i], dims[i + 1], nn.BatchNorm1d(dims[i + 1]), nn.ReLU(inplace=True))
            for i in range(num_layers - 1)
        ]
        blocks.append((dims[-2], dims[-1], None, None))
        super().__init__(blocks)


class LinearHead(nn.Module):
    """A linear classifier on features, optionally behind batch norm without affine (as in MAE's probe)."""

    def __init__(self, input_dim: int, num_classes: int, batch_norm: bool = False) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        self.norm = nn.BatchNorm1d(input_dim, affine=False) if batch_norm else nn.Identity()
        self.linear = nn.Linear(input_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """(B, input_dim) -> (B, num_classes) logits."""
        return self.linear(self.norm(x))


class DomainClassifier(nn.Module):
    """DANN's domain discriminator: an MLP from features to one logit, "is this a target-domain sample?".

    Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016: the default widths are
    those of the paper's larger experiments (SVHN, GTSRB and Office: two hidden layers of 1024 units
    with ReLU and dropout, Sec. 5.2 and Fig. 4); its MNIST -> MNIST-M model uses one hidden layer of
    100 units (``hidden_dims=(100,)``, ``dropout=0``). The output is a logit, scored with
    :meth:`loss` (binary cross-entropy *with logits*, safe under autocast, unlike a sigmoid followed
    by ``binary_cross_entropy``). Put a :class:`~lightning_tl.nn.GradientReversal` in front of it.

    Args:
        input_dim: feature width.
        hidden_dims: hidden layer widths; empty for a linear discriminator.
        dropout: dropout probability after each hidden ReLU.
    """

    def __init__(
        self, input_dim: int, hidden_dims: Sequence[int] = (1024, 1024), dropout: float = 0.5
    ) -> None:
        super().__init__()
        if input_dim < 1 or any(h < 1 for h in hidden_dims):
            raise ValueError(
                f"input_dim and hidden_dims must be >= 1, got input_dim={input_dim}, "
                f"hidden_dims={hidden_dims}."
            )
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        layers: list[nn.Module] = []
        width = input_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Features (B, input_dim) -> domain logits (B,); > 0 means "target"."""
        return self.layers(x).squeeze(-1)

    @staticmethod
    def loss(logits: Tensor, is_target: Tensor) -> Tensor:
        """Mean binary cross-entropy of logits (B,) against domain labels (B,) (0 source, 1 target)."""
        return F.binary_cross_entropy_with_logits(logits, is_target.to(logits.dtype))
