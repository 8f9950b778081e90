"""A small 1-D CNN on MNIST-1D: the dataset's README reports about 94% test accuracy."""

from __future__ import annotations

from typing import Any

from torch import nn

from objectives import classifier_setup, with_defaults
from objectives._data import mnist1d
from tunesvc.training._fit import TrainingSetup

DIRECTION = "maximize"
METRIC = "val_acc"
EPOCHS = 30
SEARCH_SPACE: dict[str, dict[str, Any]] = {
    "lr": {"low": 1e-4, "high": 1e-1, "log": True, "points": 4},
    "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True, "points": 4},
    "dropout": {"low": 0.0, "high": 0.5, "points": 3},
    "channels": {"values": [16, 32, 64]},
}
DEFAULTS: dict[str, Any] = {
    "lr": 1e-2,
    "weight_decay": 1e-2,
    "dropout": 0.2,
    "channels": 64,
    "optimizer": "adamw",
    "schedule": "cosine",
    "batch_size": 100,
}


def build(params: dict[str, Any]) -> TrainingSetup:
    """Model, data and hyperparameters for ``params`` (missing ones take ``DEFAULTS``)."""
    p = with_defaults("mnist1d_cnn", DEFAULTS, params)
    channels, dropout = int(p["channels"]), float(p["dropout"])

    def model() -> nn.Module:
        # 40 samples -> 19 -> 10 -> 5 positions, as in the MNIST-1D paper's ConvBase.
        return nn.Sequential(
            nn.Unflatten(1, (1, 40)),
            nn.Conv1d(1, channels, 5, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(channels * 5, 10),
        )  # fmt: skip

    return classifier_setup(p, model, mnist1d(), num_classes=10)
