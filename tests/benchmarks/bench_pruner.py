"""Cost of one pruning decision as the study grows: LearningCurvePruner next to MedianPruner,
on PostgreSQL, at 0 and 10,000 finished trials.

A fresh schema in database ``test`` holds the study (dropped afterwards). The finished trials
(up to 20 epochs of intermediate values each, two in three pruned early) are written in one
transaction with Optuna's own ORM models: ``study.add_trials`` numbers each trial with a count
over the study, which took 12 minutes for 10,000. The timed calls use only the public API: a
running trial reports epochs 0..k and ``trial.should_prune()`` is timed, the way an objective
calls it, at a rung epoch (3), between rungs (5), and over every epoch of a 20-epoch trial. The
first call after the trials were added is reported on its own: it loads the finished trials into
Optuna's per-process cache (and the pruner's memo of their rung values), once per process.
The timed report is Optuna's (written before it returns); tunesvc's runner hands it to a
background writer instead (see ``bench_coordination.py``).

Run: ``python tests/benchmarks/bench_pruner.py [--trials 10000] [--repeat 30]``.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import statistics
import time
import uuid

import optuna
import sqlalchemy
from optuna.storages._rdb import models

from tunesvc.pruning._pruner import LearningCurvePruner

PG_URL = os.environ.get("TUNESVC_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
EPOCHS = 20


def finished_trial(i: int) -> optuna.trial.FrozenTrial:
    q = 0.5 + 0.5 * ((i * 7919) % 1000) / 1000  # qualities spread over [0.5, 1)
    values = {e: q * (1 - 0.7**e) for e in range(EPOCHS + 1)}
    pruned_at = None if i % 3 == 0 else 1 + i % 9  # two in three trials pruned early
    if pruned_at is not None:
        values = {e: v for e, v in values.items() if e <= pruned_at}
        return optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED, intermediate_values=values
        )
    return optuna.trial.create_trial(value=max(values.values()), intermediate_values=values)


def bulk_add(url: str, study_name: str, n: int) -> None:
    """Write ``n`` finished trials into the study's tables in one transaction."""
    engine = sqlalchemy.create_engine(url)
    ivt = models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
    vt = models.TrialValueModel.TrialValueType.FINITE
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    with sqlalchemy.orm.Session(engine) as session:
        study_id = models.StudyModel.find_or_raise_by_name(study_name, session).study_id
        for i in range(n):
            frozen = finished_trial(i)
            trial = models.TrialModel(
                number=i,
                study_id=study_id,
                state=frozen.state,
                _datetime_start_utc=now,
                _datetime_complete_utc=now,
            )
            trial.intermediate_values = [
                models.TrialIntermediateValueModel(
                    step=step, intermediate_value=v, intermediate_value_type=ivt
                )
                for step, v in frozen.intermediate_values.items()
            ]
            if frozen.value is not None:
                trial.values = [
                    models.TrialValueModel(objective=0, value=frozen.value, value_type=vt)
                ]
            session.add(trial)
        session.commit()
    engine.dispose()


def time_calls(study: optuna.Study, step: int, repeat: int) -> tuple[float, float]:
    """(first call, median of the next ``repeat``) seconds of should_prune at ``step``."""
    trial = study.ask()
    for e in range(step + 1):
        trial.report(0.8 * (1 - 0.7**e), e)
    times = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        trial.should_prune()
        times.append(time.perf_counter() - t0)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return times[0], statistics.median(times[1:])


def time_trial(study: optuna.Study) -> float:
    """Mean seconds of should_prune over one trial's reports at epochs 1..20."""
    trial = study.ask()
    trial.report(0.0, 0)
    total = 0.0
    for e in range(1, EPOCHS + 1):
        trial.report(0.99 * (1 - 0.7**e), e)  # a good trial: never pruned, every epoch timed
        t0 = time.perf_counter()
        trial.should_prune()
        total += time.perf_counter() - t0
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return total / EPOCHS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    admin = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    schema = f"bench_pruner_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    rows: list[tuple[str, int, int, float, float]] = []
    per_report: list[tuple[str, int, float]] = []
    try:
        # One study per size, both pruners timed on it: the pruner is only read per call.
        for n in (0, args.trials):
            study = optuna.create_study(storage=url, study_name=f"n{n}", direction="maximize")
            t0 = time.perf_counter()
            bulk_add(url, study.study_name, n)
            loaded = optuna.load_study(study_name=study.study_name, storage=url).get_trials()
            assert len(loaded) == n and all(t.state.is_finished() for t in loaded)
            if n:
                print(f"added {n} finished trials in {time.perf_counter() - t0:.0f}s", flush=True)
            for name, pruner in (
                ("median", optuna.pruners.MedianPruner()),
                ("diagnostic", LearningCurvePruner()),
                # as in a tunesvc study: rung decisions rank against a background read
                ("diagnostic, rank_staleness_s=2", LearningCurvePruner(rank_staleness_s=2.0)),
            ):
                # A fresh Study object, as a new worker process would have.
                worker = optuna.load_study(study_name=study.study_name, storage=url)
                worker.pruner = pruner
                for step in (3, 5):
                    first, median = time_calls(worker, step, args.repeat)
                    rows.append((name, n, step, first, median))
                per_report.append(
                    (name, n, statistics.median(time_trial(worker) for _ in range(5)))
                )
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()

    print("\n| pruner | finished trials | step | first call (ms) | per call, median (ms) |")
    print("|---|---|---|---|---|")
    for name, n, step, first, median in rows:
        kind = "rung" if step == 3 else "between rungs"
        print(f"| {name} | {n} | {step} ({kind}) | {first * 1e3:.1f} | {median * 1e3:.2f} |")
    print(f"\n| pruner | finished trials | mean per report over epochs 1..{EPOCHS} (ms) |")
    print("|---|---|---|")
    for name, n, mean in per_report:
        print(f"| {name} | {n} | {mean * 1e3:.2f} |")
    assert all(math.isfinite(r[4]) for r in rows)


if __name__ == "__main__":
    main()
