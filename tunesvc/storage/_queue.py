"""A study's lazy queue, in SQL on Optuna's own tables: create, claim, requeue, lost and orphans.

``study create`` writes no trials: only the queue's state, a study system attribute
(``tunesvc:queue``, JSON) holding the budget and the next slot. A worker claims in ONE
transaction that holds the study's row locked, as Optuna does when it creates a trial
(``FOR NO KEY UPDATE`` on PostgreSQL, ``FOR UPDATE`` on MySQL, ``BEGIN IMMEDIATE`` on SQLite):

1. the lowest-numbered WAITING trial, if any (only retries are WAITING, and the trials of a
   study created by tunesvc before the lazy queue, which keep their enqueued params), else
2. the next slot ``s < budget``: a new RUNNING trial is inserted for it.

The same transaction writes the trial's heartbeat (so a worker killed right after claiming leaves
a trial that goes stale) and its user attributes ``slot`` and ``worker``. Params are not written:
the worker suggests them (the slot's values, from :class:`tunesvc.spec._plan.Plan`), so Optuna
records them with the objective's own distributions.

Costs stay flat as the study grows. Trial numbers mean what Optuna's mean (the count of the
study's trials with a lower ``trial_id``), computed from the last trial the queue knows plus a
primary-key range count of trials inserted since (by anyone, plain Optuna included). Every
unfinished trial of the study has ``trial_id >= low``, a bound the claim advances, so finding
WAITING, RUNNING and stale trials is a primary-key range scan over the trials started since the
oldest unfinished one, never a scan of the study.

Every query here is SQLAlchemy Core on tables declared to match Optuna's models at schema
revision :data:`SCHEMA_REVISION`; a storage at another revision is refused with one line.
Reads live in :mod:`tunesvc.storage._reads`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.study import StudyDirection
from optuna.trial import TrialState

from tunesvc._errors import StorageError, StudyNotFoundError
from tunesvc.spec._plan import Plan
from tunesvc.storage import _attrs as attrs
from tunesvc.storage._database import redact

SCHEMA_REVISION = "v3.2.0.a"
"""Optuna's schema revision (``alembic_version``) the SQL here is written for (Optuna 5)."""

QUEUE_ATTR = "tunesvc:queue"
"""Study system attribute: the queue's state (see :class:`QueueState`)."""
FIXED_PARAMS_ATTR = "fixed_params"
"""Optuna's system attribute of an enqueued trial (``Study.enqueue_trial``): its params."""
# The trial attributes the queue reads and writes (tunesvc's schema: storage/_attrs.py).
SLOT_ATTR = attrs.SLOT.key
RETRY_OF_ATTR = attrs.RETRY_OF.key
RETRY_HISTORY_ATTR = attrs.RETRY_HISTORY.key
RETRIED_AS_ATTR = attrs.RETRIED_AS.key
WORKER_ATTR = attrs.WORKER.key
OUTCOME_ATTR = attrs.OUTCOME.key

_UNFINISHED = (TrialState.RUNNING, TrialState.WAITING)
ORPHANED = attrs.RETRIED_OUTCOMES
"""Outcomes of a failed trial whose slot must run again (``lost``, ``interrupted``)."""


class TrialValueType(enum.Enum):
    """As ``optuna.storages._rdb.models.TrialValueModel.TrialValueType`` (same enum type)."""

    FINITE = 1
    INF_POS = 2
    INF_NEG = 3


class TrialIntermediateValueType(enum.Enum):
    """As Optuna's ``TrialIntermediateValueModel.TrialIntermediateValueType``."""

    FINITE = 1
    INF_POS = 2
    INF_NEG = 3
    NAN = 4


