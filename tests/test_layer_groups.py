"""Layer groups: found (timm group_matcher, torchvision ResNet, nn.Sequential) or from patterns."""

from __future__ import annotations

import pytest
from torch import nn

from lightning_tl.backbones import create_backbone
from lightning_tl.layer_groups import assign, backbone_stages, discover_groups, groups_from_patterns


class WithBackbone(nn.Module):
    def __init__(self, backbone: nn.Module, width: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(width, 3)


def _members(module: nn.Module) -> list[list[str]]:
    return assign([n for n, _ in module.named_parameters()], discover_groups(module))


def test_timm_groups_follow_group_matcher() -> None:
    backbone = create_backbone("timm/resnet18", in_chans=1)
    model = WithBackbone(backbone, backbone.num_features)
    groups = discover_groups(model)
    members = _members(model)
    assert len(groups) == 6 and groups[-1].name == "head"  # stem, layer1-4 (timm's coarse groups), head
    assert members[0] == [
        "backbone.model.conv1.weight",
        "backbone.model.bn1.weight",
        "backbone.model.bn1.bias",
    ]
    assert all(n.startswith(f"backbone.model.layer{i}.") for i in range(1, 5) for n in members[i])
    assert members[-1] == ["head.weight", "head.bias"]


def test_timm_vit_groups_cover_every_block() -> None:
    backbone = create_backbone("timm/vit_tiny_patch16_224")
    members = _members(WithBackbone(backbone, backbone.num_features))
    assert len(members) == 1 + 12 + 1  # stem (tokens, patch embedding), 12 blocks, head
    assert "backbone.model.norm.weight" in members[-2]  # timm puts the final norm with the last block
    assert "backbone.model.cls_token" in members[0] and "backbone.model.pos_embed" in members[0]


def test_torchvision_resnet_and_sequential_groups() -> None:
    backbone = create_backbone("resnet18", small_input=True)
    names = [g.name for g in discover_groups(WithBackbone(backbone, 512))]
    assert names == [f"backbone.model.{s}" for s in ("stem", "layer1", "layer2", "layer3", "layer4")] + [
        "head"
    ]
    seq = WithBackbone(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)), 4)
    assert [g.name for g in discover_groups(seq)] == ["backbone.0", "backbone.2", "head"]


def test_patterns_first_match_wins_and_errors() -> None:
    model = WithBackbone(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)), 4)
    names = [n for n, _ in model.named_parameters()]
    groups = groups_from_patterns(["backbone.0.*", ["backbone.*"], "*"])
    assert assign(names, groups) == [names[:2], names[2:4], names[4:]]
    with pytest.raises(ValueError, match=r"'backbone\.1\.\*' matches no parameter \(or only ones an earlier"):
        assign(names, groups_from_patterns(["backbone.*", "backbone.1.*", "*"]))
    with pytest.raises(ValueError, match="2 parameters are in no layer group"):
        assign(names, groups_from_patterns(["backbone.*"]))


def test_no_backbone_or_unknown_backbone_says_what_to_pass() -> None:
    with pytest.raises(ValueError, match=r"no `backbone` module attribute.*groups=\["):
        discover_groups(nn.Linear(2, 2))

    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(2, 2)

    with pytest.raises(ValueError, match=r"cannot split the backbone \(Odd\).*groups=\["):
        discover_groups(WithBackbone(Odd(), 2))
    only = nn.Module()
    only.backbone = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no parameters outside `backbone`"):
        discover_groups(only)


def test_backbone_stages_of_bare_networks() -> None:
    """The public stage finder (also used by CLIP's image tower): patterns relative to the network."""
    resnet = create_backbone("resnet18", small_input=True).model
    stages = backbone_stages(resnet)
    assert stages is not None
    assert stages == [("stem", ["conv1.*", "bn1.*"])] + [(f"layer{i}", [f"layer{i}.*"]) for i in range(1, 5)]
    timm_stages = backbone_stages(create_backbone("timm/resnet18", in_chans=1).model)
    assert timm_stages is not None and [name for name, _ in timm_stages] == [f"group{i}" for i in range(5)]
    assert backbone_stages(nn.Sequential(nn.ReLU(), nn.Linear(2, 2))) == [("1", ["1.*"])]  # stateless skipped
    assert backbone_stages(nn.Linear(2, 2)) is None
