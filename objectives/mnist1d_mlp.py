"""An MLP on MNIST-1D: the dataset's README reports about 68% test accuracy for an MLP."""

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
    "hidden": {"values": [100, 200, 400]},
}
DEFAULTS: dict[str, Any] = {
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "dropout": 0.2,
    "hidden": 200,
    "optimizer": "adamw",
    "schedule": "cosine",
    "batch_size": 100,
}


def build(params: dict[str, Any]) -> TrainingSetup:
    """Model, data and hyperparameters for ``params`` (missing ones take ``DEFAULTS``)."""
    p = with_defaults("mnist1d_mlp", DEFAULTS, params)
    hidden, dropout = int(p["hidden"]), float(p["dropout"])

    def model() -> nn.Module:
        return nn.Sequential(
            nn.Linear(40, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, 10),
        )  # fmt: skip

    return classifier_setup(p, model, mnist1d(), num_classes=10)
