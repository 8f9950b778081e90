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
from tunesvc.curves._curves import CURVES_ATTR, DIAGNOSIS_ATTR, Curves, EpochRecord, curves_of
from tunesvc.spec._spec import StudySpec, grid_cells, grid_points, parse_spec

if TYPE_CHECKING:
    from tunesvc.curves._diagnosis import Diagnosis, DiagnosisThresholds, diagnose, diagnose_values
    from tunesvc.pruning._pruner import Decision, LearningCurvePruner, make_pruner, should_stop
    from tunesvc.training._fit import (
        FitResult,
        TrainingSetup,
        fit,
        resolve_device,
        scheduled_lr,
    )

__version__ = "0.1.0"

_LAZY = {
    "TrainingSetup": "tunesvc.training._fit",
    "FitResult": "tunesvc.training._fit",
    "fit": "tunesvc.training._fit",
    "resolve_device": "tunesvc.training._fit",
    "scheduled_lr": "tunesvc.training._fit",
    "Diagnosis": "tunesvc.curves._diagnosis",
    "DiagnosisThresholds": "tunesvc.curves._diagnosis",
    "diagnose": "tunesvc.curves._diagnosis",
    "diagnose_values": "tunesvc.curves._diagnosis",
    "Decision": "tunesvc.pruning._pruner",
    "LearningCurvePruner": "tunesvc.pruning._pruner",
    "make_pruner": "tunesvc.pruning._pruner",
    "should_stop": "tunesvc.pruning._pruner",
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
    "should_stop",
]
