"""Plain Optuna objectives used by the tests: they call trial.suggest_* and trial.report."""

from __future__ import annotations

import math
import os
import time

import optuna

from tunesvc.pruning._epoch_report import report_epoch


def quadratic(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10.0, 10.0)
    y = trial.suggest_int("y", 0, 10)
    for step in range(1, 4):
        trial.report(-(x - 2) ** 2 - y + step, step)
    return -((x - 2) ** 2) - y


quadratic.direction = "maximize"  # type: ignore[attr-defined]


def flaky(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    if x > 0.5:
        raise ValueError(f"x too large: {x:.3f}")
    return x


def log_lr(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
    return -abs(math.log10(lr) + 2)


def returns_nan(trial: optuna.Trial) -> float:
    trial.suggest_float("x", 0.0, 1.0)
    return math.nan


def plateaus(trial: optuna.Trial) -> float:
    """Improves for three steps, then stays flat at a constant learning rate: a plateau the
    diagnostic pruner stops. The rate comes through report_epoch: one reported value alone
    cannot tell a plateau from a run whose schedule already decayed."""
    trial.suggest_float("x", 0.0, 1.0)
    value = 0.0
    for step in range(1, 30):
        value = min(0.8, 0.1 + 0.25 * step)
        report_epoch(trial, step, val_acc=value, lr=0.01)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return value


plateaus.direction = "maximize"  # type: ignore[attr-defined]


def abandoned(trial: optuna.Trial) -> float:
    """Trial 0 is failed by "another worker" (as when its heartbeats stopped arriving) while it
    still trains and reports; the other trials run normally."""
    x = trial.suggest_float("x", 0.0, 1.0)
    for step in range(30):
        if step == 2 and trial.number == 0:
            other = optuna.storages.RDBStorage(os.environ["TUNESVC_STORAGE"])
            other.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        trial.report(x + step, step)
        time.sleep(0.01)
    return x
