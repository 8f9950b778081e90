"""Refine: the pure range narrowing (tables and properties), then `study refine` on storage."""

from __future__ import annotations

import math

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tunesvc import StudyExistsError, StudyNotFoundError, TunesvcError, service
from tunesvc.cli import app
from tunesvc.spec import ChoiceParam, RangeParam, parse_spec_dict, refine_params
from tunesvc.spec._spec import parse_param

LOG_LR = "tests/objectives_fixtures/plain.py:log_lr"  # value -|log10(lr) + 2|, best at 0.01
runner = CliRunner()


def lr(low: float, high: float, **kw: object) -> RangeParam:
    return RangeParam("lr", low, high, log=True, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("param", "values", "best", "expected", "says"),
    [
        # log range: narrowed around the top trials in log space, plus a margin
        (lr(1e-4, 1e-1), [1e-3, 3e-3], 3e-3, (5.01e-4, 5.99e-3), "narrowed"),
        # the best at the high edge of a log range: widened by half its width (in decades)
        (lr(1e-4, 1e-1), [9e-2, 1e-3], 9e-2, (1e-4, 3.17), "widened"),
        # ... and at the low edge
        (lr(1e-4, 1e-1), [1.1e-4, 1e-2], 1.1e-4, (3.16e-6, 1e-1), "widened"),
        # linear range
        (RangeParam("dropout", 0.0, 0.5), [0.2, 0.3], 0.2, (0.15, 0.35), "narrowed"),
        # linear range at 0: cannot cross zero, so kept
        (RangeParam("dropout", 0.0, 0.5), [0.01, 0.3], 0.01, (0.0, 0.5), "cannot go past 0"),
        # linear range at the high edge: widened past it
        (RangeParam("dropout", 0.0, 0.5), [0.49, 0.2], 0.49, (0.0, 0.75), "widened"),
        # integers snap onto integers and still hold the top values
        (RangeParam("layers", 1, 8, is_int=True), [3, 4], 4, (2, 5), "narrowed"),
        # integer at its low edge 1: kept
        (RangeParam("layers", 1, 8, is_int=True), [1, 4], 1, (1, 8), "cannot go past 1"),
        # step: bounds stay on the step grid
        (RangeParam("bs", 16, 256, is_int=True, step=16), [64, 96], 64, (48, 112), "narrowed"),
        # every top trial at one value: a minimum width is kept around it
        (lr(1e-4, 1e-1), [3e-3, 3e-3, 3e-3], 3e-3, (1.49e-3, 5.99e-3), "narrowed"),
        # top trials spread over the whole range: kept
        (RangeParam("dropout", 0.0, 0.5), [0.04, 0.47, 0.25], 0.25, (0.0, 0.5), "kept"),
    ],
)
def test_numeric_ranges(param: RangeParam, values: list[float], best: float,
                        expected: tuple[float, float], says: str) -> None:
    top = [({param.name: v}, 1.0 if v == best else 0.5) for v in values]
    new, notes = refine_params({param.name: param}, top, "maximize")
    got = new[param.name]
    assert isinstance(got, RangeParam)
    assert (got.low, got.high) == pytest.approx(expected, rel=1e-2)
    assert says in notes[0] and notes[0].startswith(f"{param.name}: ")
    assert (got.log, got.is_int, got.step) == (param.log, param.is_int, param.step)


def test_direction_decides_which_trial_is_best() -> None:
    params = {"lr": lr(1e-4, 1e-1)}
    top = [({"lr": 9e-2}, 0.1), ({"lr": 1e-3}, 0.9)]
    _, notes = refine_params(params, top, "maximize")
    assert "narrowed" in notes[0]  # best is 1e-3, inside
    _, notes = refine_params(params, top, "minimize")
    assert "high edge" in notes[0] and "widened" in notes[0]  # best is 9e-2, at the edge


