"""Where a learning curve is heading: pure functions over one curve's reported values.

A curve is a list of steps (epochs trained, 0 = before training) and the value reported at each,
higher is better (pass minus a loss). A trial's value is its best epoch, so what matters is
where the curve's *best so far* will be at the last epoch, the ``horizon``.

:func:`forecast` extrapolates from how fast the best so far rose over the last few epochs (its
``rate``, per epoch):

- ``high``, the optimistic end the pruner acts on: the curve keeps improving at its recent rate,
  slowing as ``1 / epoch`` from now on, which adds ``rate * step * ln(horizon / step)`` (plus
  ``floor`` times the best so far, the least a flat curve may still move). A power
  law ``a - b * t**-c`` that rises at this rate now adds less for any ``c > 0``, so this is the
  slowest slowdown a decelerating curve can have. Validation curves under a decaying learning rate
  often creep up steadily to the end; this bound still covers most of them, at the price of
  keeping mediocre trials a few epochs longer. On the first ``short_steps`` epochs it is
  multiplied by ``short_optimism``: one increment says little about a curve that starts slowly
  and then takes off (the short-horizon bias that Hyperband hedges with brackets).
- ``value``, the point forecast: the same, with the slowdown the curve itself shows (the decay
  exponent of its rate, measured over two consecutive windows), never above ``high``.
- ``low``: the best so far (a trial cannot end below its best epoch).
- ``gain_left``: what the rate over a longer window (a third of the run, at least
  ``stop_window`` epochs) would still add by the horizon: under ``min_gain`` the curve has
  converged for all practical purposes and the trial can stop early.

A noisy validation set moves the best so far by chance too. Given the evaluation ``noise`` (one
standard deviation, :func:`evaluation_noise`), ``high`` and ``gain_left`` both add what the
largest of the remaining evaluations' noise is expected to reach, ``noise * sqrt(2 ln(n + 1))``
for ``n`` epochs left: a dip of a noisy curve is not mistaken for a halt.

Example::

    f = forecast([1, 2, 3, 4], [0.50, 0.70, 0.78, 0.81], horizon=50)
    f.low, f.value, f.high  # 0.81, 0.87, 1.12: still 3 points per epoch, slowing down
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

RATE_WINDOW_FRACTION = 1 / 8
"""The rate behind ``high`` is measured over the last ``ceil(step * this)`` epochs (at least 1)."""

STOP_WINDOW_FRACTION = 1 / 3
"""The rate behind ``gain_left`` is measured over the last ``ceil(step * this)`` epochs..."""

STOP_WINDOW = 3
"""...and over at least this many epochs, so one noisy evaluation does not stop a trial."""

SHORT_STEPS = 2
"""Up to this step ``high``'s added gain is multiplied by ``SHORT_OPTIMISM``."""

SHORT_OPTIMISM = 3.0
"""See ``SHORT_STEPS``."""

FLOOR = 0.0025
"""Added to ``high``'s gain as a fraction of the best value so far: a flat curve may still move
this much (0.0025: 0.23 points at 90% accuracy, in percent or as a fraction alike)."""

RATE_NOISE_Z = 2.0
"""With evaluation noise ``sigma``, the rate behind ``high`` is taken this many standard errors
higher: a difference of two evaluations ``w`` epochs apart has standard error
``sigma * sqrt(2) / w``, so a noisy dip does not read as a halt."""

MAX_DECAY = 3.0
"""The largest decay exponent of the rate the point forecast believes."""


@dataclass(frozen=True)
class Forecast:
    """A curve's extrapolation to ``horizon`` from its values up to ``step`` (higher is better).

    ``low <= value <= high``; ``rate`` is the recent gain of the best so far per epoch;
    ``gain_left`` is the longer-window projection :func:`forecast` describes.
    """

    step: int
    horizon: int
    low: float
    value: float
    high: float
    rate: float
    gain_left: float


