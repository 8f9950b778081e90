"""tunesvc: hyperparameter tuning for PyTorch models, on Optuna.

The training names (``TrainingSetup``, ``fit``, ...) import torch, so they load on first use:
``tunesvc --help`` and the storage commands stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tunesvc._errors import (
    ObjectiveError,
    SpecError,
    StorageError,
    StudyExistsError,
    StudyNotFoundError,
    TrainingError,
    TunesvcError,
)
from tunesvc.curves import (
    Curves,
    Diagnosis,
    DiagnosisThresholds,
    EpochRecord,
    diagnose,
    diagnose_values,
)
from tunesvc.spec import StudySpec, grid_cells, grid_points, parse_spec
from tunesvc.storage._attrs import CURVES, DIAGNOSIS, curves_of

if TYPE_CHECKING:
    from tunesvc._pruner import Decision, LearningCurvePruner, make_pruner
    from tunesvc.training import (
        FitResult,
        TrainingSetup,
        fit,
        resolve_device,
        scheduled_lr,
    )

__version__ = "0.1.0"

CURVES_ATTR = CURVES.key
"""The trial user attribute holding its learning curves."""
DIAGNOSIS_ATTR = DIAGNOSIS.key
"""The trial user attribute holding its diagnosis."""

_LAZY = {
    "TrainingSetup": "tunesvc.training",
    "FitResult": "tunesvc.training",
    "fit": "tunesvc.training",
    "resolve_device": "tunesvc.training",
    "scheduled_lr": "tunesvc.training",
    "Decision": "tunesvc._pruner",
    "LearningCurvePruner": "tunesvc._pruner",
    "make_pruner": "tunesvc._pruner",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tunesvc' has no attribute {name!r}")


__all__ = [
    "CURVES_ATTR",
    "DIAGNOSIS_ATTR",
    "Curves",
    "Decision",
    "Diagnosis",
    "DiagnosisThresholds",
    "EpochRecord",
    "FitResult",
    "LearningCurvePruner",
    "ObjectiveError",
    "SpecError",
    "StorageError",
    "StudyExistsError",
    "StudyNotFoundError",
    "StudySpec",
    "TrainingError",
    "TrainingSetup",
    "TunesvcError",
    "curves_of",
    "diagnose",
    "diagnose_values",
    "fit",
    "grid_cells",
    "grid_points",
    "make_pruner",
    "parse_spec",
    "resolve_device",
    "scheduled_lr",
]
