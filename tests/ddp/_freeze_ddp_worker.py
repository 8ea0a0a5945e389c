"""Worker for test_freeze_ddp: a gradual FreezeSchedule on 2 gloo processes.

``python _freeze_ddp_worker.py MODE OUT_DIR``. MODE ``find_unused`` trains with
``strategy="ddp_find_unused_parameters_true"`` and saves, per rank, the trainable flags seen at every
step, the schedule's history and the final parameters/buffers to ``OUT_DIR/rank{R}.pt``. MODE ``bitfit``
does the same with the BitFit strategy (biases train from the start) to ``OUT_DIR/bitfit_rank{R}.pt``.
MODE ``plain`` uses ``strategy="ddp"`` and saves the error FreezeSchedule raises to
``OUT_DIR/plain_rank{R}.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "callbacks"))
from _freeze_models import UserNet, loader, trainer_kwargs

from lightning_tl.callbacks import FreezeSchedule


class Flags(Callback):
    def __init__(self) -> None:
        self.flags: list[list[bool]] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.flags.append([p.requires_grad for p in pl_module.parameters()])


def main(mode: str, out: Path) -> None:
    model = UserNet(lr=0.2)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    freeze = FreezeSchedule(
        "bitfit" if mode == "bitfit" else "linear_probe",
        unfreeze={2: 1, 5: 1},
        interval="step",
        lr_decay=0.5,
        warmup_steps=2,
    )
    flags = Flags()
    strategy = "ddp" if mode == "plain" else "ddp_find_unused_parameters_true"
    trainer = Trainer(**trainer_kwargs(devices=2, strategy=strategy, max_epochs=2, callbacks=[freeze, flags]))
    if mode == "plain":
        try:
            trainer.fit(model, loader(batch_size=4))
        except ValueError as err:
            torch.save({"error": str(err)}, out / f"plain_rank{trainer.global_rank}.pt")
        return
    trainer.fit(model, loader(batch_size=4))  # 32 samples, 4 per rank: 4 steps per epoch
    result = {
        "flags": flags.flags,
        "history": [(h["step"], h["trainable_params"], h["lrs"]) for h in freeze.history],
        "initial": initial,
        "final": {k: v.clone() for k, v in model.state_dict().items()},
        "losses": model.losses,
    }
    prefix = "bitfit_" if mode == "bitfit" else ""
    torch.save(result, out / f"{prefix}rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
