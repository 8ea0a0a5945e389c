"""Fashion-MNIST kNN accuracy after the same CPU budget: MoCo vs SimCLR vs random vs supervised.

Every encoder is the same ResNet-18 (small-input stem) on 1-channel Fashion-MNIST images resized to
``size`` px. Each trained encoder gets ``budget_s`` seconds of wall-clock training on this machine
(Lightning's ``max_time``; run it under the benchmark lock so nothing else shares the cores), batch
``batch``, from the same seed and initial weights; the learning-rate schedule is set for 1,000 steps
so it is nearly constant within the budget. Then a weighted kNN (k=200, tau=0.1, InstDisc) classifies
``n_test`` test images against a bank of ``n_bank`` train images (eval transform, backbone features).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sized
from datetime import timedelta
from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from benchmarks._timing import markdown_table
from lightning_tl.augment import SimCLRViews
from lightning_tl.backbones import create_backbone
from lightning_tl.callbacks.knn import knn_predict
from lightning_tl.datamodules import FashionMNISTDataModule
from lightning_tl.modules import MoCo, SimCLR

STEPS_FOR_SCHEDULE = 1000


class Supervised(L.LightningModule):
    """The same backbone + a linear classifier, cross-entropy on labelled, lightly augmented images."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.backbone = create_backbone("resnet18", small_input=True, in_chans=1)
        self.classifier = nn.Linear(self.backbone.num_features, 10)
        self.lr = lr

    def encode(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return F.cross_entropy(self.classifier(self.encode(x)), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)


def _train(module: L.LightningModule, data: FashionMNISTDataModule, budget_s: float, root: str) -> int:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=STEPS_FOR_SCHEDULE,
        max_time=timedelta(seconds=budget_s),
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(module, datamodule=data)
    return trainer.global_step


@torch.no_grad()
def _features(encode: Any, dataset: Any, indices: list[int]) -> tuple[Tensor, Tensor]:
    loader = DataLoader(Subset(dataset, indices), batch_size=500, shuffle=False)
    feats, labels = [], []
    for x, y in loader:
        feats.append(encode(x))
        labels.append(torch.as_tensor(y))
    return torch.cat(feats), torch.cat(labels)


def _knn_accuracy(module: nn.Module, data: FashionMNISTDataModule, n_bank: int, n_test: int) -> float:
    module.eval()
    encode = module.encode  # type: ignore[operator]
    train = cast(Sized, data.labelled_dataset("train"))
    test = cast(Sized, data.labelled_dataset("test"))
    bank, bank_y = _features(encode, train, list(range(0, len(train), len(train) // n_bank))[:n_bank])
    query, query_y = _features(encode, test, list(range(0, len(test), len(test) // n_test))[:n_test])
    predicted = knn_predict(query, bank, bank_y, num_classes=10, k=200, temperature=0.1)
    return (predicted == query_y).float().mean().item()


def run(
    budget_s: float = 180, size: int = 16, batch: int = 128, n_bank: int = 5000, n_test: int = 2000
) -> str:
    def data(ssl: bool) -> FashionMNISTDataModule:
        views = SimCLRViews(crop_scale=(0.2, 1.0)) if ssl else None  # two views; None: labelled images
        return FashionMNISTDataModule(batch_size=batch, views=views, image_size=size, seed=0)

    methods: dict[str, tuple[Any, bool]] = {  # name: (build the module, self-supervised views)
        "random init": (lambda: Supervised(), False),
        "supervised (cross-entropy, labels)": (lambda: Supervised(lr=0.05), False),
        "SimCLR (LARS, tau 0.2)": (
            lambda: SimCLR(in_channels=1, temperature=0.2, optimizer="lars", warmup_epochs=0),
            True,
        ),
        "MoCo v2 (SGD, tau 0.2, queue 4096, m 0.99)": (
            lambda: MoCo(in_channels=1, queue_size=4096, key_momentum=0.99, lr=0.06, weight_decay=5e-4),
            True,
        ),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (build, ssl) in methods.items():
            L.seed_everything(0)
            module = build()
            dm = data(ssl)
            start = time.perf_counter()
            steps = 0 if name == "random init" else _train(module, dm, budget_s, tmp)
            seconds = time.perf_counter() - start
            dm.setup("fit")
            accuracy = _knn_accuracy(module, dm, n_bank, n_test)
            images = steps * batch
            rows.append([name, str(steps), f"{images:,}", f"{seconds:.0f}", f"{accuracy:.3f}"])
    title = (
        f"Fashion-MNIST, ResNet-18 (small-input stem) at {size} px, batch {batch}, {budget_s:.0f} s of "
        f"training each on {torch.get_num_threads()} threads; weighted kNN (k=200, tau=0.1) of {n_test} "
        f"test images against {n_bank} train images\n\n"
    )
    header = ["encoder", "optimizer steps", "images seen", "train s", "kNN accuracy"]
    return title + markdown_table(header, rows)


if __name__ == "__main__":
    print(run())
