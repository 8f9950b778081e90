"""Scale: what a study costs as it grows to 100,000 trials, tunesvc's lazy queue vs plain Optuna.

Storage level (the queue and reads of ``tunesvc.storage``, Optuna's storage API for the rest of
a trial's writes), for N = 100, 1,000, 10,000 and 100,000 on SQLite and PostgreSQL:

- ``create``: a study of N trials (the lazy queue writes its state, no trial); with
  ``--old-create-max``, the previous way (``enqueue_trial`` per trial) up to that N.
- per trial, as a worker's clock sees it (median ms): ``fail_lost`` + ``claim`` + 3 params +
  3 reports + a ~3 KB curves attribute + outcome + diagnosis + finish, with N trials queued (a
  fresh study of budget N) and with N trials finished; 1 worker process, and 8 on PostgreSQL.
  Plain Optuna in the same run on the same study: ``ask`` (3 random params) + the same writes
  + ``tell``, after its first trial (which fills Optuna's cache with the whole study; its
  seconds are a column of their own); in 8 workers only up to ``--optuna-read-max``, since
  each worker holds the whole study in memory.
- the resident memory (peak) of a worker process, tunesvc's and plain Optuna's.
- the reads at N finished (seconds): ``study list`` (counts of every study), what ``study show``
  reads (counts by state, by diagnosis label, best, running trials), counts by outcome, by label
  three ways (a separate ``label`` attribute; the ``diagnosis`` JSON's field extracted in SQL;
  every ``diagnosis`` parsed in Python), the pruner's first and next ``finished_since``, the
  whole study streamed (and what it added to the reader's peak memory), Optuna's
  ``best_trial`` and, up to ``--optuna-read-max``, Optuna's ``get_trials`` (how show read before).

Studies of N finished trials are written in bulk (SQLAlchemy Core, in batches): each trial has
3 params, 3 reported values, a value (COMPLETE), a heartbeat and the user attributes a real
tunesvc trial carries (slot, worker, outcome, diagnosis, label, and ~3 KB of curves).

Run: ``python tests/benchmarks/bench_scale.py [--sizes 100 1000 10000 100000]
[--backends sqlite postgresql] [--trials 200] [--quick]``; ``$TUNESVC_BENCH_PG`` picks the
PostgreSQL server (default: the test database on this machine; a schema per size, dropped).
Timings from a shared machine are noisy: compare columns of one run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue as queue_module
import random
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
)
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bulk_trials import curves, diagnosis, fill_finished  # noqa: E402

from tunesvc import TunesvcError  # noqa: E402
from tunesvc.spec import parse_spec_dict  # noqa: E402
from tunesvc.spec._plan import Plan  # noqa: E402
from tunesvc.storage import _queue as q  # noqa: E402
from tunesvc.storage import open_storage  # noqa: E402
from tunesvc.storage._queue import StudyQueue  # noqa: E402
from tunesvc.storage._reads import StudyReads, counts_by_state  # noqa: E402

PG = os.environ.get("TUNESVC_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SPEC = {"objective": "x", "sampler": "random", "direction": "maximize", "seed": 0, "params": {
    "lr": {"low": 1e-4, "high": 1e-1, "log": True}, "dropout": {"low": 0.0, "high": 0.5},
    "hidden": {"values": [64, 128, 256]}}}
DISTRIBUTIONS = {"lr": FloatDistribution(1e-4, 1e-1, log=True),
                 "dropout": FloatDistribution(0.0, 0.5),
                 "hidden": CategoricalDistribution([64, 128, 256])}
KEYS = ("outcome", "diagnosis", "error", "slot", "retry_of")
WAIT_S = 1800.0

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- building studies -------------------------------------------------------------------------


def _new_study(storage: optuna.storages.RDBStorage, name: str) -> int:
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr("spec", SPEC)
    return study._study_id


def _fill(storage: optuna.storages.RDBStorage, study_id: int, n: int, budget: int) -> None:
    """``n`` finished trials in bulk, then the queue's state as if the queue had made them."""
    fill_finished(storage, study_id, n, budget=budget, distributions=DISTRIBUTIONS)


# --- workers (spawned processes) --------------------------------------------------------------


def _trial_attrs(rng: random.Random) -> dict[str, Any]:
    """What a finished trial writes besides its reports, tunesvc's and plain Optuna's alike
    (``label`` beside ``diagnosis``: what the "labels: attr" read counts)."""
    return {"curves": curves(rng), "outcome": "completed",
            "diagnosis": diagnosis(rng, "healthy"), "label": "healthy"}


