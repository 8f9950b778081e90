"""Population training throughput: trial-epochs per second with K trials trained at once as one
stacked model, against one trial at a time through fit, on the same objective.

Trials: K random draws from the objective's search space (lr, weight_decay, dropout; the
architecture at its default), seeds 0..K-1, ``--epochs`` epochs each. Rows per objective and K:

- ``fit, one at a time``: tunesvc.fit for each trial in turn: set-up, epoch 0 and every epoch's
  evaluation included (timed on ``--fit-trials`` of the K trials; its rate does not depend on K).
- ``raw vmap (plain torch)``: the issue's reference, what a user writes by hand:
  ``torch.func.stack_module_state`` + ``functional_call`` + ``vmap`` (dropout with
  ``randomness="different"``), one shared shuffle, one ``torch.optim.AdamW`` over the stacked
  parameters (one lr for all), training only, no evaluation.
- ``population, train only``: tunesvc's stacked loop, per-member shuffles, dropout masks, lr,
  weight decay (tunesvc.training._population internals), training only. On the CPU it trains
  32 members at a time through each epoch (``CPU_MEMBERS_PER_PASS``), on CUDA all at once.
- ``population + records``: ``Population.step()`` from ``add`` to the end: epoch 0, training,
  the val evaluation, every member's EpochRecord through its on_epoch callback (a no-op
  here). ``run_population(..., on_epoch=...)`` is the hook for a callback that reports to Optuna.

Through the worker, with Optuna's bookkeeping (each epoch reported, curves stored, the study's
diagnostic pruner asked, every trial's end and diagnosis recorded), on SQLite and PostgreSQL:

- ``tunesvc study run --population 1``: the worker of ``study run`` (``tunesvc.worker.work``)
  one trial at a time, on ``--fit-trials`` x 2 trials (its rate does not depend on K). The
  dashboard notes ``study run`` adds (a figure per trial, drawn in a background thread) are
  left out: they cost the same per trial whatever K, and on 2 cores they take half the CPU.
- ``tunesvc study run --population K``: the same on a study of K trials, K at once.
  Trial-epochs are counted from the stored curves (a pruned trial trains fewer); ``x fit`` is
  against the ``--population 1`` row of the same storage, ``vs raw`` against raw vmap at K.

``x fit`` is trial-epochs/s against the fit row; ``vs raw`` is the population's rate against
raw vmap's (what tunesvc's per-member bookkeeping costs). Target on a 2-core CPU: at least
2x fit at K = 64 for digits_mlp.

    python tests/benchmarks/bench_population.py [--objectives digits_mlp mnist1d_mlp]
        [--ks 1 8 64 256 1024] [--epochs 2] [--fit-trials 4] [--repeats 1] [--device cpu]
        [--threads 0] [--storages sqlite postgresql] [--rows all|core|worker] [--quick]
        [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import importlib
import math
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tunesvc.curves._curves import EpochRecord  # noqa: E402
from tunesvc.training._fit import TrainingSetup, fit, resolve_device  # noqa: E402
from tunesvc.training._population import Population  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_training import machine  # noqa: E402

TARGET = ("digits_mlp", 64, 2.0)  # objective, K, at least this many times fit's rate
PG_URL = os.environ.get("TUNESVC_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def trial_params(objective: str, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` draws of lr, weight_decay (log-uniform) and dropout (uniform) from the
    objective's search space."""
    space = importlib.import_module(f"objectives.{objective}").SEARCH_SPACE
    rng = random.Random(seed)
    draws = []
    for _ in range(count):
        params: dict[str, Any] = {}
        for name in ("lr", "weight_decay", "dropout"):
            low, high = space[name]["low"], space[name]["high"]
            params[name] = (
                math.exp(rng.uniform(math.log(low), math.log(high)))
                if space[name].get("log") else rng.uniform(low, high)
            )  # fmt: skip
        draws.append(params)
    return draws


def build(objective: str, params: list[dict[str, Any]]) -> list[TrainingSetup]:
    module = importlib.import_module(f"objectives.{objective}")
    return [module.build(p) for p in params]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fit_rate(setups: list[TrainingSetup], epochs: int, device: torch.device) -> float:
    """Trial-epochs per second of fit, one trial after the other."""
    started = time.perf_counter()
    for seed, setup in enumerate(setups):
        fit(setup, epochs=epochs, seed=seed, device=str(device))
    return len(setups) * epochs / (time.perf_counter() - started)


