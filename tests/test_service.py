"""The study lifecycle through the service layer, on SQLite and on PostgreSQL."""

from __future__ import annotations

import optuna
import pytest

from tunesvc import (
    ObjectiveError,
    SpecError,
    StorageError,
    StudyExistsError,
    StudyNotFoundError,
    service,
)
from tunesvc.spec import parse_spec, parse_spec_dict

PLAIN = "tests/objectives_fixtures/plain.py"


def plain_spec(function: str = "quadratic", **extra: object) -> service.StudySpec:
    return parse_spec_dict({"objective": f"{PLAIN}:{function}", "pruner": "none", **extra})


def test_grid_runs_every_cell_once(storage_url: str) -> None:
    spec = plain_spec(sampler="grid", params={"x": {"low": -1.0, "high": 3.0, "points": 3},
                                              "y": {"values": [0, 5]}})
    created = service.create_study("g", spec, storage_url)
    assert created.planned == 6 and created.counts == {"WAITING": 6}
    summary = service.run_study("g", storage_url)
    assert len(summary.ran) == 6 and summary.remaining == 0
    trials = service.list_trials("g", storage_url)
    cells = sorted((t.params["x"], t.params["y"]) for t in trials)
    assert cells == sorted((x, y) for x in (-1.0, 1.0, 3.0) for y in (0, 5))
    assert {t.state for t in trials} == {"COMPLETE"}
    best = service.best_trial("g", storage_url)
    assert best.params == {"x": 1.0, "y": 0} and best.value == pytest.approx(-1.0)
    again = service.run_study("g", storage_url)
    assert again.already_finished and again.ran == []


def test_random_budget_is_study_wide_and_reproducible(storage_url: str) -> None:
    spec = plain_spec(n_trials=5, seed=7)
    service.create_study("r", spec, storage_url)
    first = service.run_study("r", storage_url, n_trials=2)
    assert len(first.ran) == 2 and first.remaining == 3
    rest = service.run_study("r", storage_url)
    assert len(rest.ran) == 3 and rest.remaining == 0
    xs = [t.params["x"] for t in service.list_trials("r", storage_url)]
    service.create_study("r2", spec, storage_url)
    service.run_study("r2", storage_url)
    assert [t.params["x"] for t in service.list_trials("r2", storage_url)] == xs


def test_failing_objective_marks_fail_and_goes_on(storage_url: str) -> None:
    service.create_study("f", plain_spec("flaky", n_trials=8, seed=1, direction="minimize"),
                         storage_url)
    summary = service.run_study("f", storage_url)
    assert len(summary.ran) == 8
    failed = [t for t in summary.ran if t.state == "FAIL"]
    assert failed and all(t.params["x"] > 0.5 for t in failed)
    assert all(t.error and t.error.startswith("ValueError: x too large") for t in failed)
    assert all(t.outcome == "failed" for t in failed)
    assert all(t.state == "COMPLETE" for t in summary.ran if t.params["x"] <= 0.5)


def test_nan_result_is_a_failure(storage_url: str) -> None:
    service.create_study("n", plain_spec("returns_nan", n_trials=1, direction="minimize"),
                         storage_url)
    (trial,) = service.run_study("n", storage_url).ran
    assert trial.state == "FAIL" and "expected a finite float" in (trial.error or "")


def test_spec_and_objective_must_agree(storage_url: str) -> None:
    spec = plain_spec("log_lr", direction="maximize", n_trials=2,
                      params={"lr": {"low": 1e-3, "high": 1e-1, "log": True}})
    service.create_study("ok", spec, storage_url)
    assert {t.state for t in service.run_study("ok", storage_url).ran} == {"COMPLETE"}
    bad = plain_spec("log_lr", direction="maximize", n_trials=2,
                     params={"lr": {"low": 1e-3, "high": 1e-1}})  # linear vs log
    service.create_study("bad", bad, storage_url)
    # Only the objective's own suggestion shows the disagreement: the run stops at the first
    # trial, which goes back to the queue (no FAIL, no budget spent).
    with pytest.raises(ObjectiveError, match="param 'lr': the spec declares float 0.001..0.1 "
                       "but the objective suggests float 1e-05..1.0, log.*the run stopped and "
                       "trial 0 went back to the queue"):
        service.run_study("bad", storage_url)
    # Trial 0 is queued again; slot 1 was never claimed, so it is no trial yet, only queued.
    assert [(t.state, t.outcome) for t in service.list_trials("bad", storage_url)] == [
        ("WAITING", None)]
    assert service.show_study("bad", storage_url).summary.counts == {"WAITING": 2}


