"""LoRA: zero-init equivalence, reference formula, merge/unmerge round trip, timm ViT fused qkv."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from lightning_tl.nn import LoRAConv2d, LoRALinear, inject_lora, lora_state_dict, merge_lora, unmerge_lora


def _perturb(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.1)


def test_linear_matches_paper_formula() -> None:
    base = nn.Linear(6, 9).double()
    layer = LoRALinear(base, rank=2, alpha=3.0, parts="qkv", adapt="qv")
    _perturb(layer)
    x = torch.randn(4, 6, dtype=torch.float64)
    # h = W0 x + (alpha / r) B A x, separately for the q and v thirds; k untouched.
    a_q, a_v = layer.lora_A[:2], layer.lora_A[2:]
    b_q, b_v = layer.lora_B[0], layer.lora_B[1]
    delta = torch.cat([b_q @ a_q, torch.zeros(3, 6, dtype=torch.float64), b_v @ a_v]) * 1.5
    torch.testing.assert_close(layer(x), x @ (base.weight + delta).T + base.bias)
    torch.testing.assert_close(layer.delta_weight(), delta)


def test_conv_matches_merged_kernel_and_round_trips() -> None:
    base = nn.Conv2d(3, 5, 3, stride=2, padding=1, dilation=1).double()
    layer = LoRAConv2d(base, rank=2, alpha=4.0)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(layer(x), base(x))  # B = 0 at the start
    _perturb(layer)
    ref = nn.functional.conv2d(x, base.weight + layer.delta_weight(), base.bias, 2, 1)
    torch.testing.assert_close(layer(x), ref)
    original = base.weight.detach().clone()
    layer.merge()
    torch.testing.assert_close(base(x), ref)
    torch.testing.assert_close(layer(x), ref)
    layer.unmerge()
    torch.testing.assert_close(base.weight, original, atol=1e-12, rtol=0)


@pytest.mark.parametrize("qkv_parts", [None, "qv"])
def test_timm_vit_fused_qkv(qkv_parts: str | None) -> None:
    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8, depth=2, num_classes=3
    ).eval()
    x = torch.randn(2, 3, 16, 16)
    before = vit(x)
    names = inject_lora(vit, [r".*\.attn\.qkv", r"patch_embed\.proj"], rank=2, alpha=4.0, qkv_parts=qkv_parts)
    assert names == ["patch_embed.proj", "blocks.0.attn.qkv", "blocks.1.attn.qkv"]
    torch.testing.assert_close(vit(x), before)  # zero-init equivalence
    trainable = {n for n, p in vit.named_parameters() if p.requires_grad}
    assert trainable == set(lora_state_dict(vit))
    vit(x).sum().backward()
    assert all(p.grad is None for n, p in vit.named_parameters() if n not in trainable)
    _perturb(vit)
    adapted = vit(x)
    qkv = vit.blocks[0].attn.qkv
    assert isinstance(qkv, LoRALinear)
    if qkv_parts == "qv":  # the key third of the update is zero
        assert torch.all(qkv.delta_weight()[192:384] == 0) and qkv.delta_weight()[:192].abs().sum() > 0
    merge_lora(vit)
    torch.testing.assert_close(vit(x), adapted, atol=1e-5, rtol=1e-5)
    unmerge_lora(vit)
    torch.testing.assert_close(vit(x), adapted, atol=1e-5, rtol=1e-5)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="rank must be a positive integer, got 0"):
        LoRALinear(nn.Linear(3, 3), rank=0)
    with pytest.raises(ValueError, match="rank"):
        inject_lora(nn.Sequential(nn.Linear(3, 3)), "0", rank=-1)
    with pytest.raises(ValueError, match=r"no module matches.*e\.g\. \['0'\]"):
        inject_lora(nn.Sequential(nn.Linear(3, 3)), r".*qkv")
    with pytest.raises(TypeError, match="ReLU"):
        inject_lora(nn.Sequential(nn.ReLU()), "0")
    with pytest.raises(ValueError, match="groups=1"):
        LoRAConv2d(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="cannot adapt parts"):
        LoRALinear(nn.Linear(3, 10), parts="qkv", adapt="qv")
    with pytest.raises(ValueError, match="no LoRA layers"):
        merge_lora(nn.Linear(2, 2))