def run_population(
    setups: list[TrainingSetup],
    epochs: int,
    device: torch.device,
    on_epoch: Callable[[Hashable, EpochRecord], bool | None] | None = None,
) -> float:
    """Trial-epochs per second of a Population from its first ``add`` to its last member's
    end; ``on_epoch(key, record)`` is each member's callback (the hook for Optuna rows)."""
    started = time.perf_counter()
    population = Population(device=str(device))
    for seed, setup in enumerate(setups):
        callback = None if on_epoch is None else (lambda r, k=seed: on_epoch(k, r))
        population.add(seed, setup, epochs=epochs, seed=seed, on_epoch=callback)
    while population:
        population.step()
    return len(setups) * epochs / (time.perf_counter() - started)


def population_train_rate(setups: list[TrainingSetup], epochs: int, device: torch.device) -> float:
    """Trial-epochs per second of tunesvc's stacked training loop alone (no evaluation)."""
    population = Population(device=str(device))
    for seed, setup in enumerate(setups):
        population.add(seed, setup, epochs=epochs, seed=seed)
    stack = population._stack
    assert stack is not None
    stack.sync()
    members = [population._members[key] for key in stack.keys]
    for member in members:
        member.lr = member.scheduled_lr(1)
    stack.train_epoch(members)  # warm-up: allocator, kernels
    sync(device)
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        for member in members:
            member.epoch, member.lr = epoch, member.scheduled_lr(epoch)
        stack.train_epoch(members)
    sync(device)
    return len(setups) * epochs / (time.perf_counter() - started)


