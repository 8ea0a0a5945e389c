"""Residual adapters: identity at injection, frozen backbone, exact merging, per-domain state."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable

import pytest
import timm.models.resnet as timm_resnet
import torch
import torchvision.models.resnet as tv_resnet
from torch import nn

from lightning_tl.nn import (
    AdaptedConv,
    DomainBatchNorm2d,
    adapter_state_dict,
    inject_adapters,
    load_adapter_state_dict,
    merge_adapters,
    set_domain,
)


def _tv(block: type[nn.Module], **kw: object) -> Callable[[], nn.Module]:
    return lambda: tv_resnet.ResNet(block, [1, 1, 1, 1], num_classes=7, **kw)  # type: ignore[arg-type]


def _timm(block: type[nn.Module], **kw: object) -> Callable[[], nn.Module]:
    return lambda: timm_resnet.ResNet(block, [1, 1, 1, 1], num_classes=7, channels=(8, 16, 32, 64), **kw)  # type: ignore[arg-type]


# Each network has stride-1 (layer1) and stride-2 (layer2-4) 3x3 convolutions.
NETS = {
    "tv-basic": _tv(tv_resnet.BasicBlock),
    "tv-bottleneck": _tv(tv_resnet.Bottleneck, width_per_group=16),
    "timm-basic": _timm(timm_resnet.BasicBlock),
    "timm-bottleneck": _timm(timm_resnet.Bottleneck),
    "timm-resnext-dilated": _timm(timm_resnet.Bottleneck, cardinality=4, base_width=8, output_stride=8),
}
X = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _randomise(model: nn.Module, seed: int) -> None:
    """Non-trivial BN statistics and adapter/head weights (freshly injected ones are zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(1 + torch.randn(m.num_features, generator=g) * 0.2)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
        for name, p in model.named_parameters():
            if "domain_modules" in name and "conv" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("kind", ["series", "parallel"])
@pytest.mark.parametrize("net", list(NETS))
def test_identity_at_injection_and_exact_merge(net: str, kind: str) -> None:
    torch.manual_seed(0)
    model = NETS[net]().double()
    _randomise(model, 1)
    model.eval()
    before = model(X)
    n_params = _count(model)

    adapted = inject_adapters(copy.deepcopy(model), kind, ["a", "b"]).eval()
    assert torch.equal(adapted(X), before)  # zero-initialised adapters change nothing
    assert sum(isinstance(m, AdaptedConv) for m in adapted.modules()) > 0

    _randomise(adapted, 2)
    set_domain(adapted, "b")
    expected = adapted(X)
    assert not torch.allclose(expected, before)
    merged = merge_adapters(adapted).eval()
    assert not any(isinstance(m, (AdaptedConv, DomainBatchNorm2d)) for m in merged.modules())
    assert type(merged.layer2[0].conv1 if "basic" in net else merged.layer2[0].conv2) is nn.Conv2d
    torch.testing.assert_close(merged(X), expected, atol=1e-5, rtol=0)
    assert _count(merged) == n_params
    assert torch.equal(adapted(X), expected)  # the adapter network itself is untouched
    merged_a = merge_adapters(adapted, "a").eval()  # another domain, named explicitly
    set_domain(adapted, "a")
    torch.testing.assert_close(merged_a(X), adapted(X), atol=1e-5, rtol=0)


def test_only_adapters_bn_and_heads_train() -> None:
    model = NETS["timm-basic"]()
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    frozen = {f"{n}.weight": model.get_submodule(n).weight.detach().clone() for n in convs}
    inject_adapters(model, "parallel", ["a", "b"], num_classes={"a": 3, "b": 5})
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=0.1, momentum=0.9, weight_decay=1e-3)
    b_stats = {k: v.clone() for k, v in adapter_state_dict(model, "b").items()}
    model.train()
    for _ in range(3):
        opt.zero_grad()
        out = model(torch.randn(4, 3, 16, 16))  # (4, 3): domain "a" is active
        assert out.shape == (4, 3)
        nn.functional.cross_entropy(out, torch.randint(0, 3, (4,))).backward()
        for name, p in model.named_parameters():
            owned = "domain_modules" in name
            assert p.requires_grad == owned, name
            assert (p.grad is not None) == (owned and ".b." not in name), name
        opt.step()
    state = dict(model.named_parameters())
    for name, value in frozen.items():
        new = re.sub(r"^(layer\d\.\d+\.conv[12])\.", r"\1.conv.", name)
        assert torch.equal(state[new], value), name  # frozen weights bit-identical
    for key, value in adapter_state_dict(model, "b").items():
        assert torch.equal(value, b_stats[key]), key  # the inactive domain did not move
    assert any(not torch.equal(v, b_stats[k]) for k, v in adapter_state_dict(model, "a").items())


