"""The slot plan: slot -> params, pure (no database, no torch). Table-driven and property tests."""

from __future__ import annotations

import math
import statistics
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunesvc import SpecError
from tunesvc.spec._plan import DEFAULT_RANDOM_TRIALS, Plan, permute
from tunesvc.spec._spec import (
    ChoiceParam,
    RangeParam,
    grid_cells,
    parse_param,
    parse_spec_dict,
)

GRID = {
    "lr": {"low": 1e-4, "high": 1e-1, "log": True, "points": 4},
    "dropout": {"low": 0.0, "high": 0.5, "points": 3},
    "hidden": {"values": [64, 128, 256]},
}


def _plan(sampler: str, params: dict[str, object], **extra: object) -> Plan:
    return Plan.from_spec(parse_spec_dict({"objective": "x", "sampler": sampler,
                                           "params": params, **extra}))


@pytest.mark.parametrize(
    ("sampler", "params", "extra", "budget", "size"),
    [
        ("grid", GRID, {}, 36, 36),
        ("grid", GRID, {"n_trials": 36}, 36, 36),
        ("grid", GRID, {"n_trials": 5}, 5, 36),
        ("grid", {"h": [1]}, {}, 1, 1),
        ("random", GRID, {}, DEFAULT_RANDOM_TRIALS, None),
        ("random", GRID, {"n_trials": 100_000}, 100_000, None),
        ("random", {}, {"n_trials": 3}, 3, None),
    ],
)
def test_budget_and_size(
    sampler: str, params: dict[str, object], extra: dict[str, object], budget: int,
    size: int | None,
) -> None:
    plan = _plan(sampler, params, **extra)
    assert (plan.budget, plan.size) == (budget, size)


@pytest.mark.parametrize(
    ("params", "extra", "message"),
    [
        ({}, {}, "a grid study needs at least one param"),
        (GRID, {"n_trials": 37}, "the grid has 36 cells, got n_trials = 37"),
        ({"lr": {"low": 0.1, "high": 1.0}}, {}, "a grid needs finite points"),
    ],
)
def test_a_grid_it_cannot_run_is_refused(
    params: dict[str, object], extra: dict[str, object], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        _plan("grid", params, **extra)


@pytest.mark.parametrize("slot", [-1, 36, 10**6])
def test_a_slot_outside_the_budget_is_refused(slot: int) -> None:
    with pytest.raises(ValueError, match="0 <= slot < 36"):
        _plan("grid", GRID).params(slot)


def test_a_full_grid_runs_its_cells_in_grid_cells_order() -> None:
    plan = _plan("grid", GRID)
    spec = parse_spec_dict({"objective": "x", "sampler": "grid", "params": GRID})
    assert [plan.params(s) for s in range(plan.budget)] == grid_cells(spec.params)


def test_a_huge_grid_decodes_a_slot_without_building_its_cells() -> None:
    # 10 params of 10 points: 10**10 cells, far too many to list.
    params = {f"p{i}": {"low": 0, "high": 9, "points": 10} for i in range(10)}
    plan = _plan("grid", params)
    assert plan.size == 10**10
    assert plan.params(1234567890) == {f"p{i}": int(d) for i, d in enumerate("1234567890")}
    subset = _plan("grid", params, n_trials=100_000)
    cells = {tuple(subset.params(s).values()) for s in range(0, 100_000, 997)}
    assert len(cells) == len(range(0, 100_000, 997))


axis_sizes = st.lists(st.integers(1, 5), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(sizes=axis_sizes, seed=st.integers(-(2**40), 2**40), data=st.data())
def test_a_grid_subset_is_distinct_cells_of_the_grid_seeded(
    sizes: list[int], seed: int, data: st.DataObject
) -> None:
    params = {f"p{i}": {"values": list(range(n))} for i, n in enumerate(sizes)}
    size = math.prod(sizes)
    budget = data.draw(st.integers(1, size))
    plan = _plan("grid", params, n_trials=budget, seed=seed)
    spec = parse_spec_dict({"objective": "x", "sampler": "grid", "params": params})
    every = grid_cells(spec.params)
    chosen = [plan.params(s) for s in range(budget)]
    assert all(c in every for c in chosen)
    assert len({tuple(c.values()) for c in chosen}) == budget  # no cell twice
    assert chosen == [_plan("grid", params, n_trials=budget, seed=seed).params(s)
                      for s in range(budget)]
    if budget == size:
        assert chosen == every  # the whole grid, in order: every cell exactly once


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 3000), seed=st.integers(-(2**70), 2**70))
def test_permute_is_a_permutation(size: int, seed: int) -> None:
    assert sorted(permute(i, size, seed) for i in range(size)) == list(range(size))


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 17, 1000, 2**20 + 1, 10**30])
def test_permute_stays_in_range_and_depends_on_the_seed(size: int) -> None:
    firsts = [permute(0, size, seed) for seed in range(40)]
    assert all(0 <= f < size for f in firsts)
    if size >= 1000:
        assert len(set(firsts)) > 30  # different seeds, different subsets


