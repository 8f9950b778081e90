"""The pruning policy and its summary of finished trials: pure, no Optuna, no database."""

from __future__ import annotations

import math
import tracemalloc
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunesvc.pruning._policy import (
    FIRST_TRIAL_GAIN_FACTOR,
    FinishedTrials,
    PolicySettings,
    decide_policy,
)

NAN = math.nan


def rising(quality: float, epochs: int, speed: float = 0.7) -> dict[int, float]:
    """A curve rising towards ``quality``, epochs 1..epochs."""
    return {e: quality * (1 - speed**e) for e in range(1, epochs + 1)}


def board(*completed: float, pruned: int = 0, epochs: int = 20) -> FinishedTrials:
    b = FinishedTrials()
    for i, q in enumerate(completed):
        b.add(i, "COMPLETE", rising(q, epochs))
    for j in range(pruned):
        b.add(len(completed) + j, "PRUNED", {1: 0.1, 2: 0.12})
    return b


def test_finished_trials_summary() -> None:
    b = FinishedTrials()
    assert (b.best("maximize"), b.best("minimize"), b.horizon) == (None, None, None)
    b.add(3, "COMPLETE", {1: 0.5, 2: 0.7, 5: 0.6})
    b.add(1, "PRUNED", {1: 0.9})  # pruned: counted, never the bar
    b.add(0, "COMPLETE", {1: 0.2, 8: 0.4, 9: NAN})
    b.add(7, "FAIL", {1: 0.99})  # neither finished kind: ignored
    b.add(4, "RUNNING", {1: 0.99})
    assert (b.completed, b.pruned, b.horizon) == (2, 1, 9)
    assert b.best("maximize") == 0.7 and b.best("minimize") == 0.2
    assert [b.has(n) for n in range(9)] == [True, True, False, True, False] + [False] * 4
    assert b.rank(0.8, "maximize") == 1 and b.rank(0.5, "maximize") == 2
    assert [b.rank(x, "minimize") for x in (0.1, 0.45, 0.6)] == [1, 2, 3]


def test_adding_a_trial_twice_changes_nothing() -> None:
    b = FinishedTrials()
    for _ in range(3):
        b.add(5, "COMPLETE", {1: 0.5, 2: 0.8})
        b.add(6, "PRUNED", {1: 0.1})
    assert (b.completed, b.pruned) == (1, 1)
    assert b.rank(0.7, "maximize") == 2  # one completed value above it, not three


@settings(max_examples=100, deadline=None)
@given(
    trials=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=5000),
            st.sampled_from(["COMPLETE", "PRUNED", "FAIL"]),
            st.lists(st.floats(min_value=-5, max_value=5), min_size=1, max_size=5),
        ),
        max_size=30,
    ),
    data=st.data(),
)
def test_the_summary_does_not_depend_on_order_or_repeats(
    trials: list[tuple[int, str, list[float]]], data: st.DataObject
) -> None:
    first = {}
    for number, state, values in trials:
        first.setdefault(number, (state, values))  # what a study would hold: one per number
    order = data.draw(st.permutations(trials + trials))
    a, b = FinishedTrials(), FinishedTrials()
    for number, (state, values) in first.items():
        a.add(number, state, dict(enumerate(values)))
    for number, _, _ in order:
        state, values = first[number]
        b.add(number, state, dict(enumerate(values)))
    assert (a.completed, a.pruned, a.horizon) == (b.completed, b.pruned, b.horizon)
    for direction in ("maximize", "minimize"):
        assert a.best(direction) == b.best(direction)  # type: ignore[arg-type]


def test_memory_at_100000_finished_trials() -> None:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    b = FinishedTrials()
    for n in range(100_000):
        if n % 10 == 0:
            b.add(n, "COMPLETE", {e: 0.5 + e / 100 for e in range(1, 21)})
        else:
            b.add(n, "PRUNED", {1: 0.1, 2: 0.2})
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert (b.completed, b.pruned) == (10_000, 90_000)
    assert used < 2_000_000  # bytes: ~16 per completed trial, one bit per number


S = PolicySettings(max_epochs=20)


