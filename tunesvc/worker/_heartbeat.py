"""Crash safety for workers: heartbeats, lost trials run again, database calls retried.

A worker beats for the trial it runs, in a thread, through Optuna's heartbeat
(``RDBStorage.record_heartbeat``). Every worker also looks, between trials and at each beat,
for RUNNING trials whose heartbeat is older than the grace period: their worker was killed or
its machine vanished. :func:`fail_lost_trials` marks such a trial FAIL (one worker wins that
transition) and queues its params again on the same slot, so the retry resumes from the slot's
checkpoint. The retry carries its history in user attributes.

Database calls are retried while the database is away (a restart, a failover), for at most
``DB_RETRY_S``; a worker that just lost the database fails nobody's trial until it has been
back for a grace period, since the other workers' heartbeats lapsed in the same outage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from tunesvc.storage import attrs
from tunesvc.storage._heartbeats import heartbeat_ages, running_heartbeats

HEARTBEAT_INTERVAL_S = 10
"""Default seconds between heartbeats; a trial is lost after two intervals without one."""
MAX_LOST_RETRIES = 3
"""Default number of times a slot is run again after its worker was lost."""
DB_RETRY_S = 120.0
"""How long a worker keeps retrying a database call while the database is away."""
ORPHAN_AFTER_S = 30.0
"""A trial failed as lost (or interrupted) whose retry is still missing this long after the
grace period past its last heartbeat is an orphan: the worker that failed it died before it
queued the retry. (That worker queues it at once, or, while the database is away, up to
``DB_RETRY_S`` later; the retry then queued twice runs once, see ``is_duplicate_retry``.)"""

T = TypeVar("T")
_logger = logging.getLogger("tunesvc")


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a lost or refused database connection, or a
    lock timeout: worth trying again. Optuna wraps SQLAlchemy errors in StorageInternalError."""
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and (
            seen.connection_invalidated
            or isinstance(seen, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError)
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class DatabaseHealth:
    """When this worker last had trouble reaching the database (thread-safe)."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._lock = threading.Lock()
        self._healthy_since = time.monotonic()
        self._down = False

    def failed(self) -> None:
        with self._lock:
            self._down = True

    def succeeded(self) -> None:
        with self._lock:
            if self._down:
                self._down = False
                self._healthy_since = time.monotonic()

    def settled(self) -> bool:
        """Reachable for a whole grace period: other workers had time to beat again."""
        with self._lock:
            return not self._down and time.monotonic() - self._healthy_since >= self.grace_s


def retry_db(
    call: Callable[[], T], *, health: DatabaseHealth | None = None, limit_s: float = DB_RETRY_S
) -> T:
    """``call()``, tried again with backoff while the database is unreachable.

    Only for calls that are safe to repeat (reads, upserts, state changes that check the
    current state); creating a trial is not one of them, see :func:`requeue`.
    """
    started = time.monotonic()
    delay = 0.1
    warned = False
    while True:
        try:
            result = call()
        except Exception as e:
            if not is_transient(e) or time.monotonic() - started > limit_s:
                raise
            if health is not None:
                health.failed()
            if not warned:
                _logger.warning("database unreachable, retrying for up to %.0fs", limit_s)
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            continue
        if health is not None:
            health.succeeded()
        return result


def requeue(
    study: optuna.Study, trial: FrozenTrial, reason: str, *, health: DatabaseHealth | None = None
) -> int | None:
    """Queue ``trial``'s params again on its slot, with the attempt added to the retry history.

    The new trial's number, or the existing retry's when an earlier attempt of this call was
    committed though its answer was lost (so a slot is never queued twice).
    """
    # The params a trial was queued with: a legacy WAITING trial's draw sits in Optuna's
    # enqueue attribute until it ran (the lazy queue replaces this).
    params = dict(trial.system_attrs.get("fixed_params") or trial.params)
    slot = attrs.SLOT.get(trial)
    history = attrs.RETRY_HISTORY.get(trial) or []
    history.append(attrs.Attempt(trial.number, reason, attrs.WORKER.get(trial)))
    user_attrs = dict([attrs.SLOT.item(trial.number if slot is None else slot),
                       attrs.RETRY_OF.item(trial.number), attrs.RETRY_HISTORY.item(history)])
    started = time.monotonic()
    delay = 0.1
    first = True
    while True:
        try:
            if not first:
                for t in study.get_trials(deepcopy=False):
                    if attrs.RETRY_OF.get(t) == trial.number:
                        return t.number
            first = False
            study.enqueue_trial(params, user_attrs=user_attrs)
            break
        except Exception as e:
            if not is_transient(e) or time.monotonic() - started > DB_RETRY_S:
                raise
            if health is not None:
                health.failed()
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    for t in reversed(study.get_trials(deepcopy=False, states=(TrialState.WAITING,))):
        if attrs.RETRY_OF.get(t) == trial.number:
            return t.number
    return None


def lost_attempts(trial: FrozenTrial) -> int:
    """How many times ``trial``'s slot was lost with its worker before this attempt."""
    return sum(1 for a in attrs.RETRY_HISTORY.get(trial) or [] if a.reason == "lost")


def requeue_lost(study: optuna.Study, trial: FrozenTrial, max_retries: int) -> None:
    """Run a lost trial again on its slot, at most ``max_retries`` times per slot (as
    ``optuna.storages.RetryHeartbeatStaleTrialCallback``, but keeping tunesvc's slot, so the
    retry resumes from the slot's checkpoint)."""
    if lost_attempts(trial) >= max_retries:
        _logger.warning("trial %d was lost with its worker; its slot reached the retry "
                        "limit of %d and is not run again", trial.number, max_retries)
        return
    number = requeue(study, trial, "lost")
    _logger.warning("trial %d was lost with its worker (no heartbeat); queued again as "
                    "trial %s", trial.number, number)


def requeue_orphans(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    trials: list[FrozenTrial],
    *,
    grace_s: float,
    max_retries: int,
    health: DatabaseHealth | None = None,
) -> list[int | None]:
    """Queue the missing retry of every orphaned trial among ``trials`` (the study's, just read;
    see ``ORPHAN_AFTER_S``): failed as lost by a worker that died before queueing it, or
    interrupted and failed by one that died before queueing it. The retry limit of lost slots
    holds. A retry queued twice (this sweep racing the late worker) is caught when claimed: see
    ``is_duplicate_retry``.
    """
    retried = {attrs.RETRY_OF.get(t) for t in trials}
    candidates = {
        t.number: t for t in trials
        if t.state == TrialState.FAIL
        and attrs.OUTCOME.get(t) in (None, "interrupted")
        and t.number not in retried
    }
    if not candidates:
        return []
    ids = {storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), n): n for n in candidates}
    ages = heartbeat_ages(storage, list(ids))
    queued: list[int | None] = []
    for trial_id, number in ids.items():
        t = candidates[number]
        age = ages.get(trial_id)
        if age is None or age < grace_s + ORPHAN_AFTER_S:
            continue
        reason = "interrupted" if attrs.OUTCOME.get(t) == "interrupted" else "lost"
        if reason == "lost" and lost_attempts(t) >= max_retries:
            continue
        number_queued = requeue(study, t, reason, health=health)
        _logger.warning("trial %d was failed (%s) by a worker that died before queueing its "
                        "retry; queued again as trial %s", t.number, reason, number_queued)
        queued.append(number_queued)
    return queued


