"""Coordination cost of one reported epoch on PostgreSQL, four workers, tunesvc vs raw Optuna.

One study per size holds ``N`` finished trials (0 and 10,000; each with 20 reported steps) and
the WAITING trials tunesvc's workers claim. Four worker processes run at once, each timing
``--epochs`` epochs of what happens between two epochs of training:

- raw Optuna ``report``: ``trial.report(value, epoch)`` on a trial from ``study.ask()``;
- raw Optuna ``report + MedianPruner``: the same plus ``trial.should_prune()``;
- tunesvc, plain objective: ``trial.report`` + ``trial.should_prune()`` on tunesvc's trial
  (retries, LearningCurvePruner with its diagnosis);
- tunesvc, structured objective: the runner's per-epoch glue (``on_epoch`` in ``_runner``):
  the learning curves kept, and written as a user attribute at most every ``CURVES_EVERY_S``
  seconds, ``report`` and the pruning decision.

Each process reads the study's finished trials into Optuna's cache before timing starts, and
its first timed epoch is dropped. The kinds take turns (``--rounds``), so that load from
elsewhere on the machine falls on all of them alike. The table gives the median and 90th
percentile over all epochs of all workers, in milliseconds, all against the same database in
the same run.

Run: ``python tests/benchmarks/bench_coordination.py [--finished 0 10000] [--epochs 30]
[--rounds 2]``;
``$TUNESVC_BENCH_PG`` picks the server (default: the test database on this machine).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

PG = os.environ.get("TUNESVC_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
WORKERS = 4
STEPS_PER_FINISHED = 20
OBJECTIVE = f"{Path(__file__).resolve().parents[1] / 'objectives_fixtures' / 'slow.py'}:objective"

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _url(schema: str) -> str:
    return f"{PG}?options=-csearch_path%3D{schema}"


_DIST = '{"name": "IntDistribution", "attributes": {"log": false, "step": 1, "low": 0, "high": 3}}'
_FILL = [
    """INSERT INTO trials (number, study_id, state, datetime_start, datetime_complete)
       SELECT :base + g, :study_id, 'COMPLETE', now(), now() FROM generate_series(0, :n - 1) g""",
    """INSERT INTO trial_values (trial_id, objective, value, value_type)
       SELECT trial_id, 0, ((number * 7919 + 19 * 31) % 1000) / 1000.0 + 0.19, 'FINITE'
       FROM trials WHERE study_id = :study_id AND number >= :base""",
    """INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value,
                                             intermediate_value_type)
       SELECT trial_id, s, ((number * 7919 + s * 31) % 1000) / 1000.0 + s / 100.0, 'FINITE'
       FROM trials, generate_series(0, :steps - 1) s
       WHERE study_id = :study_id AND number >= :base""",
    """INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json)
       SELECT trial_id, p, CASE p WHEN 'x' THEN number % 4 ELSE (number / 4) % 4 END, :dist
       FROM trials, (VALUES ('x'), ('y')) AS names(p)
       WHERE study_id = :study_id AND number >= :base""",
    """INSERT INTO trial_user_attributes (trial_id, key, value_json)
       SELECT trial_id, 'slot', (100000 + number)::text
       FROM trials WHERE study_id = :study_id AND number >= :base""",
]


def _fill(url: str, name: str, n: int) -> None:
    """``n`` finished trials, the rows ``study.add_trials`` writes, in bulk: through Optuna's
    API, 10,000 trials take about 25 minutes on a 2-core machine."""
    storage = optuna.storages.RDBStorage(url)
    study_id = storage.get_study_id_from_name(name)
    base = len(optuna.load_study(study_name=name, storage=storage).trials)
    with storage.engine.begin() as conn:
        for statement in _FILL:
            conn.execute(sqlalchemy.text(statement), {"base": base, "study_id": study_id,
                                                      "n": n, "steps": STEPS_PER_FINISHED,
                                                      "dist": _DIST})
    storage.engine.dispose()
    finished = optuna.load_study(study_name=name, storage=url).get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    assert len(finished) == n and len(finished[-1].intermediate_values) == STEPS_PER_FINISHED


def _setup(schema: str, name: str, finished: int, epochs: int) -> None:
    from tunesvc import _service as service
    from tunesvc._spec import parse_spec_dict

    url = _url(schema)
    spec = parse_spec_dict({"objective": OBJECTIVE, "direction": "maximize", "n_trials": 40,
                            "params": {"x": {"low": 0, "high": 3, "type": "int"},
                                       "y": {"low": 0, "high": 3, "type": "int"}}})
    service.create_study(name, spec, url)
    if finished:
        _fill(url, name, finished)


def _time_epochs(epochs: int, one_epoch: Callable[[int], None]) -> list[float]:
    out = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        one_epoch(epoch)
        out.append((time.perf_counter() - t0) * 1000)
    return out[1:]


def _raw(url: str, name: str, epochs: int, prune: bool, barrier: Any) -> list[float]:
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    study = optuna.load_study(study_name=name, storage=storage,
                              pruner=optuna.pruners.MedianPruner())
    trial = study.ask()
    study.get_trials(deepcopy=False)  # fill Optuna's cache of finished trials before timing
    barrier.wait()

    def one_epoch(epoch: int) -> None:
        trial.report(0.5 + epoch / 1000, epoch)
        if prune:
            trial.should_prune()

    times = _time_epochs(epochs, one_epoch)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return times


def _tunesvc(url: str, name: str, epochs: int, structured: bool, barrier: Any) -> list[float]:
    from tunesvc import _service as service
    from tunesvc._curves import Curves, EpochRecord
    from tunesvc._heartbeat import RetryLostTrial
    from tunesvc._runner import CURVES_EVERY_S, SpecTrial, claim_trial
    from tunesvc._storage import open_storage

    storage = open_storage(url, heartbeat_interval=10, grace_period=20,
                           heartbeat_stale_trial_callback=RetryLostTrial())
    study = service._load(storage, name, url)
    ctx = service.build_context(study, storage, url, "cpu")
    trial_id = claim_trial(ctx)
    assert trial_id is not None
    trial = SpecTrial(ctx.study, trial_id, ctx)
    trial.suggest_int("x", 0, 3)
    trial.suggest_int("y", 0, 3)
    curves = Curves()
    trial.curves = curves
    ctx.study.get_trials(deepcopy=False)  # fill Optuna's cache of finished trials before timing
    barrier.wait()

    def one_epoch(epoch: int) -> None:
        value = 0.5 + epoch / 1000
        if structured:  # what _runner's on_epoch does for a structured objective
            curves.append(EpochRecord(epoch, 1 - value, 1 - value, value, value, 0.1, 1.0))
            trial.store_curves(every_s=CURVES_EVERY_S)
        trial.report(value, epoch)
        if epoch > 0:
            trial.should_prune()

    times = _time_epochs(epochs, one_epoch)
    ctx.study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return times


def _worker(kind: str, url: str, name: str, epochs: int, barrier: Any) -> list[float]:
    if kind == "raw report":
        return _raw(url, name, epochs, False, barrier)
    if kind == "raw report + MedianPruner":
        return _raw(url, name, epochs, True, barrier)
    return _tunesvc(url, name, epochs, kind.endswith("structured"), barrier)


KINDS = ["raw report", "raw report + MedianPruner", "tunesvc plain", "tunesvc structured"]


def _measure(kind: str, url: str, name: str, epochs: int) -> list[float]:
    mp = multiprocessing.get_context("spawn")
    with mp.Manager() as manager:
        barrier = manager.Barrier(WORKERS)
        with mp.Pool(WORKERS) as pool:
            parts = pool.starmap(_worker, [(kind, url, name, epochs, barrier)] * WORKERS)
    return [t for part in parts for t in part]


def _p90(xs: list[float]) -> float:
    return sorted(xs)[int(0.9 * (len(xs) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--finished", type=int, nargs="+", default=[0, 10_000])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    admin = sqlalchemy.create_engine(PG, isolation_level="AUTOCOMMIT")
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    results: dict[tuple[str, int], list[float]] = {}
    schemas = []
    try:
        for finished in args.finished:
            schema = f"coordination_{uuid.uuid4().hex[:10]}"
            schemas.append(schema)
            with admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
            t0 = time.monotonic()
            _setup(schema, "coord", finished, args.epochs)
            print(f"set up {finished} finished trials in {time.monotonic() - t0:.0f} s",
                  file=sys.stderr, flush=True)
            for _ in range(args.rounds):
                for kind in KINDS:
                    results.setdefault((kind, finished), []).extend(
                        _measure(kind, _url(schema), "coord", args.epochs))
    finally:
        with admin.connect() as conn:
            for schema in schemas:
                conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()
    sizes = args.finished
    header = ["per epoch, ms (4 workers, PostgreSQL)"]
    for n in sizes:
        header += [f"median @ {n:,} finished", f"p90 @ {n:,}"]
    if len(sizes) > 1:
        header.append(f"median {sizes[-1]:,} / {sizes[0]:,}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for kind in KINDS:
        row = [kind]
        for n in sizes:
            xs = results[(kind, n)]
            row += [f"{statistics.median(xs):.2f}", f"{_p90(xs):.2f}"]
        if len(sizes) > 1:
            first, last = (statistics.median(results[(kind, n)]) for n in (sizes[0], sizes[-1]))
            row.append(f"{last / first:.2f}x")
        print("| " + " | ".join(row) + " |")
    server = sqlalchemy.engine.make_url(PG).render_as_string(hide_password=True)
    print(f"\n{WORKERS} worker processes x {args.rounds} rounds x {args.epochs} epochs per "
          f"kind and size; server {server}; machine: {os.cpu_count()} cores, load average "
          f"{load_before} before, {' '.join(f'{x:.1f}' for x in os.getloadavg())} after")


if __name__ == "__main__":
    main()
