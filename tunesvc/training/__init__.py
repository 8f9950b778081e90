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
from tunesvc.training._population import (
    MemberEnd,
    Population,
    fit_population,
    group_setups,
    population_key,
)

__all__ = [
    "LOSSES",
    "METRIC_DIRECTIONS",
    "OPTIMIZERS",
    "SCHEDULES",
    "FitResult",
    "MemberEnd",
    "Population",
    "TrainingSetup",
    "fit",
    "fit_population",
    "group_setups",
    "load_checkpoint",
    "loss_function",
    "population_key",
    "resolve_device",
    "save_checkpoint",
    "scheduled_lr",
]
