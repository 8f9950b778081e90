"""A retry that a dead worker failed to queue is queued by the next worker that looks for work;
a retry queued twice runs once. Real SQLite and PostgreSQL, the real runner in this process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tunesvc import service
from tunesvc.spec import parse_spec_dict
from tunesvc.storage import attrs
from tunesvc.worker import _heartbeat as _heartbeat
from tunesvc.worker._heartbeat import is_duplicate_retry, requeue

SLOW = f"{Path(__file__).parent / 'objectives_fixtures' / 'slow.py'}:objective"


def _create(name: str, url: str, n_trials: int) -> optuna.Study:
    spec = parse_spec_dict({"objective": SLOW, "direction": "maximize", "n_trials": n_trials,
                            "params": {"x": {"low": 0, "high": 3, "type": "int"},
                                       "y": {"low": 0, "high": 3, "type": "int"}}})
    service.create_study(name, spec, url)
    return optuna.load_study(study_name=name, storage=url)


def _fail_as_a_dead_worker_would(url: str, study: optuna.Study, number: int) -> None:
    """Claim trial ``number``, beat once and fail it, queueing no retry: what a worker does that
    failed a stale trial and was killed before its callback queued the retry."""
    storage = optuna.storages.RDBStorage(url)
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), number
    )
    storage.record_heartbeat(trial_id)
    assert storage.set_trial_state_values(trial_id, TrialState.RUNNING)
    assert storage.set_trial_state_values(trial_id, TrialState.FAIL)
    storage.engine.dispose()


def test_an_orphaned_lost_trial_is_queued_again_on_its_slot(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLOW_STEPS", "5")
    monkeypatch.setenv("SLOW_STEP_S", "0.3")
    monkeypatch.setattr(_heartbeat, "ORPHAN_AFTER_S", 0.0)
    study = _create("orphan", storage_url, 3)
    _fail_as_a_dead_worker_would(storage_url, study, 0)
    results: list[Any] = []
    # Heartbeat 1 s: an orphan is one whose last beat is over 2 s old. Trials 1 and 2 take
    # about 3 s, then the queue is empty and the worker looks for orphans.
    service.run_study("orphan", storage_url, heartbeat_s=1, on_result=results.append)
    assert [(r.number, r.outcome) for r in results] == [(1, "completed"), (2, "completed"),
                                                         (3, "completed")]
    trials = optuna.load_study(study_name="orphan", storage=storage_url).trials
    lost, retry = trials[0], trials[3]
    assert lost.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert attrs.RETRY_OF.get(retry) == 0
    assert attrs.SLOT.get(retry) == attrs.SLOT.get(lost)
    assert [h["reason"] for h in retry.user_attrs["retry_history"]] == ["lost"]
    assert retry.params == lost.system_attrs["fixed_params"]  # the queued draw of the slot


def test_a_young_failure_is_left_to_the_worker_that_failed_it(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within ORPHAN_AFTER_S the failing worker may still be queueing the retry: no sweep,
    though the worker has been up for its grace period when it finds the queue empty."""
    monkeypatch.setenv("SLOW_STEPS", "1")
    monkeypatch.setenv("SLOW_STEP_S", "2.5")
    study = _create("young", storage_url, 2)
    _fail_as_a_dead_worker_would(storage_url, study, 0)
    results: list[Any] = []
    service.run_study("young", storage_url, heartbeat_s=1, on_result=results.append)
    assert [r.number for r in results] == [1]
    assert len(optuna.load_study(study_name="young", storage=storage_url).trials) == 2


def test_a_retry_queued_twice_runs_once(storage_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOW_STEPS", "2")
    monkeypatch.setenv("SLOW_STEP_S", "0.05")
    study = _create("twice", storage_url, 1)
    _fail_as_a_dead_worker_would(storage_url, study, 0)
    first_attempt = optuna.load_study(study_name="twice", storage=storage_url).trials[0]
    # The late worker and a sweep both queued the retry of trial 0.
    assert requeue(study, first_attempt, "lost") == 1
    assert requeue(study, first_attempt, "lost") == 2
    fresh = optuna.load_study(study_name="twice", storage=storage_url)
    one, two = fresh.trials[1], fresh.trials[2]
    assert not is_duplicate_retry(fresh, one) and is_duplicate_retry(fresh, two)
    results: list[Any] = []
    service.run_study("twice", storage_url, on_result=results.append)
    assert [(r.number, r.outcome) for r in results] == [(1, "completed")]
    trials = optuna.load_study(study_name="twice", storage=storage_url).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL]
    assert trials[2].user_attrs["outcome"] == "duplicate"
    assert trials[2].intermediate_values == {}  # never run
