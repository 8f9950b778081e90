"""tunesvc: hyperparameter tuning for PyTorch models, on Optuna."""

from __future__ import annotations

from tunesvc._curves import CURVES_ATTR, DIAGNOSIS_ATTR, Curves, EpochRecord, curves_of
from tunesvc._errors import (
    ObjectiveError,
    SpecError,
    StorageError,
    StudyExistsError,
    StudyNotFoundError,
    TrainingError,
    TunesvcError,
)
from tunesvc._spec import StudySpec, grid_cells, grid_points, parse_spec

__version__ = "0.1.0"

__all__ = [
    "CURVES_ATTR",
    "DIAGNOSIS_ATTR",
    "Curves",
    "EpochRecord",
    "ObjectiveError",
    "SpecError",
    "StorageError",
    "StudyExistsError",
    "StudyNotFoundError",
    "StudySpec",
    "TrainingError",
    "TunesvcError",
    "curves_of",
    "grid_cells",
    "grid_points",
    "parse_spec",
]