def _trial_writes(
    storage: optuna.storages.RDBStorage, trial_id: int, rng: random.Random
) -> None:
    for step in range(3):
        storage.set_trial_intermediate_value(trial_id, step, rng.random())
    for key, value in _trial_attrs(rng).items():
        storage.set_trial_user_attr(trial_id, key, value)


def _tunesvc_worker(url: str, study_id: int, budget: int, k: int, go: Any, out: Any) -> None:
    storage = open_storage(url)
    plan = Plan.from_spec(parse_spec_dict({**SPEC, "n_trials": budget}))
    queue = StudyQueue(storage, study_id)
    dists = plan.distributions()
    rng = random.Random(os.getpid())
    worker = {"host": "bench", "pid": os.getpid(), "device": "cpu", "worker": 0}
    go.wait(WAIT_S)
    times, claims = [], []
    for _ in range(k):
        t0 = time.perf_counter()
        queue.fail_lost(grace_s=20, max_lost_retries=3)
        claim = queue.claim(plan, worker)
        claims.append(time.perf_counter() - t0)
        if claim is None:
            break
        for name, value in claim.params.items():
            storage.set_trial_param(claim.trial_id, name, dists[name].to_internal_repr(value),
                                    dists[name])
        _trial_writes(storage, claim.trial_id, rng)
        storage.set_trial_state_values(claim.trial_id, TrialState.COMPLETE, [rng.random()])
        times.append(time.perf_counter() - t0)
    out.put({"times": times, "claims": claims, "rss": _rss_peak_mb()})
    storage.engine.dispose()


def _optuna_worker(url: str, name: str, k: int, go: Any, out: Any) -> None:
    storage = optuna.storages.RDBStorage(url)
    study = optuna.load_study(study_name=name, storage=storage,
                              sampler=optuna.samplers.RandomSampler(seed=os.getpid()))
    rng = random.Random(os.getpid())
    go.wait(WAIT_S)
    times = []
    for _ in range(k + 1):
        t0 = time.perf_counter()
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_float("dropout", 0.0, 0.5)
        trial.suggest_categorical("hidden", [64, 128, 256])
        for step in range(3):
            trial.report(rng.random(), step)
        for key, value in _trial_attrs(rng).items():
            trial.set_user_attr(key, value)
        study.tell(trial, rng.random())
        times.append(time.perf_counter() - t0)
    out.put({"first": times[0], "times": times[1:], "rss": _rss_peak_mb()})
    storage.engine.dispose()


def _service_worker(url: str, name: str, k: int, go: Any, out: Any) -> None:
    """tunesvc's real worker path, as `tunesvc study run NAME --n-trials K` runs it: the plain
    objective of scale_objective.py, the study's pruner and board, heartbeats, diagnoses,
    dashboard notes. Per trial: the time between two finished trials as the worker reports them
    (the objective itself takes microseconds)."""
    from tunesvc import service

    go.wait(WAIT_S)
    stamps = [time.perf_counter()]
    service.run_study(name, url, n_trials=k, on_result=lambda _: stamps.append(
        time.perf_counter()))
    out.put(_paced(stamps))


def _paced(stamps: list[float]) -> dict[str, Any]:
    """From the start and each finished trial's clock: the first trial's seconds, the seconds of
    each one after it, and this process's peak memory."""
    times = [b - a for a, b in zip(stamps[1:], stamps[2:], strict=False)]
    return {"first": stamps[1] - stamps[0], "times": times, "rss": _rss_peak_mb()}