# Optuna's tables as its models declare them (never created from here; Optuna creates them).
_META = sa.MetaData()
_KEY = sa.String(512)
studies = sa.Table(
    "studies", _META,
    sa.Column("study_id", sa.Integer, primary_key=True),
    sa.Column("study_name", _KEY, nullable=False),
)
study_directions = sa.Table(
    "study_directions", _META,
    sa.Column("study_direction_id", sa.Integer, primary_key=True),
    sa.Column("direction", sa.Enum(StudyDirection), nullable=False),
    sa.Column("study_id", sa.Integer, nullable=False),
    sa.Column("objective", sa.Integer, nullable=False),
)
study_system_attributes = sa.Table(
    "study_system_attributes", _META,
    sa.Column("study_system_attribute_id", sa.Integer, primary_key=True),
    sa.Column("study_id", sa.Integer),
    sa.Column("key", _KEY),
    sa.Column("value_json", sa.Text),
)
trials = sa.Table(
    "trials", _META,
    sa.Column("trial_id", sa.Integer, primary_key=True),
    sa.Column("number", sa.Integer),
    sa.Column("study_id", sa.Integer),
    sa.Column("state", sa.Enum(TrialState), nullable=False),
    sa.Column("datetime_start", sa.DateTime),
    sa.Column("datetime_complete", sa.DateTime),
)
trial_params = sa.Table(
    "trial_params", _META,
    sa.Column("param_id", sa.Integer, primary_key=True),
    sa.Column("trial_id", sa.Integer),
    sa.Column("param_name", _KEY),
    sa.Column("param_value", sa.Float(precision=53)),
    sa.Column("distribution_json", sa.Text),
)
trial_values = sa.Table(
    "trial_values", _META,
    sa.Column("trial_value_id", sa.Integer, primary_key=True),
    sa.Column("trial_id", sa.Integer, nullable=False),
    sa.Column("objective", sa.Integer, nullable=False),
    sa.Column("value", sa.Float(precision=53)),
    sa.Column("value_type", sa.Enum(TrialValueType), nullable=False),
)
trial_intermediate_values = sa.Table(
    "trial_intermediate_values", _META,
    sa.Column("trial_intermediate_value_id", sa.Integer, primary_key=True),
    sa.Column("trial_id", sa.Integer, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("intermediate_value", sa.Float(precision=53)),
    sa.Column("intermediate_value_type", sa.Enum(TrialIntermediateValueType), nullable=False),
)
trial_user_attributes = sa.Table(
    "trial_user_attributes", _META,
    sa.Column("trial_user_attribute_id", sa.Integer, primary_key=True),
    sa.Column("trial_id", sa.Integer),
    sa.Column("key", _KEY),
    sa.Column("value_json", sa.Text),
)
trial_system_attributes = sa.Table(
    "trial_system_attributes", _META,
    sa.Column("trial_system_attribute_id", sa.Integer, primary_key=True),
    sa.Column("trial_id", sa.Integer),
    sa.Column("key", _KEY),
    sa.Column("value_json", sa.Text),
)
trial_heartbeats = sa.Table(
    "trial_heartbeats", _META,
    sa.Column("trial_heartbeat_id", sa.Integer, primary_key=True),
    sa.Column("trial_id", sa.Integer, nullable=False),
    sa.Column("heartbeat", sa.DateTime, nullable=False),
)
alembic_version = sa.Table(
    "alembic_version", _META, sa.Column("version_num", sa.String(32), primary_key=True)
)


def check_schema(storage: optuna.storages.RDBStorage) -> sa.engine.Engine:
    """The storage's engine, once its Optuna schema revision is :data:`SCHEMA_REVISION`;
    else :class:`StorageError` with one line naming the revision and the fix."""
    engine = storage.engine
    where = redact(engine.url)
    try:
        with engine.connect() as conn:
            revision = conn.execute(sa.select(alembic_version.c.version_num)).scalar()
    except sa.exc.ProgrammingError:
        revision = None
    except sa.exc.OperationalError as e:
        if "no such table" not in str(e):
            raise
        revision = None
    if revision == SCHEMA_REVISION:
        if engine.dialect.name == "sqlite":
            _check_sqlite_transactions(engine, where)
        return engine
    if revision is None:
        raise StorageError(f"storage {where} holds no Optuna schema (no alembic_version); open "
                           "it with tunesvc first, which creates it")
    if revision in storage.get_all_versions():
        raise StorageError(
            f"storage {where} has Optuna schema revision {revision}; tunesvc needs "
            f"{SCHEMA_REVISION}: run `tunesvc storage upgrade --storage '{where}'` (back the "
            "database up and stop its workers first)"
        )
    raise StorageError(
        f"storage {where} has Optuna schema revision {revision}, which this tunesvc (written "
        f"for {SCHEMA_REVISION}, Optuna {optuna.__version__}) does not know; upgrade tunesvc "
        "and Optuna on this machine"
    )


def _check_sqlite_transactions(engine: sa.engine.Engine, where: str) -> None:
    # A claim reads, then writes: on SQLite that needs BEGIN IMMEDIATE, which the engine of
    # tunesvc's open_storage issues (it runs the driver without its own transactions).
    with engine.connect() as conn:
        if conn.connection.dbapi_connection.isolation_level is not None:  # type: ignore[union-attr]
            raise StorageError(f"storage {where}: open SQLite with tunesvc's open_storage "
                               "(its claims need BEGIN IMMEDIATE)")


@dataclass(frozen=True)
class QueueState:
    """The queue of one study, kept in the study system attribute ``tunesvc:queue``."""

    budget: int
    """Slots the study runs (``0`` for a study created before the lazy queue: its trials
    were all enqueued, ``legacy``)."""
    next_slot: int = 0
    """The next slot a claim takes, while ``next_slot < budget``."""
    last_id: int | None = None
    """The last trial the queue inserted or found (``trial_id``), and its ``last_number``."""
    last_number: int = -1
    low: int = 0
    """Every unfinished trial of the study has ``trial_id >= low``."""
    legacy: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"budget": self.budget, "next_slot": self.next_slot, "last_id": self.last_id,
                "last_number": self.last_number, "low": self.low, "legacy": self.legacy}

    @classmethod
    def from_json(cls, raw: Any) -> QueueState:
        return cls(budget=int(raw["budget"]), next_slot=int(raw["next_slot"]),
                   last_id=None if raw["last_id"] is None else int(raw["last_id"]),
                   last_number=int(raw["last_number"]), low=int(raw["low"]),
                   legacy=bool(raw["legacy"]))

    @property
    def unclaimed(self) -> int:
        """Slots never claimed yet (retries waiting in the queue come on top)."""
        return max(0, self.budget - self.next_slot)


