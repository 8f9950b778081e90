"""The lazy queue and the reads, on real SQLite, PostgreSQL and MariaDB.

Claims race from several real processes (spawned, each with its own engine); every wait is
bounded. The reads are checked against what Optuna's own API returns for the same study.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue as queue_module
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState

from tunesvc import StorageError
from tunesvc._errors import StudyNotFoundError
from tunesvc.spec import parse_spec_dict
from tunesvc.spec._plan import Plan
from tunesvc.storage import _queue, open_storage
from tunesvc.storage._queue import (
    OUTCOME_ATTR,
    RETRIED_AS_ATTR,
    RETRY_HISTORY_ATTR,
    RETRY_OF_ATTR,
    SLOT_ATTR,
    WORKER_ATTR,
    Claim,
    StudyQueue,
)
from tunesvc.storage._reads import (
    FinishedCursor,
    StudyReads,
    counts_by_state,
    heartbeat_ages,
)

MYSQL_ADMIN_URL = os.environ.get("TUNESVC_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")
WAIT_S = 120.0  # the longest any wait on a child process may take

optuna.logging.set_verbosity(optuna.logging.WARNING)


# --- storages: SQLite and PostgreSQL from conftest, MariaDB here -----------------------------


@pytest.fixture(scope="module")
def mysql_engine() -> Iterator[sqlalchemy.engine.Engine]:
    engine = sqlalchemy.create_engine(MYSQL_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sqlalchemy.exc.OperationalError as e:  # a missing service fails loudly, never skips
        pytest.fail(f"MariaDB/MySQL is not reachable at {MYSQL_ADMIN_URL}: {e.orig}")
    yield engine
    engine.dispose()


@pytest.fixture
def mysql_url(mysql_engine: sqlalchemy.engine.Engine) -> Iterator[str]:
    database = f"t_{uuid.uuid4().hex[:12]}"
    with mysql_engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {database}")
    url = mysql_engine.url.set(database=database).render_as_string(hide_password=False)
    yield url
    with mysql_engine.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE {database}")


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The queue's SQL is written for all three databases tunesvc supports."""
    fixture = {"sqlite": "sqlite_url", "postgresql": "pg_url", "mariadb": "mysql_url"}
    return str(request.getfixturevalue(fixture[request.param]))


def _new_study(url: str, name: str = "s", budget: int | None = None,
               plan: Plan | None = None) -> tuple[optuna.storages.RDBStorage, int]:
    storage = open_storage(url)
    study_id = optuna.create_study(study_name=name, storage=storage,
                                   direction="maximize")._study_id
    if plan is not None or budget is not None:
        StudyQueue.create(storage, study_id, plan.budget if plan else int(budget or 0))
    return storage, study_id


def _grid(n_trials: int | None = None) -> Plan:
    raw: dict[str, Any] = {"objective": "x", "sampler": "grid", "params": {
        "a": {"values": list(range(6))}, "b": {"low": 0.0, "high": 1.0, "points": 5}}}
    if n_trials is not None:
        raw["n_trials"] = n_trials
    return Plan.from_spec(parse_spec_dict(raw))


def _optuna_trials(url: str, name: str = "s") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def _record_params(storage: optuna.storages.RDBStorage, claim: Claim, plan: Plan) -> None:
    """What the worker's sampler does: suggest the slot's values with the spec's distributions."""
    for name, value in claim.params.items():
        dist = plan.distributions()[name]
        storage.set_trial_param(claim.trial_id, name, dist.to_internal_repr(value), dist)


# --- racing processes -------------------------------------------------------------------------


def _claimer(url: str, study_id: int, raw_spec: dict[str, Any], go: Any, out: Any) -> None:
    """A worker process: claim until the queue is empty; every 7th slot's first attempt is
    lost (failed and queued again), half of them by the interrupt path."""
    storage = open_storage(url)
    plan = Plan.from_spec(parse_spec_dict(raw_spec))
    queue = StudyQueue(storage, study_id)
    go.wait(WAIT_S)
    claims: list[tuple[int, int, int, int | None, str]] = []
    while (claim := queue.claim(plan, {"pid": os.getpid()})) is not None:
        if claim.slot % 7 == 3 and claim.retry_of is None:
            if claim.slot % 2:
                queue.requeue(claim.trial_id, "interrupted", fail_running=True)
            else:
                storage.set_trial_state_values(claim.trial_id, TrialState.FAIL)
                queue.requeue(claim.trial_id, "lost")
            end = "FAIL"
        else:
            _record_params(storage, claim, plan)
            storage.set_trial_state_values(claim.trial_id, TrialState.COMPLETE, [claim.slot])
            end = "COMPLETE"
        claims.append((claim.trial_id, claim.number, claim.slot, claim.retry_of, end))
    out.put(claims)
    storage.engine.dispose()


