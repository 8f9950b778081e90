"""The pruning policy: pure decisions on in-memory data, no Optuna and no database.

For a running trial at its last reported step the policy answers ``continue``, ``prune`` or
``early_stop`` from two things only: the trial's own reported values, and
:class:`FinishedTrials`, a compact summary of the study's finished trials that the caller keeps
up to date (:meth:`FinishedTrials.add`).

- **prune** when even the optimistic end of the curve's forecast
  (:func:`~tunesvc.curves._forecast.forecast`, ``high``, allowing for the evaluation noise the
  completed trials' curves show) stays below the bar: the best value a completed trial reached.
  Such a trial cannot become the study's best unless its curve bends upwards later, which a
  concave extrapolation does not foresee.
- **early_stop** when the curve has as good as converged: at its rate over the last third of the
  run its best value would improve by less than ``min_gain`` (a fraction of it) by the last
  epoch. The trial completes with its best value. The first trial of a study (no trial
  completed yet) stops at ten times ``min_gain``: it is a scout whose result sets the first bar.
  Never in the last tenth of the run, where stopping saves little and the last epochs of a
  decaying learning rate still count.

The last epoch (``horizon``) is ``max_epochs`` when given, else the last step of the longest
completed trial; without either the policy only continues.

Example::

    finished = FinishedTrials()
    finished.add(0, "COMPLETE", {1: 0.50, 2: 0.80, 3: 0.90})
    verdict = decide_policy({1: 0.2, 2: 0.21}, finished, "maximize", PolicySettings(max_epochs=3))
    verdict.action  # "prune": 0.21 rising 0.01 per epoch cannot reach 0.90 by epoch 3
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from tunesvc.curves import Forecast, evaluation_noise, forecast

Action = Literal["continue", "prune", "early_stop"]
Direction = Literal["maximize", "minimize"]
Evidence = dict[str, float | int | str | None]

FIRST_TRIAL_GAIN_FACTOR = 10.0
"""The first trial of a study stops early at this many times ``min_gain``."""

STOP_BEFORE = 0.9
"""No early stop past this fraction of the horizon."""


@dataclass(frozen=True)
class PolicySettings:
    """The policy's knobs.

    Attributes:
        max_epochs: The last step a trial reports (its epochs), or ``None``: the last step of the
            longest completed trial.
        min_gain: Early-stop a trial whose best value would improve by less than this fraction
            of it by the last epoch (0.0025: 0.23 points at 90% accuracy, whether reported in
            percent or as a fraction). 0: never.
    """

    max_epochs: int | None = None
    min_gain: float = 0.0025

    def __post_init__(self) -> None:
        m = self.max_epochs
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ValueError(f"max_epochs: expected an int >= 1 or None, got {m!r}")
        g = self.min_gain
        if isinstance(g, bool) or not isinstance(g, int | float) or not (0 <= g < math.inf):
            raise ValueError(f"min_gain: expected a finite number >= 0, got {g!r}")


class FinishedTrials:
    """What the policy needs to know about a study's finished trials, kept up to date by
    :meth:`add`: each completed trial's best reported value (both its highest and its lowest,
    so one summary serves either direction), the evaluation noise of its curve, the longest
    completed run, and counts.

    About 24 bytes per completed trial and one bit per trial number: 100,000 finished trials
    take well under 3 MB. Not thread-safe: the caller serializes :meth:`add` and the decisions
    that read it.
    """

    def __init__(self) -> None:
        self._seen = bytearray()
        self._highs = array("d")  # sorted: each completed trial's highest reported value
        self._lows = array("d")  # sorted: each completed trial's lowest reported value
        self._noises = array("d")  # sorted: each completed trial's evaluation noise
        self.horizon: int | None = None
        """The last step of the longest completed trial, ``None`` before one completes."""
        self.completed = 0
        self.pruned = 0

    def add(
        self, number: int, state: str | Enum, values_by_step: Mapping[int, float]
    ) -> None:
        """Count trial ``number``, finished in ``state`` (``"COMPLETE"`` or ``"PRUNED"``, or
        Optuna's ``TrialState``; other states are ignored), with the values it reported by
        step. Adding the same number again changes nothing."""
        name = state.name if isinstance(state, Enum) else str(state).upper()
        if name not in ("COMPLETE", "PRUNED") or number < 0 or self.has(number):
            return
        if number >= len(self._seen) * 8:
            self._seen.extend(bytes(max(len(self._seen), number // 8 + 1 - len(self._seen))))
        self._seen[number // 8] |= 1 << (number % 8)
        if name == "PRUNED":
            self.pruned += 1
            return
        self.completed += 1
        finite = [(s, v) for s, v in values_by_step.items() if math.isfinite(v)]
        if finite:
            bisect.insort(self._highs, max(v for _, v in finite))
            bisect.insort(self._lows, min(v for _, v in finite))
        noise = evaluation_noise(list(values_by_step), list(values_by_step.values()))
        if noise is not None:
            bisect.insort(self._noises, noise)
        last = max(values_by_step, default=None)
        if last is not None and (self.horizon is None or last > self.horizon):
            self.horizon = last

    def has(self, number: int) -> bool:
        """Whether trial ``number`` was added."""
        i = number // 8
        return 0 <= number and i < len(self._seen) and bool(self._seen[i] >> (number % 8) & 1)

    def best(self, direction: Direction) -> float | None:
        """The best value a completed trial reported, ``None`` before one completes."""
        if not self._highs:
            return None
        return self._highs[-1] if direction == "maximize" else self._lows[0]

    def noise(self) -> float:
        """The median evaluation noise of the completed trials' curves (one standard deviation,
        :func:`~tunesvc.curves._forecast.evaluation_noise`), 0 before one completes."""
        n = len(self._noises)
        if not n:
            return 0.0
        return (self._noises[n // 2] + self._noises[(n - 1) // 2]) / 2

    def rank(self, value: float, direction: Direction) -> int:
        """Where ``value`` would rank among the completed trials' best values (1 = best)."""
        if direction == "maximize":
            return len(self._highs) - bisect.bisect_right(self._highs, value) + 1
        return bisect.bisect_left(self._lows, value) + 1


