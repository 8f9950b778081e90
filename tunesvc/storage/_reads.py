"""Reads of a study that stay fast at 100,000 trials: SQL aggregates and bounded scans on
Optuna's tables, never a load of every trial with all its attributes.

- :func:`counts_by_state`: trials per state of every study, one query (``study list``);
- :class:`StudyReads`: one study's counts by state and by an attribute's value, its best
  trial, its running trials with their heartbeat ages, whether other workers still run beating
  trials, every trial streamed in pages (keyset pagination, constant memory), and what finished
  since a cursor (for the pruner's ranking: only new trials and those unfinished last time).

Tables and the schema check are those of :mod:`tunesvc.storage._queue`.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.study import StudyDirection
from optuna.trial import TrialState

from tunesvc.storage._queue import (
    QUEUE_ATTR,
    SLOT_ATTR,
    WORKER_ATTR,
    QueueState,
    TrialIntermediateValueType,
    TrialValueType,
    _db_now,
    _study_is,
    check_schema,
    heartbeat_age,
    study_system_attributes,
    trial_heartbeats,
    trial_intermediate_values,
    trial_params,
    trial_user_attributes,
    trial_values,
    trials,
)

PAGE_SIZE = 500
"""Trials per page of :meth:`StudyReads.trials`."""
_IN_LIMIT = 500  # ids in one IN (...) list; beyond it a primary-key range is read and filtered
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_RANKED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class TrialRow:
    """One trial as the reads return it (no curves, no system attributes)."""

    trial_id: int
    number: int
    state: TrialState
    value: float | None
    params: dict[str, Any]
    datetime_start: datetime | None
    """Local time, as Optuna's ``FrozenTrial`` gives it."""
    datetime_complete: datetime | None
    user_attrs: dict[str, Any]
    """The user attributes asked for (those the trial has)."""
    last_step: int | None
    """The highest step the trial reported (its epochs, for a structured objective)."""


@dataclass(frozen=True)
class RunningRow:
    """A RUNNING trial (its ``user_attrs`` hold ``worker`` and ``slot``) and the seconds since
    its last heartbeat by the database's clock (``None``: it never beat)."""

    trial: TrialRow
    heartbeat_age_s: float | None


@dataclass(frozen=True)
class FinishedTrial:
    """A COMPLETE or PRUNED trial, as the pruner ranks it."""

    trial_id: int
    number: int
    state: TrialState
    value: float | None
    intermediate_values: dict[int, float]


@dataclass(frozen=True)
class FinishedCursor:
    """Where :meth:`StudyReads.finished_since` stopped: the highest ``trial_id`` it saw and the
    trials at or below it that were unfinished then."""

    high: int = -1
    pending: frozenset[int] = field(default_factory=frozenset)


def counts_by_state(storage: optuna.storages.RDBStorage) -> dict[int, dict[str, int]]:
    """Trials per state of every study, by study id, in one query (studies without trials are
    absent)."""
    engine = check_schema(storage)
    query = (sa.select(trials.c.study_id, trials.c.state, sa.func.count())
             .group_by(trials.c.study_id, trials.c.state))
    out: dict[int, dict[str, int]] = {}
    with engine.connect() as conn:
        for study_id, state, n in conn.execute(query):
            out.setdefault(int(study_id), {})[state.name] = int(n)
    return out


def heartbeat_ages(
    storage: optuna.storages.RDBStorage, trial_ids: Collection[int]
) -> dict[int, float]:
    """Seconds since each trial's last heartbeat, by the database's clock (trials that never
    beat are absent)."""
    if not trial_ids:
        return {}
    engine = check_schema(storage)
    with engine.connect() as conn:
        return _ages(conn, trial_ids)