def test_domain_switch_switches_bn_statistics_and_heads() -> None:
    model = inject_adapters(NETS["tv-basic"](), "series", ["a", "b"], num_classes={"a": 3, "b": 5}).train()
    model(torch.randn(4, 3, 16, 16) * 3 + 1)  # updates domain a's running statistics only
    bn = model.bn1
    assert isinstance(bn, DomainBatchNorm2d)
    a, b = bn.for_domain("a"), bn.for_domain("b")
    assert isinstance(a, nn.BatchNorm2d) and isinstance(b, nn.BatchNorm2d)
    assert not torch.equal(a.running_mean, b.running_mean) and int(b.num_batches_tracked) == 0
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    assert model(x).shape == (2, 3)
    set_domain(model, "b")
    assert model(x).shape == (2, 5)
    assert bn.active() is b


def test_adapter_state_dict_round_trip() -> None:
    source = inject_adapters(NETS["timm-bottleneck"](), "series", ["a", "b"], num_classes=4)
    _randomise(source, 3)
    state = adapter_state_dict(source, "a")
    assert all(".a." not in k and "domain_modules" not in k for k in state)
    assert not any(k.endswith("conv.weight") and ".conv." not in k for k in state)  # no frozen weights
    target = copy.deepcopy(source)
    load_adapter_state_dict(target, state, "b")  # saved as "a", loaded as "b"
    set_domain(source, "a")
    set_domain(target, "b")
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(target.eval()(x), source.eval()(x))
    with pytest.raises(ValueError, match="missing"):
        load_adapter_state_dict(target, dict(list(state.items())[1:]), "b")


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"looked for torchvision\.models\.resnet\.BasicBlock.*timm"):
        inject_adapters(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), "series", ["a"])
    model = inject_adapters(NETS["tv-basic"](), "parallel", ["a", "b"])
    with pytest.raises(ValueError, match=r"unknown domain 'c'.*\['a', 'b'\]"):
        set_domain(model, "c")
    with pytest.raises(ValueError, match="unknown domain"):
        merge_adapters(model, "c")
    with pytest.raises(ValueError, match="already injected"):
        inject_adapters(model, "parallel", ["c"])
    with pytest.raises(ValueError, match="kind"):
        inject_adapters(NETS["tv-basic"](), "serial", ["a"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distinct"):
        inject_adapters(NETS["tv-basic"](), "series", ["a", "a"])
    with pytest.raises(ValueError, match="no domain-specific layers"):
        set_domain(NETS["tv-basic"](), "a")
    unaligned = NETS["tv-basic"]()
    unaligned.layer1[0].conv1.padding = (0, 0)
    with pytest.raises(ValueError, match="'same' padding"):
        inject_adapters(unaligned, "parallel", ["a"])


@pytest.mark.parametrize("stride", [1, 2])
def test_adapted_conv_matches_paper_formulas(stride: int) -> None:
    """Series: y = z + W BN(z), z = f * x (Rebuffi 2017); parallel: y = f * x + W * x (Rebuffi 2018)."""
    f = nn.Conv2d(4, 6, 3, stride=stride, padding=1, bias=False).double()
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    z = nn.functional.conv2d(x, f.weight, None, stride, 1)
    series = AdaptedConv(copy.deepcopy(f), "series", ["a"]).double()
    parallel = AdaptedConv(copy.deepcopy(f), "parallel", ["a"]).double()
    _randomise(series, 4)
    _randomise(parallel, 5)
    series.eval()
    s = series.for_domain("a")
    bn = s.bn
    normalised = (z - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    normalised = normalised * bn.weight[:, None, None] + bn.bias[:, None, None]
    w = s.conv.weight[:, :, 0, 0]  # (6, 6)
    torch.testing.assert_close(series(x), z + torch.einsum("om,bmhw->bohw", w, normalised))
    w = parallel.for_domain("a").conv.weight[:, :, 0, 0]  # (6, 4)
    x_strided = x[:, :, ::stride, ::stride]  # the pixels under f's centre tap
    torch.testing.assert_close(parallel(x), z + torch.einsum("oi,bihw->bohw", w, x_strided))
