"""Pure: learning curves, the diagnoses read from them, and their extrapolation.
No database, no torch, no Optuna storage."""

from __future__ import annotations

from tunesvc.curves._curves import CURVE_NAMES, Curves, EpochRecord
from tunesvc.curves._diagnosis import (
    ADVICE,
    ALL_ADVICE,
    LABELS,
    Diagnosis,
    DiagnosisThresholds,
    diagnose,
    diagnose_values,
)
from tunesvc.curves._forecast import Forecast, evaluation_noise, forecast

__all__ = [
    "ADVICE",
    "ALL_ADVICE",
    "CURVE_NAMES",
    "LABELS",
    "Curves",
    "Diagnosis",
    "DiagnosisThresholds",
    "EpochRecord",
    "Forecast",
    "diagnose",
    "diagnose_values",
    "evaluation_noise",
    "forecast",
]
