"""Hub weights by the names users know, from real caches the tests fill (offline, no mocks).

conftest.py points HF_HUB_CACHE / TORCH_HOME at empty temporary folders with HF_HUB_OFFLINE=1; the
fixtures here write random weights of the right architectures where timm's, torchvision's and
open_clip's own loaders look for them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import timm
import torch
import torchvision
from hub_cache import fill_hf_safetensors, fill_torch_hub, half, hf_repo_folder
from torch import Tensor

from lightning_tl.backbones import create_backbone, list_backbones
from lightning_tl.datamodules import DigitsDataModule
from lightning_tl.modules import ImageClassifier
from lightning_tl.weights import WeightsNotCachedError

TIMM_TAG = "resnet18.a1_in1k"


@pytest.fixture(scope="module")
def timm_weights() -> dict[str, Tensor]:
    """What timm's hub repo ``timm/resnet18.a1_in1k`` holds: a full state dict, classifier included."""
    state = half(timm.create_model(TIMM_TAG, pretrained=False).state_dict())
    fill_hf_safetensors("timm/" + TIMM_TAG, "model.safetensors", state)
    return state


@pytest.fixture(scope="module")
def torchvision_weights() -> dict[str, Tensor]:
    """torchvision's resnet18 IMAGENET1K_V1 file, in TORCH_HOME/hub/checkpoints under its URL's name."""
    state = half(torchvision.models.resnet18().state_dict())
    fill_torch_hub(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url, state)
    return state


def test_timm_tag_loads_the_cached_weights(timm_weights: dict[str, Tensor]) -> None:
    backbone = create_backbone("timm/" + TIMM_TAG, pretrained=True)
    for key, value in backbone.model.state_dict().items():
        torch.testing.assert_close(value, timm_weights[key].to(value.dtype), rtol=0, atol=0)
    assert backbone.model.conv1.kernel_size == (7, 7)  # small_input=None: the published stem
    config = backbone.data_config
    assert config is not None and config.input_size == (224, 224)
    torch.testing.assert_close(torch.tensor(config.mean), torch.tensor([0.485, 0.456, 0.406]))
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_timm_grayscale_sums_the_rgb_stem(timm_weights: dict[str, Tensor]) -> None:
    gray = create_backbone("timm/" + TIMM_TAG, pretrained=True, in_chans=1)
    expected = timm_weights["conv1.weight"].float().sum(1, keepdim=True)
    torch.testing.assert_close(gray.model.conv1.weight, expected, rtol=1e-3, atol=1e-3)


def test_torchvision_true_and_weights_names(torchvision_weights: dict[str, Tensor]) -> None:
    for pretrained in (True, "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1"):
        backbone = create_backbone("resnet18", pretrained=pretrained)
        for key, value in backbone.model.state_dict().items():
            torch.testing.assert_close(value, torchvision_weights[key].to(value.dtype), rtol=0, atol=0)
        assert backbone.data_config is not None and backbone.data_config.input_size == (224, 224)
        assert backbone.model.conv1.kernel_size == (7, 7)


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"weights are \['IMAGENET1K_V1'\]"):
        create_backbone("resnet18", pretrained="IMAGENET1K_V2")
    with pytest.raises(ValueError, match=r"no pretrained tag 'resnet18\.a9_in1k'.*timm/resnet18\.a1_in1k"):
        create_backbone("timm/resnet18.a9_in1k")
    with pytest.raises(ValueError, match=r"Unknown backbone 'timm/resnet19\.a1_in1k'"):
        create_backbone("timm/resnet19.a1_in1k", pretrained=True)
    with pytest.raises(FileNotFoundError, match="put the tag in the name"):
        create_backbone("timm/resnet18", pretrained="a1_in1k")
    names = list_backbones(pretrained=True)
    assert "timm/" + TIMM_TAG in names and "resnet18" in names and "timm/resnet18" not in names


