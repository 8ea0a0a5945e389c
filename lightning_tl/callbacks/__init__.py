"""Callbacks that plug into any ``Trainer``: monitors of representation quality and training schedules."""

from lightning_tl.callbacks.channels_last import ChannelsLast
from lightning_tl.callbacks.freezing import FreezeSchedule, freeze_param_groups
from lightning_tl.callbacks.knn import KNNMonitor, knn_predict
from lightning_tl.callbacks.last_checkpoint import LastCheckpoint
from lightning_tl.callbacks.online_probe import OnlineLinearProbe
from lightning_tl.callbacks.zero_shot import ZeroShotEvaluator, zero_shot_classifier

__all__ = [
    "ChannelsLast",
    "FreezeSchedule",
    "KNNMonitor",
    "LastCheckpoint",
    "OnlineLinearProbe",
    "ZeroShotEvaluator",
    "freeze_param_groups",
    "knn_predict",
    "zero_shot_classifier",
]
