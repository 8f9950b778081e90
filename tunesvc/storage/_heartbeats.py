"""SQL on Optuna's ``trial_heartbeats`` table, which Optuna's public API does not read back:
heartbeat ages by the database's clock, and the running trials whose heartbeat went stale.

Written against the table as Optuna 5 defines it (``trial_id``, ``heartbeat``); a test pins it
(tests/test_heartbeat_sql.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import TrialState

_HEARTBEATS = sqlalchemy.table(
    "trial_heartbeats",
    sqlalchemy.column("trial_id", sqlalchemy.Integer),
    sqlalchemy.column("heartbeat", sqlalchemy.DateTime),
)
_TRIALS = sqlalchemy.table(
    "trials",
    sqlalchemy.column("trial_id", sqlalchemy.Integer),
    sqlalchemy.column("number", sqlalchemy.Integer),
    sqlalchemy.column("study_id", sqlalchemy.Integer),
    sqlalchemy.column("state", sqlalchemy.Enum(TrialState)),
)


def _now() -> Any:
    return sqlalchemy.select(sqlalchemy.func.now(type_=sqlalchemy.DateTime))


def heartbeat_ages(storage: optuna.storages.RDBStorage, trial_ids: list[int]) -> dict[int, float]:
    """Seconds since each trial's last heartbeat, by the database's clock (trials that never
    beat are absent)."""
    if not trial_ids:
        return {}
    query = sqlalchemy.select(_HEARTBEATS.c.trial_id, _HEARTBEATS.c.heartbeat).where(
        _HEARTBEATS.c.trial_id.in_(trial_ids)
    )
    with storage.engine.connect() as conn:
        now = conn.execute(_now()).scalar_one()
        rows = conn.execute(query).all()
    return {int(trial_id): _age(now, beat) for trial_id, beat in rows if beat is not None}


def running_heartbeats(
    storage: optuna.storages.RDBStorage, study_id: int
) -> dict[int, tuple[int, float | None]]:
    """Every RUNNING trial of the study: trial id -> (number, seconds since its last heartbeat,
    ``None`` when it never beat), by the database's clock."""
    query = (
        sqlalchemy.select(_TRIALS.c.trial_id, _TRIALS.c.number, _HEARTBEATS.c.heartbeat)
        .select_from(_TRIALS.outerjoin(_HEARTBEATS, _HEARTBEATS.c.trial_id == _TRIALS.c.trial_id))
        .where(_TRIALS.c.study_id == study_id, _TRIALS.c.state == TrialState.RUNNING)
    )
    with storage.engine.connect() as conn:
        now = conn.execute(_now()).scalar_one()
        rows = conn.execute(query).all()
    return {int(tid): (int(number), None if beat is None else _age(now, beat))
            for tid, number, beat in rows}


def _age(now: Any, beat: Any) -> float:
    if isinstance(now, str):
        now = datetime.fromisoformat(now)
    if isinstance(beat, str):
        beat = datetime.fromisoformat(beat)
    age: float = (now.replace(tzinfo=None) - beat.replace(tzinfo=None)).total_seconds()
    return max(0.0, age)