def _ages(conn: sa.Connection, trial_ids: Collection[int]) -> dict[int, float]:
    now = _db_now(conn)
    ages: dict[int, float] = {}
    for chunk in _chunks(sorted(trial_ids), _IN_LIMIT):
        rows = conn.execute(sa.select(trial_heartbeats.c.trial_id, trial_heartbeats.c.heartbeat)
                            .where(trial_heartbeats.c.trial_id.in_(chunk)))
        ages.update({int(t): heartbeat_age(now, beat) for t, beat in rows if beat is not None})
    return ages


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _local(value: datetime | None) -> datetime | None:
    # Optuna stores naive UTC and hands out naive local time.
    if value is None:
        return None
    return value.replace(tzinfo=UTC).astimezone().replace(tzinfo=None)


def _value(value: float | None, kind: TrialValueType | TrialIntermediateValueType) -> float:
    if kind.name == "FINITE":
        assert value is not None
        return float(value)
    return {"INF_POS": float("inf"), "INF_NEG": float("-inf")}.get(kind.name, float("nan"))


def _ids_in(column: sa.ColumnElement[int], ids: Sequence[int]) -> sa.ColumnElement[bool]:
    """``column IN ids`` for a few scattered ids, else the range they span, which an index on
    ``trial_id`` reads in one pass (the caller keeps only its ids)."""
    low, high = min(ids), max(ids)
    if len(ids) <= _IN_LIMIT and high - low + 1 > 2 * len(ids):
        return column.in_(ids)
    return column.between(low, high)