def test_choices_keep_the_values_the_top_trials_used() -> None:
    params = {"hidden": ChoiceParam("hidden", (64, 128, 256)),
              "act": ChoiceParam("act", ("relu",))}
    top = [({"hidden": 256, "act": "relu"}, 0.9), ({"hidden": 64, "act": "relu"}, 0.8)]
    new, notes = refine_params(params, top, "maximize")
    assert new["hidden"] == ChoiceParam("hidden", (64, 256))
    assert new["act"] == params["act"]
    assert notes[0] == "hidden: kept [64, 256], the values the top 2 used"


def test_bad_arguments_are_value_errors() -> None:
    with pytest.raises(ValueError, match="top_trials"):
        refine_params({"lr": lr(1e-4, 1e-1)}, [], "maximize")
    with pytest.raises(ValueError, match="direction"):
        refine_params({"lr": lr(1e-4, 1e-1)}, [({"lr": 1e-3}, 1.0)], "up")  # type: ignore[arg-type]


@st.composite
def range_and_top(draw: st.DrawFn) -> tuple[RangeParam, list[tuple[dict[str, float], float]]]:
    log = draw(st.booleans())
    is_int = draw(st.booleans())
    if is_int:
        low = draw(st.integers(1 if log else -50, 100))
        high = draw(st.integers(low + 1, low + 1000))
    elif log:
        e_low = draw(st.floats(-8, 2))
        low, high = 10**e_low, 10 ** (e_low + draw(st.floats(0.1, 6)))
    else:
        low = draw(st.floats(-100, 100))
        high = low + draw(st.floats(1e-3, 1000))
    param = RangeParam("p", float(low), float(high), log=log, is_int=is_int)
    inside = st.integers(int(low), int(high)) if is_int else st.floats(low, high)
    values = draw(st.lists(inside, min_size=1, max_size=6))
    return param, [({"p": float(v)}, float(i)) for i, v in enumerate(values)]


@settings(max_examples=300, deadline=None)
@given(range_and_top())
def test_refined_range_is_valid_and_holds_the_top_trials(
    case: tuple[RangeParam, list[tuple[dict[str, float], float]]],
) -> None:
    param, top = case
    new, notes = refine_params({"p": param}, top, "maximize")
    got = new["p"]
    assert isinstance(got, RangeParam) and len(notes) == 1
    assert parse_param("p", got.to_dict()) == got  # a valid spec entry, same kind of range
    values = [t[0]["p"] for t in top]
    tol = 1e-9 * max(1.0, abs(param.low), abs(param.high))
    assert got.low <= min(values) + tol and got.high >= max(values) - tol
    # Bounds snap to 3 significant digits; float noise within 1e-9 of a unit snaps either way.
    if "widened" in notes[0]:
        assert got.low <= param.low + tol and got.high >= param.high - tol
        assert (got.low, got.high) != (param.low, param.high)
    else:
        # never wider than the parent
        assert param.low - tol <= got.low and got.high <= param.high + tol
    if got.log:
        assert got.low > 0 and math.isfinite(math.log(got.high))


# --- the service and the CLI, on SQLite and PostgreSQL -----------------------------------------


def _parent(url: str, low: float = 1e-4, high: float = 1.0, grid: bool = False) -> None:
    lr_range = {"low": low, "high": high, "log": True, **({"points": 4} if grid else {})}
    spec = parse_spec_dict({"objective": LOG_LR, "direction": "maximize", "pruner": "none",
                            "epochs": 3, "seed": 3, "params": {"lr": lr_range},
                            **({"sampler": "grid"} if grid else {"n_trials": 8})})
    service.create_study("parent", spec, url)
    service.run_study("parent", url)


