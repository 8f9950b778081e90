"""A regression (MSE loss): no classes, so the initial-loss check does not apply."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tunesvc.training import TrainingSetup

DIRECTION = "minimize"
METRIC = "val_loss"
EPOCHS = 2
SEARCH_SPACE: dict[str, Any] = {"lr": {"low": 1e-4, "high": 1e-1, "log": True}}
DEFAULTS: dict[str, Any] = {"lr": 1e-2}


def blobs(classes: int = 4, random_labels: bool = False) -> tuple[Tensor, ...]:
    """512 inputs whose class is the arg-max of their first ``classes`` features (or random)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 16, generator=g)
    y = (torch.randint(classes, (512,), generator=g) if random_labels
         else x[:, :classes].argmax(dim=1))
    return x[:384], y[:384], x[384:], y[384:]


def build(params: dict[str, Any]) -> TrainingSetup:
    x, _, xv, _ = blobs()
    w = torch.linspace(-1.0, 1.0, 16).unsqueeze(1)
    return TrainingSetup(model=lambda: nn.Linear(16, 1), train=(x, x @ w), val=(xv, xv @ w),
                         loss="mse", lr=float(params["lr"]))
