"""Online linear probe: a classifier trained on detached features while the encoder pre-trains.

The standard online evaluation of self-supervised methods (SimCLR's and BYOL's "linear evaluation"
run alongside training, lightly's ``OnlineLinearClassifier``, solo-learn's online classifier): a
linear layer learns to predict labels from the current backbone features with its own optimizer,
gradients never reaching the encoder, so its validation accuracy tracks representation quality
at almost no cost.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_tl.callbacks._step_features import StepFeaturesCallback, labelled_rows, step_features
from lightning_tl.distributed import all_reduce_sum, gather_uneven


class OnlineLinearProbe(StepFeaturesCallback):
    r"""Train ``nn.Linear(D, num_classes)`` on the features the module returns from its steps.

    ``training_step`` must return a dict with ``"loss"``, ``"features"`` (B, D) and ``"labels"``
    (B,) long; ``validation_step`` a dict with ``"features"`` and ``"labels"``. Rows labelled ``-1``
    (unlabelled) are ignored. After each training batch the probe takes one step of cross-entropy on
    the detached features with its own optimizer: the module's parameters, gradients and optimizers
    are never touched. Under DDP the features and labels of all ranks are gathered first, so every
    rank takes the identical step on the global batch and the probes stay equal without a DDP
    wrapper. Validation correct/total counts are summed over ranks.

    The probe starts at zero weights (no random draw: the run it observes is unchanged). It is built
    in ``setup`` when ``feature_dim`` is given, else on the first training batch; its weights and
    optimizer state are in the callback's ``state_dict``, so resuming from a checkpoint is exact.

    Logs ``{log_prefix}_train_loss`` and ``{log_prefix}_train_acc`` per step, and
    ``{log_prefix}_val_acc`` (plus ``{log_prefix}_val_top5`` when there are more than 5 classes)
    per validation epoch.

    Args:
        num_classes: number of classes; ``None`` reads ``trainer.datamodule.num_classes``.
        feature_dim: feature size D; ``None`` infers it from the first training batch.
        lr: learning rate of the probe's optimizer.
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"``.
        momentum: SGD momentum.
        weight_decay: L2 penalty of the probe's optimizer.
        log_prefix: prefix of the logged metric names.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> probe = OnlineLinearProbe(num_classes=10, lr=0.1)
        >>> trainer = Trainer(callbacks=[probe], logger=False)
    """

    def __init__(
        self,
        num_classes: int | None = None,
        feature_dim: int | None = None,
        lr: float = 0.1,
        optimizer: Literal["sgd", "adam"] = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        log_prefix: str = "probe",
    ) -> None:
        super().__init__()
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"Expected num_classes >= 2 or None, got num_classes={num_classes}.")
        if feature_dim is not None and feature_dim < 1:
            raise ValueError(f"Expected feature_dim >= 1 or None, got feature_dim={feature_dim}.")
        if lr <= 0:
            raise ValueError(f"Expected lr > 0, got lr={lr}.")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"Expected optimizer 'sgd' or 'adam', got optimizer={optimizer!r}.")
        if not 0 <= momentum < 1:
            raise ValueError(f"Expected 0 <= momentum < 1, got momentum={momentum}.")
        if weight_decay < 0:
            raise ValueError(f"Expected weight_decay >= 0, got weight_decay={weight_decay}.")
        if not log_prefix:
            raise ValueError("Expected a non-empty log_prefix.")
        self.num_classes, self.feature_dim, self.log_prefix = num_classes, feature_dim, log_prefix
        # the probe's own optimizer, apart from the module's
        self.optimizer_name, self.lr, self.momentum, self.weight_decay = optimizer, lr, momentum, weight_decay
        self.probe: nn.Linear | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending_optimizer_state: dict[str, Any] | None = None
        self._val_counts: Tensor | None = None  # (correct, correct_top5, total)

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(log_prefix=self.log_prefix)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.num_classes is None:
            num_classes = getattr(getattr(trainer, "datamodule", None), "num_classes", None)
            if not isinstance(num_classes, int):
                raise ValueError(
                    "OnlineLinearProbe needs the number of classes: pass `num_classes=` or use a datamodule "
                    "with an int `num_classes` attribute."
                )
            if num_classes < 2:
                raise ValueError(
                    f"OnlineLinearProbe needs labelled data with >= 2 classes, but the datamodule has "
                    f"num_classes={num_classes} (e.g. an unlabelled image folder): use labelled data "
                    "(an image folder with one subfolder per class and labelled: true) or drop the probe."
                )
            self.num_classes = num_classes
        if self.feature_dim is not None and self.probe is None:
            self._build(self.feature_dim)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if outputs is None:  # training_step returned None: the module skipped this batch
            return
        features, labels = step_features(outputs, "OnlineLinearProbe", "training_step")
        # every rank steps on the same global batch (rank order), so the probes stay identical
        features, labels = labelled_rows(gather_uneven(features), gather_uneven(labels))  # (N, D), (N,)
        if labels.numel() == 0:
            return
        probe, optimizer = self._ready(features.shape[1], features.device)
        self._check_labels(labels)
        with torch.enable_grad(), torch.autocast(features.device.type, enabled=False):
            logits = probe(features)  # (N, C)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
        # identical on every rank: step-level logging needs no sync
        n = labels.numel()
        pl_module.log(
            f"{self.log_prefix}_train_loss", loss.detach(), on_step=True, on_epoch=False, batch_size=n
        )
        pl_module.log(f"{self.log_prefix}_train_acc", accuracy, on_step=True, on_epoch=False, batch_size=n)

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_counts = torch.zeros(3, dtype=torch.long, device=pl_module.device)

    @override
    def on_step_features(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any) -> None:
        if self.probe is None or self._val_counts is None or outputs is None:
            return
        features, labels = labelled_rows(*step_features(outputs, "OnlineLinearProbe", "validation_step"))
        if labels.numel() == 0:
            return
        probe, _ = self._ready(features.shape[1], features.device)
        self._check_labels(labels)
        with torch.no_grad(), torch.autocast(features.device.type, enabled=False):
            logits = probe(features)  # (B, C)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, 5)
        self._val_counts[0] += (top[:, 0] == labels).sum()
        self._val_counts[1] += (top == labels[:, None]).any(dim=1).sum()
        self._val_counts[2] += labels.numel()

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._val_counts is None:
            return
        correct, correct5, total = all_reduce_sum(self._val_counts).tolist()
        self._val_counts = None
        if trainer.sanity_checking:
            return
        if self.probe is None:
            rank_zero_warn(
                f"OnlineLinearProbe has not trained yet; `{self.log_prefix}_val_acc` is not logged. "
                "It trains on the features of training batches (or pass `feature_dim=` to start from zeros)."
            )
            return
        if total == 0:
            rank_zero_warn(
                f"OnlineLinearProbe saw no labelled validation rows; `{self.log_prefix}_val_acc` is not "
                "logged."
            )
            return
        # identical on every rank: a "max" sync is exact and avoids Lightning's epoch-level sync warning
        log = {f"{self.log_prefix}_val_acc": correct / total}
        if self.probe.out_features > 5:
            log[f"{self.log_prefix}_val_top5"] = correct5 / total
        for name, value in log.items():
            pl_module.log(name, torch.tensor(value, device=pl_module.device), sync_dist=True, reduce_fx="max")

    @override
    def state_dict(self) -> dict[str, Any]:
        if self.probe is None:
            return {}
        optimizer_state = self.optimizer.state_dict() if self.optimizer else self._pending_optimizer_state
        return {
            "probe": {k: v.detach().clone() for k, v in self.probe.state_dict().items()},
            "optimizer": copy.deepcopy(optimizer_state),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        num_classes, feature_dim = state_dict["probe"]["weight"].shape
        for name, ours, saved in (
            ("num_classes", self.num_classes, num_classes),
            ("feature_dim", self.feature_dim, feature_dim),
        ):
            if ours is not None and ours != saved:
                raise ValueError(
                    f"OnlineLinearProbe has {name}={ours} but the checkpoint's probe has {saved}."
                )
        self.num_classes, self.feature_dim = int(num_classes), int(feature_dim)
        self._build(self.feature_dim)
        assert self.probe is not None
        self.probe.load_state_dict(state_dict["probe"])
        # the optimizer is (re)created next to the probe on the module's device, then loads this state
        self._pending_optimizer_state = copy.deepcopy(state_dict["optimizer"])

    def _build(self, feature_dim: int) -> None:
        """A zero-initialised probe on the CPU; :meth:`_ready` moves it and creates the optimizer."""
        if self.num_classes is None:
            raise ValueError("OnlineLinearProbe needs `num_classes` before building the probe.")
        # skip_init: nn.Linear's own init would draw from the global RNG and shift the observed run
        self.probe = nn.utils.skip_init(nn.Linear, feature_dim, self.num_classes)
        nn.init.zeros_(self.probe.weight)
        nn.init.zeros_(self.probe.bias)
        self.optimizer = None

    def _ready(self, feature_dim: int, device: torch.device) -> tuple[nn.Linear, torch.optim.Optimizer]:
        """The probe and its optimizer on ``device``, built on first use."""
        with torch.inference_mode(False):  # validation runs under inference mode; parameters must not
            if self.probe is None:
                self.feature_dim = feature_dim
                self._build(feature_dim)
            assert self.probe is not None
            if self.probe.in_features != feature_dim:
                raise ValueError(
                    f"OnlineLinearProbe was built for features of size {self.probe.in_features}, "
                    f"got {feature_dim}."
                )
            if self.probe.weight.device != device:
                state = self.optimizer.state_dict() if self.optimizer else self._pending_optimizer_state
                self.probe.to(device)
                self.optimizer, self._pending_optimizer_state = None, state
            if self.optimizer is None:
                self.optimizer = self._new_optimizer(self.probe)
                if self._pending_optimizer_state is not None:
                    self.optimizer.load_state_dict(self._pending_optimizer_state)  # casts state to device
                    self._pending_optimizer_state = None
        return self.probe, self.optimizer

    def _new_optimizer(self, probe: nn.Module) -> torch.optim.Optimizer:
        if self.optimizer_name == "adam":
            return torch.optim.Adam(probe.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(
            probe.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )

    def _check_labels(self, labels: Tensor) -> None:
        assert self.num_classes is not None
        if int(labels.max()) >= self.num_classes:
            raise ValueError(
                f"OnlineLinearProbe got label {int(labels.max())} but num_classes={self.num_classes}; "
                "labels must be in [0, num_classes) or -1 for unlabelled."
            )
