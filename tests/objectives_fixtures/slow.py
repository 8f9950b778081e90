"""A plain objective that takes its time: it reports every step and sleeps between steps.

``$SLOW_STEPS`` steps (default 5) of ``$SLOW_STEP_S`` seconds (default 0.2). With
``$SLOW_MARK_DIR`` set, each step touches ``<dir>/<pid>-<trial number>`` so a fault test can
tell which process runs which trial and that it is mid-trial.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import optuna


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_int("x", 0, 3)
    y = trial.suggest_int("y", 0, 3)
    steps = int(os.environ.get("SLOW_STEPS", "5"))
    pause = float(os.environ.get("SLOW_STEP_S", "0.2"))
    mark = os.environ.get("SLOW_MARK_DIR")
    for step in range(steps):
        time.sleep(pause)
        if mark:
            (Path(mark) / f"{os.getpid()}-{trial.number}").write_text(str(step))
        trial.report(float(x + y + step), step)
    return float(10 * x + y)


objective.direction = "maximize"  # type: ignore[attr-defined]
