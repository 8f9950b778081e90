"""digits_mlp with a BatchNorm layer: its running statistics are buffers, which a population
cannot stack, so each trial trains alone (the population says why in one line)."""

from __future__ import annotations

from typing import Any

from torch import nn

from objectives import classifier_setup, with_defaults
from objectives._data import digits
from tunesvc import TrainingSetup

DIRECTION = "maximize"
METRIC = "val_acc"
EPOCHS = 2
SEARCH_SPACE: dict[str, dict[str, Any]] = {"lr": {"low": 1e-3, "high": 1e-1, "log": True}}
DEFAULTS: dict[str, Any] = {"lr": 1e-2, "weight_decay": 0.0, "dropout": 0.0, "hidden": 32,
                            "optimizer": "adamw", "schedule": "constant", "batch_size": 64}


def build(params: dict[str, Any]) -> TrainingSetup:
    p = with_defaults("batchnorm_mlp", DEFAULTS, params)
    hidden = int(p["hidden"])

    def model() -> nn.Module:
        return nn.Sequential(nn.Linear(64, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                             nn.Linear(hidden, 10))

    return classifier_setup(p, model, digits(), num_classes=10)
