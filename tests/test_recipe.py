"""The recipe end to end (check, coarse, refine, final), its stops, notes and the static report."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna_dashboard import get_note
from typer.testing import CliRunner

from tunesvc import SpecError, StudyExistsError, TunesvcError, service
from tunesvc.cli import app
from tunesvc.spec import parse_spec_dict

BAD_INIT = "tests/objectives_fixtures/check_bad_init.py"
TEST_BUDGET = "tiny,coarse_trials=4,refine_trials=2"
runner = CliRunner()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("small", service.BUDGETS["small"]),
        ("tiny", service.BUDGETS["tiny"]),
        ("tiny,coarse_trials=6", service.Budget(6, 3, 2, 3, 3, 4)),
        ("final_epochs=7", service.Budget(final_epochs=7)),
    ],
)
def test_parse_budget(text: str, expected: service.Budget) -> None:
    assert service.parse_budget(text) == expected


@pytest.mark.parametrize(("text", "match"), [("huge", "expected one of"),
                                             ("tiny,nope=3", "unknown key"),
                                             ("tiny,top=0", "integer >= 1")])
def test_parse_budget_rejects(text: str, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        service.parse_budget(text)


def test_recipe_stops_at_the_first_failed_check(sqlite_url: str) -> None:
    result = service.run_recipe(BAD_INIT, sqlite_url, budget=service.BUDGETS["tiny"])
    assert result.stopped is not None and result.stopped.startswith("check initial_loss failed")
    assert result.best is None and [s.stage for s in result.stages] == ["check"]
    assert [c.verdict for c in result.checks.checks] == ["fail", "skipped", "skipped"]
    assert service.list_studies(sqlite_url) == []
    cli = runner.invoke(app, ["recipe", BAD_INIT, "--storage", sqlite_url])
    assert cli.exit_code == 1
    assert cli.stderr.count("\n") == 1
    assert "recipe stopped: check initial_loss failed" in cli.stderr
    assert "initial_loss     fail" in cli.stdout


def test_recipe_refuses_taken_names_and_plain_objectives(sqlite_url: str) -> None:
    spec = parse_spec_dict({"objective": "digits_mlp", "n_trials": 1})
    service.create_study("x-refine", spec, sqlite_url)
    with pytest.raises(StudyExistsError, match="'x-refine' already exists"):
        service.run_recipe("digits_mlp", sqlite_url, prefix="x")
    with pytest.raises(TunesvcError, match="plain objective"):
        service.run_recipe("tests/objectives_fixtures/plain.py:quadratic", sqlite_url)
    assert [s.name for s in service.list_studies(sqlite_url)] == ["x-refine"]


def test_recipe_end_to_end_with_notes_and_report(sqlite_url: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["recipe", "digits_mlp", "--budget", TEST_BUDGET, "--name", "r",
                                 "--storage", sqlite_url])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for line in ("stage 1/4: checks", "stage 4/4", "best configuration (r-"):
        assert line in out
    table = out[out.index("stage  "):]
    assert [row.split()[0] for row in table.splitlines()[1:5]] == [
        "check", "coarse", "refine", "final"]

    storage = optuna.storages.RDBStorage(sqlite_url)
    studies = {n: optuna.load_study(study_name=f"r-{n}", storage=storage)
               for n in ("coarse", "refine", "final")}
    assert {n: s.user_attrs.get("stage") for n, s in studies.items()} == {
        "coarse": "coarse", "refine": "refine", "final": "final"}
    assert studies["refine"].user_attrs["parent"] == "r-coarse"
    assert studies["final"].user_attrs["parent"] == "r-refine"
    coarse_spec = studies["coarse"].user_attrs["spec"]
    suggested = studies["coarse"].user_attrs["check"]["suggested_lr"]
    assert coarse_spec["params"]["lr"]["low"] == suggested["low"]
    assert coarse_spec["n_trials"] == 4 and coarse_spec["epochs"] == 3
    assert studies["refine"].user_attrs["spec"]["n_trials"] == 2
    final_trials = studies["final"].get_trials()
    assert len(final_trials) == 1 and final_trials[0].state.name == "COMPLETE"
    assert len(final_trials[0].user_attrs["curves"]["epoch"]) == 5  # epochs 0..4

    # Notes were written as trials finished: every finished trial, and every study.
    for study in studies.values():
        note = get_note(study)
        assert "**Recipe stage:**" in note and "| diagnosis | trials |" in note
        for t in study.get_trials():
            label = t.user_attrs["diagnosis"]["label"]
            body = get_note(optuna.trial.Trial(study, t._trial_id))
            assert f"**Diagnosis: {label}**" in body and "**Advice:**" in body
            assert "![learning curves" in body
    assert "**Parent study:** r-coarse" in get_note(studies["refine"])
    attrs = storage.get_study_system_attrs(storage.get_study_id_from_name("r-coarse"))
    figures = [k for k in attrs if k.startswith("dashboard:plot_data:")]
    assert any("tunesvc-lr-vs-weight-decay" in k for k in figures)
    assert any("tunesvc-diagnoses" in k for k in figures)

    report = service.write_report("r-coarse", sqlite_url, tmp_path / "out")
    text = report.path.read_text()
    assert report.path.name == "r-coarse.html" and report.trials == 4
    assert "Diagnosis: " in text and "lr against weight_decay" in text
    assert text.count("Plotly.newPlot") >= 2 and "<script src=" not in text  # offline
    cli = runner.invoke(app, ["study", "report", "nope", "--storage", sqlite_url])
    assert cli.exit_code == 4 and "no study 'nope'" in cli.stderr