def raw_vmap_rate(setups: list[TrainingSetup], epochs: int, device: torch.device) -> float:
    """Trial-epochs per second of the plain-torch stacked loop (see the module docstring)."""
    models = []
    for seed, setup in enumerate(setups):
        torch.manual_seed(seed)
        assert callable(setup.model) and not isinstance(setup.model, nn.Module)
        models.append(setup.model().to(device))
    params, buffers = stack_module_state(models)  # type: ignore[arg-type]
    base = copy.deepcopy(models[0]).to("meta")
    x, y = (t.to(device) for t in setups[0].train)  # type: ignore[union-attr]
    optimizer = torch.optim.AdamW(params.values(), lr=setups[0].lr, weight_decay=1e-4)
    batch = setups[0].batch_size

    def loss_of(p: dict[str, Tensor], b: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    losses_of = vmap(loss_of, in_dims=(0, 0, None, None), randomness="different")

    def epoch() -> None:
        perm = torch.randperm(x.shape[0], device=device)
        for start in range(0, x.shape[0], batch):
            idx = perm[start : start + batch]
            loss = losses_of(params, buffers, x[idx], y[idx]).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()

    epoch()  # warm-up
    sync(device)
    started = time.perf_counter()
    for _ in range(epochs):
        epoch()
    sync(device)
    return len(setups) * epochs / (time.perf_counter() - started)


def measure(
    objective: str, ks: list[int], epochs: int, fit_trials: int, repeats: int,
    device: torch.device, raws: dict[int, float],
) -> list[list[str]]:
    params = trial_params(objective, max(max(ks), fit_trials, 2))
    setups = build(objective, params)
    # Warm-up: first-call costs (imports torch.optim pulls in, kernels, allocator) are no rate.
    fit_rate(setups[:1], 1, device)
    raw_vmap_rate(setups[:2], 1, device)
    run_population(setups[:2], 1, device)

    def best(rate: Callable[[list[TrainingSetup], int, torch.device], float], k: int) -> float:
        return max(rate(setups[:k], epochs, device) for _ in range(repeats))

    alone = best(fit_rate, fit_trials)
    rows = [[objective, "-", "fit, one at a time", f"{alone:.1f}", "1.0x", ""]]
    print(f"  {objective}: fit {alone:.1f} trial-epochs/s", file=sys.stderr, flush=True)
    for k in ks:
        raw = raws[k] = best(raw_vmap_rate, k)
        train = best(population_train_rate, k)
        full = best(run_population, k)
        target = ""
        if (objective, k) == TARGET[:2]:
            target = f">= {TARGET[2]:.0f}x: {'ok' if full / alone >= TARGET[2] else 'MISSED'}"
        for name, rate in (("raw vmap (plain torch)", raw), ("population, train only", train),
                           ("population + records", full)):  # fmt: skip
            rows.append([objective, str(k), name, f"{rate:.1f}", f"{rate / alone:.1f}x",
                         f"{rate / raw:.2f}" if name != "raw vmap (plain torch)" else ""])
        rows[-1][-1] += f" {target}" if target else ""
        print(f"  {objective} K={k}: raw {raw:.1f}, train {train:.1f}, records {full:.1f}",
              file=sys.stderr, flush=True)  # fmt: skip
    return rows


@contextmanager
def storage_url(kind: str) -> Iterator[str]:
    """A fresh storage: a temporary SQLite file, or a schema of its own on ``PG_URL``."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/bench.db"
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


def worker_rate(
    objective: str, url: str, n_trials: int, population: int, epochs: int, device: torch.device
) -> float:
    """Trial-epochs per second of ``tunesvc study run --population K``'s worker on a new random
    study of ``n_trials`` trials with the diagnostic pruner (no dashboard notes)."""
    import optuna

    from tunesvc import service
    from tunesvc.spec import parse_spec_dict
    from tunesvc.storage import attrs, open_storage
    from tunesvc.worker import WorkerOptions, work

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    space = importlib.import_module(f"objectives.{objective}").SEARCH_SPACE
    spec = parse_spec_dict({"objective": objective, "sampler": "random", "n_trials": n_trials,
                            "epochs": epochs, "seed": 0, "pruner": "diagnostic",
                            "params": {k: space[k] for k in ("lr", "weight_decay", "dropout")}})
    service.create_study(name, spec, url)
    storage = open_storage(url)
    started = time.perf_counter()
    work(storage, name, url, WorkerOptions(device=str(device), population=population))
    seconds = time.perf_counter() - started
    trials = optuna.load_study(study_name=name, storage=url).trials
    trained = 0
    for t in trials:
        curves = attrs.CURVES.get(t)
        trained += max(0, len(curves) - 1) if curves is not None else 0
    return trained / seconds


def measure_worker(
    objective: str, ks: list[int], epochs: int, fit_trials: int, storages: list[str],
    device: torch.device, raw: dict[int, float],
) -> list[list[str]]:
    rows = []
    with tempfile.TemporaryDirectory() as artifacts:
        os.environ["TUNESVC_ARTIFACTS"] = artifacts
        for kind in storages:
            with storage_url(kind) as url:
                worker_rate(objective, url, 2, 1, 1, device)  # warm-up: imports, first build
                alone = worker_rate(objective, url, 2 * fit_trials, 1, epochs, device)
                rows.append([objective, "-", f"study run --population 1 ({kind})",
                             f"{alone:.1f}", "1.0x", ""])
                print(f"  {objective} {kind}: --population 1 {alone:.1f}", file=sys.stderr,
                      flush=True)
                for k in ks:
                    rate = worker_rate(objective, url, k, k, epochs, device)
                    vs_raw = f"{rate / raw[k]:.2f}" if k in raw else ""
                    rows.append([objective, str(k), f"study run --population {k} ({kind})",
                                 f"{rate:.1f}", f"{rate / alone:.1f}x", vs_raw])
                    print(f"  {objective} {kind}: --population {k} {rate:.1f}",
                          file=sys.stderr, flush=True)
    return rows


def table(rows: list[list[str]]) -> str:
    header = ["objective", "K", "run", "trial-epochs/s", "x fit", "vs raw"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", nargs="+", default=["digits_mlp", "mnist1d_mlp"])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 8, 64, 256, 1024])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    parser.add_argument("--fit-trials", type=int, default=4, help="trials timed through fit")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each row; the best counts")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--storages", nargs="+", default=["sqlite", "postgresql"],
                        help="storages of the worker rows (PostgreSQL: $TUNESVC_BENCH_PG)")
    parser.add_argument("--rows", choices=["all", "core", "worker"], default="all",
                        help="core: fit, raw vmap, population; worker: study run rows")
    parser.add_argument("--quick", action="store_true", help="digits_mlp, K = 1 8 64, 2 epochs")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.objectives, args.ks, args.epochs = ["digits_mlp"], [1, 8, 64], 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows: list[list[str]] = []
    for objective in args.objectives:
        raws: dict[int, float] = {}
        if args.rows != "worker":
            rows += measure(objective, args.ks, args.epochs, args.fit_trials, args.repeats,
                            device, raws)
        if args.rows != "core":
            rows += measure_worker(objective, args.ks, args.epochs, args.fit_trials,
                                   args.storages, device, raws)
    report = (
        f"Machine: {machine(device)}\n\nTrial-epochs per second, {args.epochs} epoch(s) per "
        f"trial, random lr / weight_decay / dropout\n\n{table(rows)}\n"
    )
    print(report)
    if args.out is not None:
        args.out.write_text(report)
    return report


if __name__ == "__main__":
    main()
