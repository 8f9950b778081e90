"""The pruner tunesvc had before issue 11, kept for the benchmarks to compare against (its code
left tunesvc when the forecast pruner replaced it)."""

from __future__ import annotations

import bisect
import math

import optuna


class RungRankPruner(optuna.pruners.BasePruner):
    """LearningCurvePruner as it was before issue 11, copied here to compare against: prune a
    diverged curve, early-stop a ``plateau`` (a plain metric's diagnoses), and at rungs 1, 3, 9,
    27 keep only the top third of the finished trials' best values up to that rung. (It keeps
    the finished trials' rung values as it goes, as the original's per-process memo did.)"""

    RUNGS = (1, 3, 9, 27)

    def __init__(self) -> None:
        self.stopped: set[int] = set()
        self._seen = 0
        self._scores: dict[int, list[float]] = {r: [] for r in self.RUNGS}

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        from tunesvc.curves._diagnosis import diagnose_values

        steps = sorted(trial.intermediate_values)
        values = [trial.intermediate_values[s] for s in steps]
        label = diagnose_values(values, "maximize", steps=steps).label
        if label == "diverged":
            return True
        if label == "plateau":
            self.stopped.add(trial.number)
            return False
        step = steps[-1]
        rung = max(r for r in self.RUNGS if r <= step)
        if any(rung <= s < step for s in steps):
            return False
        trials = study.get_trials(deepcopy=False)  # sequential: all but this one finished
        for t in trials[self._seen:trial.number]:
            for r in self.RUNGS:
                if max(t.intermediate_values, default=-1) >= r:
                    best = max(v for s, v in t.intermediate_values.items() if s <= r)
                    bisect.insort(self._scores[r], best)
        self._seen = max(self._seen, trial.number)
        scores = self._scores[rung]
        if not scores:
            return False
        mine = max(v for s, v in trial.intermediate_values.items() if s <= rung)
        keep = max(1, math.ceil(len(scores) / 3))
        return mine < scores[len(scores) - keep]
