"""Coordination cost of one reported epoch on PostgreSQL, four workers, tunesvc vs raw Optuna.

One study per size holds ``N`` finished trials (0 and 10,000; each with 20 reported steps) and
the queued slots tunesvc's workers claim. Four worker processes run at once, each training a
small torch MLP for about ``--train-ms`` per epoch (one thread) and timing, on the training
thread, what happens between two epochs of training:

- raw Optuna ``report``: ``trial.report(value, epoch)`` on a trial from ``study.ask()``;
- raw Optuna ``report + MedianPruner``: the same plus ``trial.should_prune()``;
- tunesvc, plain objective: ``trial.report`` + ``trial.should_prune()`` on tunesvc's trial
  (retries, LearningCurvePruner with its diagnosis);
- tunesvc, structured objective: the runner's per-epoch glue (``on_epoch`` in ``_runner``):
  the learning curves kept, and written as a user attribute at most every ``CURVES_EVERY_S``
  seconds, ``report`` and the pruning decision.

tunesvc hands reports and curves to a background writer thread and decides against the
finished trials on its board, read in the background (see ``tunesvc.worker._writer`` and
``tunesvc.worker._board``); the database work is not gone, it overlaps training. So the table also
gives each kind's training time per epoch (the same torch work; median) next to a bare loop's,
which shows what that overlap costs training, the whole epoch (training plus coordination;
mean), and tunesvc's wait at the end of a trial for its last writes.

Each process reads the study's finished trials into Optuna's cache before timing starts, and
its first timed epoch is dropped. The kinds take turns (``--rounds``), so that load from
elsewhere on the machine falls on all of them alike. The table gives the median, 90th
percentile and mean over all epochs of all workers, in milliseconds, all against the same
database in the same run.

Run: ``python tests/benchmarks/bench_coordination.py [--finished 0 10000] [--epochs 30]
[--rounds 2] [--train-ms 30] [--kinds ...]``;
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
import torch

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
    from tunesvc import service
    from tunesvc.spec import parse_spec_dict

    url = _url(schema)
    spec = parse_spec_dict({"objective": OBJECTIVE, "direction": "maximize", "n_trials": 40,
                            "params": {"x": {"low": 0, "high": 3, "type": "int"},
                                       "y": {"low": 0, "high": 3, "type": "int"}}})
    service.create_study(name, spec, url)
    if finished:
        _fill(url, name, finished)


class _Training:
    """About ``train_ms`` of real torch work per call: steps of a small MLP, one thread."""

    def __init__(self, train_ms: float) -> None:
        torch.set_num_threads(1)
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(),
                                         torch.nn.Linear(256, 10))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.x, self.y = torch.randn(256, 64), torch.randint(0, 10, (256,))
        t0 = time.perf_counter()
        for _ in range(20):
            self._step()
        per_step = (time.perf_counter() - t0) / 20
        self.steps = max(1, round(train_ms / 1000 / per_step))

    def _step(self) -> None:
        self.opt.zero_grad()
        torch.nn.functional.cross_entropy(self.model(self.x), self.y).backward()
        self.opt.step()

    def epoch(self) -> None:
        for _ in range(self.steps):
            self._step()


Times = tuple[list[float], list[float], float]
"""Per epoch: coordination ms and training ms (first epoch dropped); ms waited at the end."""


def _time_epochs(
    epochs: int, training: _Training, one_epoch: Callable[[int], None] | None
) -> Times:
    glue, train = [], []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        training.epoch()
        t1 = time.perf_counter()
        if one_epoch is not None:
            one_epoch(epoch)
        t2 = time.perf_counter()
        glue.append((t2 - t1) * 1000)
        train.append((t1 - t0) * 1000)
    return glue[1:], train[1:], 0.0


def _bare(epochs: int, train_ms: float, barrier: Any) -> Times:
    training = _Training(train_ms)
    barrier.wait()
    return _time_epochs(epochs, training, None)


def _raw(url: str, name: str, epochs: int, train_ms: float, prune: bool,
         barrier: Any) -> Times:
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    study = optuna.load_study(study_name=name, storage=storage,
                              pruner=optuna.pruners.MedianPruner())
    trial = study.ask()
    study.get_trials(deepcopy=False)  # fill Optuna's cache of finished trials before timing
    training = _Training(train_ms)
    barrier.wait()

    def one_epoch(epoch: int) -> None:
        trial.report(0.5 + epoch / 1000, epoch)
        if prune:
            trial.should_prune()

    times = _time_epochs(epochs, training, one_epoch)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return times


def _tunesvc(url: str, name: str, epochs: int, train_ms: float, structured: bool,
             barrier: Any) -> Times:
    from tunesvc.curves import Curves, EpochRecord
    from tunesvc.storage import open_storage
    from tunesvc.worker import WorkerOptions
    from tunesvc.worker._claim import claim_trial
    from tunesvc.worker._loop import open_context
    from tunesvc.worker._runner import CURVES_EVERY_S
    from tunesvc.worker._sampler import SlotSampler
    from tunesvc.worker._trial import SpecTrial

    storage = open_storage(url)
    ctx = open_context(storage, name, url, WorkerOptions(device="cpu"))
    claim = claim_trial(ctx)
    assert claim is not None
    ctx.study.sampler = SlotSampler(claim.params, seed=ctx.spec.seed, slot=claim.slot)
    trial = SpecTrial(ctx.study, claim.trial_id, ctx)
    trial.suggest_int("x", 0, 3)
    trial.suggest_int("y", 0, 3)
    curves = Curves()
    trial.curves = curves
    ctx.study.get_trials(deepcopy=False)  # fill Optuna's cache of finished trials before timing
    training = _Training(train_ms)
    barrier.wait()

    def one_epoch(epoch: int) -> None:
        value = 0.5 + epoch / 1000
        if structured:  # what _runner's on_epoch does for a structured objective
            curves.append(EpochRecord(epoch, 1 - value, 1 - value, value, value, 0.1, 1.0))
            trial.store_curves(every_s=CURVES_EVERY_S)
        trial.report(value, epoch)
        if epoch > 0:
            trial.should_prune()

    glue, train, _ = _time_epochs(epochs, training, one_epoch)
    t0 = time.perf_counter()
    trial.flush()  # what the runner waits for before it records the trial's end
    waited = (time.perf_counter() - t0) * 1000
    ctx.study.tell(trial, state=optuna.trial.TrialState.FAIL)
    ctx.close_writer()
    return glue, train, waited


def _worker(kind: str, url: str, name: str, epochs: int, train_ms: float,
            barrier: Any) -> Times:
    if kind == "bare training":
        return _bare(epochs, train_ms, barrier)
    if kind == "raw report":
        return _raw(url, name, epochs, train_ms, False, barrier)
    if kind == "raw report + MedianPruner":
        return _raw(url, name, epochs, train_ms, True, barrier)
    return _tunesvc(url, name, epochs, train_ms, kind.endswith("structured"), barrier)


KINDS = ["bare training", "raw report", "raw report + MedianPruner", "tunesvc plain",
         "tunesvc structured"]


def _measure(kind: str, url: str, name: str, epochs: int, train_ms: float) -> list[Times]:
    mp = multiprocessing.get_context("spawn")
    with mp.Manager() as manager:
        barrier = manager.Barrier(WORKERS)
        with mp.Pool(WORKERS) as pool:
            return pool.starmap(_worker, [(kind, url, name, epochs, train_ms, barrier)] * WORKERS)


def _p90(xs: list[float]) -> float:
    return sorted(xs)[int(0.9 * (len(xs) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--finished", type=int, nargs="+", default=[0, 10_000])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train-ms", type=float, default=30.0)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=KINDS,
                        help="which kinds, in the order they take turns")
    args = parser.parse_args()
    admin = sqlalchemy.create_engine(PG, isolation_level="AUTOCOMMIT")
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    results: dict[tuple[str, int], list[Times]] = {}
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
                for kind in args.kinds:
                    results.setdefault((kind, finished), []).extend(
                        _measure(kind, _url(schema), "coord", args.epochs, args.train_ms))
    finally:
        with admin.connect() as conn:
            for schema in schemas:
                conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()
    _table(results, args.finished, args.kinds)
    server = sqlalchemy.engine.make_url(PG).render_as_string(hide_password=True)
    print(f"\n{WORKERS} worker processes x {args.rounds} rounds x {args.epochs} epochs per "
          f"kind and size, {args.train_ms:g} ms of torch training per epoch; server {server}; "
          f"machine: {os.cpu_count()} cores, load average {load_before} before, "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} after")


def _table(results: dict[tuple[str, int], list[Times]], sizes: list[int],
           kinds: list[str]) -> None:
    header = ["per epoch, ms (4 workers, PostgreSQL)"]
    for n in sizes:
        header += [f"median @ {n:,} finished", f"p90 @ {n:,}", f"mean @ {n:,}"]
    if len(sizes) > 1:
        header.append(f"mean {sizes[-1]:,} / {sizes[0]:,}")
    header += ["training per epoch", "epoch, training + coordination (mean)",
               "wait at trial end"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for kind in kinds:
        row = [kind]
        means = []
        for n in sizes:
            glue = [t for part in results[(kind, n)] for t in part[0]]
            means.append(statistics.fmean(glue))
            row += [f"{statistics.median(glue):.2f}", f"{_p90(glue):.2f}", f"{means[-1]:.2f}"]
        if len(sizes) > 1:
            row.append(f"{means[-1] / means[0]:.2f}x" if means[0] > 0.05 else "-")
        runs = [part for n in sizes for part in results[(kind, n)]]
        row.append(f"{statistics.median(t for part in runs for t in part[1]):.1f}")
        epochs = [g + t for part in runs for g, t in zip(part[0], part[1], strict=True)]
        row.append(f"{statistics.fmean(epochs):.1f}")
        row.append(f"{statistics.median(part[2] for part in runs):.1f}"
                   if kind.startswith("tunesvc") else "-")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