def _plain_optuna(url: str, name: str, go: Any, out: Any) -> None:
    """Plain Optuna adding finished trials to the same study meanwhile."""
    study = optuna.load_study(study_name=name, storage=url)
    go.wait(WAIT_S)
    for i in range(15):
        study.add_trial(optuna.trial.create_trial(value=-1.0, params={"z": i},
                                                  distributions={"z": IntDistribution(0, 99)}))
    out.put([])


def _run_processes(targets: list[tuple[Any, tuple[Any, ...]]]) -> list[Any]:
    """Start the targets as spawned processes, let them go at once, collect one answer each.
    ``go`` is a barrier: each process passes it once its imports are done, so none starts
    claiming while the others still import (on a loaded machine one could drain the queue)."""
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Barrier(len(targets) + 1), ctx.Queue()
    procs = [ctx.Process(target=f, args=(*args, go, out)) for f, args in targets]
    for p in procs:
        p.start()
    results: list[Any] = []
    deadline = time.monotonic() + WAIT_S
    try:
        go.wait(WAIT_S)
        while len(results) < len(procs):
            try:
                results.append(out.get(timeout=0.5))
            except queue_module.Empty:
                gone = all(not p.is_alive() for p in procs)
                if gone and out.empty() or time.monotonic() > deadline:
                    raise AssertionError(
                        f"{len(procs) - len(results)} worker process(es) gave no answer; exit "
                        f"codes {[p.exitcode for p in procs]}") from None
    finally:
        for p in procs:
            p.join(timeout=max(1.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return results


def test_racing_claims_run_every_slot_once(db_url: str) -> None:
    """Three workers and plain Optuna race on a grid whose budget (24) is below its size."""
    raw: dict[str, Any] = {"objective": "x", "sampler": "grid", "n_trials": 24, "params": {
        "a": {"values": list(range(6))}, "b": {"low": 0.0, "high": 1.0, "points": 5}}}
    plan = Plan.from_spec(parse_spec_dict(raw))
    storage, study_id = _new_study(db_url, plan=plan)
    results = _run_processes([(_claimer, (db_url, study_id, raw))] * 3
                             + [(_plain_optuna, (db_url, "s"))])
    claims = [c for r in results for c in r]
    assert sum(1 for r in results if r) >= 2  # the workers did race
    firsts = sorted(slot for _, _, slot, retry_of, _ in claims if retry_of is None)
    assert firsts == list(range(plan.budget))  # no slot twice, none lost, the budget exact
    lost = {number for _, number, slot, retry_of, end in claims if end == "FAIL"}
    assert lost == {n for _, n, slot, r, _ in claims if slot % 7 == 3 and r is None}
    assert {r for *_, r, _ in claims if r is not None} == lost  # each lost attempt retried once

    trials = _optuna_trials(db_url)
    # Numbers mean what Optuna's mean: 0..n-1 in trial_id order, plain Optuna's trials included.
    assert [t.number for t in sorted(trials, key=lambda t: t._trial_id)] == list(
        range(len(trials)))
    assert len(trials) == len(claims) + 15
    assert Counter(t.state for t in trials) == {TrialState.COMPLETE: plan.budget + 15,
                                               TrialState.FAIL: len(lost)}
    done = [t for t in trials if SLOT_ATTR in t.user_attrs and t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs[SLOT_ATTR] for t in done) == list(range(plan.budget))
    assert all(t.params == plan.params(t.user_attrs[SLOT_ATTR]) for t in done)
    for t in trials:
        if t.state == TrialState.FAIL:
            retry = next(r for r in trials if r.number == t.user_attrs[RETRIED_AS_ATTR])
            assert retry.user_attrs[RETRY_OF_ATTR] == t.number
            assert retry.user_attrs[SLOT_ATTR] == t.user_attrs[SLOT_ATTR]
            assert retry.user_attrs[RETRY_HISTORY_ATTR][-1]["trial"] == t.number
    state = StudyReads(storage, study_id).queue_state()
    assert state is not None and state.next_slot == plan.budget


def _requeuer(url: str, study_id: int, trial_id: int, go: Any, out: Any) -> None:
    storage = open_storage(url)
    queue = StudyQueue(storage, study_id)
    go.wait(WAIT_S)
    done = queue.requeue(trial_id, "lost")
    out.put((done.number, done.created))
    storage.engine.dispose()


def test_requeue_racing_itself_queues_one_retry(db_url: str) -> None:
    plan = _grid()
    storage, study_id = _new_study(db_url, plan=plan)
    queue = StudyQueue(storage, study_id)
    claim = queue.claim(plan, {"pid": 1})
    assert claim is not None
    storage.set_trial_state_values(claim.trial_id, TrialState.FAIL)
    results = _run_processes([(_requeuer, (db_url, study_id, claim.trial_id))] * 3)
    assert sorted(created for _, created in results) == [False, False, True]
    assert len({number for number, _ in results}) == 1
    waiting = [t for t in _optuna_trials(db_url) if t.state == TrialState.WAITING]
    assert [t.number for t in waiting] == [results[0][0]]
    retry = queue.claim(plan, {"pid": 2})
    assert retry is not None and (retry.number, retry.slot) == (results[0][0], claim.slot)
    assert retry.params == claim.params and retry.retry_of == claim.number
    assert retry.retry_history == [{"trial": claim.number, "reason": "lost",
                                    "worker": {"pid": 1}}]


def _claim_and_die(url: str, study_id: int, go: Any, out: Any) -> None:
    storage = open_storage(url)
    go.wait(WAIT_S)
    claim = StudyQueue(storage, study_id).claim(_grid(), {"pid": os.getpid()})
    assert claim is not None
    out.put(claim.trial_id)
    out.close()
    out.join_thread()
    os._exit(0)  # killed right after its claim: no clean-up of any kind


def test_a_worker_killed_after_claiming_leaves_a_trial_that_goes_stale(db_url: str) -> None:
    storage, study_id = _new_study(db_url, plan=_grid())
    [trial_id] = _run_processes([(_claim_and_die, (db_url, study_id))])
    queue = StudyQueue(storage, study_id)
    assert trial_id in heartbeat_ages(storage, [trial_id])
    deadline = time.monotonic() + 20
    lost: list[_queue.Lost] = []
    while not lost and time.monotonic() < deadline:
        lost = queue.fail_lost(grace_s=1.0, max_lost_retries=3)
        time.sleep(0.3)
    assert [entry.trial_id for entry in lost] == [trial_id]
    assert lost[0].retry is not None and lost[0].retry.created
    claim = queue.claim(_grid(), {"pid": 0})
    assert claim is not None and (claim.slot, claim.retry_of) == (0, 0)


# --- one process: the queue's rules -----------------------------------------------------------


def test_budget_numbers_and_plain_optuna_in_between(db_url: str) -> None:
    plan = _grid(4)
    storage, study_id = _new_study(db_url, plan=plan)
    queue = StudyQueue(storage, study_id)
    study = optuna.load_study(study_name="s", storage=storage)
    got = []
    for i in range(6):
        if i % 2:
            study.add_trial(optuna.trial.create_trial(value=0.0))
        got.append(queue.claim(plan, {"pid": 1}))
    claims = [c for c in got if c is not None]
    assert [c.slot for c in claims] == [0, 1, 2, 3] and got[4:] == [None, None]
    numbers = {t._trial_id: t.number for t in _optuna_trials(db_url)}
    assert [numbers[c.trial_id] for c in claims] == [c.number for c in claims] == [0, 2, 3, 5]
    assert sorted(numbers.values()) == list(range(7))
    assert all(t.state == TrialState.RUNNING for t in _optuna_trials(db_url)
               if t._trial_id in {c.trial_id for c in claims})


def test_a_claim_writes_slot_worker_and_heartbeat_but_no_params(db_url: str) -> None:
    plan = _grid()
    storage, study_id = _new_study(db_url, plan=plan)
    claim = StudyQueue(storage, study_id).claim(plan, {"host": "h", "pid": 7, "device": "cpu",
                                                       "worker": 0})
    assert claim == Claim(claim.trial_id, 0, 0, {"a": 0, "b": 0.0})
    [trial] = _optuna_trials(db_url)
    assert trial.state == TrialState.RUNNING and trial.params == {}
    assert trial.user_attrs == {SLOT_ATTR: 0, WORKER_ATTR: {"host": "h", "pid": 7,
                                                            "device": "cpu", "worker": 0}}
    assert heartbeat_ages(storage, [claim.trial_id]).keys() == {claim.trial_id}
    assert trial.datetime_start is not None
    assert abs((trial.datetime_start - datetime.now()).total_seconds()) < 60


def test_requeue_refuses_a_trial_that_did_not_fail(db_url: str) -> None:
    plan = _grid()
    storage, study_id = _new_study(db_url, plan=plan)
    queue = StudyQueue(storage, study_id)
    claim = queue.claim(plan, {})
    assert claim is not None
    with pytest.raises(ValueError, match="trial 0 is RUNNING; only a FAIL trial"):
        queue.requeue(claim.trial_id, "lost")
    with pytest.raises(ValueError, match="already has a queue"):
        StudyQueue.create(storage, study_id, 3)


def test_a_deleted_study_is_reported(db_url: str) -> None:
    plan = _grid()
    storage, study_id = _new_study(db_url, plan=plan)
    queue = StudyQueue(storage, study_id)
    optuna.delete_study(study_name="s", storage=storage)
    with pytest.raises(StudyNotFoundError, match=f"study id {study_id} no longer exists"):
        queue.claim(plan, {})


def test_an_old_style_study_still_claims_its_enqueued_trials(db_url: str) -> None:
    """A study created by tunesvc before the lazy queue: every trial enqueued with its params
    (``fixed_params``) and slot; a retry an older worker queued carries no ``retried_as``."""
    storage, study_id = _new_study(db_url)
    study = optuna.load_study(study_name="s", storage=storage)
    cells = [{"a": a, "b": b} for a in (1, 2) for b in (0.5, 0.25)]
    for slot, params in enumerate(cells):
        study.enqueue_trial(params, user_attrs={SLOT_ATTR: slot})
    plan = _grid()  # a plan that disagrees with the enqueued params: they win
    queue = StudyQueue(storage, study_id)
    first = queue.claim(plan, {"pid": 1})
    assert first is not None and (first.number, first.slot, first.params) == (0, 0, cells[0])
    # An older worker failed trial 0 and queued its retry the old way (enqueue_trial).
    storage.set_trial_state_values(first.trial_id, TrialState.FAIL)
    study.enqueue_trial(cells[0], user_attrs={SLOT_ATTR: 0, RETRY_OF_ATTR: 0,
                                              RETRY_HISTORY_ATTR: []})
    again = queue.requeue(first.trial_id, "lost")
    assert (again.number, again.created) == (4, False)  # the old retry, not a second one
    claims = []
    while (claim := queue.claim(plan, {"pid": 1})) is not None:
        claims.append(claim)
        storage.set_trial_state_values(claim.trial_id, TrialState.FAIL)
    assert [(c.number, c.slot, c.params, c.retry_of) for c in claims] == [
        (1, 1, cells[1], None), (2, 2, cells[2], None), (3, 3, cells[3], None),
        (4, 0, cells[0], 0)]
    retry = queue.requeue(claims[1].trial_id, "lost")
    claim = queue.claim(plan, {"pid": 1})
    assert claim is not None and (claim.number, claim.slot, claim.params, claim.retry_of) == (
        retry.number, 2, cells[2], 2)
    assert queue.claim(plan, {"pid": 1}) is None
    state = StudyReads(storage, study_id).queue_state()
    assert state is not None and state.legacy and state.budget == 0


def _age_heartbeat(storage: optuna.storages.RDBStorage, trial_id: int, seconds: float) -> None:
    beats = _queue.trial_heartbeats
    with storage.engine.begin() as conn:
        now = _queue._db_now(conn)
        conn.execute(beats.update().where(beats.c.trial_id == trial_id).values(
            heartbeat=now - timedelta(seconds=seconds)))


def test_lost_trials_are_failed_and_queued_again_at_once(db_url: str) -> None:
    plan = _grid()
    storage, study_id = _new_study(db_url, plan=plan)
    queue = StudyQueue(storage, study_id)
    a, b, c = (queue.claim(plan, {"pid": i}) for i in range(3))
    assert a and b and c
    never_beat = storage.create_new_trial(study_id)  # plain Optuna's RUNNING trial: no heartbeat
    _age_heartbeat(storage, a.trial_id, 3600)
    _age_heartbeat(storage, c.trial_id, 3600)
    # c's slot was lost 3 times already: the limit.
    with storage.engine.begin() as conn:
        queue._set_attrs(conn, c.trial_id, {RETRY_HISTORY_ATTR: [
            {"trial": 90 + i, "reason": "lost", "worker": None} for i in range(3)]})
    lost = queue.fail_lost(grace_s=60, max_lost_retries=3)
    assert [(x.trial_id, x.retry is not None) for x in lost] == [(a.trial_id, True),
                                                                 (c.trial_id, False)]
    assert queue.fail_lost(grace_s=60, max_lost_retries=3) == []
    states = {t._trial_id: t.state for t in _optuna_trials(db_url)}
    assert states[a.trial_id] == states[c.trial_id] == TrialState.FAIL
    assert states[b.trial_id] == states[never_beat] == TrialState.RUNNING
    retry = queue.claim(plan, {"pid": 9})
    assert retry is not None and (retry.slot, retry.retry_of) == (a.slot, a.number)
    # An orphan search finds nothing: the lost trial's retry was queued in the same transaction.
    assert queue.orphans(min_age_s=0, max_lost_retries=3) == []


def test_orphans_are_found_by_one_query_and_queued_once(db_url: str) -> None:
    plan = _grid()
    storage, study_id = _new_study(db_url, plan=plan)
    queue = StudyQueue(storage, study_id)
    claims = [queue.claim(plan, {"pid": i}) for i in range(6)]
    assert all(claims)
    lost, interrupted, failed, young, done, marked = (c for c in claims if c is not None)
    storage.set_trial_user_attr(interrupted.trial_id, OUTCOME_ATTR, "interrupted")
    storage.set_trial_user_attr(marked.trial_id, OUTCOME_ATTR, "lost")  # its requeue never ran
    storage.set_trial_user_attr(failed.trial_id, OUTCOME_ATTR, "failed")  # the objective raised
    for c in (lost, interrupted, failed, young, marked):
        storage.set_trial_state_values(c.trial_id, TrialState.FAIL)
    storage.set_trial_state_values(done.trial_id, TrialState.COMPLETE, [1.0])
    for c in (lost, interrupted, failed, done, marked):
        _age_heartbeat(storage, c.trial_id, 600)
    found = queue.orphans(min_age_s=300, max_lost_retries=3)
    assert [(o.number, o.reason) for o in found] == [(lost.number, "lost"),
                                                     (interrupted.number, "interrupted"),
                                                     (marked.number, "lost")]
    assert all(o.heartbeat_age_s >= 600 for o in found)
    limited = queue.orphans(min_age_s=300, max_lost_retries=0)  # lost ones: at the limit
    assert [o.number for o in limited] == [interrupted.number]
    for o in found:
        assert queue.requeue(o.trial_id, o.reason).created
    assert queue.orphans(min_age_s=300, max_lost_retries=3) == []


# --- the schema guard -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("revision", "message"),
    [
        ("v3.0.0.d", r"has Optuna schema revision v3.0.0.d; tunesvc needs v3.2.0.a: run "
                     r"`tunesvc storage upgrade --storage '.*'`"),
        ("v9.9.9.z", r"has Optuna schema revision v9.9.9.z, which this tunesvc \(written for "
                     r"v3.2.0.a, Optuna 5.*\) does not know; upgrade tunesvc"),
    ],
)
def test_a_schema_revision_it_was_not_written_for_is_refused(
    db_url: str, revision: str, message: str
) -> None:
    storage, study_id = _new_study(db_url, plan=_grid())
    with storage.engine.begin() as conn:
        conn.execute(_queue.alembic_version.update().values(version_num=revision))
    with pytest.raises(StorageError, match=message) as error:
        StudyQueue(storage, study_id)
    assert "\n" not in str(error.value)
    with pytest.raises(StorageError, match=message):
        StudyReads(storage, study_id)


def test_sqlite_must_be_opened_by_tunesvc(sqlite_url: str) -> None:
    open_storage(sqlite_url).engine.dispose()  # creates the schema
    plain = optuna.storages.RDBStorage(sqlite_url)
    with pytest.raises(StorageError, match="open SQLite with tunesvc's open_storage"):
        StudyQueue(plain, 1)


def test_the_declared_tables_match_optunas_models() -> None:
    """Pinned to the Optuna version range tunesvc supports (its schema, at SCHEMA_REVISION)."""
    from optuna.storages._rdb import models

    assert optuna.__version__.startswith("5.")
    theirs = models.BaseModel.metadata.tables
    for name, table in _queue._META.tables.items():
        if name == "alembic_version":
            continue
        assert name in theirs
        for column in table.columns:
            other = theirs[name].columns[column.name]
            assert type(column.type) is type(other.type), (name, column.name)
            if isinstance(column.type, sqlalchemy.Enum):
                assert column.type.name == other.type.name
                assert list(column.type.enums) == list(other.type.enums)
    storage = optuna.storages.RDBStorage("sqlite:///:memory:")
    assert storage.get_head_version() == _queue.SCHEMA_REVISION


# --- the reads match Optuna's own API ----------------------------------------------------------


def _small_study(url: str) -> tuple[optuna.storages.RDBStorage, int, Plan]:
    """A study with every state, value kind and param kind, part claimed, part plain Optuna."""
    raw = {"objective": "x", "sampler": "random", "n_trials": 50, "seed": 3, "params": {
        "lr": {"low": 1e-4, "high": 1e-1, "log": True}, "n": {"low": 1, "high": 9, "step": 2},
        "act": {"values": ["relu", "tanh"]}}}
    plan = Plan.from_spec(parse_spec_dict(raw))
    storage, study_id = _new_study(url, plan=plan)
    queue = StudyQueue(storage, study_id)
    study = optuna.load_study(study_name="s", storage=storage)
    ends = [(TrialState.COMPLETE, 0.5), (TrialState.PRUNED, None), (TrialState.COMPLETE, 0.9),
            (TrialState.FAIL, None), (TrialState.COMPLETE, 0.9), (TrialState.COMPLETE, -math.inf),
            (TrialState.RUNNING, None), (TrialState.COMPLETE, 0.2), (TrialState.RUNNING, None)]
    labels = ["healthy", "plateau", "overfitting", None, "healthy", "diverged", None, "plateau",
              None]
    for i, ((state, value), label) in enumerate(zip(ends, labels, strict=True)):
        claim = queue.claim(plan, {"host": "h", "pid": i})
        assert claim is not None
        _record_params(storage, claim, plan)
        for step in range(i % 4):
            reported = [0.1 * step, math.nan, math.inf][step % 3] if i == 3 else 0.1 * step
            storage.set_trial_intermediate_value(claim.trial_id, step, reported)
        if label is not None:
            storage.set_trial_user_attr(claim.trial_id, "diagnosis",
                                        {"label": label, "evidence": {"x": i}})
        if state != TrialState.RUNNING:
            storage.set_trial_user_attr(claim.trial_id, OUTCOME_ATTR, state.name.lower())
            storage.set_trial_state_values(claim.trial_id, state,
                                           None if value is None else [value])
    study.add_trial(optuna.trial.create_trial(
        value=0.95, params={"lr": 0.01, "n": 3},
        distributions={"lr": FloatDistribution(1e-4, 1e-1, log=True),
                       "n": IntDistribution(1, 9, step=2)},
        intermediate_values={0: 0.1, 5: 0.3}, user_attrs={OUTCOME_ATTR: "completed"}))
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params={"act": "tanh"},
        distributions={"act": CategoricalDistribution(["relu", "tanh"])}))
    return storage, study_id, plan


