"""The background writer of reports and curves, against real SQLite and PostgreSQL storage."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tunesvc.worker._writer import TrialWriter

optuna.logging.set_verbosity(optuna.logging.WARNING)
FIXTURES = Path(__file__).parent / "objectives_fixtures"


@pytest.fixture
def study(storage_url: str) -> optuna.Study:
    study = optuna.create_study(storage=storage_url, direction="maximize")
    study.set_user_attr("url", storage_url)
    return study


def _storage(study: optuna.Study) -> optuna.storages.RDBStorage:
    """A storage of its own on the study's database, as a worker process has."""
    return optuna.storages.RDBStorage(study.user_attrs["url"])


def _stored(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """The trial as a fresh reader of the database sees it."""
    return optuna.load_study(study_name=study.study_name, storage=_storage(study)).trials[number]


def test_writes_reach_storage_in_order_and_flush_waits_for_them(study: optuna.Study) -> None:
    trial = study.ask()
    writer = TrialWriter(_storage(study))
    for step in range(50):
        writer.report(trial._trial_id, step, step / 100)
        writer.set_user_attr(trial._trial_id, "curves", {"upto": step})
    writer.flush()
    assert writer.pending == 0
    stored = _stored(study, trial.number)
    assert stored.intermediate_values == {s: s / 100 for s in range(50)}
    assert stored.user_attrs["curves"] == {"upto": 49}
    writer.close()


def test_a_queued_attribute_write_is_replaced_not_repeated(study: optuna.Study) -> None:
    trial = study.ask()
    storage = _storage(study)
    applied: list[Any] = []
    gate = threading.Event()

    def slow_retry(call: Any) -> Any:
        gate.wait(10)  # hold the thread so that the writes below queue up behind the first
        applied.append(call)
        return call()

    writer = TrialWriter(storage, slow_retry)
    writer.report(trial._trial_id, 0, 0.1)
    for i in range(20):
        writer.set_user_attr(trial._trial_id, "curves", {"snapshot": i})
    writer.report(trial._trial_id, 1, 0.2)
    gate.set()
    writer.flush()
    assert len(applied) == 3  # report 0, the latest curves, report 1
    stored = _stored(study, trial.number)
    assert stored.user_attrs["curves"] == {"snapshot": 19}
    assert stored.intermediate_values == {0: 0.1, 1: 0.2}
    writer.close()


def test_a_trial_finished_elsewhere_is_raised_once_and_later_writes_dropped(
    study: optuna.Study,
) -> None:
    trial = study.ask()
    writer = TrialWriter(_storage(study))
    writer.report(trial._trial_id, 0, 0.5)
    writer.flush()
    # Another worker fails the trial (its heartbeats stopped arriving, say).
    study.tell(trial.number, state=TrialState.FAIL)
    writer.report(trial._trial_id, 1, 0.6)
    deadline = time.monotonic() + 10
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        # the next hand-over, or the flush, raises what the write met
        while True:
            assert time.monotonic() < deadline
            writer.report(trial._trial_id, 2, 0.7)
            time.sleep(0.02)
    writer.flush()  # raised once: the writer is ready for the next trial
    assert _stored(study, trial.number).intermediate_values == {0: 0.5}
    nxt = study.ask()
    writer.report(nxt._trial_id, 0, 0.9)
    writer.close()
    assert _stored(study, nxt.number).intermediate_values == {0: 0.9}


def test_flush_raises_the_error_a_write_met(study: optuna.Study) -> None:
    trial = study.ask()
    study.tell(trial.number, state=TrialState.FAIL)
    writer = TrialWriter(_storage(study))
    writer.set_user_attr(trial._trial_id, "curves", {})
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        writer.flush()
    assert writer.drain() is None
    writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.report(trial._trial_id, 0, 1.0)


def test_a_worker_whose_trial_was_failed_elsewhere_leaves_it_and_runs_the_next(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner end to end: trial 0 is failed by another worker while it reports through the
    background writer; the worker gives it up as lost at a later report (nothing more written to
    it) and the next trial runs with every report stored."""
    from tunesvc import service
    from tunesvc.spec import parse_spec_dict

    objective = f"{FIXTURES / 'plain.py'}:abandoned"
    spec = parse_spec_dict({"objective": objective, "direction": "maximize", "n_trials": 2,
                            "params": {"x": {"low": 0.0, "high": 1.0}}})
    service.create_study("abandoned", spec, storage_url)
    monkeypatch.setenv("TUNESVC_STORAGE", storage_url)
    results: list[Any] = []
    service.run_study("abandoned", storage_url, on_result=results.append)
    assert [(r.number, r.outcome) for r in results] == [(0, "lost"), (1, "completed")]
    trials = optuna.load_study(study_name="abandoned", storage=storage_url).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert set(trials[0].intermediate_values) <= {0, 1}  # handed over before it was failed
    assert trials[1].intermediate_values == {s: trials[1].params["x"] + s for s in range(30)}


def test_a_trial_finished_elsewhere_never_drops_another_trials_writes(
    study: optuna.Study,
) -> None:
    """A population runs many trials through one writer: one member lost to another worker
    fails that member's writes only; the others' land, and their flushes raise nothing."""
    lost, kept = study.ask(), study.ask()
    study.tell(lost.number, state=TrialState.FAIL)
    writer = TrialWriter(_storage(study))
    for step in range(3):
        writer.report(lost._trial_id, step, 0.1)
        writer.report(kept._trial_id, step, 0.5 + step)
    writer.flush(kept._trial_id)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        writer.flush(lost._trial_id)
    writer.close()
    assert _stored(study, kept.number).intermediate_values == {0: 0.5, 1: 1.5, 2: 2.5}
