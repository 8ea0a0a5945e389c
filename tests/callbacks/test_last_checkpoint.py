"""LastCheckpoint: last.ckpt after every training epoch whatever the validation interval, atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_tl.callbacks import LastCheckpoint


class RecordingModel(BoringModel):
    """BoringModel that records the epoch of every checkpoint it is asked to save."""

    def __init__(self) -> None:
        super().__init__()
        self.saved_epochs: list[int] = []

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.saved_epochs.append(self.current_epoch)


def _trainer(tmp_path: Path, callback: LastCheckpoint, **kwargs: object) -> L.Trainer:
    options: dict = {
        "max_epochs": 3,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "check_val_every_n_epoch": 10,  # no validation at all in these 3 epochs
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
    }
    return L.Trainer(callbacks=[callback], **{**options, **kwargs})


def test_saves_every_epoch_without_validation(tmp_path: Path) -> None:
    model = RecordingModel()
    _trainer(tmp_path, LastCheckpoint(tmp_path / "ckpts")).fit(model)
    assert model.saved_epochs == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == ["last.ckpt"]  # no partial files left
    saved = torch.load(tmp_path / "ckpts/last.ckpt", weights_only=True)
    assert saved["epoch"] == 2 and saved["global_step"] == 6


def test_every_n_train_steps_saves_within_epochs(tmp_path: Path) -> None:
    model = RecordingModel()
    _trainer(tmp_path, LastCheckpoint(tmp_path / "ckpts", every_n_train_steps=1), max_epochs=1).fit(model)
    assert model.saved_epochs == [0, 0]  # after steps 1 and 2 (the epoch end adds none at step 2)


class HalfWriteOnSecondSave(TorchCheckpointIO):
    """Records every path written; the second save writes half its bytes and fails (a full disk, a kill)."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Any = None) -> None:
        self.paths.append(str(path))
        if len(self.paths) == 2:
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            Path(path).write_bytes(buffer.getvalue()[: buffer.tell() // 2])
            raise OSError("disk full")
        super().save_checkpoint(checkpoint, path, storage_options)


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    """The file is written beside its target and renamed: a write that dies leaves the last complete one."""
    folder = tmp_path / "ckpts"
    io_plugin = HalfWriteOnSecondSave()
    with pytest.raises(OSError, match="disk full"):
        _trainer(tmp_path, LastCheckpoint(folder), plugins=[io_plugin]).fit(BoringModel())
    assert io_plugin.paths == [str(folder / "last.ckpt.partial")] * 2
    saved = torch.load(folder / "last.ckpt", weights_only=True)  # epoch 0's, complete
    assert saved["epoch"] == 0 and saved["global_step"] == 2
    trainer = _trainer(tmp_path, LastCheckpoint(folder))
    trainer.fit(BoringModel(), ckpt_path="last")  # resumes from it
    assert trainer.global_step == 6 and not (folder / "last.ckpt.partial").exists()


def test_resume_from_last_and_other_checkpoints_coexist(tmp_path: Path) -> None:
    """ckpt_path="last" finds the file from a new Trainer; a second ModelCheckpoint keeps its own state."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    folder = tmp_path / "ckpts"
    _trainer(tmp_path, LastCheckpoint(folder), max_epochs=1).fit(BoringModel())
    other = ModelCheckpoint(dirpath=tmp_path / "other", every_n_epochs=1, save_on_train_epoch_end=True)
    trainer = _trainer(tmp_path, LastCheckpoint(folder), max_epochs=2)
    trainer.callbacks.append(other)
    trainer.fit(BoringModel(), ckpt_path="last")
    assert trainer.global_step == 4  # 2 restored + 2 new
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 1
    assert other.state_key != LastCheckpoint(folder).state_key


class StepRecorder(BoringModel):
    """Records (epoch, batch_idx) of every training batch; dies when epoch ``crash_epoch`` starts."""

    def __init__(self, crash_epoch: int = -1) -> None:
        super().__init__()
        self.crash_epoch = crash_epoch
        self.batches: list[tuple[int, int]] = []

    def on_train_epoch_start(self) -> None:
        if self.current_epoch == self.crash_epoch:
            raise RuntimeError("killed")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.batches.append((self.current_epoch, batch_idx))


@pytest.mark.parametrize("max_steps", [-1, 400])
def test_resume_after_an_epoch_end_runs_the_next_epoch_whole(tmp_path: Path, max_steps: int) -> None:
    """Lightning 2.6 re-enters a finished epoch when a max_steps run resumes from an on_train_epoch_end
    checkpoint and loses a batch; LastCheckpoint saves at the last batch's end, which resumes cleanly."""
    folder = tmp_path / "ckpts"
    with pytest.raises(RuntimeError, match="killed"):
        _trainer(tmp_path, LastCheckpoint(folder), max_steps=max_steps).fit(StepRecorder(crash_epoch=2))
    model = StepRecorder()
    trainer = _trainer(tmp_path, LastCheckpoint(folder), max_steps=max_steps)
    trainer.fit(model, ckpt_path="last")
    assert model.batches == [(2, 0), (2, 1)] and trainer.global_step == 6


def test_bad_argument() -> None:
    with pytest.raises(ValueError, match="every_n_train_steps must be >= 0, got -1"):
        LastCheckpoint("x", every_n_train_steps=-1)
