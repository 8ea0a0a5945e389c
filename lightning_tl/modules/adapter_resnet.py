"""AdapterResNet: one frozen (pre-trained) ResNet, residual adapters, BN and a head per domain.

Rebuffi et al., "Learning multiple visual domains with residual adapters" (NeurIPS 2017) and
"Efficient parametrization of multi-domain deep neural networks" (CVPR 2018). Only the adapters,
the per-domain BatchNorm layers and the per-domain heads train; the convolutions stay frozen.

Batches: ``(images, labels)`` for a single domain (any of our supervised datamodules), or
``{domain: (images, labels)}`` from :class:`~lightning_tl.datamodules.MultiDomainDataModule`;
validation/test loaders are one per domain (``dataloader_idx`` = the domain's index).
"""

from __future__ import annotations

from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_tl.modules.finetune_module import FineTuneModule
from lightning_tl.nn.adapter_merge import merge_adapters
from lightning_tl.nn.adapters import AdapterKind, inject_adapters
from lightning_tl.nn.domains import domain_parameter_count, set_domain

DomainBatches = Literal["mix", "alternate"]


class AdapterResNet(FineTuneModule):
    """A ResNet from :func:`~lightning_tl.backbones.create_backbone` with residual adapters per domain.

    Args:
        backbone: a torchvision or timm ResNet name (``"resnet18"``, ``"timm/resnet26"``).
        num_classes: classes per domain, ``{domain: n}`` (linked from a MultiDomainDataModule), or
            one int for every domain in ``domains``.
        domains: domain names; None: the keys of ``num_classes``, or ``["default"]``.
        kind: ``"parallel"`` (Rebuffi et al. 2018) or ``"series"`` (2017) adapters.
        domain_batches: with several domains, ``"mix"``: one optimizer step on the sum of every
            domain's loss per batch; ``"alternate"``: one step per domain in turn (manual
            optimisation; ``trainer.global_step`` counts domain steps; under DDP each backward
            touches one domain's parameters, so use ``strategy="ddp_find_unused_parameters_true"``).
        lr: the learning rate of the trainable parameters (adapters, BN, heads).
        **kwargs: the backbone and the rest of the optimizer (``backbone_kwargs``, ``pretrained``,
            ``small_input``, ``in_channels``, ``optimizer``, ``weight_decay``, ``momentum``,
            ``warmup_epochs``): see :class:`~lightning_tl.modules.FineTuneModule`. One timm optimizer
            over the trainable parameters, no weight decay on 1-D ones, per-step warm-up then cosine.
    """

    random_backbone = ("frozen backbone", "adapt")

    def __init__(
        self,
        backbone: str = "resnet18",
        *,
        num_classes: int | dict[str, int] = 10,
        domains: list[str] | None = None,
        kind: AdapterKind = "parallel",
        domain_batches: DomainBatches = "mix",
        lr: float = 0.1,
        **kwargs: Any,
    ) -> None:
        if domain_batches not in ("mix", "alternate"):
            raise ValueError(f"domain_batches must be 'mix' or 'alternate', got {domain_batches!r}")
        if isinstance(num_classes, int):
            domains = list(domains) if domains is not None else ["default"]
            classes = dict.fromkeys(domains, num_classes)
        else:
            classes = {str(k): int(v) for k, v in num_classes.items()}
            if domains is not None and list(domains) != list(classes):
                raise ValueError(
                    f"domains {list(domains)} do not match the domains of num_classes {list(classes)}; "
                    "drop domains (they follow num_classes) or list the same names in the same order"
                )
        super().__init__(backbone=backbone, lr=lr, **kwargs)
        self.backbone_params = sum(p.numel() for p in self.backbone.parameters())
        inject_adapters(self.backbone, kind, list(classes), num_classes=classes)
        self.domains = list(classes)
        self.automatic_optimization = domain_batches == "mix"
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{d}": MulticlassAccuracy(n, average="micro")
                for stage in ("train", "val", "test")
                for d, n in classes.items()
            }
        )

    def forward(self, x: Tensor, domain: str | None = None) -> Tensor:
        """Images (B, C, H, W) -> logits (B, classes of ``domain``; default: the active domain)."""
        if domain is not None:
            set_domain(self.backbone, domain)
        return self.backbone(x)

    def merged_backbone(self, domain: str | None = None) -> nn.Module:
        """A plain network for ``domain`` (default: the active one) with the adapters folded in:
        same outputs in eval mode, no inference overhead (:func:`~lightning_tl.nn.merge_adapters`)."""
        return merge_adapters(self.backbone, domain)

    def trainable_share(self, domain: str | None = None) -> float:
        """Trainable parameters (all domains, or one domain's adapters + BN) / backbone parameters."""
        if domain is None:
            trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        else:
            trainable = domain_parameter_count(self.backbone, domain, heads=False)
        return trainable / self.backbone_params

    def on_train_start(self) -> None:
        self.log("trainable_params_share", self.trainable_share(), rank_zero_only=True)
        self.log("domain_params_share", self.trainable_share(self.domains[0]), rank_zero_only=True)

    def _domain_loss(self, domain: str, batch: Any, stage: str) -> Tensor:
        x, y = batch
        logits = self(x, domain)  # (B, classes of domain)
        loss = F.cross_entropy(logits, y)
        metric = self.metrics[f"{stage}_{domain}"]
        assert isinstance(metric, MulticlassAccuracy)
        metric(logits, y)
        n = x.shape[0]
        suffix = f"/{domain}" if len(self.domains) > 1 else ""
        sync = stage != "train"
        log = {"batch_size": n, "add_dataloader_idx": False}
        self.log(f"{stage}_loss{suffix}", loss, sync_dist=sync, prog_bar=stage == "train", **log)
        self.log(f"{stage}_acc{suffix}", metric, on_step=False, on_epoch=True, prog_bar=True, **log)
        return loss

    def _domain_batches(self, batch: Any) -> dict[str, Any]:
        if isinstance(batch, dict):
            unknown = sorted(set(batch) - set(self.domains))
            if unknown:
                raise ValueError(f"batch has domains {unknown} this model was not built for ({self.domains})")
            return batch
        if len(self.domains) != 1:
            raise ValueError(
                f"a plain (images, labels) batch but the model has domains {self.domains}: use a "
                "MultiDomainDataModule, which yields {domain: batch}"
            )
        return {self.domains[0]: batch}

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        batches = self._domain_batches(batch)
        if self.automatic_optimization:
            return sum((self._domain_loss(d, b, "train") for d, b in batches.items()), start=self._zero())
        optimizer = self.optimizers()
        total = self._zero()
        for domain, b in batches.items():  # "alternate": one optimiser step per domain
            loss = self._domain_loss(domain, b, "train")
            optimizer.zero_grad()  # type: ignore[union-attr]
            self.manual_backward(loss)
            optimizer.step()  # type: ignore[union-attr]
            total = total + loss.detach()
        scheduler = self.lr_schedulers()
        scheduler.step()  # type: ignore[union-attr]
        return total  # the sum of the domains' losses, for callbacks (already optimised)

    def _zero(self) -> Tensor:
        return next(self.parameters()).new_zeros(())

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._domain_loss(self.domains[dataloader_idx], batch, "val")

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._domain_loss(self.domains[dataloader_idx], batch, "test")