KEYS = (OUTCOME_ATTR, "diagnosis", "error", SLOT_ATTR, RETRY_OF_ATTR)


def test_the_reads_match_optunas_api(db_url: str) -> None:
    storage, study_id, _ = _small_study(db_url)
    reads = StudyReads(storage, study_id)
    theirs = _optuna_trials(db_url)
    assert reads.counts() == {s.name: n for s, n in Counter(t.state for t in theirs).items()}
    assert counts_by_state(storage) == {study_id: reads.counts()}
    assert reads.counts_by_attr(OUTCOME_ATTR) == Counter(
        t.user_attrs[OUTCOME_ATTR] for t in theirs if OUTCOME_ATTR in t.user_attrs)
    assert reads.counts_by_field("diagnosis", "label") == Counter(
        t.user_attrs["diagnosis"]["label"] for t in theirs if "diagnosis" in t.user_attrs)
    assert reads.count_with_attr(SLOT_ATTR) == 9
    for page_size in (1, 4, 500):
        rows = list(reads.trials(KEYS, page_size=page_size))
        assert [r.number for r in rows] == [t.number for t in theirs]
        for row, t in zip(rows, theirs, strict=True):
            assert (row.trial_id, row.state, row.params) == (t._trial_id, t.state, t.params)
            assert row.value == t.value or (row.value is None and t.value is None)
            assert (row.datetime_start, row.datetime_complete) == (t.datetime_start,
                                                                   t.datetime_complete)
            assert row.user_attrs == {k: v for k, v in t.user_attrs.items() if k in KEYS}
            assert row.last_step == max(t.intermediate_values, default=None)
    finished = [r.number for r in reads.trials(states=(TrialState.COMPLETE,))]
    assert finished == [t.number for t in theirs if t.state == TrialState.COMPLETE]
    best = reads.best(StudyDirection.MAXIMIZE, KEYS)
    assert best is not None and best.number == 9  # plain Optuna's 0.95
    # tunesvc's best among equals is the lowest number; -inf is no best when minimizing
    worst = reads.best(StudyDirection.MINIMIZE)
    assert worst is not None and worst.value == 0.2
    running = reads.running(KEYS)
    assert [r.trial.number for r in running] == [t.number for t in theirs
                                                 if t.state == TrialState.RUNNING]
    assert all(r.trial.user_attrs[WORKER_ATTR]["host"] == "h" for r in running)
    assert all(r.heartbeat_age_s is not None and r.heartbeat_age_s < 60 for r in running)
    assert reads.others_running()
    assert reads.others_running(exclude=running[0].trial.trial_id)


