"""Heads put on top of a backbone: projection MLPs, linear classifiers, domain discriminators."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Block = tuple[int, int, "nn.Module | None", "nn.Module | None"]
_RELU = partial(nn.ReLU, inplace=True)


def mlp_widths(input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> list[int]:
    """The widths through an MLP of ``num_layers`` Linear layers: ``[in, hidden, ..., hidden, out]``."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}.")
    return [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]


def mlp_blocks(
    dims: Sequence[int],
    hidden_norm: bool,
    last_norm: bool = False,
    activation: Callable[[], nn.Module] = _RELU,
) -> list[Block]:
    """Blocks of an MLP through ``dims``: ``activation`` after every hidden layer, BN before it if
    ``hidden_norm``; BN without activation after the last layer if ``last_norm``."""
    if len(dims) < 2 or any(d < 1 for d in dims):
        raise ValueError(f"an MLP head needs >= 1 layer and widths >= 1, got widths {list(dims)}.")
    blocks: list[Block] = [
        (dims[i], dims[i + 1], nn.BatchNorm1d(dims[i + 1]) if hidden_norm else None, activation())
        for i in range(len(dims) - 2)
    ]
    blocks.append((dims[-2], dims[-1], nn.BatchNorm1d(dims[-1]) if last_norm else None, None))
    return blocks


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
        super().__init__(
            mlp_blocks(mlp_widths(input_dim, hidden_dim, output_dim, num_layers), hidden_norm=True)
        )


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


class BYOLProjectionHead(ProjectionHead):
    """BYOL's projector g, and its predictor q: Linear -> BN -> ReLU -> Linear.

    Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, Sec. 3.3: "a multi-layer perceptron (MLP)
    consisting in a linear layer with output size 4096 followed by batch normalization, rectified linear
    units (ReLU), and a final linear layer with output dimension 256"; "the predictor q_theta uses the
    same architecture as g_theta" (so the predictor is ``BYOLProjectionHead(256, 4096, 256)``).
    """

    def __init__(self, input_dim: int = 2048, hidden_dim: int = 4096, output_dim: int = 256) -> None:
        super().__init__(mlp_blocks([input_dim, hidden_dim, output_dim], hidden_norm=True))


class SimSiamProjectionHead(ProjectionHead):
    """SimSiam's projector: ``num_layers`` Linear layers, each followed by BN, ReLU after the hidden ones.

    Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021, Sec. 4: "The projection MLP
    has BN applied to each fully-connected (fc) layer, including its output fc. Its output fc has no
    ReLU. The hidden fc is 2048-d. This MLP has 3 layers."
    """

    def __init__(
        self, input_dim: int = 2048, hidden_dim: int = 2048, output_dim: int = 2048, num_layers: int = 3
    ) -> None:
        dims = mlp_widths(input_dim, hidden_dim, output_dim, num_layers)
        super().__init__(mlp_blocks(dims, hidden_norm=True, last_norm=True))


class SimSiamPredictionHead(ProjectionHead):
    """SimSiam's predictor h: a bottleneck MLP Linear -> BN -> ReLU -> Linear.

    Chen & He, CVPR 2021, Sec. 4: "The prediction MLP (h) has BN applied to its hidden fc layers. Its
    output fc does not have BN or ReLU. This MLP has 2 layers. The dimension of h's input and output
    (z and p) is d = 2048, and h's hidden layer's dimension is 512, making h a bottleneck structure."
    """

    def __init__(self, input_dim: int = 2048, hidden_dim: int = 512, output_dim: int = 2048) -> None:
        super().__init__(mlp_blocks([input_dim, hidden_dim, output_dim], hidden_norm=True))


class BarlowTwinsProjectionHead(ProjectionHead):
    """The projector of Barlow Twins, also VICReg's expander: Linear-BN-ReLU blocks, then a Linear layer.

    Zbontar et al., "Barlow Twins", ICML 2021, Sec. 3: "The projector network has three linear layers,
    each with 8192 output units. The first two layers of the projector are followed by a batch
    normalization layer and rectified linear units." Bardes, Ponce & LeCun, "VICReg", ICLR 2022, use the
    same shape for their expander: two 8192-d Linear-BN-ReLU layers and a final 8192-d Linear layer.
    For tiny backbones scale ``hidden_dim`` / ``output_dim`` down.
    """

    def __init__(
        self, input_dim: int = 2048, hidden_dim: int = 8192, output_dim: int = 8192, num_layers: int = 3
    ) -> None:
        super().__init__(
            mlp_blocks(mlp_widths(input_dim, hidden_dim, output_dim, num_layers), hidden_norm=True)
        )


class DINOHead(nn.Module):
    """DINO's projection head: an MLP to a bottleneck, L2 normalisation, a weight-normalised last layer.

    Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021, Sec. 3.1 and
    Appendix: "a 3-layer multi-layer perceptron (MLP) with hidden dimension 2048 followed by l2
    normalization and a weight normalized fully connected layer with K dimensions" (K = 65536, bottleneck
    256, GELU activations, no batch norm for ViTs). The last layer's rows are unit vectors (weight
    normalisation with the gain fixed to 1, the paper's default) unless ``norm_last_layer=False``, which
    learns a gain per output. :attr:`last_layer` is what DINO keeps frozen during the first epoch.

    Args:
        input_dim: backbone feature width.
        hidden_dim: MLP width (2048).
        bottleneck_dim: width before the L2 normalisation (256).
        output_dim: K, the number of prototypes (65536).
        num_layers: Linear layers of the MLP up to the bottleneck (3).
        batch_norm: batch norm after each hidden layer (off in the paper's ViT setting).
        norm_last_layer: fix the last layer's weight norms to 1.
    """

    def __init__(
        self,
        input_dim: int = 2048,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        output_dim: int = 65536,
        num_layers: int = 3,
        batch_norm: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        dims = mlp_widths(input_dim, hidden_dim, bottleneck_dim, num_layers)
        self.mlp = ProjectionHead(mlp_blocks(dims, hidden_norm=batch_norm, activation=nn.GELU))
        self.last_layer = WeightNormLinear(bottleneck_dim, output_dim, learn_gain=not norm_last_layer)

    def forward(self, x: Tensor) -> Tensor:
        """(B, input_dim) -> logits (B, output_dim), before DINO's temperature softmax."""
        return self.last_layer(F.normalize(self.mlp(x), dim=1))  # (B, K)


class WeightNormLinear(nn.Module):
    """A Linear layer without bias whose weight rows are ``gain * v / ||v||`` (Salimans & Kingma 2016).

    With ``learn_gain=False`` the gain is 1: every output is a cosine similarity scaled by nothing, as in
    DINO's head (its ``norm_last_layer``). Plain parameters (``weight`` = v, ``gain``), so checkpoints
    hold no parametrisation state.
    """

    def __init__(self, input_dim: int, output_dim: int, learn_gain: bool = False) -> None:
        super().__init__()
        if input_dim < 1 or output_dim < 1:
            raise ValueError(f"widths must be >= 1, got input_dim={input_dim}, output_dim={output_dim}.")
        self.weight = nn.Parameter(nn.Linear(input_dim, output_dim, bias=False).weight.detach())  # (K, D)
        self.gain = nn.Parameter(torch.ones(output_dim, 1)) if learn_gain else None  # (K, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, input_dim) -> (B, output_dim)."""
        weight = F.normalize(self.weight, dim=1)  # (K, D) unit rows
        return F.linear(x, weight if self.gain is None else self.gain * weight)
