"""Optuna pruners: :class:`LearningCurvePruner` and the small interface the worker uses to ask a
pruner for a decision with its reason on in-memory curves; :func:`report_epoch`, with which a
plain objective gives them its curves."""

from __future__ import annotations

from tunesvc.pruning._epoch_report import HoldsCurves, report_epoch
from tunesvc.pruning._policy import FinishedTrials, PolicySettings
from tunesvc.pruning._pruner import Decision, LearningCurvePruner, make_pruner, should_stop

__all__ = [
    "Decision",
    "FinishedTrials",
    "HoldsCurves",
    "LearningCurvePruner",
    "PolicySettings",
    "make_pruner",
    "report_epoch",
    "should_stop",
]
