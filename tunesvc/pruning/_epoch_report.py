"""One line per epoch for a plain Optuna objective: its learning curves recorded, its metric
reported, so that it is diagnosed and pruned like one tunesvc trains.

A plain objective that calls only ``trial.report(val_acc, epoch)`` can be diagnosed from that
one curve only (:func:`tunesvc.diagnose_values`), which cannot see the learning rate nor the
train curves. :func:`report_epoch` records whatever curves the objective has in the trial's
``curves`` user attribute (the format of :class:`tunesvc.Curves`) and reports the metric with
``trial.report``; :class:`tunesvc.LearningCurvePruner` and the diagnosis then read the curves.

Example::

    def objective(trial: optuna.Trial) -> float:
        ...
        for epoch in range(epochs):
            train_loss, train_acc = train_one_epoch(model, optimizer)
            val_loss, val_acc = evaluate(model)
            report_epoch(trial, epoch, train_loss=train_loss, val_loss=val_loss,
                         train_acc=train_acc, val_acc=val_acc,
                         lr=optimizer.param_groups[0]["lr"], num_classes=10)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return best_val_acc

It works on a plain :class:`optuna.Trial` in any Optuna study, and on a trial that keeps its
own curves (:class:`HoldsCurves`, as tunesvc's worker does).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import optuna
from optuna.study import StudyDirection

from tunesvc.curves._curves import CURVE_NAMES, Curves
from tunesvc.storage._attrs import CURVES, NUM_CLASSES

METRIC_DIRECTION = {
    "train_loss": StudyDirection.MINIMIZE,
    "val_loss": StudyDirection.MINIMIZE,
    "train_acc": StudyDirection.MAXIMIZE,
    "val_acc": StudyDirection.MAXIMIZE,
}
"""The study direction each curve can be reported for."""

DEFAULT_METRIC = {StudyDirection.MAXIMIZE: "val_acc", StudyDirection.MINIMIZE: "val_loss"}
"""The curve :func:`report_epoch` reports when not told: what the study's direction wants."""

_RECORD_ATTR = "_tunesvc_epoch_report"
"""Where a plain trial object keeps its curves between calls (never read back from storage)."""


@runtime_checkable
class HoldsCurves(Protocol):
    """A trial that keeps its curves itself (tunesvc's worker trial): :func:`report_epoch`
    appends to ``curves`` and calls ``store_curves()``, which writes them when it sees fit."""

    curves: Curves | None

    def store_curves(self) -> None: ...


@dataclass
class _Record:
    """What a trial object keeps between calls."""

    curves: Curves = field(default_factory=Curves)
    last_call: float = math.nan
    num_classes: int | None = None


def report_epoch(
    trial: optuna.Trial,
    epoch: int,
    *,
    train_loss: float | None = None,
    val_loss: float | None = None,
    train_acc: float | None = None,
    val_acc: float | None = None,
    lr: float | None = None,
    metric: str | None = None,
    num_classes: int | None = None,
) -> float:
    """Record one epoch's curves on ``trial`` and report its metric; returns the value reported.

    Call it once per evaluation, epochs increasing (0 for an evaluation before training, as
    tunesvc does, or 1 for the first epoch), with whatever the objective measured; a curve left
    ``None`` is recorded as missing, and the diagnoses skip what needs it (no ``plateau``
    without ``lr``, no ``overfitting`` or ``underfitting`` without the train curves).

    Args:
        trial: The trial the objective was given.
        epoch: The epoch this evaluation follows, an int >= 0, above the last one reported.
        train_loss, val_loss, train_acc, val_acc: This epoch's curves (accuracies as
            fractions, 0.9 not 90).
        lr: The learning rate used in this epoch.
        metric: The curve reported with ``trial.report(value, epoch)``: one of ``train_loss``,
            ``val_loss``, ``train_acc``, ``val_acc``, and one that goes the study's way (a loss
            for ``minimize``, an accuracy for ``maximize``). Default: ``val_acc`` when the study
            maximizes, ``val_loss`` when it minimizes.
        num_classes: Classes of a cross-entropy loss, recorded on the trial once, so that the
            diagnosis judges the epoch-0 loss against ``log(num_classes)``
            (``bad_initial_loss``), as it does for a trial tunesvc trains.

    Raises:
        ValueError: the epoch does not increase, the metric is unknown, was not given, or goes
            against the study's direction. Nothing is recorded then.
    """
    given = {"train_loss": train_loss, "val_loss": val_loss, "train_acc": train_acc,
             "val_acc": val_acc}
    direction = trial.study.direction
    name = metric if metric is not None else DEFAULT_METRIC[direction]
    if name not in CURVE_NAMES:
        raise ValueError(f"metric: expected one of {', '.join(CURVE_NAMES)}, got {name!r}")
    if METRIC_DIRECTION[name] != direction:
        raise ValueError(
            f"metric: the study wants to {direction.name.lower()} but {name!r} is to "
            f"{METRIC_DIRECTION[name].name.lower()}; pass metric= one of "
            + ", ".join(n for n, d in METRIC_DIRECTION.items() if d == direction)
        )
    value = given[name]
    if value is None:
        raise ValueError(
            f"{name}: the reported metric, but it was not given; pass {name}=... or choose "
            "another with metric=..."
        )
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch: expected an int >= 0, got {epoch!r}")
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2
    ):
        raise ValueError(f"num_classes: expected an int >= 2, got {num_classes!r}")

    record: _Record = getattr(trial, _RECORD_ATTR, None) or _Record()
    holder = trial if isinstance(trial, HoldsCurves) else None
    curves = record.curves if holder is None else holder.curves
    if curves is None:
        curves = Curves()
    if curves.epoch and epoch <= curves.epoch[-1]:
        raise ValueError(
            f"epoch: expected an epoch above the last one reported ({curves.epoch[-1]}), "
            f"got {epoch}"
        )

    now = time.monotonic()
    curves.epoch.append(epoch)
    for column in CURVE_NAMES:
        x = given[column]
        getattr(curves, column).append(math.nan if x is None else float(x))
    curves.lr.append(math.nan if lr is None else float(lr))
    curves.seconds.append(now - record.last_call)  # NaN at the first call
    record.last_call = now
    if num_classes is not None and record.num_classes != num_classes:
        trial.set_user_attr(*NUM_CLASSES.item(num_classes))
        record.num_classes = num_classes
    setattr(trial, _RECORD_ATTR, record)
    if holder is not None:
        holder.curves = curves
        holder.store_curves()
    else:
        trial.set_user_attr(*CURVES.item(curves))
    trial.report(float(value), epoch)
    return float(value)
