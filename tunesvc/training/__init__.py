"""PyTorch: :class:`TrainingSetup`, :func:`fit`, population training, checkpoints and the
pre-tuning checks. Knows nothing of Optuna."""

from __future__ import annotations

from tunesvc.training._checkpoint import load_checkpoint, save_checkpoint
from tunesvc.training._fit import (
    LOSSES,
    METRIC_DIRECTIONS,
    OPTIMIZERS,
    SCHEDULES,
    FitResult,
    TrainingSetup,
    fit,
    loss_function,
    resolve_device,
    scheduled_lr,
)

__all__ = [
    "LOSSES",
    "METRIC_DIRECTIONS",
    "OPTIMIZERS",
    "SCHEDULES",
    "FitResult",
    "TrainingSetup",
    "fit",
    "load_checkpoint",
    "loss_function",
    "resolve_device",
    "save_checkpoint",
    "scheduled_lr",
]
