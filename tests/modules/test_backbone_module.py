"""BackboneModule: a backbone by name or as a module, for every module family; hparams; bad input."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from _ssl_fit import data, trainer
from torch import nn

from lightning_tl.cli import build_cli
from lightning_tl.modules import DANN, BackboneModule, ImageClassifier, MoCo, SimCLR
from lightning_tl.nn import SmallConvNet


def _net() -> SmallConvNet:
    return SmallConvNet(in_chans=1, channels=(4, 8))


@pytest.mark.parametrize("method", [SimCLR, MoCo], ids=lambda m: m.__name__)
def test_ssl_methods_train_a_backbone_module(method: type[BackboneModule], tmp_path: Path) -> None:
    net = _net()
    extra = {"queue_size": 64} if method is MoCo else {}
    model = method(backbone=net, in_channels=1, lr=0.1, warmup_epochs=0, **extra)
    assert model.backbone is net and "backbone" not in model.hparams  # a module is not a setting
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trainer(tmp_path, [], max_epochs=1, limit_train_batches=2).fit(model, data())
    assert any(not torch.equal(v, before[k]) for k, v in net.state_dict().items())  # it trained
    checkpoint = tmp_path / "last.ckpt"
    model.trainer.save_checkpoint(checkpoint)
    restored = method.load_from_checkpoint(checkpoint, backbone=_net(), weights_only=True)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[name], value, msg=name)


def test_image_classifier_on_a_module_does_not_warn_of_random_weights() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the module is the user's: its weights are whatever they made
        model = ImageClassifier(backbone=_net(), in_channels=1, num_classes=3)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 3)


@pytest.mark.parametrize("method", [SimCLR, ImageClassifier, DANN], ids=lambda m: m.__name__)
def test_a_module_with_create_backbone_settings_is_refused(method: type[BackboneModule]) -> None:
    with pytest.raises(ValueError, match=r"pretrained=True configure create_backbone.*SmallConvNet"):
        method(backbone=_net(), in_channels=1, pretrained=True)
    with pytest.raises(ValueError, match=r"backbone_kwargs=\{'channels': \[8\]\}"):
        method(backbone=_net(), in_channels=1, backbone_kwargs={"channels": [8]})
    with pytest.raises(ValueError, match="int attribute num_features"):
        method(backbone=nn.Conv2d(1, 4, 3), in_channels=1)
    with pytest.raises(ValueError, match="set the backbone's in_chans: 3"):
        method(backbone=_net(), in_channels=3)
    method(backbone=_net(), in_channels=1, pretrained=False, small_input=None, backbone_kwargs={})  # unset


@pytest.mark.parametrize("method", [SimCLR, ImageClassifier, DANN], ids=lambda m: m.__name__)
def test_model_kwargs_is_named_backbone_kwargs_everywhere(method: type[BackboneModule]) -> None:
    with pytest.raises(TypeError, match=f"{method.__name__} has no argument 'model_kwargs' any more"):
        method(backbone="resnet18", pretrained=False, model_kwargs={"width_per_group": 32})


def test_a_recipe_takes_a_backbone_module_by_class_path(tmp_path: Path) -> None:
    net = "{'class_path': 'lightning_tl.nn.SmallConvNet', 'init_args': {'in_chans': 1, 'channels': [4, 8]}}"
    recipe = Path(__file__).resolve().parents[2] / "recipes/simclr/digits.yaml"
    args = ["fit", "--config", str(recipe), f"--model.init_args.backbone={net}"]
    run = ["--trainer.fast_dev_run=1", f"--trainer.default_root_dir={tmp_path}", "--trainer.callbacks=[]"]
    with pytest.raises(ValueError, match=r"backbone_kwargs=.*small_input=True configure create_backbone"):
        build_cli([*args, *run])  # the recipe's create_backbone settings are named, not dropped silently
    unset = ["--model.init_args.backbone_kwargs=null", "--model.init_args.small_input=null"]
    cli = build_cli([*args, *unset, *run])
    assert isinstance(cli.model, SimCLR) and isinstance(cli.model.backbone, SmallConvNet)
    assert cli.model.backbone.num_features == 8 * 4 * 4 and "backbone" not in cli.model.hparams  # 8 maps, 4x4
