"""create_backbone: torchvision and timm names, small-input stems, local weights, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_tl.backbones import create_backbone, list_backbones


@pytest.mark.parametrize("name", ["resnet18", "timm/resnet18", "mobilenet_v3_small", "timm/resnet10t"])
def test_features_have_num_features(name: str) -> None:
    backbone = create_backbone(name)
    out = backbone(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, backbone.num_features)


@pytest.mark.parametrize("name", ["resnet18", "timm/resnet18"])
def test_small_input_keeps_resolution_in_stem(name: str) -> None:
    small = create_backbone(name, small_input=True, in_chans=1)
    stem = small.model.conv1
    assert (stem.kernel_size, stem.stride, stem.in_channels) == ((3, 3), (1, 1), 1)
    assert isinstance(small.model.maxpool, torch.nn.Identity)
    assert small(torch.randn(2, 1, 28, 28)).shape == (2, 512)


def test_small_input_rejects_models_without_resnet_stem() -> None:
    with pytest.raises(ValueError, match="small_input=True adapts ResNet-style stems"):
        create_backbone("mobilenet_v3_small", small_input=True)


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(ValueError, match=r"Unknown backbone 'resnet19'.*Did you mean: .*resnet18"):
        create_backbone("resnet19")
    with pytest.raises(ValueError, match=r"Unknown backbone 'timm/resnet5O'.*timm/resnet50"):
        create_backbone("timm/resnet5O")
    assert "resnet18" in list_backbones() and "timm/resnet18" in list_backbones()


def test_missing_weight_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pt' is not a file"):
        create_backbone("resnet18", pretrained=str(tmp_path / "nope.pt"))
    with pytest.raises(FileNotFoundError, match="is not a file"):
        create_backbone("timm/resnet18", pretrained="weights.safetensors")


def test_pretrained_false_is_random_and_models_without_weights_say_so() -> None:
    assert create_backbone("resnet18", pretrained=False).data_config is None
    with pytest.raises(ValueError, match=r"'timm/resnetblur18' has no pretrained weights"):
        create_backbone("timm/resnetblur18", pretrained=True)


def test_small_input_none_follows_a_local_file(tmp_path: Path) -> None:
    torch.save(create_backbone("resnet18", small_input=True).model.state_dict(), tmp_path / "small.pt")
    torch.save(create_backbone("resnet18").model.state_dict(), tmp_path / "big.pt")
    assert create_backbone("resnet18", pretrained=str(tmp_path / "small.pt")).model.conv1.kernel_size == (
        3,
        3,
    )
    assert create_backbone("resnet18", pretrained=str(tmp_path / "big.pt")).model.conv1.kernel_size == (7, 7)
    assert create_backbone("resnet18").model.conv1.kernel_size == (7, 7)  # no weights: as built


def test_loads_plain_torchvision_state_dict_with_classifier(tmp_path: Path) -> None:
    import torchvision

    full = torchvision.models.resnet18(num_classes=1000)
    torch.save(full.state_dict(), tmp_path / "r18.pth")
    backbone = create_backbone("resnet18", pretrained=str(tmp_path / "r18.pth"))
    torch.testing.assert_close(backbone.model.layer4[1].conv2.weight, full.layer4[1].conv2.weight)


def test_loads_lightning_checkpoint_and_sums_rgb_stem_for_grayscale(tmp_path: Path) -> None:
    source = create_backbone("resnet18", small_input=True)
    state = {f"backbone.model.{k}": v for k, v in source.model.state_dict().items()}
    state["projection_head.layers.0.weight"] = torch.randn(4, 4)  # not the backbone's: ignored
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "simclr.ckpt")
    gray = create_backbone("resnet18", small_input=True, in_chans=1, pretrained=str(tmp_path / "simclr.ckpt"))
    torch.testing.assert_close(gray.model.conv1.weight, source.model.conv1.weight.sum(1, keepdim=True))
    x = torch.rand(2, 1, 16, 16)
    source.eval(), gray.eval()
    torch.testing.assert_close(gray(x), source(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)


def test_mismatched_stem_names_the_fix(tmp_path: Path) -> None:
    torch.save(create_backbone("resnet18").model.state_dict(), tmp_path / "big_stem.pt")
    with pytest.raises(ValueError, match="small_input"):
        create_backbone("resnet18", small_input=True, pretrained=str(tmp_path / "big_stem.pt"))


def test_wrong_architecture_reports_missing_keys(tmp_path: Path) -> None:
    torch.save(create_backbone("resnet18").model.state_dict(), tmp_path / "r18.pt")
    with pytest.raises(ValueError, match="missing"):
        create_backbone("resnet34", pretrained=str(tmp_path / "r18.pt"))


def test_bad_in_chans() -> None:
    with pytest.raises(ValueError, match="in_chans must be >= 1, got 0"):
        create_backbone("resnet18", in_chans=0)


def test_model_kwargs_reach_the_constructor() -> None:
    narrow = create_backbone(
        "timm/resnet18", small_input=True, in_chans=1, model_kwargs={"channels": [16, 32, 64, 128]}
    )
    assert narrow.num_features == 128
    assert narrow(torch.zeros(2, 1, 16, 16)).shape == (2, 128)
    tv = create_backbone("resnet50", model_kwargs={"width_per_group": 32})  # torchvision kwargs too
    assert tv.model.layer1[0].conv1.out_channels == 32
    with pytest.raises(ValueError, match=r"may not set \['in_chans'\]"):
        create_backbone("timm/resnet18", model_kwargs={"in_chans": 3})
