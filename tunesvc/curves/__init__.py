"""Pure: learning curves, the diagnoses read from them, and their extrapolation.
No database, no torch, no Optuna storage."""

from __future__ import annotations

from tunesvc.curves._curves import CURVE_NAMES, Curves, EpochRecord
from tunesvc.curves._diagnosis import (
    ADVICE,
    LABELS,
    Diagnosis,
    DiagnosisThresholds,
    diagnose,
    diagnose_values,
)

__all__ = [
    "ADVICE",
    "CURVE_NAMES",
    "LABELS",
    "Curves",
    "Diagnosis",
    "DiagnosisThresholds",
    "EpochRecord",
    "diagnose",
    "diagnose_values",
]
