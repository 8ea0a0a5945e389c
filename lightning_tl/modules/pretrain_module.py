"""The base of the self-supervised pre-training modules: the optimizer arguments they share.

SimCLR, MoCo, BYOL, SimSiam, Barlow Twins, VICReg and DINO each take their method's own arguments and pass
the rest (``**kwargs``) to :class:`PretrainModule`, which resolves and checks the optimizer settings and
passes the backbone's on to :class:`~lightning_tl.modules.BackboneModule` (which builds the backbone and
saves every argument as a hyperparameter). The CLI (jsonargparse) follows the ``**kwargs`` through the
levels, so ``--model.init_args.backbone`` and ``--help`` list them all.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

from lightning_tl.modules._optim import WarmupCosineOptimizer, scaled_lr
from lightning_tl.modules._pretrain import FeatureSteps
from lightning_tl.modules._ssl import check_datamodule
from lightning_tl.modules.backbone_module import BackboneModule
from lightning_tl.optim import OptimizerFactory


class PaperOptimizer(NamedTuple):
    """A method's optimizer as its paper trains it: what ``optimizer`` / ``weight_decay`` /
    ``warmup_epochs`` = None stand for, and the optimizers ``lr=None``'s batch scaling is meant for."""

    name: str
    weight_decay: float
    warmup_epochs: float
    lr_scales_for: tuple[str, ...] = ()  # () = (name,)


class PretrainModule(FeatureSteps, WarmupCosineOptimizer, BackboneModule):
    """A self-supervised method: a backbone, the method's heads and loss, one optimizer with warm-up + cosine.

    A method subclasses it with its own arguments and ``**kwargs`` passed on here, sets the class
    attributes below and builds its heads on ``self.backbone`` (``self.backbone.num_features`` wide)::

        class MyMethod(PretrainModule):
            paper_optimizer = PaperOptimizer("lars", weight_decay=1e-6, warmup_epochs=10)
            lr_per_256 = 0.2
            views_recipe = "SimCLRViews"

            def __init__(self, output_dim: int = 128, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                self.head = nn.Linear(self.backbone.num_features, output_dim)

    ``lr=None`` scales ``lr_per_256`` linearly with the global batch (:meth:`base_lr`; SimCLR overrides
    it with its square-root rule). At fit setup the datamodule is checked to make ``num_global_views``
    views of the image size (2; None: any number >= 2), smaller local views only with ``local_views``,
    and >= 2 images a process (the heads' batch norm); ``views_recipe`` names the recipe that error
    messages suggest. The hyperparameters saved in checkpoints hold the settings in effect, the paper's
    where an argument was None.

    Args:
        num_classes: number of labelled classes, linked from the datamodule; not used for training,
            kept so evaluation callbacks and subclasses can read it.
        optimizer: a timm optimizer name (``"lars"``, ``"sgd"``, ``"adamw"``, ...) or a callable taking
            param groups and returning an optimizer (``class_path: torch.optim.SGD`` in a config);
            None: the method's paper's (``paper_optimizer``).
        lr: base learning rate; None scales the paper's rate with the global batch (see the method),
            meant for the paper's optimizer; set it for other optimizers.
        weight_decay: applied to weights with ndim >= 2 only; None: the paper's.
        momentum: for SGD-type optimizers.
        warmup_epochs: linear warm-up length before cosine decay, in epochs (may be fractional); None:
            the paper's.
        **kwargs: the backbone (``backbone``, ``backbone_kwargs``, ``pretrained``, ``small_input``,
            ``in_channels``): see :class:`~lightning_tl.modules.BackboneModule`.
    """

    paper_optimizer: ClassVar[PaperOptimizer]
    lr_per_256: ClassVar[float]
    views_recipe: ClassVar[str]
    num_global_views: int | None = 2  # views of the image size a batch must hold; None: any number >= 2
    local_views: ClassVar[bool] = False  # whether smaller (multi-crop) views may follow

    def __init__(
        self,
        num_classes: int | None = None,
        optimizer: str | OptimizerFactory | None = None,
        lr: float | None = None,
        weight_decay: float | None = None,
        momentum: float = 0.9,
        warmup_epochs: float | None = None,
        **kwargs: Any,
    ) -> None:
        paper = self.paper_optimizer
        optimizer = paper.name if optimizer is None else optimizer
        weight_decay = paper.weight_decay if weight_decay is None else weight_decay
        warmup_epochs = paper.warmup_epochs if warmup_epochs is None else warmup_epochs
        self.check_optimizer_settings(optimizer, lr, weight_decay, warmup_epochs)
        super().__init__(**kwargs)  # saves the hyperparameters: the resolved values above, not None
        if callable(optimizer):  # a factory is code, not a setting: keep it out of checkpoints
            self.save_hyperparameters(ignore=["optimizer"])
        self.keep_optimizer_settings(optimizer, lr, weight_decay, momentum, warmup_epochs)

    def check_optimizer_settings(
        self, optimizer: str | OptimizerFactory, lr: float | None, weight_decay: float, warmup_epochs: float
    ) -> None:
        """``lr`` > 0 or None (then only with an optimizer its scaling is meant for), ``weight_decay >= 0``,
        ``warmup_epochs >= 0``."""
        method = type(self).__name__
        if lr is not None and not lr > 0:
            raise ValueError(f"lr must be > 0 or None (the paper's rate scaled with the batch), got {lr}.")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
        if not warmup_epochs >= 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}.")
        scales_for = self.paper_optimizer.lr_scales_for or (self.paper_optimizer.name,)
        if lr is None and isinstance(optimizer, str) and optimizer.lower() not in scales_for:
            raise ValueError(
                f"lr=None scales {method}'s learning rate for {' / '.join(map(repr, scales_for))} (the "
                f"paper's optimizer); set lr for optimizer={optimizer!r}."
            )

    def setup(self, stage: str) -> None:
        if stage == "fit":
            check_datamodule(
                self, type(self).__name__, self.views_recipe, self.num_global_views, self.local_views
            )

    def base_lr(self) -> float:
        """``lr`` if given, else ``lr_per_256`` x global batch / 256 (the papers' linear scaling)."""
        return scaled_lr(self, self.lr, self.lr_per_256)
