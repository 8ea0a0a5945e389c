"""LastCheckpoint: ``last.ckpt`` after every training epoch, written atomically, in a fixed folder.

Lightning's ``ModelCheckpoint`` saves where validation runs: a recipe that validates every 10 epochs
would lose up to 10 epochs when interrupted. This one saves ``<dirpath>/last.ckpt`` at the end of
every training epoch (and every ``every_n_train_steps`` steps if set), whatever the validation
interval, into one folder that does not change between runs (``<default_root_dir>/checkpoints`` in
the CLI), so ``--ckpt_path=last`` finds it from a new process. The file is written next to its
target and renamed over it, so a run killed while saving still leaves the previous complete
``last.ckpt``.

Example::

    >>> import lightning as L
    >>> trainer = L.Trainer(callbacks=[LastCheckpoint("runs/my_run/checkpoints")], logger=False)
    >>> trainer.fit(model, datamodule=dm)  # doctest: +SKIP
    >>> trainer.fit(model, datamodule=dm, ckpt_path="last")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from typing_extensions import override


class LastCheckpoint(ModelCheckpoint):
    """Save ``last.ckpt`` in ``dirpath`` after every training epoch (atomically); no other checkpoints.

    Args:
        dirpath: the folder (created if needed); a resumed run writes to the same file.
        every_n_train_steps: also save every this many optimizer steps (0: at epoch ends only).
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int = 0) -> None:
        if every_n_train_steps < 0:
            raise ValueError(f"every_n_train_steps must be >= 0, got {every_n_train_steps}")
        super().__init__(
            dirpath=dirpath,
            save_last=True,
            save_top_k=0,
            every_n_train_steps=every_n_train_steps or None,
            every_n_epochs=None if every_n_train_steps else 1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        )

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(dirpath=str(self.dirpath), kind="last")

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)  # every_n_train_steps
        # The epoch's last batch, not on_train_epoch_end: Lightning 2.6 resumes a max_steps run from a
        # checkpoint written in on_train_epoch_end one batch short (it re-enters the finished epoch);
        # from the last batch's end it starts the next epoch at its first batch, with or without max_steps.
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._save_last(trainer)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_last(trainer)  # loaders whose last batch is only known after it (no-op if saved above)

    def _save_last(self, trainer: L.Trainer) -> None:
        # ModelCheckpoint writes last.ckpt at an epoch end only beside a top-k checkpoint; this one always
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    @override
    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        partial = f"{filepath}.partial"
        super()._save_checkpoint(trainer, partial)  # every rank takes part; rank 0 writes the file
        if trainer.is_global_zero:
            os.replace(partial, filepath)  # readers see the old file or the new one, never half of one
        self._last_checkpoint_saved = filepath