def _optimize_worker(url: str, name: str, k: int, go: Any, out: Any) -> None:
    """Plain Optuna's real path on the same storage: ``study.optimize`` of the same objective
    (random sampler, no pruner), timed between trials by a callback."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from scale_objective import objective

    storage = optuna.storages.RDBStorage(url)
    study = optuna.load_study(study_name=name, storage=storage,
                              sampler=optuna.samplers.RandomSampler(seed=os.getpid()))
    go.wait(WAIT_S)
    stamps = [time.perf_counter()]
    study.optimize(objective, n_trials=k + 1,
                   callbacks=[lambda *_: stamps.append(time.perf_counter())])
    out.put(_paced(stamps))
    storage.engine.dispose()


def measure_worker(backend: str, n: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The worker path at N queued and N finished: tunesvc's `study run` against plain
    Optuna's `study.optimize` on the same storage."""
    from tunesvc import service

    k = args.worker_trials
    row: dict[str, Any] = {"backend": backend, "n": n}
    spec = {**{key: v for key, v in SPEC.items() if key != "objective"},
            "objective": "tests/benchmarks/scale_objective.py:objective"}
    with _database(backend, tmp) as url:
        t0 = time.perf_counter()
        service.create_study("queued", parse_spec_dict({**spec, "n_trials": n}), url)
        row["create"] = time.perf_counter() - t0
        [queued] = _run([(_service_worker, (url, "queued", k))])
        row["queued"] = statistics.median(queued["times"]) * 1000
        service.create_study("finished", parse_spec_dict({**spec, "n_trials": n + k + 5}), url)
        storage = open_storage(url)
        _fill(storage, storage.get_study_id_from_name("finished"), n, budget=n + k + 5)
        [done] = _run([(_service_worker, (url, "finished", k))])
        row["finished"] = statistics.median(done["times"]) * 1000
        row["first"] = done["first"]
        row["rss"] = done["rss"]
        [plain] = _run([(_optimize_worker, (url, "finished", k))])
        row["optuna"] = statistics.median(plain["times"]) * 1000
        row["optuna_first"] = plain["first"]
        row["optuna_rss"] = plain["rss"]
        t0 = time.perf_counter()
        service.show_study("finished", url)
        row["show"] = time.perf_counter() - t0
        storage.engine.dispose()
    return row


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = call()
    return time.perf_counter() - t0, result


def _reader(url: str, study_id: int, name: str, optuna_max: int, n: int, go: Any,
            out: Any) -> None:
    storage = open_storage(url)
    reads = StudyReads(storage, study_id)
    go.wait(WAIT_S)
    t: dict[str, Any] = {}
    t["list"], _ = _timed(lambda: counts_by_state(storage))
    t["counts"], _ = _timed(reads.counts)
    t["outcomes"], _ = _timed(lambda: reads.counts_by_attr("outcome"))
    t["label_attr"], by_attr = _timed(lambda: reads.counts_by_attr("label"))
    t["label_sql"], by_sql = _timed(lambda: reads.counts_by_field("diagnosis", "label"))
    t["label_py"], by_py = _timed(lambda: _labels_in_python(reads))
    assert by_attr == by_sql == by_py, (by_attr, by_sql, by_py)
    t["best"], best = _timed(lambda: reads.best(optuna.study.StudyDirection.MAXIMIZE, KEYS))
    t["running"], _ = _timed(lambda: reads.running(KEYS))
    t["others"], _ = _timed(reads.others_running)
    t["show"] = sum(t[k] for k in ("counts", "label_attr", "best", "running"))
    t["fs_first"], (first, cursor) = _timed(reads.finished_since)
    del first
    t["fs_next"], _ = _timed(lambda: reads.finished_since(cursor))
    peak = _rss_peak_mb()
    t["stream"], count = _timed(lambda: sum(1 for _ in reads.trials(KEYS)))
    t["stream_mb"] = _rss_peak_mb() - peak
    assert count >= n
    study = optuna.load_study(study_name=name, storage=storage)
    t["optuna_best"], theirs = _timed(lambda: study.best_trial)
    assert best is not None and theirs.value == best.value
    if n <= optuna_max:
        peak = _rss_peak_mb()
        t["optuna_all"], _ = _timed(lambda: len(study.get_trials(deepcopy=False)))
        t["optuna_mb"] = _rss_peak_mb() - peak
    out.put(t)
    storage.engine.dispose()


def _labels_in_python(reads: StudyReads) -> dict[str, int]:
    attrs = q.trial_user_attributes
    query = (sa.select(attrs.c.value_json).join(q.trials, q.trials.c.trial_id == attrs.c.trial_id)
             .where(q.trials.c.study_id == reads.study_id, attrs.c.key == "diagnosis"))
    with reads.engine.connect() as conn:
        return dict(Counter(json.loads(raw)["label"] for raw in conn.execute(query).scalars()))


def _run(targets: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> list[dict[str, Any]]:
    """Start the targets as processes, start their clocks together, one answer from each."""
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=f, args=(*args, go, out)) for f, args in targets]
    for p in procs:
        p.start()
    time.sleep(1.0 + 0.3 * len(procs))  # imports done before anyone starts the clock
    go.set()
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT_S
    while len(results) < len(procs):
        try:
            results.append(out.get(timeout=1.0))
        except queue_module.Empty:
            if all(not p.is_alive() for p in procs) and out.empty() or (
                    time.monotonic() > deadline):
                for p in procs:
                    p.kill()
                raise SystemExit(f"a benchmark process failed (exit codes "
                                 f"{[p.exitcode for p in procs]})") from None
    for p in procs:
        p.join(timeout=60)
    return results