def test_tag_without_pretrained_is_random() -> None:
    backbone = create_backbone("timm/" + TIMM_TAG, small_input=True, in_chans=1)
    assert backbone.data_config is None and backbone.model.conv1.kernel_size == (3, 3)


def test_small_input_with_hub_weights_is_refused(torchvision_weights: dict[str, Tensor]) -> None:
    with pytest.raises(ValueError, match="small_input=True replaces the 7x7 stem"):
        create_backbone("resnet18", pretrained=True, small_input=True)


def test_cache_miss_names_the_cache_and_how_to_fill_it() -> None:
    with pytest.raises(WeightsNotCachedError, match=r"models--timm--resnet18\.a2_in1k.*hf download"):
        create_backbone("timm/resnet18.a2_in1k", pretrained=True)
    with pytest.raises(WeightsNotCachedError, match=r"resnet34-b627a593\.pth.*hub/checkpoints"):
        create_backbone("resnet34", pretrained=True)


def test_no_network_is_a_cache_miss_too(tmp_path: Path) -> None:
    """Not offline, but the network is unreachable (a proxy that refuses): torch.hub's URLError."""
    script = tmp_path / "no_network.py"
    script.write_text(
        textwrap.dedent(
            """
            from lightning_tl.backbones import create_backbone
            from lightning_tl.weights import WeightsNotCachedError
            try:
                create_backbone("resnet34", pretrained=True)
            except WeightsNotCachedError as err:
                assert "URLError" in str(err) and "hub/checkpoints" in str(err), err
                print("cache miss")
            """
        )
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HTTPS_PROXY": "http://127.0.0.1:9", "OMP_NUM_THREADS": "1"}
    env["https_proxy"] = env["HTTPS_PROXY"]
    env.pop("NO_PROXY", None), env.pop("no_proxy", None)
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "cache miss" in proc.stdout, proc.stderr[-3000:]
    assert not any((Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints").glob("resnet34*"))


def test_classifier_warns_when_data_differ_from_the_weights(torchvision_weights: dict[str, Tensor]) -> None:
    model = ImageClassifier("resnet18", pretrained=True, in_channels=1, num_classes=10, lr=0.01)
    assert model.backbone.model.conv1.kernel_size == (7, 7)  # small_input=None follows the weights
    data = DigitsDataModule(batch_size=8, image_size=32)
    trainer = L.Trainer(
        accelerator="cpu", fast_dev_run=1, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    with pytest.warns(UserWarning) as record:
        trainer.fit(model, data)
    messages = " ".join(str(w.message) for w in record)
    assert "--data.init_args.mean=[0.449]" in messages and "--data.init_args.std=[0.226]" in messages
    assert "32x32 px but the weights ResNet18_Weights.IMAGENET1K_V1 were trained at 224x224" in messages


def test_open_clip_tag_loads_the_cached_weights() -> None:
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    from lightning_tl.modules import CLIP

    name, tag = "MobileCLIP2-S0", "dfndr2b"  # the smallest open_clip model with a pretrained tag
    repo = str(get_pretrained_cfg(name, tag)["hf_hub"]).rstrip("/")
    state = half(open_clip.create_model(name).state_dict())
    # open_clip asks for open_clip_pytorch_model.bin and takes its safetensors alternative first
    path = fill_hf_safetensors(repo, "open_clip_model.safetensors", state)
    try:
        model = CLIP(model_name=name, pretrained=tag)
        loaded: dict[str, Any] = model.model.state_dict()
        for key, value in state.items():
            torch.testing.assert_close(loaded[key], value.to(loaded[key].dtype), rtol=0, atol=0)
    finally:
        path.unlink()
    with pytest.raises(WeightsNotCachedError, match=r"models--timm--resnet50_clip\.openai'"):
        CLIP(model_name="RN50", pretrained="openai")
    assert not hf_repo_folder("timm/resnet50_clip.openai").joinpath("snapshots").exists()