def test_finished_since_reads_only_what_is_new(db_url: str) -> None:
    storage, study_id, plan = _small_study(db_url)
    reads = StudyReads(storage, study_id)
    theirs = {t.number: t for t in _optuna_trials(db_url)}
    first, cursor = reads.finished_since()
    ranked = (TrialState.COMPLETE, TrialState.PRUNED)
    assert [f.number for f in first] == sorted(n for n, t in theirs.items() if t.state in ranked)
    for f in first:
        t = theirs[f.number]
        assert f.state == t.state and (f.value == t.value or f.value is t.value is None)
        assert f.intermediate_values.keys() == t.intermediate_values.keys()
        for step, v in f.intermediate_values.items():
            assert v == t.intermediate_values[step] or (math.isnan(v) and math.isnan(
                t.intermediate_values[step]))
    unfinished = {t._trial_id for t in theirs.values() if not t.state.is_finished()}
    assert cursor.pending == frozenset(unfinished)
    assert reads.finished_since(cursor) == ([], cursor)
    # One running trial finishes, one new trial is claimed and finishes, one is claimed only.
    running = reads.running()[0].trial
    storage.set_trial_state_values(running.trial_id, TrialState.PRUNED)
    queue = StudyQueue(storage, study_id)
    new, still = queue.claim(plan, {}), queue.claim(plan, {})
    assert new and still
    storage.set_trial_intermediate_value(new.trial_id, 2, 0.25)
    storage.set_trial_state_values(new.trial_id, TrialState.COMPLETE, [0.3])
    second, cursor2 = reads.finished_since(cursor)
    reported = theirs[running.number].intermediate_values
    assert [(f.trial_id, f.state, f.value, f.intermediate_values) for f in second] == [
        (running.trial_id, TrialState.PRUNED, None, reported),
        (new.trial_id, TrialState.COMPLETE, 0.3, {2: 0.25})]
    assert cursor2.high == still.trial_id
    assert still.trial_id in cursor2.pending and running.trial_id not in cursor2.pending
    only = reads.finished_since(cursor, steps=[2, 7])[0]
    assert [f.intermediate_values for f in only] == [
        {s: v for s, v in reported.items() if s in (2, 7)}, {2: 0.25}]
    # Many pending ids are read as a range: the same answer.
    many = FinishedCursor(cursor.high, frozenset(cursor.pending | set(range(-600, 0))))
    assert reads.finished_since(many)[0] == second


def test_reads_of_an_empty_study(db_url: str) -> None:
    storage, study_id = _new_study(db_url, plan=_grid())
    reads = StudyReads(storage, study_id)
    assert reads.counts() == {} and list(reads.trials()) == [] and reads.running() == []
    assert reads.best(StudyDirection.MAXIMIZE) is None and not reads.others_running()
    assert reads.finished_since() == ([], FinishedCursor())
    assert counts_by_state(storage) == {}
