"""Heads of BYOL, SimSiam, Barlow Twins / VICReg and DINO: the papers' shapes, DINO's normalised layers."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from lightning_tl.heads import (
    BarlowTwinsProjectionHead,
    BYOLProjectionHead,
    DINOHead,
    SimSiamPredictionHead,
    SimSiamProjectionHead,
    WeightNormLinear,
)


def _defaults(cls: type) -> dict[str, object]:
    return {k: p.default for k, p in inspect.signature(cls).parameters.items()}


def _layers(head: nn.Module) -> list[str]:
    return [type(m).__name__ for m in head.modules() if not list(m.children())]


def test_paper_shapes() -> None:
    assert _layers(BYOLProjectionHead(8, 16, 4)) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    # SimSiam's projector: BN after every layer, the output one included, no ReLU at the end
    assert _layers(SimSiamProjectionHead(8, 16, 4)) == ["Linear", "BatchNorm1d", "ReLU"] * 2 + [
        "Linear",
        "BatchNorm1d",
    ]
    assert _layers(SimSiamPredictionHead(4, 2, 4)) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert _layers(BarlowTwinsProjectionHead(8, 16, 12)) == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear"]
    # the defaults are the papers' widths (read from the signatures: the heads themselves are large)
    assert _defaults(BYOLProjectionHead) == {"input_dim": 2048, "hidden_dim": 4096, "output_dim": 256}
    assert _defaults(SimSiamPredictionHead) == {"input_dim": 2048, "hidden_dim": 512, "output_dim": 2048}
    assert _defaults(BarlowTwinsProjectionHead)["output_dim"] == 8192
    assert _defaults(DINOHead) | {"input_dim": 0} == {
        "input_dim": 0,
        "hidden_dim": 2048,
        "bottleneck_dim": 256,
        "output_dim": 65536,
        "num_layers": 3,
        "batch_norm": False,
        "norm_last_layer": True,
    }
    x = torch.randn(5, 8)
    assert BarlowTwinsProjectionHead(8, 16, 12)(x).shape == (5, 12)
    with pytest.raises(ValueError, match="num_layers must be >= 1, got 0"):
        SimSiamProjectionHead(num_layers=0)


def test_dino_head_normalises_bottleneck_and_last_layer() -> None:
    torch.manual_seed(0)
    head = DINOHead(8, 16, 4, 32)
    assert [type(m).__name__ for m in head.mlp.layers] == ["Linear", "GELU", "Linear", "GELU", "Linear"]
    x = torch.randn(5, 8)
    out = head(x)  # (5, 32): cosines between the unit bottleneck and unit prototypes
    assert out.shape == (5, 32) and out.abs().max() <= 1 + 1e-6
    # scaling the last layer's weights changes nothing while the norms are fixed
    with torch.no_grad():
        head.last_layer.weight.mul_(3.0)
    torch.testing.assert_close(head(x), out)
    assert [name for name, _ in head.last_layer.named_parameters()] == ["weight"]
    learned = WeightNormLinear(4, 6, learn_gain=True)
    with torch.no_grad():
        learned.gain.fill_(2.0)  # type: ignore[union-attr]
    z = torch.nn.functional.normalize(torch.randn(3, 4), dim=1)
    assert learned(z).abs().max() <= 2 + 1e-6 and learned(z).abs().max() > 1
