"""What the runner records as trials finish: dashboard notes, early stops, the initial loss."""

from __future__ import annotations

import optuna
from optuna_dashboard import get_note

from tunesvc import service
from tunesvc.spec import parse_spec_dict

PLAIN = "tests/objectives_fixtures/plain.py"


def test_each_finished_trial_gets_a_dashboard_note(storage_url: str) -> None:
    spec = parse_spec_dict({"objective": "digits_mlp", "n_trials": 2, "epochs": 2,
                            "pruner": "none", "params": {"lr": {"values": [3e-3, 1e-2]}}})
    service.create_study("notes", spec, storage_url)
    service.run_study("notes", storage_url)
    study = optuna.load_study(study_name="notes", storage=storage_url)
    storage = optuna.storages.RDBStorage(storage_url)
    study_id = storage.get_study_id_from_name("notes")
    for frozen in study.trials:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        note = get_note(optuna.trial.Trial(study, trial_id))
        label = frozen.user_attrs["diagnosis"]["label"]
        assert f"Trial {frozen.number}: {label}" in note
        assert f"/artifacts/{study_id}/" in note  # the learning-curves figure
    assert "notes" in get_note(study)


def test_plain_objective_early_stop_completes_at_its_best(sqlite_url: str) -> None:
    spec = parse_spec_dict({"objective": f"{PLAIN}:plateaus", "n_trials": 1})
    service.create_study("p", spec, sqlite_url)
    (trial,) = service.run_study("p", sqlite_url).ran
    assert trial.state == "COMPLETE" and trial.outcome == "early_stopped"
    assert trial.value == 0.8 and trial.diagnosis is not None
    assert trial.diagnosis["label"] == "plateau" and trial.epochs < 29


def test_num_classes_recorded_for_the_pruner(sqlite_url: str) -> None:
    spec = parse_spec_dict({"objective": "digits_mlp", "n_trials": 1, "epochs": 1})
    service.create_study("n", spec, sqlite_url)
    service.run_study("n", sqlite_url)
    (frozen,) = optuna.load_study(study_name="n", storage=sqlite_url).trials
    assert frozen.user_attrs["num_classes"] == 10