class StudyReads:
    """Reads of one study. Each method is one short transaction (a few queries).

    Example::

        reads = StudyReads(storage, study_id)
        reads.counts()                        # {"COMPLETE": 99_812, "RUNNING": 8, ...}
        reads.counts_by_attr("outcome")       # {"completed": 61_200, "pruned": 38_400, ...}
        for row in reads.trials(keys=("outcome", "diagnosis")):   # pages of 500, by number
            ...
    """

    def __init__(self, storage: optuna.storages.RDBStorage, study_id: int) -> None:
        self.engine = check_schema(storage)
        self.study_id = study_id

    # --- the queue and counts ---------------------------------------------------------------

    def queue_state(self) -> QueueState | None:
        """The study's queue (budget, slots claimed), ``None`` for a study never queued by
        tunesvc's lazy queue."""
        with self.engine.connect() as conn:
            return self._queue_state(conn)

    def _queue_state(self, conn: sa.Connection) -> QueueState | None:
        table = study_system_attributes
        raw = conn.execute(sa.select(table.c.value_json).where(
            table.c.study_id == self.study_id, table.c.key == QUEUE_ATTR)).scalar()
        return None if raw is None else QueueState.from_json(json.loads(raw))

    def _unfinished(self, conn: sa.Connection) -> sa.ColumnElement[bool]:
        """A filter that holds every unfinished trial of the study: a primary-key range from
        the queue's ``low`` bound, or the whole study when it has no queue."""
        state = self._queue_state(conn)
        if state is None:
            return trials.c.study_id == self.study_id
        return sa.and_(_study_is(self.study_id), trials.c.trial_id >= state.low)

    def counts(self) -> dict[str, int]:
        """Trials per state (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ``WAITING``)."""
        query = (sa.select(trials.c.state, sa.func.count())
                 .where(trials.c.study_id == self.study_id).group_by(trials.c.state))
        with self.engine.connect() as conn:
            return {state.name: int(n) for state, n in conn.execute(query)}

    def counts_by_attr(self, key: str) -> dict[Any, int]:
        """Trials per value of user attribute ``key`` (trials without it are not counted);
        for small values such as ``outcome``."""
        attrs = trial_user_attributes
        query = (sa.select(attrs.c.value_json, sa.func.count())
                 .join(trials, trials.c.trial_id == attrs.c.trial_id)
                 .where(trials.c.study_id == self.study_id, attrs.c.key == key)
                 .group_by(attrs.c.value_json))
        out: dict[Any, int] = {}
        with self.engine.connect() as conn:
            for raw, n in conn.execute(query):
                value = json.loads(raw)
                value = json.dumps(value) if isinstance(value, dict | list) else value
                out[value] = out.get(value, 0) + int(n)
        return out

    def counts_by_field(self, key: str, name: str) -> dict[str | None, int]:
        """Trials per value of field ``name`` of the JSON object in user attribute ``key``
        (``diagnosis`` -> ``label``), extracted by the database."""
        attrs = trial_user_attributes
        dialect = self.engine.dialect.name
        extracted: sa.ColumnElement[Any]
        if dialect == "postgresql":
            extracted = sa.func.json_extract_path_text(
                sa.cast(attrs.c.value_json, sa.JSON), name)
        elif dialect == "mysql":
            extracted = sa.func.json_unquote(sa.func.json_extract(attrs.c.value_json,
                                                                  f"$.{name}"))
        else:
            extracted = sa.func.json_extract(attrs.c.value_json, f"$.{name}")
        query = (sa.select(extracted, sa.func.count())
                 .join(trials, trials.c.trial_id == attrs.c.trial_id)
                 .where(trials.c.study_id == self.study_id, attrs.c.key == key)
                 .group_by(extracted))
        out: dict[str | None, int] = {}
        with self.engine.connect() as conn:
            for value, n in conn.execute(query):
                label = None if value is None or value == "null" else str(value)
                out[label] = out.get(label, 0) + int(n)
        return out

    def count_with_attr(self, key: str) -> int:
        """How many trials carry user attribute ``key`` (``retry_of``: how many are retries)."""
        attrs = trial_user_attributes
        query = (sa.select(sa.func.count()).select_from(attrs)
                 .join(trials, trials.c.trial_id == attrs.c.trial_id)
                 .where(trials.c.study_id == self.study_id, attrs.c.key == key))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # --- single trials ------------------------------------------------------------------------

    def best(self, direction: StudyDirection, keys: Sequence[str] = ()) -> TrialRow | None:
        """The COMPLETE trial with the best finite value (the lowest number among equals)."""
        order = (trial_values.c.value.desc() if direction == StudyDirection.MAXIMIZE
                 else trial_values.c.value.asc())
        query = (
            sa.select(trials.c.trial_id)
            .join(trial_values, trial_values.c.trial_id == trials.c.trial_id)
            .where(trials.c.study_id == self.study_id, trials.c.state == TrialState.COMPLETE,
                   trial_values.c.objective == 0,
                   trial_values.c.value_type == TrialValueType.FINITE)
            .order_by(order, trials.c.number).limit(1)
        )
        with self.engine.connect() as conn:
            trial_id = conn.execute(query).scalar()
            if trial_id is None:
                return None
            rows = self._rows(conn, sa.and_(trials.c.study_id == self.study_id,
                                            trials.c.trial_id == trial_id), keys)
        return rows[0] if rows else None

    def running(self, keys: Sequence[str] = ()) -> list[RunningRow]:
        """The RUNNING trials, by number, with ``worker``, ``slot`` and ``keys`` and the age of
        their last heartbeat."""
        with self.engine.connect() as conn:
            where = sa.and_(self._unfinished(conn), trials.c.state == TrialState.RUNNING)
            rows = self._rows(conn, where, (WORKER_ATTR, SLOT_ATTR, *keys))
            ages = _ages(conn, [r.trial_id for r in rows])
        return [RunningRow(r, ages.get(r.trial_id)) for r in rows]

    def others_running(self, exclude: int | None = None) -> bool:
        """Whether a RUNNING trial (other than trial id ``exclude``) has a heartbeat: a worker
        that may yet be lost, whose retry an idle worker should stay to run."""
        with self.engine.connect() as conn:
            query = (sa.select(trials.c.trial_id)
                     .join(trial_heartbeats, trial_heartbeats.c.trial_id == trials.c.trial_id)
                     .where(self._unfinished(conn), trials.c.state == TrialState.RUNNING)
                     .limit(1))
            if exclude is not None:
                query = query.where(trials.c.trial_id != exclude)
            return conn.execute(query).first() is not None

    def by_number(self, numbers: Collection[int], keys: Sequence[str] = ()) -> list[TrialRow]:
        """The trials with these ``numbers`` (those a command ran), in number order."""
        out: list[TrialRow] = []
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted(set(numbers)), _IN_LIMIT):
                out += self._rows(conn, sa.and_(trials.c.study_id == self.study_id,
                                                trials.c.number.in_(list(chunk))), keys)
        return sorted(out, key=lambda r: r.number)

    # --- every trial, streamed ----------------------------------------------------------------

    def trials(
        self, keys: Sequence[str] = (), *, page_size: int = PAGE_SIZE,
        states: Collection[TrialState] | None = None,
    ) -> Iterator[TrialRow]:
        """Every trial of the study (or those in ``states``) in number order, read a page at
        a time (keyset pagination on ``trial_id``, a short transaction per page), so memory
        stays flat however many trials the study holds. A trial is read with the state it
        had when its page was read."""
        if page_size < 1:
            raise ValueError(f"page_size: expected an int >= 1, got {page_size=}")
        with self.engine.connect() as conn:
            first = conn.execute(sa.select(sa.func.min(trials.c.trial_id))
                                 .where(trials.c.study_id == self.study_id)).scalar()
        if first is None:
            return
        after = int(first) - 1
        while True:
            with self.engine.connect() as conn:
                # The plain study filter: PostgreSQL's statistics then let it walk the primary
                # key in order and stop after a page (SQLite walks its study index in order).
                ids = [int(i) for i in conn.execute(
                    sa.select(trials.c.trial_id)
                    .where(trials.c.study_id == self.study_id, trials.c.trial_id > after)
                    .order_by(trials.c.trial_id).limit(page_size)).scalars()]
                if not ids:
                    return
                where = sa.and_(_study_is(self.study_id), trials.c.trial_id.between(ids[0],
                                                                                     ids[-1]))
                if states is not None:
                    where = sa.and_(where, trials.c.state.in_(list(states)))
                rows = self._rows(conn, where, keys)
            yield from rows
            if len(ids) < page_size:
                return
            after = ids[-1]

    def _rows(
        self, conn: sa.Connection, where: sa.ColumnElement[bool], keys: Sequence[str]
    ) -> list[TrialRow]:
        """The trials ``where`` selects (few: a page, or the running ones), in number order."""
        base = conn.execute(
            sa.select(trials.c.trial_id, trials.c.number, trials.c.state,
                      trials.c.datetime_start, trials.c.datetime_complete)
            .where(where).order_by(trials.c.trial_id)
        ).all()
        if not base:
            return []
        ids = [int(r.trial_id) for r in base]
        wanted = set(ids)
        values: dict[int, float] = {}
        for t, v, kind in conn.execute(
            sa.select(trial_values.c.trial_id, trial_values.c.value, trial_values.c.value_type)
            .where(_ids_in(trial_values.c.trial_id, ids), trial_values.c.objective == 0)
        ):
            if t in wanted:
                values[t] = _value(v, kind)
        params: dict[int, dict[str, Any]] = {t: {} for t in ids}
        distributions: dict[str, BaseDistribution] = {}
        for t, name, internal, dist_json in conn.execute(
            sa.select(trial_params.c.trial_id, trial_params.c.param_name,
                      trial_params.c.param_value, trial_params.c.distribution_json)
            .where(_ids_in(trial_params.c.trial_id, ids)).order_by(trial_params.c.param_id)
        ):
            if t in wanted:
                dist = distributions.get(dist_json)
                if dist is None:
                    dist = distributions[dist_json] = json_to_distribution(dist_json)
                params[t][name] = dist.to_external_repr(internal)
        attrs: dict[int, dict[str, Any]] = {t: {} for t in ids}
        if keys:
            table = trial_user_attributes
            for t, key, raw in conn.execute(
                sa.select(table.c.trial_id, table.c.key, table.c.value_json)
                .where(_ids_in(table.c.trial_id, ids), table.c.key.in_(list(keys)))
            ):
                if t in wanted:
                    attrs[t][key] = json.loads(raw)
        steps: dict[int, int] = {}
        iv = trial_intermediate_values
        for t, step in conn.execute(
            sa.select(iv.c.trial_id, sa.func.max(iv.c.step))
            .where(_ids_in(iv.c.trial_id, ids)).group_by(iv.c.trial_id)
        ):
            if t in wanted:
                steps[t] = int(step)
        return [
            TrialRow(
                trial_id=t, number=int(r.number), state=r.state, value=values.get(t),
                params=params[t], datetime_start=_local(r.datetime_start),
                datetime_complete=_local(r.datetime_complete), user_attrs=attrs[t],
                last_step=steps.get(t),
            )
            for t, r in zip(ids, base, strict=True)
        ]

    # --- the pruner's board -------------------------------------------------------------------

    def finished_since(
        self, cursor: FinishedCursor | None = None, *, steps: Collection[int] | None = None
    ) -> tuple[list[FinishedTrial], FinishedCursor]:
        """The trials that finished COMPLETE or PRUNED since ``cursor`` (all of them without
        one), with their reported values (only at ``steps``, if given: a pruner's rungs), and
        the cursor for the next call.

        It reads only trials above the highest ``trial_id`` seen and those unfinished last
        time (their ids, in one query), then the values of the newly finished ones: never the
        whole study again.
        """
        cursor = cursor or FinishedCursor()
        with self.engine.connect() as conn:
            if cursor.high < 0:
                where: sa.ColumnElement[bool] = trials.c.study_id == self.study_id
            else:
                seen = trials.c.trial_id > cursor.high
                if cursor.pending:
                    seen = sa.or_(seen, _ids_in(trials.c.trial_id, sorted(cursor.pending)))
                where = sa.and_(_study_is(self.study_id), seen)
            probe = conn.execute(sa.select(trials.c.trial_id, trials.c.number, trials.c.state)
                                 .where(where)).all()
            high = cursor.high
            pending = set(cursor.pending)
            done: dict[int, tuple[int, TrialState]] = {}
            for t, number, state in probe:
                t = int(t)
                if t <= cursor.high and t not in cursor.pending:
                    continue  # read by a range over many pending ids: seen before
                high = max(high, t)
                if state in _FINISHED:
                    pending.discard(t)
                    if state in _RANKED:
                        done[t] = (int(number), state)
                else:
                    pending.add(t)
            finished = self._finished(conn, done, steps) if done else []
        return finished, FinishedCursor(high, frozenset(pending))

    def _finished(
        self, conn: sa.Connection, done: dict[int, tuple[int, TrialState]],
        only: Collection[int] | None,
    ) -> list[FinishedTrial]:
        ids = sorted(done)
        values: dict[int, float] = {}
        steps: dict[int, dict[int, float]] = {t: {} for t in ids}
        for chunk in _ranges(ids):
            for t, v, kind in conn.execute(
                sa.select(trial_values.c.trial_id, trial_values.c.value,
                          trial_values.c.value_type)
                .where(_ids_in(trial_values.c.trial_id, chunk), trial_values.c.objective == 0)
            ):
                if t in done:
                    values[t] = _value(v, kind)
            iv = trial_intermediate_values
            query = (sa.select(iv.c.trial_id, iv.c.step, iv.c.intermediate_value,
                               iv.c.intermediate_value_type)
                     .where(_ids_in(iv.c.trial_id, chunk)))
            if only is not None:
                query = query.where(iv.c.step.in_(sorted(only)))
            for t, step, v, kind in conn.execute(query):
                if t in done:
                    steps[t][int(step)] = _value(v, kind)
        return [FinishedTrial(t, done[t][0], done[t][1], values.get(t), steps[t]) for t in ids]


def _ranges(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    """``ids`` (sorted) in groups that each read well: a short list, or a dense run of ids."""
    if len(ids) <= _IN_LIMIT:
        yield ids
        return
    start = 0
    while start < len(ids):
        end = min(len(ids), start + 20 * _IN_LIMIT)
        yield ids[start:end]
        start = end
