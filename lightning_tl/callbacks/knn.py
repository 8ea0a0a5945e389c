"""Weighted k-nearest-neighbour accuracy of a frozen encoder, the standard SSL monitor.

Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance Discrimination"
(https://arxiv.org/abs/1805.01978), Sec. 3.4: "we retrieve its top k nearest neighbors ... and use
weighted voting to predict its label", each neighbour ``i`` voting with ``exp(s_i / tau)`` for its
class. The lightly and solo-learn benchmarks use the same rule (k=200, tau=0.1) on L2-normalised
backbone features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from typing_extensions import override

from lightning_tl.distributed import all_reduce_sum, gather_uneven, rank, world_size


def knn_predict(
    query: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> Tensor:
    """Predict labels by weighted voting of the ``k`` most cosine-similar bank entries.

    Both ``query`` and ``bank`` are L2-normalised here. Neighbour ``i`` with cosine similarity
    ``s_i`` adds ``exp(s_i / temperature)`` to the score of its label; the prediction is the label
    with the largest summed weight (first label on exact ties). Weights are computed relative to the
    best neighbour, ``exp((s_i - s_max) / temperature)``, which leaves the argmax unchanged and
    cannot overflow at low temperatures. Memory is ``B * N``: chunk large query sets.

    Args:
        query: (B, D) features to classify.
        bank: (N, D) reference features.
        bank_labels: (N,) integer labels in ``[0, num_classes)``.
        num_classes: number of classes C.
        k: neighbours per query, ``1 <= k <= N``.
        temperature: ``tau > 0`` of the vote weights ``exp(sim / tau)``.

    Returns:
        (B,) long tensor of predicted labels.

    Example::

        >>> bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
        >>> knn_predict(torch.tensor([[2.0, 0.1]]), bank, torch.tensor([0, 1, 0]), num_classes=2, k=2)
        tensor([0])
    """
    if query.dim() != 2 or bank.dim() != 2 or query.shape[1] != bank.shape[1]:
        raise ValueError(
            f"Expected query (B, D) and bank (N, D) with the same D, got {tuple(query.shape)} "
            f"and {tuple(bank.shape)}."
        )
    if bank_labels.shape != (bank.shape[0],):
        raise ValueError(f"Expected bank_labels of shape ({bank.shape[0]},), got {tuple(bank_labels.shape)}.")
    if not 1 <= k <= bank.shape[0]:
        raise ValueError(f"Expected 1 <= k <= bank size {bank.shape[0]}, got k={k}.")
    if temperature <= 0:
        raise ValueError(f"Expected temperature > 0, got {temperature}.")
    if num_classes < 1:
        raise ValueError(f"Expected num_classes >= 1, got {num_classes}.")
    query = F.normalize(query.float(), dim=1)
    bank = F.normalize(bank.float(), dim=1)
    sim = query @ bank.T  # (B, N)
    top_sim, top_idx = sim.topk(k, dim=1)  # (B, k), sorted descending
    weights = torch.exp((top_sim - top_sim[:, :1]) / temperature)  # (B, k), in (0, 1]
    votes = weights.new_zeros(query.shape[0], num_classes)  # (B, C)
    votes.scatter_add_(1, bank_labels[top_idx].long(), weights)  # (B, C)
    return votes.argmax(dim=1)  # (B,)


class KNNMonitor(Callback):
    r"""Log the weighted kNN accuracy of ``pl_module.encode`` features during training.

    At the end of every ``every_n_epochs``-th validation epoch (and once before training starts if
    ``evaluate_at_start``), encodes the bank and eval data sets with ``pl_module.encode`` in eval
    mode without gradients, classifies every eval item with :func:`knn_predict` and logs the
    accuracy as ``log_name``. The at-start value (the random-init encoder) goes straight to the
    loggers at step 0, since Lightning's ``self.log`` is not meant for ``on_train_start``.

    Data sets come from ``trainer.datamodule.labelled_dataset(split)`` or from the explicit
    ``bank_dataset`` / ``eval_dataset``; items are ``(x, y)`` with integer ``y``. Under DDP each rank
    encodes a ``rank::world_size`` shard of each set (no padding), the bank is gathered and put back
    in data-set order, and correct/total counts are summed, so every rank gets the single-process
    accuracy. The callback draws no global random numbers and restores each submodule's
    train/eval mode, so it does not change the training run it observes.

    Args:
        k: neighbours per query (InstDisc and lightly use 200).
        temperature: vote temperature ``tau`` of ``exp(sim / tau)``.
        every_n_epochs: evaluate at the end of every n-th validation epoch.
        bank_split: split of ``labelled_dataset`` used as the reference bank.
        eval_split: split of ``labelled_dataset`` that is classified.
        max_bank_size: use at most this many bank items, evenly spaced over the data set
            (deterministic); ``None`` uses all.
        batch_size: batch size for encoding; similarities are computed per eval batch, (B, N).
        evaluate_at_start: also evaluate once before the first training step.
        log_name: metric name.
        bank_dataset: explicit bank data set instead of the datamodule's ``bank_split``.
        eval_dataset: explicit eval data set instead of the datamodule's ``eval_split``.
        num_workers: DataLoader workers for encoding.

    Attributes:
        history: ``(epoch, accuracy)`` pairs, epoch ``-1`` for the at-start evaluation.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> monitor = KNNMonitor(k=20, temperature=0.07, max_bank_size=10_000)
        >>> trainer = Trainer(callbacks=[monitor], logger=False)
    """

    def __init__(
        self,
        k: int = 200,
        temperature: float = 0.1,
        every_n_epochs: int = 1,
        bank_split: str = "train",
        eval_split: str = "val",
        max_bank_size: int | None = None,
        batch_size: int = 512,
        evaluate_at_start: bool = True,
        log_name: str = "knn_acc",
        bank_dataset: Dataset | None = None,
        eval_dataset: Dataset | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        counts = {"k": (k, 1), "every_n_epochs": (every_n_epochs, 1), "batch_size": (batch_size, 1)}
        for name, (value, least) in {**counts, "num_workers": (num_workers, 0)}.items():
            if value < least:
                raise ValueError(f"Expected {name} >= {least}, got {name}={value}.")
        if temperature <= 0:
            raise ValueError(f"Expected temperature > 0, got temperature={temperature}.")
        if max_bank_size is not None and max_bank_size < k:
            raise ValueError(f"Expected max_bank_size >= k={k} or None, got max_bank_size={max_bank_size}.")
        if not log_name:
            raise ValueError("Expected a non-empty log_name.")
        self.k = k
        self.temperature = temperature
        self.every_n_epochs = every_n_epochs
        self.bank_split = bank_split
        self.eval_split = eval_split
        self.max_bank_size = max_bank_size
        self.batch_size = batch_size
        self.evaluate_at_start = evaluate_at_start
        self.log_name = log_name
        self.bank_dataset = bank_dataset
        self.eval_dataset = eval_dataset
        self.num_workers = num_workers
        self.history: list[tuple[int, float]] = []
        self._evaluated_this_fit = False

    @property
    def initial_accuracy(self) -> float | None:
        """Accuracy of the encoder before training (``evaluate_at_start``), ``None`` if not run."""
        return next((acc for epoch, acc in self.history if epoch == -1), None)

    @property
    def last_accuracy(self) -> float | None:
        """Most recent accuracy, ``None`` before the first evaluation."""
        return self.history[-1][1] if self.history else None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(log_name=self.log_name)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage not in (TrainerFn.FITTING, TrainerFn.VALIDATING):
            return
        if not callable(getattr(pl_module, "encode", None)):
            raise AttributeError(
                f"KNNMonitor needs `{type(pl_module).__name__}.encode(x) -> Tensor` returning backbone "
                "features (B, D); add an `encode` method to the LightningModule."
            )
        if self.bank_dataset is None or self.eval_dataset is None:
            datamodule = getattr(trainer, "datamodule", None)
            if not callable(getattr(datamodule, "labelled_dataset", None)):
                raise AttributeError(
                    "KNNMonitor needs labelled data: pass `bank_dataset=` and `eval_dataset=`, or use a "
                    "datamodule with `labelled_dataset(split) -> Dataset` of (x, y) items; got datamodule "
                    f"{type(datamodule).__name__}."
                )
        self._evaluated_this_fit = False

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.evaluate_at_start or trainer.global_step > 0 or self.initial_accuracy is not None:
            return
        accuracy = self._evaluate(trainer, pl_module)
        self.history.append((-1, accuracy))
        # `pl_module.log` in on_train_start is aggregated into the first epoch's metrics and written at
        # its end; log to the loggers directly so the value sits at step 0.
        for logger in trainer.loggers:
            logger.log_metrics({self.log_name: accuracy}, step=trainer.global_step)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        fitting = trainer.state.fn == TrainerFn.FITTING
        if fitting and (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        accuracy = self._evaluate(trainer, pl_module)
        self.history.append((trainer.current_epoch, accuracy))
        self._evaluated_this_fit = True
        # identical on every rank: a "max" sync is exact and avoids Lightning's epoch-level sync warning
        value = torch.tensor(accuracy, device=pl_module.device)
        pl_module.log(self.log_name, value, sync_dist=True, reduce_fx="max")

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._evaluated_this_fit and trainer.current_epoch >= self.every_n_epochs:
            rank_zero_warn(
                "KNNMonitor evaluated nothing during fit: it runs at the end of validation epochs; give "
                "the Trainer a val_dataloader and limit_val_batches > 0."
            )
        if self.history:
            rank_zero_info(self.summary())

    def summary(self) -> str:
        """One line with the first and the latest accuracy, e.g. for the end of a run."""
        (first_epoch, first), (last_epoch, last) = self.history[0], self.history[-1]
        start = "before training" if first_epoch == -1 else f"after epoch {first_epoch}"
        return f"{self.log_name}: {first:.4f} {start} -> {last:.4f} after epoch {last_epoch}"

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [(int(epoch), float(acc)) for epoch, acc in state_dict["history"]]

    def _dataset(self, trainer: pl.Trainer, which: str) -> Dataset:
        explicit = self.bank_dataset if which == "bank" else self.eval_dataset
        if explicit is not None:
            return explicit
        split = self.bank_split if which == "bank" else self.eval_split
        return trainer.datamodule.labelled_dataset(split)  # type: ignore[attr-defined]

    def _loader(self, dataset: Dataset, indices: Sequence[int]) -> DataLoader:
        # a private generator: iterating a DataLoader otherwise draws its base seed from the global RNG
        return DataLoader(
            Subset(dataset, list(indices)),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            generator=torch.Generator(),
        )

    @torch.no_grad()
    def _encode(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loader: DataLoader
    ) -> tuple[Tensor, Tensor]:
        """Features (n, D) float32 and labels (n,) long of one shard, on the module's device."""
        feats, labels = [], []
        for batch in loader:
            if not isinstance(batch, Sequence) or len(batch) != 2:
                raise ValueError("KNNMonitor expects data set items (x, y) with an integer label y.")
            x, y = batch
            with trainer.precision_plugin.forward_context():
                f = pl_module.encode(x.to(pl_module.device))  # type: ignore[operator]
            if f.dim() != 2:
                raise ValueError(f"Expected `encode` to return (B, D) features, got shape {tuple(f.shape)}.")
            feats.append(f.float())
            labels.append(torch.as_tensor(y, device=pl_module.device).long())
        return torch.cat(feats), torch.cat(labels)

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> float:
        """kNN accuracy over the whole eval set; identical on every rank."""
        bank_set, eval_set = self._dataset(trainer, "bank"), self._dataset(trainer, "eval")
        n_bank, n_eval = len(bank_set), len(eval_set)  # type: ignore[arg-type]
        max_bank = self.max_bank_size
        fast_dev_run = getattr(trainer, "fast_dev_run", False)
        if fast_dev_run:  # a smoke run: one encoding batch of each set, like Lightning's loops
            batches = int(fast_dev_run)
            max_bank = max(self.k, batches * self.batch_size)
            n_eval = min(n_eval, batches * self.batch_size)
        if max_bank is not None and n_bank > max_bank:
            bank_idx = [(i * n_bank) // max_bank for i in range(max_bank)]
        else:
            bank_idx = list(range(n_bank))
        r, w = rank(), world_size()
        if len(bank_idx) < max(self.k, w):
            raise ValueError(
                f"KNNMonitor's bank has {len(bank_idx)} items, fewer than k={self.k} or the {w} ranks; "
                "lower k or use a larger bank."
            )
        modes = {m: m.training for m in pl_module.modules()}
        pl_module.eval()
        try:
            bank, bank_labels = self._encode(trainer, pl_module, self._loader(bank_set, bank_idx[r::w]))
            # gather every rank's shard, then restore data-set order: rank r holds items r, r + w, ...
            order = torch.arange(r, len(bank_idx), w, device=bank.device)
            order, bank, bank_labels = gather_uneven(order), gather_uneven(bank), gather_uneven(bank_labels)
            perm = order.argsort()
            bank, bank_labels = bank[perm], bank_labels[perm]  # (N, D), (N,)
            if int(bank_labels.min()) < 0:
                raise ValueError(
                    "KNNMonitor's bank has labels < 0 (unlabelled items); `labelled_dataset` must return "
                    "labelled items only."
                )
            num_classes = int(bank_labels.max()) + 1
            counts = torch.zeros(2, dtype=torch.long, device=pl_module.device)  # (correct, total)
            with torch.no_grad():
                for x, y in self._loader(eval_set, range(r, n_eval, w)):
                    with trainer.precision_plugin.forward_context():
                        query = pl_module.encode(x.to(pl_module.device))  # type: ignore[operator]
                    pred = knn_predict(
                        query.float(), bank, bank_labels, num_classes, self.k, self.temperature
                    )
                    y = torch.as_tensor(y, device=pred.device).long()
                    counts[0] += (pred == y).sum()
                    counts[1] += y.numel()
        finally:
            for module, training in modes.items():
                module.train(training)
        correct, total = all_reduce_sum(counts).tolist()
        if total == 0:
            raise ValueError("KNNMonitor's eval data set is empty.")
        return correct / total
