"""PyTorch: :class:`TrainingSetup`, :func:`fit`, population training, checkpoints and the
pre-tuning checks. Knows nothing of Optuna."""

from __future__ import annotations

from tunesvc.training._checkpoint import load_checkpoint, save_checkpoint
from tunesvc.training._checks import (
    CheckReport,
    CheckResult,
    check_setup,
    suggest_lr_range,
)
from tunesvc.training._fit import (
    LOSSES,
    METRIC_DIRECTIONS,
    OPTIMIZERS,
    SCHEDULES,
    FitResult,
    TrainingSetup,
    check_setup_values,
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
    "CheckReport",
    "CheckResult",
    "FitResult",
    "MemberEnd",
    "Population",
    "TrainingSetup",
    "check_setup",
    "check_setup_values",
    "fit",
    "fit_population",
    "group_setups",
    "load_checkpoint",
    "loss_function",
    "population_key",
    "resolve_device",
    "save_checkpoint",
    "scheduled_lr",
    "suggest_lr_range",
]