# --- one size on one database -----------------------------------------------------------------


@contextmanager
def _database(backend: str, tmp: Path) -> Iterator[str]:
    """A fresh database for one size: a SQLite file, or a PostgreSQL schema (dropped after)."""
    if backend == "sqlite":
        path = tmp / f"scale-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    schema = f"scale_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG}?options=-csearch_path%3D{schema}"
    finally:
        admin.dispose()  # a server restarted meanwhile dropped the pooled connection
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def measure(backend: str, n: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"backend": backend, "n": n}
    with _database(backend, tmp) as url:
        plan = Plan.from_spec(parse_spec_dict({**SPEC, "n_trials": n}))
        storage = open_storage(url)  # the schema is created here, before the clock starts
        t0 = time.perf_counter()
        lazy = _new_study(storage, "lazy")
        StudyQueue.create(storage, lazy, plan.budget)
        row["create"] = time.perf_counter() - t0
        if n <= args.old_create_max:
            t0 = time.perf_counter()
            _new_study(storage, "old")
            old = optuna.load_study(study_name="old", storage=storage)
            for slot in range(n):
                old.enqueue_trial(plan.params(slot), user_attrs={"slot": slot})
            row["old_create"] = time.perf_counter() - t0
        [queued] = _run([(_tunesvc_worker, (url, lazy, n, args.trials))])
        row["queued"] = statistics.median(queued["times"]) * 1000

        t0 = time.perf_counter()
        done = _new_study(storage, "done")
        budget = n + 2 * args.trials + args.workers * max(5, args.trials // args.workers)
        _fill(storage, done, n, budget=budget)
        row["build"] = time.perf_counter() - t0
        [one] = _run([(_tunesvc_worker, (url, done, budget, args.trials))])
        row["finished"] = statistics.median(one["times"]) * 1000
        row["claim"] = statistics.median(one["claims"]) * 1000
        row["rss"] = one["rss"]
        [plain] = _run([(_optuna_worker, (url, "done", args.trials))])
        row["optuna"] = statistics.median(plain["times"]) * 1000
        row["optuna_first"] = plain["first"]
        row["optuna_rss"] = plain["rss"]
        if backend == "postgresql" and args.workers > 1:
            per = max(5, args.trials // args.workers)
            many = _run([(_tunesvc_worker, (url, done, budget, per))] * args.workers)
            row["finished_8"] = statistics.median([x for r in many for x in r["times"]]) * 1000
            row["claim_8"] = statistics.median([x for r in many for x in r["claims"]]) * 1000
            if n <= args.optuna_read_max:  # each plain Optuna worker holds the whole study
                many = _run([(_optuna_worker, (url, "done", per))] * args.workers)
                row["optuna_8"] = statistics.median(
                    [x for r in many for x in r["times"]]) * 1000
        [reads] = _run([(_reader, (url, done, "done", args.optuna_read_max, n))])
        row.update(reads)
        storage.engine.dispose()
    return row


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    return "-" if row.get(key) is None else format(row[key], fmt)


def print_tables(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nPer trial, median ms over {args.trials} trials ({args.workers} workers: "
          f"{max(5, args.trials // args.workers)} each): tunesvc with N queued and with N "
          "finished (its claim: fail_lost + claim), plain Optuna ask/tell with N finished; "
          "worker peak RSS in MB.\n")
    w = args.workers
    cols = [("create s", "create", ".3f"), ("old create s", "old_create", ".1f"),
            ("queued", "queued", ".1f"), ("finished", "finished", ".1f"),
            ("its claim", "claim", ".1f"), ("Optuna", "optuna", ".1f"),
            (f"finished, {w} workers", "finished_8", ".1f"), ("its claim", "claim_8", ".1f"),
            (f"Optuna, {w} workers", "optuna_8", ".1f"),
            ("Optuna 1st trial s", "optuna_first", ".2f"),
            ("worker RSS", "rss", ".0f"), ("Optuna RSS", "optuna_rss", ".0f")]
    _table(rows, cols)
    print("\nReads at N finished, seconds. show: what `study show` reads (counts, labels by "
          "attr, best, running); stream +MB: peak memory the stream added.\n")
    cols = [("list", "list", ".3f"), ("show", "show", ".3f"), ("counts", "counts", ".3f"),
            ("outcomes", "outcomes", ".3f"), ("labels: attr", "label_attr", ".3f"),
            ("labels: SQL JSON", "label_sql", ".3f"), ("labels: Python", "label_py", ".3f"),
            ("best", "best", ".3f"), ("running", "running", ".3f"),
            ("finished_since 1st", "fs_first", ".2f"), ("next", "fs_next", ".4f"),
            ("stream all", "stream", ".1f"), ("stream +MB", "stream_mb", ".0f"),
            ("Optuna best_trial", "optuna_best", ".3f"), ("Optuna get_trials", "optuna_all",
                                                          ".1f"),
            ("its +MB", "optuna_mb", ".0f")]
    _table(rows, cols)


def print_worker_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nThrough the real worker, median ms per trial over {args.worker_trials} trials: "
          "`service.create_study` of N (s), `service.run_study` with N queued and with N "
          "finished (its first trial in s: loading the study, the objective, the board's first "
          "read), plain Optuna `study.optimize` of the same objective on the same study; "
          "`service.show_study` at N finished (s); peak RSS in MB.\n")
    cols = [("create s", "create", ".3f"), ("queued", "queued", ".1f"),
            ("finished", "finished", ".1f"), ("1st trial s", "first", ".2f"),
            ("Optuna optimize", "optuna", ".1f"), ("Optuna 1st trial s", "optuna_first", ".2f"),
            ("show s", "show", ".2f"), ("worker RSS", "rss", ".0f"),
            ("Optuna RSS", "optuna_rss", ".0f")]
    _table(rows, cols)


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str, str]]) -> None:
    print("| storage | N | " + " | ".join(c[0] for c in cols) + " |")
    print("|---|---:|" + "---:|" * len(cols))
    for row in rows:
        cells = [_cell(row, key, fmt) for _, key, fmt in cols]
        print(f"| {row['backend']} | {row['n']:,} | " + " | ".join(cells) + " |")