def test_refine_narrows_links_and_runs(storage_url: str) -> None:
    _parent(storage_url)
    result = service.refine_study("parent", "child", storage_url, top=3)
    assert result.parent == "parent" and len(result.top) == 3
    assert result.epochs == 6 and result.sampler == "random" and result.planned == 8
    before, after = result.params_before["lr"], result.params_after["lr"]
    assert before["low"] < after["low"] < 1e-2 < after["high"] < before["high"]
    assert "narrowed" in result.notes[0]
    storage = optuna.storages.RDBStorage(storage_url)
    child = optuna.load_study(study_name="child", storage=storage)
    assert child.user_attrs["parent"] == "parent" and child.user_attrs["stage"] == "refine"
    assert child.user_attrs["spec"]["epochs"] == 6
    assert child.user_attrs["spec"]["params"]["lr"] == after
    summary = service.run_study("child", storage_url)
    assert len(summary.ran) == 8
    assert all(after["low"] <= t.params["lr"] <= after["high"] for t in summary.ran)


def test_refine_widens_at_the_edge(sqlite_url: str) -> None:
    _parent(sqlite_url, low=1e-5, high=5e-3, grid=True)  # the optimum 1e-2 lies above it
    result = service.refine_study("parent", "child", sqlite_url, top=2, epochs=4)
    assert result.epochs == 4 and result.sampler == "grid" and result.planned == 4
    assert result.params_after["lr"]["high"] > 5e-3 and result.params_after["lr"]["low"] == 1e-5
    assert "high edge" in result.notes[0] and "widened" in result.notes[0]


def test_refine_without_finished_trials_or_into_existing_makes_no_study(storage_url: str) -> None:
    spec = parse_spec_dict({"objective": LOG_LR, "direction": "maximize", "n_trials": 2,
                            "params": {"lr": {"low": 1e-4, "high": 1.0, "log": True}}})
    service.create_study("queued", spec, storage_url)
    with pytest.raises(TunesvcError, match="no completed trial to refine from"):
        service.refine_study("queued", "child", storage_url)
    with pytest.raises(StudyExistsError, match="is the parent study itself"):
        service.refine_study("queued", "queued", storage_url)
    service.create_study("other", spec, storage_url)
    with pytest.raises(StudyExistsError, match="'other' already exists"):
        service.refine_study("queued", "other", storage_url)
    with pytest.raises(StudyNotFoundError):
        service.refine_study("nope", "child", storage_url)
    assert sorted(s.name for s in service.list_studies(storage_url)) == ["other", "queued"]


def test_cli_refine_one_line_errors_and_json(sqlite_url: str) -> None:
    spec = parse_spec_dict({"objective": LOG_LR, "direction": "maximize", "n_trials": 2,
                            "params": {"lr": {"low": 1e-4, "high": 1.0, "log": True}}})
    service.create_study("queued", spec, sqlite_url)
    result = runner.invoke(app, ["study", "refine", "queued", "--into", "c", "--storage",
                                 sqlite_url])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "no completed trial" in result.stderr
    service.run_study("queued", sqlite_url)
    result = runner.invoke(app, ["study", "refine", "queued", "--into", "queued", "--storage",
                                 sqlite_url])
    assert result.exit_code == 4 and result.stderr.count("\n") == 1
    result = runner.invoke(app, ["study", "refine", "queued", "--into", "c", "--top", "1",
                                 "--json", "--storage", sqlite_url])
    assert result.exit_code == 0, result.output
    assert '"parent": "queued"' in result.stdout and '"epochs": 20' in result.stdout


def test_a_subnormal_bound_is_kept_as_is() -> None:
    """Hypothesis found it: rounding 5e-324 to 3 digits divided by an underflowed unit."""
    from tunesvc.spec._refine import _sig

    assert _sig(5e-324, up=True) == 5e-324 and _sig(5e-324, up=False) == 5e-324
    assert _sig(1.234567e-300, up=True) == 1.24e-300
    # Float noise within 1e-9 units snaps to the round number, either way (exp(log(1e-5))).
    assert _sig(9.999999999999997e-06, up=False) == 1e-5
    assert _sig(-0.9999999999999991, up=True) == -1.0
