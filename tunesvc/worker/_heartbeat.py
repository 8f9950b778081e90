"""Crash safety for workers: heartbeats, lost trials run again, database calls retried.

A worker beats for the trial it runs, in a thread, through Optuna's heartbeat
(``RDBStorage.record_heartbeat``). Every worker also looks, between trials and at each beat,
for RUNNING trials whose heartbeat is older than the grace period: their worker was killed or
its machine vanished. ``optuna.storages.fail_stale_trials`` marks such a trial FAIL (one worker
wins that transition) and :class:`RetryLostTrial` queues its params again on the same slot, so
the retry resumes from the slot's checkpoint. The retry carries its history in user attributes.

Database calls are retried while the database is away (a restart, a failover), for at most
``DB_RETRY_S``; a worker that just lost the database fails nobody's trial until it has been
back for a grace period, since the other workers' heartbeats lapsed in the same outage.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from tunesvc.curves._curves import OUTCOME_ATTR

SLOT_ATTR = "slot"
"""User attribute: the index of the queued draw (grid cell or random draw) a trial runs."""
RETRY_OF_ATTR = "retry_of"
"""User attribute of a retry: the number of the trial it runs again."""
RETRY_HISTORY_ATTR = "retry_history"
"""User attribute of a retry: every earlier attempt at its slot, oldest first, as
``{"trial": number, "reason": "lost" | "interrupted", "worker": {...}}``."""
WORKER_ATTR = "worker"
"""User attribute: where a trial runs, ``{"host", "pid", "device", "worker"}``."""

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
# Heartbeats are experimental in Optuna; tunesvc relies on them on purpose, once per beat.
warnings.filterwarnings("ignore", message=r".*fail_stale_trials",
                        category=optuna.exceptions.ExperimentalWarning)


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
    params = dict(trial.system_attrs.get("fixed_params") or trial.params)
    slot = int(trial.user_attrs.get(SLOT_ATTR, trial.number))
    history = list(trial.user_attrs.get(RETRY_HISTORY_ATTR, []))
    history.append({"trial": trial.number, "reason": reason,
                    "worker": trial.user_attrs.get(WORKER_ATTR)})
    attrs = {SLOT_ATTR: slot, RETRY_OF_ATTR: trial.number, RETRY_HISTORY_ATTR: history}
    started = time.monotonic()
    delay = 0.1
    first = True
    while True:
        try:
            if not first:
                for t in study.get_trials(deepcopy=False):
                    if t.user_attrs.get(RETRY_OF_ATTR) == trial.number:
                        return t.number
            first = False
            study.enqueue_trial(params, user_attrs=attrs)
            break
        except Exception as e:
            if not is_transient(e) or time.monotonic() - started > DB_RETRY_S:
                raise
            if health is not None:
                health.failed()
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    for t in reversed(study.get_trials(deepcopy=False, states=(TrialState.WAITING,))):
        if t.user_attrs.get(RETRY_OF_ATTR) == trial.number:
            return t.number
    return None


def lost_attempts(trial: FrozenTrial) -> int:
    """How many times ``trial``'s slot was lost with its worker before this attempt."""
    history = trial.user_attrs.get(RETRY_HISTORY_ATTR, [])
    return sum(1 for h in history if isinstance(h, dict) and h.get("reason") == "lost")


