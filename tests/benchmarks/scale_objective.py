"""The plain objective bench_scale.py runs through tunesvc's real worker and plain Optuna's
``study.optimize``: the bench's three params, three reports, no training (what is timed is the
coordination around a trial, not the trial)."""

from __future__ import annotations

import optuna


def objective(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    dropout = trial.suggest_float("dropout", 0.0, 0.5)
    hidden = trial.suggest_categorical("hidden", [64, 128, 256])
    value = 1.0 - abs(lr - 0.01) - dropout / 10 + hidden / 1e4
    for step in range(1, 4):
        trial.report(value * step / 3, step)
    return value


objective.direction = "maximize"  # type: ignore[attr-defined]
