"""The spec parser and the grid/random draws: pure, no database, no torch."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunesvc import SpecError, grid_cells, grid_points, parse_spec
from tunesvc.spec._spec import (
    ChoiceParam,
    RangeParam,
    parse_param,
    parse_param_option,
    parse_spec_dict,
    sample_random,
)

ISSUE_SPEC = """
objective = "digits_mlp"
direction = "maximize"
sampler = "grid"
n_trials = 16
epochs = 3
seed = 0
[params]
lr = { low = 1e-4, high = 1e-1, log = true, points = 4 }
weight_decay = { low = 1e-6, high = 1e-2, log = true, points = 4 }
dropout = { low = 0.0, high = 0.5 }
hidden = { values = [64, 128, 256] }
"""


def test_issue_example_parses() -> None:
    spec = parse_spec(ISSUE_SPEC)
    assert spec.sampler == "grid" and spec.n_trials == 16 and spec.epochs == 3
    assert spec.params["lr"] == RangeParam("lr", 1e-4, 1e-1, log=True, points=4)
    assert spec.params["dropout"] == RangeParam("dropout", 0.0, 0.5)
    assert spec.params["hidden"] == ChoiceParam("hidden", (64, 128, 256))


def test_log_points_are_decades() -> None:
    points = grid_points(parse_param("lr", {"low": 1e-4, "high": 1e-1, "log": True,
                                            "points": 4}))
    assert points == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1], rel=1e-12)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"low": 0.0, "high": 0.5, "points": 3}, [0.0, 0.25, 0.5]),
        ({"low": 1, "high": 10, "points": 4}, [1, 4, 7, 10]),
        ({"low": 1, "high": 10, "step": 3, "points": 10}, [1, 4, 7, 10]),
        ({"low": 0.0, "high": 1.0, "step": 0.5, "points": 5}, [0.0, 0.5, 1.0]),
        ({"low": 2, "high": 64, "log": True, "points": 6}, [2, 4, 8, 16, 32, 64]),
        ({"low": 1, "high": 3, "points": 9}, [1, 2, 3]),
        ({"values": ["sgd", "adamw"]}, ["sgd", "adamw"]),
        ([16, 32], [16, 32]),
        (0.5, [0.5]),
    ],
)
def test_grid_points(raw: object, expected: list[object]) -> None:
    points = grid_points(parse_param("p", raw))
    if isinstance(expected[0], float):
        assert points == pytest.approx(expected)
    else:
        assert points == expected
    assert [type(p) for p in points] == [type(e) for e in expected]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('objective = "x"\nsampler = "tpe"', "sampler: expected one of grid, random, got 'tpe'"),
        ('objective = "x"\n[params]\nlr = { low = 0.0, high = 1.0, log = true }',
         "params.lr: log = true needs low > 0, got low = 0.0"),
        ('objective = "x"\n[params]\nlr = { low = 1.0, high = 1.0 }',
         "params.lr: low must be below high, got low = 1.0, high = 1.0"),
        ('objective = "x"\n[params]\nlr = { low = 2.0, high = 1.0 }', "low must be below high"),
        ('objective = "x"\n[params]\nlr = { low = 1.0 }', "params.lr: missing 'high'"),
        ('objective = "x"\n[params]\nlr = { low = 1, high = 2, colour = 3 }',
         "params.lr: unknown key 'colour'"),
        ('objective = "x"\n[params]\nn = { low = 1, high = 10, step = 4 }',
         "params.n.step: step = 4 must divide high - low = 9"),
        ('objective = "x"\n[params]\nlr = { low = 1e-3, high = 1.0, log = true, step = 0.1 }',
         "step cannot be combined with log"),
        ('objective = "x"\n[params]\nh = { values = [] }',
         "params.h.values: expected a non-empty"),
        ('objective = "x"\nn_trials = 0',
         "n_trials: expected an integer >= 1, got n_trials = 0"),
        ('objective = "x"\nepochs = 2.5', "epochs: expected an integer >= 1"),
        ('objective = "x"\ndirection = "up"', "direction: expected maximize or minimize"),
        ('objective = "x"\npruner = "asha"', "pruner: expected one of"),
        ('objetive = "x"', "unknown spec key 'objetive'"),
        ("sampler = 'grid'", "objective: missing"),
        ("objective = ", "spec is not valid TOML"),
    ],
)
def test_bad_specs_name_the_field(text: str, message: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_spec(text)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_grid_param_without_points_is_an_error() -> None:
    with pytest.raises(SpecError, match=r"params.dropout: a grid needs finite points"):
        grid_points(parse_param("dropout", {"low": 0.0, "high": 0.5}))


def test_grid_cells_cover_the_product_once() -> None:
    spec = parse_spec(ISSUE_SPEC.replace("dropout = { low = 0.0, high = 0.5 }",
                                         "dropout = { low = 0.0, high = 0.5, points = 2 }"))
    cells = grid_cells(spec.params)
    assert len(cells) == 4 * 4 * 2 * 3
    assert len({tuple(sorted(c.items())) for c in cells}) == len(cells)


def test_pruner_table_form() -> None:
    spec = parse_spec('objective = "x"\n[pruner]\nname = "median"\nn_warmup_steps = 2\n')
    assert spec.pruner == "median" and spec.pruner_settings == {"n_warmup_steps": 2}


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("lr=1e-4..1e-1,log,points=4", RangeParam("lr", 1e-4, 1e-1, log=True, points=4)),
        ("n=1..9,int,step=2", RangeParam("n", 1.0, 9.0, is_int=True, step=2.0)),
        ("hidden=[64, 128]", ChoiceParam("hidden", (64, 128))),
        ("opt=adamw", ChoiceParam("opt", ("adamw",))),
        ("d={low=0.0, high=0.5, points=3}", RangeParam("d", 0.0, 0.5, points=3)),
    ],
)
def test_param_option(option: str, expected: object) -> None:
    assert parse_param_option(option)[1] == expected


@pytest.mark.parametrize("option", ["lr", "=1..2", "lr=1..x", "lr=1..2,cubic"])
def test_bad_param_option(option: str) -> None:
    with pytest.raises(SpecError, match="--param"):
        parse_param_option(option)


def test_random_draws_are_seeded_and_log_uniform() -> None:
    params = {"lr": parse_param("lr", {"low": 1e-6, "high": 1.0, "log": True}),
              "n": parse_param("n", {"low": 1, "high": 4})}
    a = sample_random(params, 2000, seed=3)
    assert a == sample_random(params, 2000, seed=3)
    assert a != sample_random(params, 2000, seed=4)
    decades = [math.floor(math.log10(d["lr"])) for d in a]
    counts = [decades.count(k) for k in range(-6, 0)]
    assert min(counts) > 2000 / 6 * 0.75, counts  # log-uniform: each decade about equally often
    assert {d["n"] for d in a} == {1, 2, 3, 4}


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(low=finite, width=st.floats(min_value=1e-3, max_value=1e6), points=st.integers(1, 12),
       log=st.booleans())
def test_grid_points_stay_in_range(low: float, width: float, points: int, log: bool) -> None:
    if log:
        low = abs(low) + 1e-3
    high = low + width
    values = grid_points(parse_param("p", {"low": low, "high": high, "log": log,
                                            "points": points}))
    assert 1 <= len(values) <= points
    assert all(low <= v <= high for v in values)
    assert values == sorted(values)


@settings(max_examples=200, deadline=None)
@given(low=st.integers(-50, 50), width=st.integers(1, 60), step=st.integers(1, 7),
       seed=st.integers(0, 10))
def test_int_draws_respect_step(low: int, width: int, step: int, seed: int) -> None:
    high = low + width - (width % step) if width >= step else low + step
    param = parse_param("n", {"low": low, "high": high, "step": step, "points": 5})
    for draw in sample_random({"n": param}, 20, seed):
        assert isinstance(draw["n"], int) and (draw["n"] - low) % step == 0
        assert low <= draw["n"] <= high
    assert all((v - low) % step == 0 for v in grid_points(param))


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text("abcdefgh_", min_size=1, max_size=6),
                       st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=4),
                                 st.lists(st.integers(), max_size=3)), max_size=5))
def test_parser_never_crashes_on_junk(junk: dict[str, object]) -> None:
    try:
        spec = parse_spec_dict({"objective": "x", "params": junk})
    except SpecError as e:
        assert str(e)
    else:
        assert parse_spec_dict(spec.to_dict()) == spec