@dataclass(frozen=True)
class Claim:
    """A trial a worker now runs: RUNNING, with its heartbeat, ``slot`` and ``worker`` written."""

    trial_id: int
    number: int
    slot: int
    params: dict[str, Any]
    """The slot's params: from the plan, or the trial's enqueued params (``fixed_params``)."""
    retry_of: int | None = None
    """The number of the trial this one runs again, for a retry."""
    retry_history: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class Requeued:
    """A retry in the queue: ``created`` False when an earlier call had queued it."""

    trial_id: int
    number: int
    created: bool


@dataclass(frozen=True)
class Lost:
    """A RUNNING trial whose heartbeat stopped, failed by this call; ``retry`` None when its
    slot reached the retry limit."""

    trial_id: int
    number: int
    retry: Requeued | None


@dataclass(frozen=True)
class Orphan:
    """A trial failed as lost or interrupted whose retry was never queued."""

    trial_id: int
    number: int
    reason: str
    """``lost`` or ``interrupted``."""
    heartbeat_age_s: float


def _now_utc() -> datetime:
    # Optuna stores trial datetimes as naive UTC.
    return datetime.now(UTC).replace(tzinfo=None)


def _lost_attempts(history: Any) -> int:
    """How many earlier attempts at a slot were lost, from a ``retry_history`` JSON value."""
    attempts = attrs.RETRY_HISTORY.get({RETRY_HISTORY_ATTR: history}) or []
    return sum(1 for a in attempts if a.reason == "lost")


def _study_is(study_id: int) -> sa.ColumnElement[bool]:
    """``trials.study_id = study_id``, written so that no index on study_id can serve it: the
    queries that use it are bounded by a ``trial_id`` range, which the primary key serves."""
    return (trials.c.study_id + sa.literal_column("0")) == study_id