def _attempt(what: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """One size measured, once more should the database fail it (restarted by someone else);
    ``None`` if it failed twice."""
    for attempt in (1, 2):
        t0 = time.monotonic()
        try:
            row = call()
        except (SystemExit, sa.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError,
                TunesvcError) as e:
            print(f"{what}: failed ({str(e).splitlines()[0]})"
                  + ("; once more" if attempt == 1 else ""), flush=True)
            continue
        print(f"{what}: {time.monotonic() - t0:.0f} s: {json.dumps(row)}", flush=True)
        return row
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10_000, 100_000])
    parser.add_argument("--backends", nargs="+", choices=["sqlite", "postgresql"],
                        default=["sqlite", "postgresql"])
    parser.add_argument("--trials", type=int, default=200, help="trials timed per cell")
    parser.add_argument("--workers", type=int, default=8, help="processes on PostgreSQL")
    parser.add_argument("--old-create-max", type=int, default=1000,
                        help="largest N created the old way too (enqueue_trial per trial)")
    parser.add_argument("--optuna-read-max", type=int, default=10_000,
                        help="largest N read whole through Optuna's get_trials, and run by "
                             "plain Optuna in 8 workers (each holds the whole study: about "
                             "3.5 GB at 100,000 trials)")
    parser.add_argument("--worker-trials", type=int, default=100,
                        help="trials timed per cell through the real worker (0: skip those "
                             "rows)")
    parser.add_argument("--storage-level", action=argparse.BooleanOptionalAction, default=True,
                        help="the storage-level rows (--no-storage-level: worker rows only)")
    parser.add_argument("--quick", action="store_true",
                        help="N = 100 and 1,000, 40 trials per cell")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.trials, args.worker_trials = [100, 1000], 40, 30
    rows: list[dict[str, Any]] = []
    worker_rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tunesvc-scale-") as tmp:
        for backend in args.backends:
            for n in args.sizes if args.worker_trials else []:
                row = _attempt(f"{backend} N={n:,}, worker path",
                               partial(measure_worker, backend, n, args, Path(tmp)))
                if row is not None:
                    worker_rows.append(row)
            if worker_rows:
                print_worker_table(worker_rows, args)
            for n in args.sizes if args.storage_level else []:
                row = _attempt(f"{backend} N={n:,}",
                               partial(measure, backend, n, args, Path(tmp)))
                if row is not None:
                    rows.append(row)
            if rows:
                print_tables(rows, args)  # so far, should a later size fail
    wanted = len(args.backends) * len(args.sizes)
    if (args.storage_level and len(rows) < wanted) or (
            args.worker_trials and len(worker_rows) < wanted):
        raise SystemExit("some sizes could not be measured (see above)")


if __name__ == "__main__":
    main()