@dataclass(frozen=True)
class Verdict:
    """The policy's answer: the action, a sentence saying why and the numbers behind it."""

    action: Action
    reason: str
    evidence: Evidence


def decide_policy(
    values: Mapping[int, float],
    finished: FinishedTrials,
    direction: Direction,
    settings: PolicySettings,
) -> Verdict:
    """Decide for a running trial that reported ``values`` (step -> value) so far."""
    sign = 1.0 if direction == "maximize" else -1.0
    steps = sorted(values)
    horizon = settings.max_epochs or finished.horizon
    step = steps[-1] if steps else None
    if horizon is None or step is None or step >= horizon:
        return Verdict("continue", "", {})
    noise = finished.noise()
    f = forecast(steps, [sign * values[s] for s in steps], horizon, noise=noise)
    if f is None:
        return Verdict("continue", "", {})
    bar = finished.best(direction)
    evidence = _evidence(f, sign, finished, direction, bar)
    if bar is not None and f.high < sign * bar:
        return Verdict(
            "prune",
            f"at epoch {f.step}, improving {f.rate:.3g} per epoch and slowing, it would end near "
            f"{sign * f.value:.4g} and at best {sign * f.high:.4g} by epoch {horizon}, short of "
            f"the best completed trial's {bar:.4g}",
            evidence,
        )
    factor = FIRST_TRIAL_GAIN_FACTOR if bar is None else 1.0
    min_gain = settings.min_gain * factor * abs(f.low)
    if f.gain_left < min_gain and f.step <= STOP_BEFORE * horizon:
        return Verdict(
            "early_stop",
            f"converged: at epoch {f.step} its best {sign * f.low:.4g} would move by under "
            f"{min_gain:.3g} by epoch {horizon} ({f.gain_left:.3g} at its recent rate)",
            {**evidence, "gain_left": f.gain_left, "min_gain": min_gain},
        )
    return Verdict("continue", "", evidence)


def _evidence(
    f: Forecast, sign: float, finished: FinishedTrials, direction: Direction, bar: float | None
) -> Evidence:
    return {
        "best_so_far": sign * f.low,
        "forecast": sign * f.value,
        "forecast_optimistic": sign * f.high,
        "horizon": f.horizon,
        "bar": bar,
        "rank": finished.rank(sign * f.high, direction) if bar is not None else None,
        "completed_trials": finished.completed,
        "noise": finished.noise(),
    }