def forecast(
    steps: Sequence[int],
    values: Sequence[float],
    horizon: int,
    *,
    noise: float = 0.0,
    floor: float = FLOOR,
    short_optimism: float = SHORT_OPTIMISM,
) -> Forecast | None:
    """Extrapolate one curve (higher is better) to ``horizon``; see the module docstring.

    Steps may come in any order, repeat (the last value counts) or carry non-finite values
    (ignored). ``None`` when there is nothing to extrapolate from: no finite value at a step
    >= 1, or no earlier point to measure a rate against.
    """
    points = _clean(steps, values)
    if not points or points[-1][0] < 1:
        return None
    ts = [t for t, _ in points]
    best_upto = _running_best([v for _, v in points])
    step, best = ts[-1], best_upto[-1]
    if step >= horizon:
        return Forecast(step, horizon, best, best, best, 0.0, 0.0)
    w = max(1, math.ceil(step * RATE_WINDOW_FRACTION))
    rate = _rate(ts, best_upto, w)
    if rate is None:
        return None
    if noise > 0:
        rate += RATE_NOISE_Z * noise * math.sqrt(2) / w
    log_gain = rate * step * math.log(horizon / step)
    optimism = short_optimism if step <= SHORT_STEPS else 1.0
    luck = noise * math.sqrt(2 * math.log(horizon - step + 1)) if noise > 0 else 0.0
    high = best + optimism * (log_gain + floor * abs(best)) + luck
    value = min(high, best + _decayed_gain(ts, best_upto, rate, horizon, log_gain))
    window = max(STOP_WINDOW, math.ceil(step * STOP_WINDOW_FRACTION))
    slow = _rate(ts, best_upto, window)
    gain_left = math.inf if slow is None else slow * step * math.log(horizon / step) + luck
    return Forecast(step, horizon, best, value, high, rate, gain_left)


def evaluation_noise(steps: Sequence[int], values: Sequence[float]) -> float | None:
    """The evaluation noise of a curve (one standard deviation), from its later half, where it
    is nearly straight: second differences ``v[i+1] - 2 v[i] + v[i-1]`` cancel a locally linear
    trend and leave noise of variance ``6 sigma**2``, whose mean absolute value is
    ``sqrt(6) sqrt(2 / pi) sigma`` for Gaussian noise. (The mean, not the median: a validation
    accuracy counted on a few hundred samples moves in steps, and most of its second differences
    are 0.) ``None`` with fewer than three second differences there."""
    later = [v for _, v in _clean(steps, values)]
    later = later[len(later) // 2 :]
    d2 = [abs(later[i + 1] - 2 * later[i] + later[i - 1]) for i in range(1, len(later) - 1)]
    if len(d2) < 3:
        return None
    return sum(d2) / len(d2) / (math.sqrt(6) * math.sqrt(2 / math.pi))


def _clean(steps: Sequence[int], values: Sequence[float]) -> list[tuple[int, float]]:
    """(step, value) sorted by step, finite values only, the last report of a step winning."""
    by_step: dict[int, float] = {}
    for t, v in zip(steps, values, strict=False):
        if math.isfinite(v):
            by_step[int(t)] = float(v)
    return sorted(by_step.items())


def _running_best(values: list[float]) -> list[float]:
    out, best = [], -math.inf
    for v in values:
        best = max(best, v)
        out.append(best)
    return out


def _rate(ts: list[int], best_upto: list[float], window: int) -> float | None:
    """Gain of the best so far per epoch since the last step at least ``window`` epochs back."""
    i = _last_at_or_before(ts, ts[-1] - window)
    if i is None:
        return None
    return max(0.0, (best_upto[-1] - best_upto[i]) / (ts[-1] - ts[i]))


def _last_at_or_before(ts: list[int], step: int) -> int | None:
    lo, hi = 0, len(ts)  # ts is sorted: the last index with ts[i] <= step
    while lo < hi:
        mid = (lo + hi) // 2
        if ts[mid] <= step:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1 if lo > 0 else None


def _decayed_gain(
    ts: list[int], best_upto: list[float], rate: float, horizon: int, log_gain: float
) -> float:
    """The gain left if the rate keeps decaying as it did over the last two windows: for a
    rate ``r(t) ~ t**-(c + 1)``, ``rate * t / c * (1 - (t / horizon)**c)``."""
    step = ts[-1]
    window = max(1, math.ceil(step * RATE_WINDOW_FRACTION))
    i = _last_at_or_before(ts, step - window)
    if i is None or rate <= 0:
        return log_gain
    before = _rate(ts[: i + 1], best_upto[: i + 1], window)
    if not before:
        return log_gain
    mid_now, mid_before = (step + ts[i]) / 2, ts[i] - window / 2
    if mid_before <= 0 or mid_now <= mid_before:
        return log_gain
    c = -math.log(rate / before) / math.log(mid_now / mid_before) - 1
    c = min(MAX_DECAY, max(0.0, c))
    if c < 1e-6:
        return log_gain
    return rate * step / c * (1 - math.pow(step / horizon, c))
