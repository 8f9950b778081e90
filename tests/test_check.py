"""The three pre-tuning checks, on digits_mlp and on objectives built to fail or not apply."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from typer.testing import CliRunner

from tunesvc import SpecError
from tunesvc.cli import app
from tunesvc.service import run_checks, with_checked_lr
from tunesvc.spec import Plan, RangeParam, parse_fixed_params, parse_spec, parse_spec_dict
from tunesvc.training._checks import lr_suggestion

FIXTURES = "tests/objectives_fixtures"
BAD_INIT = f"{FIXTURES}/check_bad_init.py"
UNLEARNABLE = f"{FIXTURES}/check_unlearnable.py"
REGRESSION = f"{FIXTURES}/check_regression.py"
runner = CliRunner()


def test_digits_passes_all_three_with_numbers() -> None:
    report = run_checks("digits_mlp")
    assert report.ok and report.skipped == []
    initial, overfit, lr_test = report.checks
    assert [c.verdict for c in report.checks] == ["pass", "pass", "pass"]
    assert initial.numbers["expected"] == pytest.approx(math.log(10), abs=1e-3)
    assert abs(float(initial.numbers["ratio"]) - 1) < 0.25  # type: ignore[arg-type]
    assert initial.numbers["weight_decay"] == 0.0
    assert overfit.numbers["train_acc"] == 1.0 and overfit.numbers["batches"] == 5
    assert overfit.numbers["weight_decay"] == 0.0 and overfit.numbers["dropout_layers_off"] == 1
    assert lr_test.numbers["iterations"] <= 100  # type: ignore[operator]
    lr = report.suggested_lr
    assert lr is not None and lr.log and lr.low < float(lr_test.numbers["steepest_lr"]) < lr.high  # type: ignore[arg-type]
    assert 1e-4 < lr.low < lr.high < 1.0
    again = run_checks("digits_mlp")  # seeded: the same numbers every time
    assert again.to_json() == report.to_json()


def test_bad_initial_loss_fails_and_says_what_to_fix() -> None:
    report = run_checks(BAD_INIT)
    assert not report.ok
    failed = report.first_failure
    assert failed is not None and failed.name == "initial_loss"
    assert float(failed.numbers["ratio"]) > 2  # type: ignore[arg-type]
    assert failed.numbers["expected"] == pytest.approx(math.log(4), abs=1e-3)
    assert failed.advice is not None and "initial" in failed.advice


def test_cannot_overfit_names_lr_depth_and_initialization() -> None:
    report = run_checks(UNLEARNABLE)
    failed = report.first_failure
    assert failed is not None and failed.name == "overfit_batches"
    assert float(failed.numbers["train_acc"]) < 1.0  # type: ignore[arg-type]
    assert failed.advice is not None
    for word in ("LR", "deeper", "initialization"):
        assert word in failed.advice


def test_regression_skips_the_initial_loss_and_says_so() -> None:
    report = run_checks(REGRESSION)
    assert report.skipped == ["initial_loss"]
    assert [c.verdict for c in report.checks] == ["skipped", "pass", "pass"]
    assert "not a classification loss" in report.checks[0].summary
    assert report.ok and report.suggested_lr is not None


def test_plain_objective_skips_everything() -> None:
    report = run_checks("tests/objectives_fixtures/plain.py:quadratic")
    assert report.ok and report.skipped == ["initial_loss", "overfit_batches", "lr_range"]
    assert report.suggested_lr is None


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["lr=1e-2"], {"lr": 0.01}),
        (["hidden=64", "optimizer=sgd"], {"hidden": 64, "optimizer": "sgd"}),
        (['schedule="step"'], {"schedule": "step"}),
    ],
)
def test_fixed_params(options: list[str], expected: dict[str, object]) -> None:
    assert parse_fixed_params(options) == expected


@pytest.mark.parametrize("bad", ["lr", "=1", "lr="])
def test_fixed_params_need_name_and_value(bad: str) -> None:
    with pytest.raises(SpecError, match="expected NAME=VALUE"):
        parse_fixed_params([bad])


@pytest.mark.parametrize(
    ("lrs", "losses", "expected"),
    [
        ([10 ** (-6 + i * 0.07) for i in range(80)], [2.3] * 80, None),  # never fell
        ([1e-3] * 5, [2.0] * 5, None),  # too few points
    ],
)
def test_lr_suggestion_refuses_without_a_fall(
    lrs: list[float], losses: list[float], expected: None
) -> None:
    assert lr_suggestion(lrs, losses) is expected


def test_cli_check_exit_codes_and_json() -> None:
    ok = runner.invoke(app, ["check", REGRESSION, "--json"])
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    assert data["ok"] and data["skipped"] == ["initial_loss"]
    assert data["suggested_lr"]["log"] is True
    bad = runner.invoke(app, ["check", BAD_INIT])
    assert bad.exit_code == 1
    assert "initial_loss     fail" in bad.stdout and "try:" in bad.stdout
    unknown = runner.invoke(app, ["check", "digits_mlp", "--param", "nope=1"])
    assert unknown.exit_code == 2 and "has no such param" in unknown.stderr


def test_study_create_from_check_takes_the_suggested_range(sqlite_url: str) -> None:
    suggested = with_checked_lr(parse_spec('objective = "digits_mlp"')).params["lr"]
    assert isinstance(suggested, RangeParam)
    result = runner.invoke(app, ["study", "create", "c", "--objective", "digits_mlp",
                                 "--from-check", "--storage", sqlite_url])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="c", storage=sqlite_url)
    params = study.user_attrs["spec"]["params"]
    assert params["lr"] == {"low": suggested.low, "high": suggested.high, "log": True,
                            "type": "float", "points": 4}
    assert set(params) == {"lr", "weight_decay", "dropout", "hidden"}
    plan = Plan.from_spec(parse_spec_dict(study.user_attrs["spec"]))
    assert all(suggested.low <= plan.params(slot)["lr"] <= suggested.high
               for slot in range(plan.budget))
