"""An MLP on scikit-learn's bundled 8x8 digits: fast, offline, about 98% val accuracy."""

from __future__ import annotations

from typing import Any

from torch import nn

from objectives import classifier_setup, with_defaults
from objectives._data import digits
from tunesvc.training._fit import TrainingSetup

DIRECTION = "maximize"
METRIC = "val_acc"
EPOCHS = 20
SEARCH_SPACE: dict[str, dict[str, Any]] = {
    "lr": {"low": 1e-4, "high": 1e-1, "log": True, "points": 4},
    "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True, "points": 4},
    "dropout": {"low": 0.0, "high": 0.5, "points": 3},
    "hidden": {"values": [64, 128, 256]},
}
DEFAULTS: dict[str, Any] = {
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "dropout": 0.1,
    "hidden": 128,
    "optimizer": "adamw",
    "schedule": "cosine",
    "batch_size": 64,
}


def build(params: dict[str, Any]) -> TrainingSetup:
    """Model, data and hyperparameters for ``params`` (missing ones take ``DEFAULTS``)."""
    p = with_defaults("digits_mlp", DEFAULTS, params)
    hidden, dropout = int(p["hidden"]), float(p["dropout"])

    def model() -> nn.Module:
        return nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 10)
        )

    return classifier_setup(p, model, digits(), num_classes=10)
