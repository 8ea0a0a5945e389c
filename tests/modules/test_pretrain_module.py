"""PretrainModule: the shared arguments of the SSL methods, the paper's optimizer, a user's own method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _ssl_fit import TINY, data, trainer
from torch import Tensor, nn

from lightning_tl.cli import build_cli
from lightning_tl.modules import (
    BYOL,
    DINO,
    BarlowTwins,
    MoCo,
    PaperOptimizer,
    PretrainModule,
    SimCLR,
    SimSiam,
    VICReg,
)
from lightning_tl.modules._ssl import encode_two_views

ROOT = Path(__file__).resolve().parents[2]

#: Each method's paper optimizer: name, weight decay, warm-up epochs.
PAPERS = {
    SimCLR: ("lars", 1e-6, 10.0),
    MoCo: ("sgd", 1e-4, 0.0),
    BYOL: ("lars", 1.5e-6, 10.0),
    SimSiam: ("sgd", 1e-4, 0.0),
    BarlowTwins: ("lars", 1.5e-6, 10.0),
    VICReg: ("lars", 1e-6, 10.0),
    DINO: ("adamw", 0.04, 10.0),
}
SMALL_HEADS: dict[type, dict[str, Any]] = {
    SimCLR: {},
    MoCo: {"queue_size": 64},
    BYOL: {"hidden_dim": 16, "output_dim": 8, "predictor_hidden_dim": 16},
    SimSiam: {"hidden_dim": 16, "output_dim": 8, "predictor_hidden_dim": 4},
    BarlowTwins: {"hidden_dim": 16, "output_dim": 8},
    VICReg: {"hidden_dim": 16, "output_dim": 8},
    DINO: {"hidden_dim": 16, "bottleneck_dim": 8, "output_dim": 32},
}


@pytest.mark.parametrize("method", list(PAPERS), ids=lambda m: m.__name__)
def test_none_means_the_papers_optimizer_and_checkpoints_record_it(method: type) -> None:
    name, weight_decay, warmup = PAPERS[method]
    model = method(**TINY, **SMALL_HEADS[method])
    assert (model.optimizer, model.weight_decay, model.warmup_epochs) == (name, weight_decay, warmup)
    saved = model.hparams
    assert (saved["optimizer"], saved["weight_decay"], saved["warmup_epochs"]) == (name, weight_decay, warmup)
    assert saved["backbone"] == TINY["backbone"] and saved["in_channels"] == 1  # the base's, saved too
    assert all(key in saved for key in SMALL_HEADS[method])  # and the method's own
    rebuilt = method(**saved)  # what load_from_checkpoint does with them
    assert rebuilt.hparams == saved

    explicit = method(**TINY, **SMALL_HEADS[method], optimizer="sgd", lr=0.1, weight_decay=0.0)
    assert (explicit.optimizer, explicit.weight_decay, explicit.hparams["optimizer"]) == ("sgd", 0.0, "sgd")


def test_shared_arguments_are_checked_and_named() -> None:
    with pytest.raises(ValueError, match="lr must be > 0 or None"):
        BYOL(**TINY, lr=0)
    with pytest.raises(ValueError, match="weight_decay must be >= 0, got -1"):
        VICReg(**TINY, weight_decay=-1)
    with pytest.raises(ValueError, match="warmup_epochs must be >= 0, got -1"):
        SimSiam(**TINY, warmup_epochs=-1)
    with pytest.raises(ValueError, match=r"lr=None scales MoCo's learning rate for 'sgd'.*optimizer='adamw'"):
        MoCo(**TINY, optimizer="adamw")
    with pytest.raises(ValueError, match=r"for 'lars' / 'sgd'.*set lr for optimizer='adamw'"):
        SimCLR(**TINY, optimizer="adamw")
    MoCo(**TINY, optimizer="adamw", lr=1e-3)  # an explicit rate is the user's choice
    with pytest.raises(TypeError, match="positional"):  # the methods' arguments are keyword-only
        SimCLR("resnet18")  # type: ignore[misc]
    with pytest.raises(TypeError, match="unexpected keyword argument 'predictor_hidden_dim'"):
        BarlowTwins(**TINY, predictor_hidden_dim=8)  # a setting the method does not have


class CenteredCosine(PretrainModule):
    """A user's method as the PretrainModule docstring shows: one head, its own loss."""

    paper_optimizer = PaperOptimizer("sgd", weight_decay=0.0, warmup_epochs=0.0)
    lr_per_256 = 0.1
    views_recipe = "SimCLRViews"

    def __init__(self, output_dim: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.head = nn.Linear(self.backbone.num_features, output_dim)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        _, h, labels = encode_two_views(self, batch)
        z1, z2 = self.head(h).chunk(2)
        loss = -nn.functional.cosine_similarity(z1 - z1.mean(0), z2 - z2.mean(0)).mean()
        return self.training_output(loss, h.chunk(2)[0], labels)


def test_a_users_method_trains_with_the_shared_plumbing(tmp_path: Path) -> None:
    model = CenteredCosine(**TINY, output_dim=4)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    fit = trainer(tmp_path, [], max_epochs=1)
    fit.fit(model, data())
    assert model.base_lr() == pytest.approx(0.1 * 16 / 256)  # lr=None: linear scaling of lr_per_256
    changed = [k for k, v in model.backbone.state_dict().items() if not torch.equal(v, before[k])]
    assert changed  # the backbone was trained
    with pytest.raises(ValueError, match=r"CenteredCosine trains on multi-view batches.*SimCLRViews"):
        trainer(tmp_path, []).fit(CenteredCosine(**TINY), data(views=None))


def test_cli_follows_kwargs_into_the_shared_arguments(tmp_path: Path) -> None:
    cli = build_cli(
        [
            "fit",
            "--config",
            str(ROOT / "recipes/byol/digits.yaml"),
            "--model.init_args.backbone_kwargs={'channels': [8, 8, 16, 16]}",
            "--model.init_args.weight_decay=0.001",
            "--model.init_args.hidden_dim=32",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.fast_dev_run=1",
            "--trainer.callbacks=[]",
        ]
    )
    model = cli.model
    assert isinstance(model, BYOL)
    assert model.weight_decay == 0.001 and model.hparams["hidden_dim"] == 32
    assert model.hparams["in_channels"] == 1  # linked from the datamodule into the base's argument
    assert model.backbone.num_features == 16
