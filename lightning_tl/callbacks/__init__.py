"""Callbacks that plug into any ``Trainer``: monitors of representation quality and training schedules."""

from lightning_tl.callbacks.channels_last import ChannelsLast
from lightning_tl.callbacks.freezing import FreezeSchedule, freeze_param_groups
from lightning_tl.callbacks.knn import KNNMonitor, knn_predict
from lightning_tl.callbacks.online_probe import OnlineLinearProbe

__all__ = [
    "ChannelsLast",
    "FreezeSchedule",
    "KNNMonitor",
    "OnlineLinearProbe",
    "freeze_param_groups",
    "knn_predict",
]
