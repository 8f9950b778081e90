"""Crash safety for workers: heartbeats, lost trials run again, database calls retried.

A worker beats for the trials it runs, in a thread, through Optuna's heartbeat
(``RDBStorage.record_heartbeat``). Every worker also looks, between trials and at each beat,
for RUNNING trials whose heartbeat is older than the grace period: their worker was killed or
its machine vanished. :func:`fail_lost_trials` fails each such trial (outcome ``lost``) and
queues its slot again in one transaction (:meth:`tunesvc.storage.StudyQueue.fail_lost`), so the
retry resumes from the slot's checkpoint; the retry carries its history in user attributes.

Database calls are retried while the database is away (a restart, a failover), for at most
``DB_RETRY_S``; a worker that just lost the database fails nobody's trial until it has been
back for a grace period, since the other workers' heartbeats lapsed in the same outage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import optuna
import sqlalchemy

from tunesvc.storage import StudyQueue

HEARTBEAT_INTERVAL_S = 10
"""Default seconds between heartbeats; a trial is lost after two intervals without one."""
MAX_LOST_RETRIES = 3
"""Default number of times a slot is run again after its worker was lost."""
DB_RETRY_S = 120.0
"""How long a worker keeps retrying a database call while the database is away."""
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


def fail_lost_trials(
    queue: StudyQueue, *, grace_s: float, max_retries: int, health: DatabaseHealth
) -> None:
    """Fail the study's RUNNING trials whose heartbeat is older than ``grace_s`` (their worker
    died), each with its retry queued on its slot unless the slot was lost ``max_retries``
    times (:meth:`StudyQueue.fail_lost`). Skipped while this worker's own database access has
    not settled after an outage."""
    if not health.settled():
        return
    try:
        lost = queue.fail_lost(grace_s, max_retries)
    except Exception as e:
        if not is_transient(e):
            raise
        health.failed()
        return
    for trial in lost:
        if trial.retry is None:
            _logger.warning("trial %d was lost with its worker; its slot reached the retry "
                            "limit of %d and is not run again", trial.number, max_retries)
        else:
            _logger.warning("trial %d was lost with its worker (no heartbeat); queued again as "
                            "trial %d", trial.number, trial.retry.number)


class Heartbeat:
    """Beat for the trials this worker runs, in a thread, and look for lost trials of other
    workers at each beat. The set of trials may change while it beats (a population).

    Example::

        with Heartbeat(storage, queue, [trial_id], interval_s=10, health=health,
                       max_retries=3):
            train()
    """

    def __init__(
        self,
        storage: optuna.storages.RDBStorage,
        queue: StudyQueue,
        trial_ids: Iterable[int],
        *,
        interval_s: float,
        health: DatabaseHealth,
        max_retries: int,
    ) -> None:
        self._storage = storage
        self._queue = queue
        self._trial_ids = set(trial_ids)
        self._lock = threading.Lock()
        self._interval_s = interval_s
        self._health = health
        self._max_retries = max_retries
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tunesvc-heartbeat", daemon=True)

    def add(self, trial_id: int) -> None:
        with self._lock:
            self._trial_ids.add(trial_id)

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self._trial_ids.discard(trial_id)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval_s + 5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            with self._lock:
                trial_ids = sorted(self._trial_ids)
            try:
                for trial_id in trial_ids:
                    self._storage.record_heartbeat(trial_id)
                self._health.succeeded()
                fail_lost_trials(self._queue, grace_s=2 * self._interval_s,
                                 max_retries=self._max_retries, health=self._health)
            except Exception as e:  # a beat that failed is retried at the next one
                self._health.failed()
                if not is_transient(e):
                    _logger.warning("heartbeat of trial ids %s failed: %s", trial_ids, e)
