"""A retry that a dead worker failed to queue is queued by the next worker that looks for work;
a retry is never queued twice. Real SQLite and PostgreSQL, the real worker in this process.

A lost trial is failed and queued again in one transaction (it cannot be orphaned); a trial
interrupted by Ctrl-C is failed and queued again in one transaction too, but its worker records
its outcome first, so a worker killed between the two leaves an orphan: interrupted, RUNNING
no more... here made by hand, as such a worker would leave it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tunesvc import service
from tunesvc.spec import Plan, parse_spec_dict
from tunesvc.storage import StudyQueue, attrs, open_storage
from tunesvc.worker import _claim

SLOW = f"{Path(__file__).parent / 'objectives_fixtures' / 'slow.py'}:objective"


def _create(name: str, url: str, n_trials: int) -> None:
    spec = parse_spec_dict({"objective": SLOW, "direction": "maximize", "n_trials": n_trials,
                            "params": {"x": {"low": 0, "high": 3, "type": "int"},
                                       "y": {"low": 0, "high": 3, "type": "int"}}})
    service.create_study(name, spec, url)


def _interrupt_as_a_dead_worker_would(url: str, name: str) -> dict[str, Any]:
    """Claim slot 0 and record it interrupted and FAIL, queueing no retry: a worker killed
    between recording the interruption and queueing the trial again. Its slot's params."""
    storage = open_storage(url)
    study = optuna.load_study(study_name=name, storage=storage)
    plan = Plan.from_spec(attrs.study_spec(study, name))
    queue = StudyQueue(storage, storage.get_study_id_from_name(name))
    claim = queue.claim(plan, attrs.Where("gone", 1, "cpu", 0).to_json())
    assert claim is not None and claim.number == 0
    storage.set_trial_user_attr(claim.trial_id, *attrs.OUTCOME.item("interrupted"))
    assert storage.set_trial_state_values(claim.trial_id, TrialState.FAIL)
    storage.engine.dispose()
    return dict(claim.params)


def test_an_orphaned_interrupted_trial_is_queued_again_on_its_slot(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLOW_STEPS", "5")
    monkeypatch.setenv("SLOW_STEP_S", "0.3")
    monkeypatch.setattr(_claim, "ORPHAN_AFTER_S", 0.0)
    _create("orphan", storage_url, 3)
    params = _interrupt_as_a_dead_worker_would(storage_url, "orphan")
    results: list[Any] = []
    # Heartbeat 1 s: an orphan is one whose last beat is over 2 s old. Slots 1 and 2 take
    # about 3 s, then the queue is empty and the worker looks for orphans.
    service.run_study("orphan", storage_url, heartbeat_s=1, on_result=results.append)
    assert [(r.number, r.outcome) for r in results] == [(1, "completed"), (2, "completed"),
                                                         (3, "completed")]
    trials = optuna.load_study(study_name="orphan", storage=storage_url).trials
    orphan, retry = trials[0], trials[3]
    assert orphan.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert attrs.RETRY_OF.get(retry) == 0 and attrs.RETRIED_AS.get(orphan) == 3
    assert attrs.SLOT.get(retry) == attrs.SLOT.get(orphan) == 0
    assert [a.reason for a in attrs.RETRY_HISTORY.get(retry) or []] == ["interrupted"]
    assert retry.params == params  # slot 0's draw, run again


def test_a_young_failure_is_left_to_the_worker_that_failed_it(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within ORPHAN_AFTER_S the failing worker may still be queueing the retry: no sweep,
    though the worker has been up for its grace period when it finds the queue empty."""
    monkeypatch.setenv("SLOW_STEPS", "1")
    monkeypatch.setenv("SLOW_STEP_S", "2.5")
    _create("young", storage_url, 2)
    _interrupt_as_a_dead_worker_would(storage_url, "young")
    results: list[Any] = []
    service.run_study("young", storage_url, heartbeat_s=1, on_result=results.append)
    assert [r.number for r in results] == [1]
    assert len(optuna.load_study(study_name="young", storage=storage_url).trials) == 2


def test_a_retry_is_queued_once_however_many_workers_queue_it(storage_url: str) -> None:
    """The sweep and the late worker both queue the same attempt: one retry, which runs."""
    _create("twice", storage_url, 1)
    _interrupt_as_a_dead_worker_would(storage_url, "twice")
    storage = open_storage(storage_url)
    queue = StudyQueue(storage, storage.get_study_id_from_name("twice"))
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name("twice"), 0)
    first = queue.requeue(trial_id, "interrupted")
    second = queue.requeue(trial_id, "interrupted")
    storage.engine.dispose()
    assert first.created and not second.created and first.number == second.number == 1
    time.sleep(0.01)
    results: list[Any] = []
    service.run_study("twice", storage_url, on_result=results.append)
    assert [(r.number, r.outcome) for r in results] == [(1, "completed")]
    trials = optuna.load_study(study_name="twice", storage=storage_url).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
