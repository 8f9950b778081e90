"""Cost of one pruning decision as the study grows: LearningCurvePruner next to MedianPruner,
at 0 and 10,000 finished trials.

Two ways in. ``decide()``, as tunesvc's worker calls it: pure, on the trial's values (or its
four curves) and a ``FinishedTrials`` summary in memory; the table gives its median over
repeated calls at epochs 3 and 15 of 20, and the time to add 10,000 finished trials to the
summary. Then ``trial.should_prune()`` in a plain Optuna study on PostgreSQL, the way an
objective calls it: it brings the pruner's summary up to date from ``study.get_trials()``
(Optuna's cache; only trials new or unfinished since the last look are examined) and decides.

A fresh schema in database ``test`` holds the study (dropped afterwards). The finished trials
(up to 20 epochs of intermediate values each, two in three pruned early) are written in one
transaction with Optuna's own ORM models: ``study.add_trials`` numbers each trial with a count
over the study, which took 12 minutes for 10,000. A running trial reports epochs 0..k and
``trial.should_prune()`` is timed at epochs 3 and 5, and over every epoch of a 20-epoch trial.
The first call after the trials were added is reported on its own: it loads the finished trials
into Optuna's per-process cache (and the pruner's summary), once per process. The timed report
is Optuna's (written before it returns); tunesvc's runner hands it to a background writer
instead (see ``bench_coordination.py``).

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

from tunesvc.curves._curves import Curves
from tunesvc.pruning._policy import FinishedTrials
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


def time_decide(n: int, repeat: int) -> list[tuple[str, int, int, float]]:
    """(input, finished trials, epoch, median seconds) of ``decide()`` on a summary of ``n``
    finished trials; plus ("add", n, 0, seconds to build that summary)."""
    t0 = time.perf_counter()
    board = FinishedTrials()
    for i in range(n):
        t = finished_trial(i)
        board.add(i, t.state.name, t.intermediate_values)
    rows = [("add", n, 0, time.perf_counter() - t0)]
    pruner = LearningCurvePruner(max_epochs=EPOCHS)
    for step in (3, 15):
        values = {e: 0.9 * (1 - 0.7**e) for e in range(step + 1)}
        curves = Curves(
            epoch=list(values),
            train_loss=[2.3 * 0.8**e for e in values],
            val_loss=[2.3 * 0.82**e for e in values],
            train_acc=[v + 0.02 for v in values.values()],
            val_acc=list(values.values()),
            lr=[0.01] * len(values),
            seconds=[1.0] * len(values),
        )
        for kind, c in (("reported values", None), ("four curves", curves)):
            times = []
            for _ in range(repeat):
                t1 = time.perf_counter()
                pruner.decide(values, c, board, "maximize", num_classes=10)
                times.append(time.perf_counter() - t1)
            rows.append((kind, n, step, statistics.median(times)))
    return rows


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
    decide_rows: list[tuple[str, int, int, float]] = []
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
            decide_rows += time_decide(n, args.repeat * 10)
            for name, pruner in (
                ("median", optuna.pruners.MedianPruner()),
                ("diagnostic", LearningCurvePruner(max_epochs=EPOCHS)),
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

    print("\n| decide() on | finished trials | epoch | per call, median (ms) |")
    print("|---|---|---|---|")
    for kind, n, step, seconds in decide_rows:
        if kind != "add":
            print(f"| {kind} | {n} | {step} | {seconds * 1e3:.3f} |")
    for kind, n, _, seconds in decide_rows:
        if kind == "add" and n:
            print(f"\n(adding {n} finished trials to a FinishedTrials: {seconds * 1e3:.0f} ms)")
    print("\n| should_prune(), PostgreSQL | finished trials | epoch | first call (ms) | "
          "per call, median (ms) |")
    print("|---|---|---|---|---|")
    for name, n, step, first, median in rows:
        print(f"| {name} | {n} | {step} | {first * 1e3:.1f} | {median * 1e3:.2f} |")
    print(f"\n| should_prune(), PostgreSQL | finished trials | mean per report over epochs "
          f"1..{EPOCHS} (ms) |")
    print("|---|---|---|")
    for name, n, mean in per_report:
        print(f"| {name} | {n} | {mean * 1e3:.2f} |")
    assert all(math.isfinite(r[4]) for r in rows)
    assert all(math.isfinite(r[3]) for r in decide_rows)


if __name__ == "__main__":
    main()