class RetryLostTrial:
    """``heartbeat_stale_trial_callback``: run a lost trial again on its slot, at most
    ``max_retries`` times per slot (as ``optuna.storages.RetryHeartbeatStaleTrialCallback``, but
    keeping tunesvc's slot, so the retry resumes from the slot's checkpoint)."""

    def __init__(self, max_retries: int = MAX_LOST_RETRIES) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries: expected an int >= 0, got {max_retries=}")
        self.max_retries = max_retries

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if lost_attempts(trial) >= self.max_retries:
            _logger.warning("trial %d was lost with its worker; its slot reached the retry "
                            "limit of %d and is not run again", trial.number, self.max_retries)
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
    health: DatabaseHealth | None = None,
) -> list[int | None]:
    """Queue the missing retry of every orphaned trial among ``trials`` (the study's, just read;
    see ``ORPHAN_AFTER_S``): failed as lost by a worker that died before queueing it, or
    interrupted and failed by one that died before queueing it. The retry limit of lost slots
    holds. A retry queued twice (this sweep racing the late worker) is caught when claimed: see
    ``is_duplicate_retry``.
    """
    retried = {t.user_attrs.get(RETRY_OF_ATTR) for t in trials}
    candidates = [
        t for t in trials
        if t.state == TrialState.FAIL
        and t.user_attrs.get(OUTCOME_ATTR) in (None, "interrupted")
        and t.number not in retried
    ]
    if not candidates:
        return []
    ages = heartbeat_ages(storage, [t._trial_id for t in candidates])
    callback = getattr(storage, "failed_trial_callback", None)
    limit = callback.max_retries if isinstance(callback, RetryLostTrial) else MAX_LOST_RETRIES
    queued: list[int | None] = []
    for t in candidates:
        age = ages.get(t._trial_id)
        if age is None or age < grace_s + ORPHAN_AFTER_S:
            continue
        reason = "interrupted" if t.user_attrs.get(OUTCOME_ATTR) == "interrupted" else "lost"
        if reason == "lost" and lost_attempts(t) >= limit:
            continue
        number = requeue(study, t, reason, health=health)
        _logger.warning("trial %d was failed (%s) by a worker that died before queueing its "
                        "retry; queued again as trial %s", t.number, reason, number)
        queued.append(number)
    return queued


def is_duplicate_retry(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Whether ``trial`` retries a trial that an earlier-numbered trial already retries: of two
    retries of one attempt, the lower number runs, whoever claims first."""
    retry_of = trial.user_attrs.get(RETRY_OF_ATTR)
    if retry_of is None:
        return False
    return any(
        t.user_attrs.get(RETRY_OF_ATTR) == retry_of and t.number < trial.number
        for t in study.get_trials(deepcopy=False)
    )


def fail_lost_trials(study: optuna.Study, health: DatabaseHealth) -> None:
    """Fail (and, through the storage's callback, requeue) trials whose worker stopped beating.
    Skipped while this worker's own database access has not settled after an outage."""
    if not health.settled():
        return
    try:
        optuna.storages.fail_stale_trials(study)
    except Exception as e:
        if not is_transient(e):
            raise
        health.failed()


class Heartbeat:
    """Beat for one running trial in a thread, and look for lost trials of other workers.

    Example::

        with Heartbeat(study, trial_id, interval_s=10, health=health):
            train()
    """

    def __init__(
        self, study: optuna.Study, trial_id: int, *, interval_s: float, health: DatabaseHealth
    ) -> None:
        self._study = study
        self._trial_id = trial_id
        self._interval_s = interval_s
        self._health = health
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tunesvc-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval_s + 5)

    def _run(self) -> None:
        storage = self._study._storage
        while not self._stop.wait(self._interval_s):
            try:
                storage.record_heartbeat(self._trial_id)  # type: ignore[attr-defined]
                self._health.succeeded()
                fail_lost_trials(self._study, self._health)
            except Exception as e:  # a beat that failed is retried at the next one
                self._health.failed()
                if not is_transient(e):
                    _logger.warning("heartbeat of trial id %d failed: %s", self._trial_id, e)


_HEARTBEATS = sqlalchemy.table(
    "trial_heartbeats",
    sqlalchemy.column("trial_id", sqlalchemy.Integer),
    sqlalchemy.column("heartbeat", sqlalchemy.DateTime),
)


def heartbeat_ages(storage: optuna.storages.RDBStorage, trial_ids: list[int]) -> dict[int, float]:
    """Seconds since each trial's last heartbeat, by the database's clock (a read of Optuna's
    ``trial_heartbeats`` table; trials that never beat are absent)."""
    if not trial_ids:
        return {}
    query = sqlalchemy.select(_HEARTBEATS.c.trial_id, _HEARTBEATS.c.heartbeat).where(
        _HEARTBEATS.c.trial_id.in_(trial_ids)
    )
    now_query = sqlalchemy.select(sqlalchemy.func.now(type_=sqlalchemy.DateTime))
    with storage.engine.connect() as conn:
        now = conn.execute(now_query).scalar_one()
        rows = conn.execute(query).all()
    return {int(trial_id): _age(now, beat) for trial_id, beat in rows if beat is not None}


def _age(now: Any, beat: Any) -> float:
    if isinstance(now, str):
        now = datetime.fromisoformat(now)
    if isinstance(beat, str):
        beat = datetime.fromisoformat(beat)
    age: float = (now.replace(tzinfo=None) - beat.replace(tzinfo=None)).total_seconds()
    return max(0.0, age)