class StudyQueue:
    """The queue of one study. Every method is one transaction; safe to call again after a
    transient database error (a claim whose commit was lost leaves a trial that goes stale and
    is run again through its retry).

    Example::

        queue = StudyQueue.create(storage, study_id, budget=plan.budget)   # at study create
        claim = StudyQueue(storage, study_id).claim(plan, worker={"host": ..., "pid": ...})
    """

    def __init__(self, storage: optuna.storages.RDBStorage, study_id: int) -> None:
        self.engine = check_schema(storage)
        self.study_id = study_id

    @classmethod
    def create(
        cls, storage: optuna.storages.RDBStorage, study_id: int, budget: int
    ) -> StudyQueue:
        """Start the queue of a new study with ``budget`` slots (no trial is written)."""
        if budget < 0:
            raise ValueError(f"budget: expected an int >= 0, got {budget=}")
        queue = cls(storage, study_id)
        with queue._locked() as conn:
            if queue._read_state(conn) is not None:
                raise ValueError(f"study id {study_id} already has a queue")
            queue._write_state(conn, queue._found_state(conn, budget=budget, legacy=False),
                               insert=True)
        return queue

    # --- transactions -----------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[sa.Connection]:
        """A transaction holding the study's row locked, as Optuna's trial creation does."""
        with self.engine.connect() as conn:
            if self.engine.dialect.name != "sqlite":
                # Each statement must see what the previous holder of the lock committed (MySQL
                # defaults to REPEATABLE READ; a server may default to anything).
                conn = conn.execution_options(isolation_level="READ COMMITTED")
            with conn.begin():
                lock = (sa.select(studies.c.study_id)
                        .where(studies.c.study_id == self.study_id)
                        .with_for_update(key_share=True))
                if conn.execute(lock).first() is None:
                    raise StudyNotFoundError(f"study id {self.study_id} no longer exists in "
                                             f"{redact(self.engine.url)} (deleted?)")
                yield conn

    def _read_state(self, conn: sa.Connection) -> QueueState | None:
        raw = conn.execute(
            sa.select(study_system_attributes.c.value_json).where(
                study_system_attributes.c.study_id == self.study_id,
                study_system_attributes.c.key == QUEUE_ATTR,
            )
        ).scalar()
        if raw is None:
            return None
        try:
            return QueueState.from_json(json.loads(raw))
        except (KeyError, TypeError, ValueError) as e:
            raise StorageError(f"study id {self.study_id}: its queue state ({QUEUE_ATTR}) is "
                               f"unreadable: {e!r}") from None

    def _write_state(self, conn: sa.Connection, state: QueueState, *, insert: bool) -> None:
        value = json.dumps(state.to_json())
        table = study_system_attributes
        if insert:
            conn.execute(table.insert().values(study_id=self.study_id, key=QUEUE_ATTR,
                                               value_json=value))
        else:
            conn.execute(table.update()
                         .where(table.c.study_id == self.study_id, table.c.key == QUEUE_ATTR)
                         .values(value_json=value))

    def _state(self, conn: sa.Connection) -> QueueState:
        """The queue's state; a study created before the lazy queue gets one (``legacy``)."""
        state = self._read_state(conn)
        if state is None:
            state = self._found_state(conn, budget=0, legacy=True)
            self._write_state(conn, state, insert=True)
        return state

    def _found_state(self, conn: sa.Connection, *, budget: int, legacy: bool) -> QueueState:
        """A state that describes the study's trials as they are (a scan, done once)."""
        mine = trials.c.study_id == self.study_id
        last = conn.execute(sa.select(trials.c.trial_id, trials.c.number).where(mine)
                            .order_by(trials.c.trial_id.desc()).limit(1)).first()
        if last is None:
            return QueueState(budget=budget, legacy=legacy)
        low = conn.execute(sa.select(sa.func.min(trials.c.trial_id))
                           .where(mine, trials.c.state.in_(_UNFINISHED))).scalar()
        return QueueState(budget=budget, last_id=int(last.trial_id),
                          last_number=int(last.number),
                          low=int(last.trial_id) + 1 if low is None else int(low), legacy=legacy)

    def _survey(self, conn: sa.Connection, state: QueueState) -> tuple[QueueState, int | None,
                                                                          int]:
        """One query over the trials since ``low``: the oldest unfinished one (``low`` moves
        up to it), the first WAITING one, and how many trials were inserted after the queue's
        last (by anyone: Optuna's numbering counts them)."""
        since = sa.and_(_study_is(self.study_id), trials.c.trial_id >= state.low)
        oldest = (sa.select(sa.func.min(trials.c.trial_id))
                  .where(since, trials.c.state.in_(_UNFINISHED)).scalar_subquery())
        waiting = (sa.select(sa.func.min(trials.c.trial_id))
                   .where(since, trials.c.state == TrialState.WAITING).scalar_subquery())
        newer = sa.select(sa.func.count()).select_from(trials)
        if state.last_id is None:
            newer = newer.where(trials.c.study_id == self.study_id)
        else:
            newer = newer.where(_study_is(self.study_id), trials.c.trial_id > state.last_id)
        row = conn.execute(sa.select(oldest, waiting, newer.scalar_subquery())).one()
        if row[0] is not None:
            state = replace(state, low=int(row[0]))
        elif state.last_id is not None:
            state = replace(state, low=max(state.low, state.last_id + 1))
        return state, None if row[1] is None else int(row[1]), int(row[2])

    def _insert_trial(
        self, conn: sa.Connection, state: QueueState, trial_state: TrialState, newer: int
    ) -> tuple[int, int, QueueState]:
        """Insert a trial with Optuna's number: the count of the study's trials below it, that
        is the queue's last number, plus one, plus the ``newer`` trials inserted since."""
        number = state.last_number + 1 + newer
        start = _now_utc() if trial_state == TrialState.RUNNING else None
        result = conn.execute(trials.insert().values(
            number=number, study_id=self.study_id, state=trial_state, datetime_start=start))
        key = result.inserted_primary_key
        assert key is not None
        trial_id = int(key[0])
        return trial_id, number, replace(state, last_id=trial_id, last_number=number)

    # --- claim ------------------------------------------------------------------------------

    def claim(self, plan: Plan, worker: Mapping[str, Any]) -> Claim | None:
        """Take the next trial to run (see the module docstring); None when none is left.

        ``worker`` (host, pid, device, worker index) is written to the trial's ``worker``
        attribute.
        """
        with self._locked() as conn:
            before = self._state(conn)
            if before.budget and before.budget != plan.budget:
                raise ValueError(f"study id {self.study_id}: the plan runs {plan.budget} slots "
                                 f"but the queue was created for {before.budget}")
            state, waiting, newer = self._survey(conn, before)
            claimed = None if waiting is None else self._claim_waiting(conn, waiting)
            if claimed is not None:
                self._beat(conn, claimed.trial_id)
                self._set_attrs(conn, claimed.trial_id, {WORKER_ATTR: dict(worker)})
                if not claimed.params:
                    claimed = replace(claimed, params=_plan_params(plan, claimed.slot))
            elif state.next_slot < state.budget:
                slot = state.next_slot
                trial_id, number, state = self._insert_trial(conn, state, TrialState.RUNNING,
                                                              newer)
                state = replace(state, next_slot=slot + 1)
                conn.execute(trial_heartbeats.insert().values(
                    trial_id=trial_id, heartbeat=sa.func.current_timestamp()))
                self._set_attrs(conn, trial_id, {SLOT_ATTR: slot, WORKER_ATTR: dict(worker)},
                                fresh=True)
                claimed = Claim(trial_id, number, slot, plan.params(slot))
            if state != before:
                self._write_state(conn, state, insert=False)
            return claimed

    def _claim_waiting(self, conn: sa.Connection, first: int) -> Claim | None:
        """Take WAITING trial ``first``, or the next WAITING one when another took it."""
        trial_id: int | None = first
        while trial_id is not None:
            # Old workers and plain Optuna's ask() take WAITING trials without the study lock.
            taken = conn.execute(
                trials.update()
                .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.WAITING)
                .values(state=TrialState.RUNNING, datetime_start=_now_utc())
            ).rowcount
            if taken == 1:
                return self._claimed(conn, trial_id)
            trial_id = conn.execute(
                sa.select(trials.c.trial_id)
                .where(_study_is(self.study_id), trials.c.trial_id > trial_id,
                       trials.c.state == TrialState.WAITING)
                .order_by(trials.c.trial_id).limit(1)
            ).scalar()
        return None

    def _claimed(self, conn: sa.Connection, trial_id: int) -> Claim:
        """A WAITING trial just claimed: its number, slot, retry history, enqueued params."""
        number = int(conn.execute(sa.select(trials.c.number)
                                  .where(trials.c.trial_id == trial_id)).scalar_one())
        attrs = self._attrs(conn, trial_id, (SLOT_ATTR, RETRY_OF_ATTR, RETRY_HISTORY_ATTR))
        fixed = self._attrs(conn, trial_id, (FIXED_PARAMS_ATTR,),
                            table=trial_system_attributes).get(FIXED_PARAMS_ATTR)
        slot = attrs.get(SLOT_ATTR)
        retry_of = attrs.get(RETRY_OF_ATTR)
        history = attrs.get(RETRY_HISTORY_ATTR)
        return Claim(trial_id, number, int(slot) if slot is not None else number,
                     dict(fixed) if isinstance(fixed, dict) else {},
                     None if retry_of is None else int(retry_of),
                     list(history) if isinstance(history, list) else [])

    def _beat(self, conn: sa.Connection, trial_id: int) -> None:
        beats = trial_heartbeats
        now = sa.func.current_timestamp()
        updated = conn.execute(beats.update().where(beats.c.trial_id == trial_id)
                               .values(heartbeat=now)).rowcount
        if not updated:
            conn.execute(beats.insert().values(trial_id=trial_id, heartbeat=now))

    def _attrs(
        self, conn: sa.Connection, trial_id: int, keys: Sequence[str],
        table: sa.Table = trial_user_attributes,
    ) -> dict[str, Any]:
        rows = conn.execute(sa.select(table.c.key, table.c.value_json)
                            .where(table.c.trial_id == trial_id, table.c.key.in_(keys)))
        return {key: json.loads(value) for key, value in rows}

    def _set_attrs(
        self, conn: sa.Connection, trial_id: int, attrs: Mapping[str, Any],
        table: sa.Table = trial_user_attributes, *, fresh: bool = False,
    ) -> None:
        """Write ``attrs`` (replacing those keys); ``fresh``: the trial has none of them."""
        if not fresh:
            conn.execute(table.delete().where(table.c.trial_id == trial_id,
                                              table.c.key.in_(list(attrs))))
        conn.execute(table.insert(), [{"trial_id": trial_id, "key": key,
                                       "value_json": json.dumps(value)}
                                      for key, value in attrs.items()])

    # --- retries ----------------------------------------------------------------------------

    def requeue(self, trial_id: int, reason: str, *, fail_running: bool = False) -> Requeued:
        """Queue a WAITING retry of failed trial ``trial_id`` on the same slot.

        Idempotent: the failed trial is marked (``retried_as``) in the same transaction, so a
        second call for the same attempt (the orphan sweep racing the late worker, or a call
        repeated after a lost commit) returns the retry already queued. The retry carries
        ``slot``, ``retry_of`` and ``retry_history`` (every earlier attempt with its reason and
        worker). ``fail_running`` first fails the trial if it still runs (an interrupted trial:
        failed and queued again at once, so no crash between the two can orphan it).
        """
        with self._locked() as conn:
            state = self._state(conn)
            requeued, state = self._requeue(conn, state, trial_id, reason, fail_running)
            self._write_state(conn, state, insert=False)
            return requeued

    def _requeue(
        self, conn: sa.Connection, state: QueueState, trial_id: int, reason: str,
        fail_running: bool,
    ) -> tuple[Requeued, QueueState]:
        row = conn.execute(sa.select(trials.c.number, trials.c.state).where(
            trials.c.trial_id == trial_id, trials.c.study_id == self.study_id)).first()
        if row is None:
            raise KeyError(f"no trial id {trial_id} in study id {self.study_id}")
        if row.state == TrialState.RUNNING and fail_running:
            self._fail(conn, trial_id)
        elif row.state != TrialState.FAIL:
            raise ValueError(f"trial {row.number} is {row.state.name}; only a FAIL trial is "
                             "queued again")
        number = int(row.number)
        attrs = self._attrs(conn, trial_id, (SLOT_ATTR, RETRY_HISTORY_ATTR, WORKER_ATTR,
                                             RETRIED_AS_ATTR))
        existing = attrs.get(RETRIED_AS_ATTR)
        if existing is None and state.legacy:
            existing = self._legacy_retry(conn, trial_id, number)
        if existing is not None:
            retry_id = conn.execute(sa.select(trials.c.trial_id).where(
                trials.c.study_id == self.study_id, trials.c.number == int(existing))).scalar()
            if retry_id is not None:
                self._set_attrs(conn, trial_id, {RETRIED_AS_ATTR: int(existing)})
                return Requeued(int(retry_id), int(existing), created=False), state
        history = attrs.get(RETRY_HISTORY_ATTR)
        history = list(history) if isinstance(history, list) else []
        history.append({"trial": number, "reason": reason, "worker": attrs.get(WORKER_ATTR)})
        slot = attrs.get(SLOT_ATTR, number)
        state, _, newer = self._survey(conn, state)
        retry_id, retry_number, state = self._insert_trial(conn, state, TrialState.WAITING,
                                                           newer)
        self._set_attrs(conn, retry_id, {SLOT_ATTR: slot, RETRY_OF_ATTR: number,
                                         RETRY_HISTORY_ATTR: history}, fresh=True)
        fixed = self._attrs(conn, trial_id, (FIXED_PARAMS_ATTR,), table=trial_system_attributes)
        if fixed:  # enqueued by an older tunesvc: the retry runs the same params
            self._set_attrs(conn, retry_id, fixed, table=trial_system_attributes, fresh=True)
        self._set_attrs(conn, trial_id, {RETRIED_AS_ATTR: retry_number})
        return Requeued(retry_id, retry_number, created=True), state

    def _legacy_retry(self, conn: sa.Connection, trial_id: int, number: int) -> int | None:
        """The retry an older tunesvc queued (it marked no ``retried_as``): a later trial of the
        study whose ``retry_of`` is ``number``."""
        attrs = trial_user_attributes
        found = conn.execute(
            sa.select(trials.c.number)
            .join(attrs, attrs.c.trial_id == trials.c.trial_id)
            .where(trials.c.study_id == self.study_id, trials.c.trial_id > trial_id,
                   attrs.c.key == RETRY_OF_ATTR, attrs.c.value_json == json.dumps(number))
            .order_by(trials.c.trial_id).limit(1)
        ).scalar()
        return None if found is None else int(found)

    def _fail(self, conn: sa.Connection, trial_id: int) -> bool:
        return bool(conn.execute(
            trials.update()
            .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.RUNNING)
            .values(state=TrialState.FAIL, datetime_complete=_now_utc())
        ).rowcount == 1)

    def fail_lost(self, grace_s: float, max_lost_retries: int) -> list[Lost]:
        """Fail the RUNNING trials whose heartbeat is older than ``grace_s`` (by the database's
        clock), with outcome ``lost``, and queue each again on its slot, in one transaction,
        unless its slot was already lost ``max_lost_retries`` times. Trials that never beat
        are left alone.

        What ``optuna.storages.fail_stale_trials`` plus tunesvc's retry callback do, without a
        scan of the study, and with no moment where a lost trial is failed but not queued. It
        looks without the study's lock first: most calls find nothing and lock nothing.
        """
        with self.engine.connect() as conn:
            state = self._read_state(conn)
            since = (trials.c.study_id == self.study_id if state is None
                     else sa.and_(_study_is(self.study_id), trials.c.trial_id >= state.low))
            if not self._stale(conn, since, grace_s):
                return []
        with self._locked() as conn:
            before = self._state(conn)
            state, _, _ = self._survey(conn, before)
            lost: list[Lost] = []
            since = sa.and_(_study_is(self.study_id), trials.c.trial_id >= state.low)
            for trial_id, number in self._stale(conn, since, grace_s):
                if not self._fail(conn, trial_id):
                    continue
                self._set_attrs(conn, trial_id, {OUTCOME_ATTR: "lost"})
                history = self._attrs(conn, trial_id, (RETRY_HISTORY_ATTR,))
                retry = None
                if _lost_attempts(history.get(RETRY_HISTORY_ATTR)) < max_lost_retries:
                    retry, state = self._requeue(conn, state, trial_id, "lost", False)
                lost.append(Lost(trial_id, number, retry))
            if state != before:
                self._write_state(conn, state, insert=False)
            return lost

    def _stale(
        self, conn: sa.Connection, since: sa.ColumnElement[bool], grace_s: float
    ) -> list[tuple[int, int]]:
        """RUNNING trials (``trial_id``, number) whose last heartbeat is over ``grace_s`` old."""
        now = _db_now(conn)
        beats = trial_heartbeats
        rows = conn.execute(
            sa.select(trials.c.trial_id, trials.c.number, beats.c.heartbeat)
            .join(beats, beats.c.trial_id == trials.c.trial_id)
            .where(since, trials.c.state == TrialState.RUNNING)
            .order_by(trials.c.trial_id)
        )
        return [(int(t), int(n)) for t, n, beat in rows if heartbeat_age(now, beat) > grace_s]

    def orphans(self, min_age_s: float, max_lost_retries: int) -> list[Orphan]:
        """Trials failed as lost (outcome ``lost``, or none: failed by Optuna's stale-trial
        check or an older tunesvc) or ``interrupted`` whose retry was never queued,
        whose last heartbeat is at least ``min_age_s`` old, and whose slot is under the limit
        of lost attempts: one query. Queue each with :meth:`requeue` (idempotent).

        Unlike the claim this reads every FAIL trial of the study: call it when idle.
        """
        attrs = trial_user_attributes
        outcome = attrs.alias("outcome")
        marked = attrs.alias("marked")
        history = attrs.alias("history")
        beats = trial_heartbeats
        query = (
            sa.select(trials.c.trial_id, trials.c.number, beats.c.heartbeat,
                      outcome.c.value_json.label("outcome"),
                      history.c.value_json.label("history"))
            .join(beats, beats.c.trial_id == trials.c.trial_id)
            .outerjoin(outcome, sa.and_(outcome.c.trial_id == trials.c.trial_id,
                                        outcome.c.key == OUTCOME_ATTR))
            .outerjoin(marked, sa.and_(marked.c.trial_id == trials.c.trial_id,
                                       marked.c.key == RETRIED_AS_ATTR))
            .outerjoin(history, sa.and_(history.c.trial_id == trials.c.trial_id,
                                        history.c.key == RETRY_HISTORY_ATTR))
            .where(trials.c.study_id == self.study_id, trials.c.state == TrialState.FAIL,
                   marked.c.trial_user_attribute_id.is_(None),
                   sa.or_(outcome.c.value_json.is_(None),
                          outcome.c.value_json.in_([json.dumps(o) for o in ORPHANED])))
            .order_by(trials.c.trial_id)
        )
        with self.engine.connect() as conn:
            now = _db_now(conn)
            rows = conn.execute(query).all()
        found = []
        for row in rows:
            age = heartbeat_age(now, row.heartbeat)
            reason = "interrupted" if row.outcome == json.dumps("interrupted") else "lost"
            attempts = _lost_attempts(None if row.history is None else json.loads(row.history))
            if age < min_age_s or (reason == "lost" and attempts >= max_lost_retries):
                continue
            found.append(Orphan(int(row.trial_id), int(row.number), reason, age))
        return found


def _plan_params(plan: Plan, slot: int) -> dict[str, Any]:
    # A WAITING trial without enqueued params (a retry) runs its slot's params; one queued by
    # hand outside the plan's slots gets none and the worker's sampler draws them.
    return plan.params(slot) if 0 <= slot < plan.budget else {}


def _db_now(conn: sa.Connection) -> datetime:
    value = conn.execute(sa.select(sa.func.current_timestamp(type_=sa.DateTime))).scalar()
    return _as_datetime(value)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=None)


def heartbeat_age(now: Any, beat: Any) -> float:
    """Seconds from heartbeat ``beat`` to ``now``, both read from the database (its clock and
    time zone, as Optuna writes and compares them)."""
    age = (_as_datetime(now) - _as_datetime(beat)).total_seconds()
    return max(0.0, age)
