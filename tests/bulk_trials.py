"""Finished trials written in bulk, for the tests and benchmarks that need a big study.

A study of 10,000 or 100,000 trials cannot be run into being in a test's time; it is written
with SQLAlchemy Core in batches into Optuna's tables, trial by trial as a tunesvc worker would
have left it: params, three reported steps, a value when COMPLETE (70%; PRUNED 25%, FAIL 5%), a
heartbeat and the user attributes a real tunesvc trial carries (slot, worker, outcome,
diagnosis, label, ~3 KB of curves). Then the study's queue state says its first ``n`` slots
were claimed, as if the queue had made them.
"""

from __future__ import annotations

import json
import math
import random
from datetime import datetime, timedelta
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.trial import TrialState

from tunesvc.storage import _queue as q
from tunesvc.storage._queue import QueueState

LABELS = ["healthy", "plateau", "overfitting", "underfitting", "diverged", "bad_init"]
BATCH = 2000


def curves(rng: random.Random, epochs: int = 20) -> dict[str, list[float]]:
    """About 3 KB of JSON, like a 20-epoch trial's curves."""
    out: dict[str, list[float]] = {"epoch": list(range(epochs + 1))}
    for name in ("train_loss", "val_loss", "train_acc", "val_acc", "lr", "seconds"):
        out[name] = [round(rng.random(), 6) for _ in range(epochs + 1)]
    return out


def diagnosis(rng: random.Random, label: str) -> dict[str, Any]:
    return {"label": label, "reason": "validation loss flat for 6 epochs at a constant LR",
            "epoch": rng.randrange(20), "evidence": {"flat_epochs": 6, "rel_change": 0.001,
                                                      "best_val": rng.random()},
            "advice": "use LR decay (cosine or step) so the model settles further"}


def _draw(rng: random.Random, dist: BaseDistribution) -> float:
    """A value of ``dist`` in Optuna's internal representation."""
    if isinstance(dist, FloatDistribution):
        if dist.log:
            return math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
        return rng.uniform(dist.low, dist.high)
    if isinstance(dist, IntDistribution):
        return float(rng.randint(dist.low, dist.high))
    assert isinstance(dist, CategoricalDistribution)
    return float(rng.randrange(len(dist.choices)))


def fill_finished(
    storage: optuna.storages.RDBStorage,
    study_id: int,
    n: int,
    *,
    budget: int,
    distributions: dict[str, BaseDistribution],
    seed: int = 0,
) -> None:
    """Write ``n`` finished trials (numbers and slots 0..n-1) into study ``study_id``, then its
    queue state: a budget of ``budget`` slots of which the first ``n`` are taken."""
    engine = storage.engine
    rng = random.Random(seed)
    dists = {name: distribution_to_json(d) for name, d in distributions.items()}
    with engine.connect() as conn:
        base = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(q.trials.c.trial_id), 0)))
                   .scalar_one())
    start = datetime(2026, 1, 1)
    for lo in range(0, n, BATCH):
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in (
            "trials", "values", "params", "iv", "attrs", "beats")}
        for number in range(lo, min(n, lo + BATCH)):
            trial_id = base + 1 + number
            roll = rng.random()
            state = (TrialState.COMPLETE if roll < 0.7 else TrialState.PRUNED if roll < 0.95
                     else TrialState.FAIL)
            outcome = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned",
                       TrialState.FAIL: "failed"}[state]
            label = rng.choice(LABELS)
            began = start + timedelta(seconds=number)
            rows["trials"].append({"trial_id": trial_id, "number": number, "study_id": study_id,
                                   "state": state, "datetime_start": began,
                                   "datetime_complete": began + timedelta(seconds=30)})
            if state == TrialState.COMPLETE:
                rows["values"].append({"trial_id": trial_id, "objective": 0,
                                       "value": rng.random(),
                                       "value_type": q.TrialValueType.FINITE})
            rows["params"] += [{"trial_id": trial_id, "param_name": name,
                                "param_value": _draw(rng, dist), "distribution_json": dists[name]}
                               for name, dist in distributions.items()]
            rows["iv"] += [{"trial_id": trial_id, "step": step,
                            "intermediate_value": rng.random(),
                            "intermediate_value_type": q.TrialIntermediateValueType.FINITE}
                           for step in range(3)]
            attrs = {"slot": number, "worker": {"host": "bulk", "pid": 1, "device": "cpu",
                                                "worker": 0},
                     "outcome": outcome, "diagnosis": diagnosis(rng, label), "label": label,
                     "curves": curves(rng)}
            rows["attrs"] += [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                              for k, v in attrs.items()]
            rows["beats"].append({"trial_id": trial_id, "heartbeat": began})
        with engine.begin() as conn:
            conn.execute(q.trials.insert(), rows["trials"])
            if rows["values"]:
                conn.execute(q.trial_values.insert(), rows["values"])
            if rows["params"]:
                conn.execute(q.trial_params.insert(), rows["params"])
            conn.execute(q.trial_intermediate_values.insert(), rows["iv"])
            conn.execute(q.trial_user_attributes.insert(), rows["attrs"])
            conn.execute(q.trial_heartbeats.insert(), rows["beats"])
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('trials', 'trial_id'), "
                                 "(SELECT max(trial_id) FROM trials))")
            conn.exec_driver_sql("ANALYZE")
        last = base + n
        state = QueueState(budget=budget, next_slot=n, last_id=last, last_number=n - 1,
                           low=last + 1)
        system = q.study_system_attributes
        conn.execute(system.delete().where(system.c.study_id == study_id,
                                           system.c.key == q.QUEUE_ATTR))
        conn.execute(system.insert().values(
            study_id=study_id, key=q.QUEUE_ATTR, value_json=json.dumps(state.to_json())))