def is_duplicate_retry(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Whether ``trial`` retries a trial that an earlier-numbered trial already retries: of two
    retries of one attempt, the lower number runs, whoever claims first."""
    retry_of = attrs.RETRY_OF.get(trial)
    if retry_of is None:
        return False
    return any(
        attrs.RETRY_OF.get(t) == retry_of and t.number < trial.number
        for t in study.get_trials(deepcopy=False)
    )


def fail_lost_trials(
    storage: optuna.storages.RDBStorage,
    study: optuna.Study,
    study_id: int,
    *,
    grace_s: float,
    max_retries: int,
    health: DatabaseHealth,
) -> None:
    """Fail the study's RUNNING trials whose heartbeat is older than ``grace_s`` (their worker
    died), and queue each again on its slot (:func:`requeue_lost`). Of several workers that see
    the same stale trial, the one whose FAIL lands queues it. Skipped while this worker's own
    database access has not settled after an outage."""
    if not health.settled():
        return
    try:
        for trial_id, (_number, age) in running_heartbeats(storage, study_id).items():
            if age is None or age <= grace_s:
                continue  # beating, or never beat: not a tunesvc worker's trial
            try:
                won = storage.set_trial_state_values(trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker failed it, or its own worker finished it meanwhile
            if won:
                requeue_lost(study, storage.get_trial(trial_id), max_retries)
    except Exception as e:
        if not is_transient(e):
            raise
        health.failed()


class Heartbeat:
    """Beat for one running trial in a thread, and look for lost trials of other workers.

    Example::

        with Heartbeat(storage, trial_id, study, study_id, interval_s=10, health=health,
                       max_retries=3):
            train()
    """

    def __init__(
        self,
        storage: optuna.storages.RDBStorage,
        trial_id: int,
        study: optuna.Study,
        study_id: int,
        *,
        interval_s: float,
        health: DatabaseHealth,
        max_retries: int,
    ) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._study = study
        self._study_id = study_id
        self._interval_s = interval_s
        self._health = health
        self._max_retries = max_retries
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tunesvc-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval_s + 5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._storage.record_heartbeat(self._trial_id)
                self._health.succeeded()
                fail_lost_trials(self._storage, self._study, self._study_id,
                                 grace_s=2 * self._interval_s, max_retries=self._max_retries,
                                 health=self._health)
            except Exception as e:  # a beat that failed is retried at the next one
                self._health.failed()
                if not is_transient(e):
                    _logger.warning("heartbeat of trial id %d failed: %s", self._trial_id, e)
