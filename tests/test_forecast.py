"""The curve forecast: a pure function over one curve's values, tested without Optuna."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunesvc.curves._forecast import FLOOR, SHORT_OPTIMISM, Forecast, evaluation_noise, forecast

NAN = math.nan


def log_gain(rate: float, step: int, horizon: int) -> float:
    return rate * step * math.log(horizon / step)


@pytest.mark.parametrize(
    ("steps", "values", "horizon", "low", "high"),
    [
        # Rising 0.03 per epoch at epoch 4: 0.81 + 0.03 * 4 * ln(50 / 4) + the floor.
        ([1, 2, 3, 4], [0.5, 0.7, 0.78, 0.81], 50, 0.81,
         0.81 + log_gain(0.03, 4, 50) + FLOOR * 0.81),
        # Flat: only the floor.
        ([1, 2, 3, 4, 5], [0.6] * 5, 20, 0.6, 0.6 * (1 + FLOOR)),
        # Past its peak: the best so far does not fall, so its rate is 0.
        ([1, 2, 3, 4, 5], [0.5, 0.9, 0.8, 0.7, 0.6], 20, 0.9, 0.9 * (1 + FLOOR)),
        # Epoch 2: one increment says little, so the added gain is SHORT_OPTIMISM times larger.
        ([1, 2], [0.2, 0.3], 10, 0.3, 0.3 + SHORT_OPTIMISM * (log_gain(0.1, 2, 10) + FLOOR * 0.3)),
        # Unordered steps, a repeated step (the last report counts), NaN ignored.
        ([3, 1, 2, 2, 4], [0.78, 0.5, 0.1, 0.7, NAN], 50, 0.78,
         0.78 + log_gain(0.08, 3, 50) + FLOOR * 0.78),
        # Epoch 0 (before training) counts as the earlier point at epoch 1.
        ([0, 1], [0.1, 0.4], 10, 0.4, 0.4 + SHORT_OPTIMISM * (log_gain(0.3, 1, 10) + FLOOR * 0.4)),
        # At or past the horizon nothing is left to gain.
        ([1, 2, 3], [0.5, 0.6, 0.7], 3, 0.7, 0.7),
        # A loss, minimized, is forecast as its negative.
        ([1, 2, 3, 4], [-2.0, -1.0, -0.6, -0.5], 40, -0.5,
         -0.5 + log_gain(0.1, 4, 40) + FLOOR * 0.5),
    ],
)
def test_forecast_table(
    steps: list[int], values: list[float], horizon: int, low: float, high: float
) -> None:
    f = forecast(steps, values, horizon)
    assert f is not None
    assert f.low == pytest.approx(low)
    assert f.high == pytest.approx(high)
    assert f.low <= f.value <= f.high


@pytest.mark.parametrize(
    ("steps", "values"),
    [
        ([], []),
        ([1], [0.5]),  # one point: no rate yet
        ([0], [0.1]),  # only before training
        ([1, 2, 3], [NAN, math.inf, NAN]),
        ([1, 2], [NAN, 0.5]),
    ],
)
def test_nothing_to_extrapolate(steps: list[int], values: list[float]) -> None:
    assert forecast(steps, values, 50) is None


def test_gain_left_is_the_slow_rate_over_a_third_of_the_run() -> None:
    steps = list(range(1, 13))
    values = [0.5 + 0.01 * s for s in steps]  # 0.01 per epoch, steadily
    f = forecast(steps, values, 48)
    assert f is not None
    assert f.gain_left == pytest.approx(log_gain(0.01, 12, 48))
    flat_end = values[:8] + [values[7]] * 4  # no new best over the last 4 epochs
    g = forecast(steps, flat_end, 48)
    assert g is not None and g.gain_left == 0.0
    # Too short for its window (3 epochs at least): nothing to stop on.
    h = forecast([1, 2, 3], [0.5, 0.5, 0.5], 48)
    assert h is not None and h.gain_left == math.inf


def test_point_forecast_believes_a_curve_that_slows_down() -> None:
    steps = list(range(1, 17))
    saturating = [0.9 - 0.4 * 0.7**s for s in steps]  # gains shrink by 30% per epoch
    f = forecast(steps, saturating, 50)
    assert f is not None
    assert f.value < f.low + 0.25 * (f.high - f.low)
    steady = [0.5 + 0.01 * s for s in steps]  # no slowdown: the point forecast is the bound
    g = forecast(steps, steady, 50)
    assert g is not None and g.value == pytest.approx(g.high - FLOOR * g.low)


curves = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=60),
        st.one_of(st.floats(min_value=-10, max_value=10), st.just(NAN), st.just(math.inf)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(points=curves, horizon=st.integers(min_value=1, max_value=80))
def test_forecast_properties(points: list[tuple[int, float]], horizon: int) -> None:
    steps = [s for s, _ in points]
    values = [v for _, v in points]
    f = forecast(steps, values, horizon)
    if f is None:
        return
    assert isinstance(f, Forecast)
    last = {s: v for s, v in points if math.isfinite(v)}
    assert f.low == max(last.values())
    assert f.step == max(last)
    assert f.low <= f.value <= f.high
    assert f.rate >= 0 and f.gain_left >= 0
    longer = forecast(steps, values, horizon + 10)
    if f.step < horizon:  # (at the horizon one point is enough: nothing is left to gain)
        assert longer is not None and longer.high >= f.high


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(min_value=0.01, max_value=1.0), min_size=2, max_size=30),
    scale=st.floats(min_value=0.01, max_value=100),
)
def test_forecast_scales_with_the_metric(values: list[float], scale: float) -> None:
    """Accuracy in percent or as a fraction: the same forecast, in its own units."""
    steps = list(range(1, len(values) + 1))
    f = forecast(steps, values, 50)
    g = forecast(steps, [v * scale for v in values], 50)
    assert f is not None and g is not None
    for a, b in ((f.low, g.low), (f.value, g.value), (f.high, g.high), (f.rate, g.rate)):
        assert b == pytest.approx(a * scale, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("values", "noise"),
    [
        ([0.5 + 0.01 * i for i in range(12)], 0.0),  # a straight line has none
        ([0.9] * 12, 0.0),
        # Alternating +-0.01 around a flat line: |second differences| are all 0.04.
        ([0.9 + 0.01 * (-1) ** i for i in range(12)], 0.04 / math.sqrt(6 * 2 / math.pi)),
        ([0.9] * 4, None),  # its later half has too few points
    ],
)
def test_evaluation_noise(values: list[float], noise: float | None) -> None:
    got = evaluation_noise(list(range(1, len(values) + 1)), values)
    assert got == (None if noise is None else pytest.approx(noise, abs=1e-12))


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=2, max_size=30),
    noise=st.floats(min_value=0.0, max_value=0.1),
)
def test_noise_only_widens_the_forecast(values: list[float], noise: float) -> None:
    steps = list(range(1, len(values) + 1))
    quiet = forecast(steps, values, 40)
    noisy = forecast(steps, values, 40, noise=noise)
    assert quiet is not None and noisy is not None
    assert noisy.low == quiet.low
    assert noisy.high >= quiet.high and noisy.gain_left >= quiet.gain_left