def test_create_rejects_and_writes_nothing(storage_url: str) -> None:
    service.create_study("x", plain_spec(n_trials=2), storage_url)
    with pytest.raises(StudyExistsError, match="study 'x' already exists"):
        service.create_study("x", plain_spec(n_trials=2), storage_url)
    with pytest.raises(ObjectiveError, match="unknown objective 'nope'"):
        service.create_study("y", parse_spec('objective = "nope"'), storage_url)
    with pytest.raises(SpecError, match="params.x: a grid needs finite points"):
        service.create_study("y", plain_spec(sampler="grid",
                                             params={"x": {"low": 0.0, "high": 1.0}}),
                             storage_url)
    with pytest.raises(SpecError, match="n_trials: the grid has 2 cells"):
        service.create_study("y", plain_spec(sampler="grid", n_trials=3,
                                             params={"x": {"values": [1.0, 2.0]}}),
                             storage_url)
    with pytest.raises(SpecError, match="direction: objective .* does not declare one"):
        service.create_study("y", plain_spec("flaky"), storage_url)
    assert [s.name for s in service.list_studies(storage_url)] == ["x"]


def test_objective_import_error_is_shown(tmp_path: object, storage_url: str) -> None:
    import pathlib

    broken = pathlib.Path(str(tmp_path)) / "broken.py"
    broken.write_text("import numpy\nraise RuntimeError('boom at import')\n")
    with pytest.raises(ObjectiveError, match="failed to import: RuntimeError: boom at import"):
        service.create_study("b", parse_spec(f'objective = "{broken}:f"'), storage_url)
    missing = pathlib.Path(str(tmp_path)) / "needs_missing.py"
    missing.write_text("import not_a_real_package\n")
    with pytest.raises(ObjectiveError, match="No module named 'not_a_real_package'"):
        service.create_study("b", parse_spec(f'objective = "{missing}:f"'), storage_url)


def test_missing_study(storage_url: str) -> None:
    service.create_study("other", plain_spec(n_trials=1), storage_url)
    with pytest.raises(StudyNotFoundError, match="no study 'ghost'"):
        service.run_study("ghost", storage_url)
    with pytest.raises(StudyNotFoundError):
        service.delete_study("ghost", storage_url)


def test_delete(storage_url: str) -> None:
    service.create_study("d", plain_spec(n_trials=1), storage_url)
    service.delete_study("d", storage_url)
    assert service.list_studies(storage_url) == []


def test_show_counts_and_spec(storage_url: str) -> None:
    service.create_study("s", plain_spec(n_trials=3), storage_url)
    service.run_study("s", storage_url, n_trials=1)
    detail = service.show_study("s", storage_url)
    assert detail.summary.counts == {"COMPLETE": 1, "WAITING": 2}
    assert detail.spec["objective"] == f"{PLAIN}:quadratic"
    assert detail.spec["n_trials"] == 3 and detail.running == []


def test_study_is_plain_optuna(storage_url: str) -> None:
    """What tunesvc writes is an ordinary Optuna study: Optuna and the dashboard read it."""
    service.create_study("o", plain_spec(n_trials=2), storage_url)
    service.run_study("o", storage_url)
    study = optuna.load_study(study_name="o", storage=storage_url.replace("+psycopg", "+psycopg"))
    assert len(study.trials) == 2 and study.best_trial.value is not None


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:s3cret@127.0.0.1:1/test",
        "postgresql://postgres:s3cret@127.0.0.1:5432/no_such_db",
        "mysql://root:s3cret@127.0.0.1:1/test",
        "notaurl",
        "sqlite://",
    ],
)
def test_bad_storage_is_one_line_without_password(url: str) -> None:
    with pytest.raises(StorageError) as e:
        service.list_studies(url)
    message = str(e.value)
    assert "s3cret" not in message and "\n" not in message
    assert message.startswith(("cannot use storage", "malformed storage URL", "storage URL"))


def test_timeout_starts_no_new_trial(storage_url: str) -> None:
    service.create_study("t", plain_spec(n_trials=4), storage_url)
    summary = service.run_study("t", storage_url, timeout=1e-9)
    assert summary.ran == [] and summary.remaining == 4


def test_spec_stored_and_reused() -> None:
    spec = parse_spec('objective = "digits_mlp"')
    resolved = service.resolve(spec)
    assert resolved.direction == "maximize" and set(resolved.spec.params) >= {"lr"}