@pytest.mark.parametrize(
    ("name", "values", "finished", "settings_", "action"),
    [
        # No horizon (no max_epochs, nothing completed): nothing to forecast to.
        ("no horizon", rising(0.1, 3), FinishedTrials(), PolicySettings(), "continue"),
        # No completed trial: no bar, never a prune (the scout may still stop).
        ("no bar", {1: 0.1, 2: 0.1, 3: 0.1}, FinishedTrials(), S, "continue"),
        # Flat at 0.3 while a trial completed at 0.9: pruned.
        ("hopeless", {1: 0.3, 2: 0.3, 3: 0.3}, board(0.9), S, "prune"),
        # Low but rising fast: it could still get there.
        ("slow starter", {1: 0.05, 2: 0.3, 3: 0.55}, board(0.9), S, "continue"),
        # One increment at epoch 2 is trusted less (short-horizon optimism).
        ("epoch 2", {1: 0.335, 2: 0.4}, board(0.9), S, "continue"),
        ("epoch 2, flat", {1: 0.3, 2: 0.3}, board(0.9), S, "prune"),
        # Converged above the bar: completes early with its best value.
        ("converged", {e: 0.95 for e in range(1, 9)}, board(0.9), S, "early_stop"),
        # ...but never in the last tenth of the run.
        ("converged late", {e: 0.95 for e in range(1, 20)}, board(0.9), S, "continue"),
        # Past the horizon: nothing left to decide.
        ("done", rising(0.1, 20), board(0.9), S, "continue"),
    ],
)
def test_decide_policy_table(
    name: str,
    values: dict[int, float],
    finished: FinishedTrials,
    settings_: PolicySettings,
    action: str,
) -> None:
    assert decide_policy(values, finished, "maximize", settings_).action == action, name


def test_minimize_mirrors_maximize() -> None:
    losses = FinishedTrials()
    losses.add(0, "COMPLETE", {e: 2.0 * 0.7**e for e in range(1, 21)})
    flat = {1: 1.5, 2: 1.5, 3: 1.5}
    verdict = decide_policy(flat, losses, "minimize", S)
    assert verdict.action == "prune"
    assert verdict.evidence["bar"] == pytest.approx(2.0 * 0.7**20)
    assert verdict.evidence["best_so_far"] == 1.5
    assert verdict.evidence["forecast_optimistic"] < 1.5  # the optimistic end of a loss is lower
    falling = {1: 1.5, 2: 0.9, 3: 0.5}
    assert decide_policy(falling, losses, "minimize", S).action == "continue"


def test_a_prune_carries_its_reason_and_evidence() -> None:
    verdict = decide_policy({1: 0.3, 2: 0.3, 3: 0.31}, board(0.9, 0.8, 0.85), "maximize", S)
    assert verdict.action == "prune"
    e = verdict.evidence
    assert e["bar"] == pytest.approx(max(rising(0.9, 20).values()))
    assert e["best_so_far"] == 0.31
    assert e["best_so_far"] <= e["forecast"] <= e["forecast_optimistic"] < e["bar"]
    assert (e["rank"], e["completed_trials"], e["horizon"]) == (4, 3, 20)
    assert "short of the best completed trial" in verdict.reason


def test_the_first_trial_is_a_scout_that_stops_sooner() -> None:
    # Gaining 0.001 per epoch at epoch 10 of 20: 0.001 * 10 * ln 2 = 0.0069 left, under
    # ten times min_gain of its best (0.025 * 0.5) but over min_gain itself.
    values = {e: 0.49 + 0.001 * e for e in range(1, 11)}
    first = decide_policy(values, FinishedTrials(), "maximize", S)
    assert first.action == "early_stop"
    assert first.evidence["min_gain"] == pytest.approx(
        S.min_gain * FIRST_TRIAL_GAIN_FACTOR * 0.5
    )
    assert decide_policy(values, board(0.45), "maximize", S).action == "continue"
    never = PolicySettings(max_epochs=20, min_gain=0)
    assert decide_policy(values, FinishedTrials(), "maximize", never).action == "continue"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_epochs": 0}, "max_epochs: expected an int >= 1 or None, got 0"),
        ({"max_epochs": 2.5}, "max_epochs: expected an int >= 1 or None, got 2.5"),
        ({"min_gain": -0.1}, "min_gain: expected a finite number >= 0, got -0.1"),
        ({"min_gain": math.inf}, "min_gain: expected a finite number >= 0, got inf"),
        ({"min_gain": True}, "min_gain: expected a finite number >= 0, got True"),
    ],
)
def test_settings_validate(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        PolicySettings(**kwargs)  # type: ignore[arg-type]


Direction = Literal["maximize", "minimize"]
curve = st.lists(st.floats(min_value=0.01, max_value=1.0), min_size=1, max_size=25)


@settings(max_examples=300, deadline=None)
@given(
    values=curve,
    completed=st.lists(curve, max_size=4),
    power=st.integers(min_value=-7, max_value=7),
    horizon=st.integers(min_value=2, max_value=40),
)
def test_decisions_do_not_depend_on_units_or_direction(
    values: list[float], completed: list[list[float]], power: int, horizon: int
) -> None:
    """Percent or fraction, accuracy maximized or its negative minimized: the same action.
    (Scaling by a power of two is exact in floating point, so the actions must be equal.)"""

    def decide(factor: float, direction: Direction) -> str:
        b = FinishedTrials()
        for i, c in enumerate(completed):
            b.add(i, "COMPLETE", {e: factor * v for e, v in enumerate(c, 1)})
        run = {e: factor * v for e, v in enumerate(values, 1)}
        return decide_policy(run, b, direction, PolicySettings(max_epochs=horizon)).action

    base = decide(1.0, "maximize")
    assert decide(2.0**power, "maximize") == base
    assert decide(-(2.0**power), "minimize") == base
