"""DANN as a LightningModule: a shared feature extractor, a label classifier and a domain classifier.

Ganin, Ustinova, Ajakan, Germain, Larochelle, Laviolette, Marchand, Lempitsky, "Domain-Adversarial
Training of Neural Networks", JMLR 17(59), 2016. The label classifier learns from labelled source
images; the domain classifier learns to tell source from (unlabelled) target features, and reaches the
feature extractor through a gradient reversal layer, so the features become domain-invariant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import Metric
from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy

from lightning_tl.heads import DomainClassifier, LinearHead, ProjectionHead, mlp_blocks
from lightning_tl.modules._dann_parts import DANNAnnealing, split_domain_batch
from lightning_tl.modules._optim import check_optimizer_name, timm_optimizer
from lightning_tl.modules.backbone_module import BackboneModule
from lightning_tl.nn.grl import GradientReversal, check_gamma
from lightning_tl.optim import param_groups, warmup_cosine_scheduler

EVAL_DOMAINS = ("source", "target")


class DANN(BackboneModule):
    """Unsupervised domain adaptation with a gradient reversal layer; ``adversarial=False``: source only.

    Training batches are ``{"source": (x_s, y_s), "target": x_t}`` from a
    :class:`~lightning_tl.datamodules.DomainAdaptationDataModule`. One step: features of source and
    target images (one backbone pass over both), cross-entropy of the label classifier on the source,
    binary cross-entropy of the domain classifier (source 0, target 1) on all features after a
    :class:`~lightning_tl.nn.GradientReversal` whose coefficient rises as ``dann_coeff(p, gamma)``
    with the true progress ``p = global_step / estimated_stepping_batches`` (optimizer steps, so
    gradient accumulation and resumed runs see the same schedule). With ``adversarial=False`` the
    target batch is ignored and no domain classifier exists: the source-only baseline with the same
    backbone, head, optimizer and budget (plain ``(x, y)`` batches are accepted too).

    Validation/test batches come from ``[source, target]`` loaders; the module logs
    ``{val,test}_source_acc``, ``{val,test}_target_acc`` (target labels are read only here) and, when
    adversarial, ``{val,test}_domain_acc``: how well the discriminator tells the two domains apart
    (0.5 = indistinguishable). Training logs ``train_source_acc``, ``train_domain_acc`` and ``grl_coeff``.

    Its training step is also that of :class:`~lightning_tl.modules.CDAN` and
    :class:`~lightning_tl.modules.MCC`, which override the hooks: :meth:`build_discriminator_input` and
    :meth:`discriminator_input` (what the domain classifier sees), :meth:`domain_loss` (how its
    per-example losses are weighted) and :meth:`target_loss` (a loss on the target predictions).

    Args:
        backbone: a ``create_backbone`` name or a module with ``num_features`` (e.g.
            :class:`~lightning_tl.nn.SmallConvNet`, the paper's MNIST feature extractor).
        num_classes: linked from the datamodule by the CLI.
        classifier_hidden: hidden widths of the label classifier (empty: linear).
        domain_hidden, domain_dropout: the :class:`~lightning_tl.heads.DomainClassifier`.
        adversarial: train the domain classifier through the reversal layer (False: source only).
        gamma: steepness of the coefficient schedule (10 in the paper); None keeps it at ``max_coeff``.
        max_coeff: final coefficient lambda (1 in the paper).
        domain_loss_weight: weight of the domain loss in the total loss.
        optimizer: a timm optimizer name; the paper uses SGD with momentum 0.9.
        lr: mu_0, the learning rate of the heads (0.01 in the paper).
        backbone_lr_mult: the backbone's learning rate is ``lr * backbone_lr_mult`` (the paper trains
            pre-trained layers 10x slower than new ones: 0.1).
        lr_schedule: "dann": ``mu_0 / (1 + alpha p)^beta`` (paper, Sec. 5.2.2); "cosine": cosine decay to 0;
            "constant".
        lr_alpha, lr_beta: the annealing's alpha = 10 and beta = 0.75.
        weight_decay, momentum: of the optimizer (no weight decay on 1-D parameters).
        **kwargs: the rest of the backbone's (``backbone_kwargs``, ``pretrained``, ``small_input``,
            ``in_channels``): see :class:`~lightning_tl.modules.BackboneModule`.
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet18",
        *,
        num_classes: int = 10,
        classifier_hidden: Sequence[int] = (),
        domain_hidden: Sequence[int] = (1024, 1024),
        domain_dropout: float = 0.5,
        adversarial: bool = True,
        gamma: float | None = 10.0,
        max_coeff: float = 1.0,
        domain_loss_weight: float = 1.0,
        optimizer: str = "sgd",
        lr: float = 0.01,
        backbone_lr_mult: float = 1.0,
        lr_schedule: Literal["dann", "cosine", "constant"] = "dann",
        lr_alpha: float = 10.0,
        lr_beta: float = 0.75,
        weight_decay: float = 5e-4,
        momentum: float = 0.9,
        **kwargs: Any,
    ) -> None:
        if not lr > 0 or not backbone_lr_mult >= 0:
            raise ValueError(
                f"need lr > 0 and backbone_lr_mult >= 0, got lr={lr}, backbone_lr_mult={backbone_lr_mult}"
            )
        if lr_schedule not in ("dann", "cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'dann', 'cosine' or 'constant', got {lr_schedule!r}")
        if lr_alpha < 0 or lr_beta < 0:
            raise ValueError(f"lr_alpha and lr_beta must be >= 0, got {lr_alpha} and {lr_beta}")
        if gamma is not None:
            check_gamma(gamma)
        if domain_loss_weight < 0:
            raise ValueError(f"domain_loss_weight must be >= 0, got {domain_loss_weight}")
        check_optimizer_name(optimizer)
        super().__init__(backbone=backbone, **kwargs)
        width = self.backbone.num_features
        if classifier_hidden:
            dims = [width, *classifier_hidden, num_classes]
            self.classifier: nn.Module = ProjectionHead(mlp_blocks(dims, hidden_norm=False))
        else:
            self.classifier = LinearHead(width, num_classes)
        self.adversarial = adversarial
        self.domain_loss_weight = domain_loss_weight
        if adversarial:  # built last, so backbone and classifier start as in the source-only run
            self.grl = GradientReversal(max_coeff, gamma)
            input_dim = self.build_discriminator_input(width, num_classes)
            self.domain_classifier = DomainClassifier(input_dim, domain_hidden, domain_dropout)
        self.train_source_acc = MulticlassAccuracy(num_classes, average="micro")
        self.train_domain_acc = BinaryAccuracy()
        self.eval_acc = nn.ModuleDict(
            {
                f"{s}_{d}": MulticlassAccuracy(num_classes, average="micro")
                for s in ("val", "test")
                for d in EVAL_DOMAINS
            }
        )
        self.eval_domain_acc = nn.ModuleDict({s: BinaryAccuracy() for s in ("val", "test")})
        self._total_steps: int | None = None

    # ---- the steps a subclass overrides -------------------------------------------------------
    # DANN's training step is the skeleton of CDAN and MCC too: source cross-entropy, plus the domain
    # loss of a discriminator behind the reversal layer (its input and weighting are the hooks below),
    # plus a loss on the target logits (:meth:`target_loss`).
    def forward(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) -> class logits (B, num_classes)."""
        return self.classifier(self.backbone(x))

    @property
    def uses_target(self) -> bool:
        """Whether training steps need target images (the domain loss or a target loss)."""
        return self.adversarial

    @property
    def needs_target_logits(self) -> bool:
        """Whether the step classifies the target images too (DANN: no, only their features are used)."""
        return False

    def build_discriminator_input(self, feature_dim: int, num_classes: int) -> int:
        """Set up :meth:`discriminator_input` and return its width; called once in ``__init__``.

        DANN's discriminator reads the features themselves: width ``feature_dim``.
        """
        return feature_dim

    def discriminator_input(self, features: Tensor, logits: Tensor | None) -> Tensor:
        """What the domain classifier sees: features (B, F) and class logits (B, C) or None -> (B, D)."""
        return features

    def domain_logits(self, features: Tensor, logits: Tensor | None = None) -> Tensor:
        """Features (B, F) (and logits (B, C)) -> domain logits (B,) through the gradient reversal layer."""
        return self.domain_classifier(self.grl(self.discriminator_input(features, logits)))

    def domain_loss(self, d_logits: Tensor, is_target: Tensor, logits: Tensor | None) -> Tensor:
        """Domain logits (B,), labels (B,) (0 source, 1 target), class logits (B, C) or None -> loss.

        DANN: the mean binary cross-entropy over source and target.
        """
        return DomainClassifier.loss(d_logits, is_target)

    def target_loss(self, target_logits: Tensor) -> Tensor | None:
        """An extra (weighted) loss on the target class logits (B_t, C), or None (DANN: none).

        Called only when :attr:`needs_target_logits`; it may log its parts.
        """
        return None

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x_s, y_s, x_t = split_domain_batch(batch, self.uses_target, type(self).__name__)
        x_t = x_t if self.uses_target else None  # source only: the target batch is not used
        n_s = x_s.shape[0]
        features = self.backbone(x_s if x_t is None else torch.cat([x_s, x_t]))  # (B_s [+ B_t], F)
        all_logits = self.needs_target_logits and x_t is not None
        logits = self.classifier(features if all_logits else features[:n_s])  # (B_s [+ B_t], num_classes)
        cls_loss = F.cross_entropy(logits[:n_s], y_s)
        loss = cls_loss
        self.train_source_acc(logits[:n_s].detach(), y_s)
        self.log("train_source_acc", self.train_source_acc, on_step=False, on_epoch=True, batch_size=n_s)
        if self.adversarial:
            d_logits = self.domain_logits(features, logits if all_logits else None)  # (B_s + B_t,)
            is_target = torch.cat([torch.zeros(n_s), torch.ones(features.shape[0] - n_s)]).to(features.device)
            domain_loss = self.domain_loss(d_logits, is_target, logits if all_logits else None)
            loss = cls_loss + self.domain_loss_weight * domain_loss
            self.train_domain_acc(d_logits.detach(), is_target.long())
            self.log("train_domain_loss", domain_loss, batch_size=features.shape[0])
            self.log("train_domain_acc", self.train_domain_acc, on_step=False, on_epoch=True, batch_size=n_s)
            self.log("grl_coeff", self.grl.coeff.float(), batch_size=n_s)
        if all_logits:
            extra = self.target_loss(logits[n_s:])
            if extra is not None:
                loss = loss + extra
        self.log("train_cls_loss", cls_loss, batch_size=n_s)
        self.log("train_loss", loss, prog_bar=True, batch_size=n_s)
        return loss

    def _eval_step(self, batch: Any, stage: str, dataloader_idx: int) -> None:
        x, y = batch
        domain = EVAL_DOMAINS[min(dataloader_idx, 1)]
        features = self.backbone(x)  # (B, F)
        logits = self.classifier(features)  # (B, num_classes)
        labelled = y >= 0  # an unlabelled target split has -1 labels: no accuracy
        if bool(labelled.any()):
            metric: Metric = self.eval_acc[f"{stage}_{domain}"]  # type: ignore[assignment]
            metric(logits[labelled], y[labelled])
            self.log(
                f"{stage}_{domain}_acc",
                metric,
                on_epoch=True,
                add_dataloader_idx=False,
                batch_size=x.shape[0],
            )
        if self.adversarial and self._num_eval_loaders(stage) == 2:
            d_logits = self.domain_classifier(self.discriminator_input(features, logits))  # (B,)
            is_target = torch.full_like(d_logits, float(dataloader_idx)).long()
            domain_metric: Metric = self.eval_domain_acc[stage]  # type: ignore[assignment]
            domain_metric.update(d_logits, is_target)  # logged at epoch end: it spans both loaders

    def _log_domain_acc(self, stage: str) -> None:
        metric: Metric = self.eval_domain_acc[stage]  # type: ignore[assignment]
        if metric.update_called:
            self.log(f"{stage}_domain_acc", metric.compute())
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_domain_acc("val")

    def on_test_epoch_end(self) -> None:
        self._log_domain_acc("test")

    def _num_eval_loaders(self, stage: str) -> int:
        loaders = self.trainer.val_dataloaders if stage == "val" else self.trainer.test_dataloaders
        return len(loaders) if isinstance(loaders, (list, tuple)) else 1

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "val", dataloader_idx)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "test", dataloader_idx)

    # ---- schedule of the reversal coefficient ---------------------------------------------------
    def training_progress(self) -> float:
        """``p`` in [0, 1]: optimizer steps done / total optimizer steps of the run."""
        total = self._total_steps or int(self.trainer.estimated_stepping_batches)
        return min(1.0, self.trainer.global_step / max(1, total))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.adversarial:
            self.grl.set_progress(self.training_progress())

    # ---- optimizer ----------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        hp: Any = self.hparams
        self._total_steps = int(self.trainer.estimated_stepping_batches)
        optimizer = self.build_optimizer()
        if hp.lr_schedule == "dann":
            scheduler: LambdaLR = LambdaLR(
                optimizer, DANNAnnealing(self._total_steps, hp.lr_alpha, hp.lr_beta)
            )
        elif hp.lr_schedule == "cosine":
            scheduler = warmup_cosine_scheduler(optimizer, 0, self._total_steps)
        else:
            scheduler = LambdaLR(optimizer, DANNAnnealing(self._total_steps, 0.0, 0.0))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def build_optimizer(self) -> Optimizer:
        """Backbone groups at ``lr * backbone_lr_mult``, heads at ``lr``; no weight decay on 1-D params."""
        hp: Any = self.hparams
        heads = [m for m in (self.classifier, getattr(self, "domain_classifier", None)) if m is not None]
        groups = [
            {**g, "lr": hp.lr * hp.backbone_lr_mult} for g in param_groups(self.backbone, hp.weight_decay)
        ]
        for head in heads:
            groups += [{**g, "lr": hp.lr} for g in param_groups(head, hp.weight_decay)]
        return timm_optimizer(groups, hp.optimizer, hp.lr, hp.weight_decay, hp.momentum)
