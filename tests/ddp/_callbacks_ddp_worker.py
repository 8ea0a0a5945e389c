"""Worker for test_callbacks_ddp: fit a frozen encoder with KNNMonitor + OnlineLinearProbe.

``python _callbacks_ddp_worker.py DEVICES OUT_DIR``. With 2 devices it uses ``strategy="ddp"`` (Lightning
re-runs this script for rank 1) and each rank reads a ``rank::2`` shard with half the batch size, so
the global batches are the single-process batches. Every rank saves what it ended with to
``OUT_DIR/devices{D}_rank{R}.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning.pytorch import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "callbacks"))
from _standins import DigitsStandIn, EncoderStandIn, trainer_kwargs

from lightning_tl.callbacks import KNNMonitor, OnlineLinearProbe

GLOBAL_BATCH = 64


def main(devices: int, out: Path) -> None:
    knn = KNNMonitor(k=10, batch_size=100)
    probe = OnlineLinearProbe(lr=0.5)
    trainer = Trainer(
        **trainer_kwargs(
            devices=devices,
            strategy="ddp" if devices > 1 else "auto",
            use_distributed_sampler=False,  # the datamodule shards rank::world_size itself, without padding
            max_epochs=2,
            callbacks=[knn, probe],
        )
    )
    datamodule = DigitsStandIn(batch_size=GLOBAL_BATCH // devices, shard=True, unlabelled_every=3)
    trainer.fit(EncoderStandIn(lr=0.0), datamodule=datamodule)
    assert probe.probe is not None and probe.optimizer is not None
    result = {
        "knn_history": knn.history,
        "probe_val_acc": trainer.callback_metrics["probe_val_acc"].item(),
        "probe_val_top5": trainer.callback_metrics["probe_val_top5"].item(),
        "probe": probe.probe.state_dict(),
        "momentum": [probe.optimizer.state[p]["momentum_buffer"] for p in probe.probe.parameters()],
    }
    torch.save(result, out / f"devices{devices}_rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