def test_a_grid_subset_is_spread_evenly_over_seeds() -> None:
    # Each of 12 cells should be picked by about a quarter of 2,000 seeded 3-cell subsets.
    picks = Counter(permute(s, 12, seed) for seed in range(2000) for s in range(3))
    assert set(picks) == set(range(12))
    assert all(400 < n < 600 for n in picks.values()), picks


RANDOM = {
    "lr": {"low": 1e-5, "high": 1e-1, "log": True},
    "dropout": {"low": 0.0, "high": 0.5},
    "hidden": {"low": 16, "high": 1024, "log": True},
    "layers": {"low": 1, "high": 9, "step": 2},
    "momentum": {"low": 0.0, "high": 0.9, "step": 0.3},
    "act": {"values": ["relu", "gelu", "tanh"]},
}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(-(2**62), 2**62), slot=st.integers(0, 10**9 - 1))
def test_random_draws_lie_in_range_and_keep_their_type(seed: int, slot: int) -> None:
    plan = _plan("random", RANDOM, n_trials=10**9, seed=seed)
    draw = plan.params(slot)
    assert 1e-5 <= draw["lr"] <= 1e-1 and isinstance(draw["lr"], float)
    assert 0.0 <= draw["dropout"] <= 0.5
    assert isinstance(draw["hidden"], int) and 16 <= draw["hidden"] <= 1024
    assert isinstance(draw["layers"], int) and draw["layers"] in (1, 3, 5, 7, 9)
    assert any(math.isclose(draw["momentum"], v) for v in (0.0, 0.3, 0.6, 0.9))
    assert draw["act"] in ("relu", "gelu", "tanh")
    for name, value in draw.items():
        assert plan.distributions()[name]._contains(
            plan.distributions()[name].to_internal_repr(value))
    assert plan.params(slot) == draw  # the same (seed, slot), the same draw


def test_a_draw_depends_on_seed_and_slot_only() -> None:
    plan = _plan("random", RANDOM, n_trials=1000, seed=7)
    forwards = [plan.params(s) for s in range(50)]
    backwards = [plan.params(s) for s in reversed(range(50))][::-1]
    assert forwards == backwards
    assert _plan("random", RANDOM, n_trials=5, seed=7).params(3) == forwards[3]  # budget aside
    assert len({d["lr"] for d in forwards}) == 50
    assert _plan("random", RANDOM, n_trials=1000, seed=8).params(0) != forwards[0]
    assert _plan("random", RANDOM, n_trials=1000, seed=-7).params(0) != forwards[0]


@pytest.mark.parametrize(
    ("param", "center"),
    [
        (parse_param("lr", {"low": 1e-6, "high": 1e-2, "log": True}), 1e-4),  # geometric
        (parse_param("x", {"low": 0.0, "high": 10.0}), 5.0),
        # ints: log-uniform on [low - 0.5, high + 0.5], then rounded (as Optuna's sampler)
        (parse_param("n", {"low": 1, "high": 10_000, "log": True}), math.sqrt(0.5 * 10_000.5)),
    ],
)
def test_random_draws_are_spaced_as_declared(param: RangeParam, center: float) -> None:
    plan = Plan("random", {param.name: param}, seed=0, budget=4000)
    median = statistics.median(float(plan.params(s)[param.name] or 0) for s in range(4000))
    assert center / 1.3 < median < center * 1.3


def test_choices_are_drawn_evenly() -> None:
    plan = Plan("random", {"c": ChoiceParam("c", ("a", "b", "c"))}, seed=1, budget=3000)
    counts = Counter(plan.params(s)["c"] for s in range(3000))
    assert all(900 < n < 1100 for n in counts.values()), counts
