"""Why MCC alone does not help on digits -> digits-M: its loss, confidence and predictions over training.

``python -m benchmarks.mcc_diagnosis [dataset] [seed] [steps] ['{"mcc_warmup": 0.5}']`` trains one cell of
the domain-adaptation table's MCC row (``benchmarks/domain_adaptation.py``: the same CNN, data, lr and
budget; JSON keyword arguments go to :class:`~lightning_tl.modules.MCC`) and prints, every 250 steps,
the source cross-entropy, the MCC loss, and on the first 256 target test images the accuracy, the mean
maximum softmax and the histogram of predicted classes; then the final target test accuracy.
Defaults: digits, seed 0, 2,000 steps, the paper's MCC (weight 1, temperature 2.5, from the first step).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from benchmarks.dann import _domains, target_test_accuracy
from benchmarks.domain_adaptation import SETTINGS
from lightning_tl.datamodules import DomainAdaptationDataModule, VisionDataModule
from lightning_tl.modules import MCC
from lightning_tl.nn import SmallConvNet

EVERY = 250
PROBE_BATCHES = 4  # 4 target test batches of 64: 256 images


class TargetProbe(Callback):
    """Print the losses and the target predictions' accuracy, confidence and class histogram."""

    def __init__(self, target: VisionDataModule, steps: int) -> None:
        self.target = target
        self.steps = steps

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step % EVERY and step != self.steps:
            return
        metrics = trainer.callback_metrics
        module.eval()
        with torch.no_grad():
            logits, labels = [], []
            for i, (x, y) in enumerate(self.target.test_dataloader()):
                if i == PROBE_BATCHES:
                    break
                logits.append(module(x))
                labels.append(y)
        module.train()
        out, truth = torch.cat(logits), torch.cat(labels)  # (256, 10), (256,)
        accuracy = 100 * float((out.argmax(1) == truth).float().mean())
        confidence = float(out.softmax(1).max(1).values.mean())
        histogram = torch.bincount(out.argmax(1), minlength=out.shape[1]).tolist()
        cls, mcc = float(metrics["train_cls_loss"]), float(metrics["train_mcc_loss"])
        print(
            f"step {step}: cls {cls:.3f} mcc {mcc:.3f} "
            f"target acc (256) {accuracy:.1f} max softmax {confidence:.2f} predicted classes {histogram}",
            flush=True,
        )


def main(argv: list[str]) -> None:
    dataset = argv[0] if argv else "digits"
    seed = int(argv[1]) if len(argv) > 1 else 0
    steps = int(argv[2]) if len(argv) > 2 else 2000
    options: dict[str, Any] = json.loads(argv[3]) if len(argv) > 3 else {}
    settings = SETTINGS[dataset]
    source, target = _domains(dataset, settings["batch_size"])
    L.seed_everything(seed, verbose=False)
    model = MCC(
        backbone=SmallConvNet(in_chans=3),
        classifier_hidden=[100],
        domain_hidden=[100],
        domain_dropout=0.0,
        lr=settings["lr"],
        **options,
    )
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[TargetProbe(target, steps)],
    )  # fmt: skip
    trainer.fit(model, DomainAdaptationDataModule(source, target))
    accuracy = 100 * target_test_accuracy(model, target)  # type: ignore[arg-type]
    print(f"{dataset} seed {seed}, {steps} steps, MCC({json.dumps(options)}): target test acc {accuracy:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
