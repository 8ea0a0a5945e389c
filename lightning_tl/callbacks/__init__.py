"""Callbacks that plug into any ``Trainer``: monitors of representation quality and training schedules."""

from lightning_tl.callbacks._freeze_registry import (
    create_freeze_strategy,
    list_freeze_strategies,
    register_freeze_strategy,
)
from lightning_tl.callbacks.channels_last import ChannelsLast
from lightning_tl.callbacks.freeze_auto import AutoBySize, choose_strategy
from lightning_tl.callbacks.freeze_strategies import (
    BitFit,
    FreezeContext,
    FreezeStrategy,
    FullFinetune,
    LinearProbe,
    NormOnly,
    PartialFinetune,
)
from lightning_tl.callbacks.freezing import FreezeSchedule, freeze_param_groups
from lightning_tl.callbacks.knn import KNNMonitor, knn_predict
from lightning_tl.callbacks.last_checkpoint import LastCheckpoint
from lightning_tl.callbacks.online_probe import OnlineLinearProbe
from lightning_tl.callbacks.zero_shot import ZeroShotEvaluator, zero_shot_classifier

__all__ = [
    "AutoBySize",
    "BitFit",
    "ChannelsLast",
    "FreezeContext",
    "FreezeSchedule",
    "FreezeStrategy",
    "FullFinetune",
    "KNNMonitor",
    "LastCheckpoint",
    "LinearProbe",
    "NormOnly",
    "OnlineLinearProbe",
    "PartialFinetune",
    "ZeroShotEvaluator",
    "choose_strategy",
    "create_freeze_strategy",
    "freeze_param_groups",
    "knn_predict",
    "list_freeze_strategies",
    "register_freeze_strategy",
    "zero_shot_classifier",
]
