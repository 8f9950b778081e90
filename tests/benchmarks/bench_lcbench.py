"""Pruners on real learning curves (LCBench through the YAHPO Gym surrogate): how much sooner
each one reaches what a search without pruning reaches, and how often it gets there at all.

Protocol (issue 11). Per task and seed, one stream of random configurations,
``sample_curves(task, 5000, seed)`` (validation accuracy, epochs 1..50). Each pruner runs a
random search over the same stream in a plain Optuna study (in memory, ask and tell) until it
has spent 5,000 epochs (100 full trials): trial ``i`` trains configuration ``i``, reports its
validation accuracy (a fraction) each epoch, and calls ``trial.should_prune()`` after each
report but the last; with tunesvc's pruner it then calls ``tunesvc.should_stop(trial)`` and, when
told to stop, completes with its best epoch. A completed trial's value is its best epoch (as
tunesvc records it). A trial the budget cuts short does not complete.

Accuracies are reported as fractions, as tunesvc records them and as the diagnoses' thresholds
expect; ``--percent`` reports percents instead, as the issue's table was made. Optuna's pruners
and tunesvc's current one decide the same either way; the pruner before issue 11 does not (its
plateau early stop reads the diagnoses' thresholds, which are in fractions).

The *level* is the no-pruning run's best minus 0.5 points. A run *reaches* it when a completed
trial's value is at or above it; its *speed-up* is the epochs the no-pruning run spent until
then divided by the epochs this pruner spent until then (0 when it never reaches it). Printed
per pruner: the median speed-up over runs, the share of runs at 2x or more, and the share that
reached the level.

The surrogate lives outside this repository (``shared/benchmarks/lcbench`` next to the checkout,
or ``--lcbench DIR``, or ``$TUNESVC_LCBENCH``) and needs ``onnxruntime``, a benchmark-only
dependency (``pip install onnxruntime``); without either this script prints one line and exits
0. Curves are cached under ``/tmp/tunesvc-lcbench-curves``.

Run: ``python tests/benchmarks/bench_lcbench.py [--tasks T ...] [--seeds 0 1 2 3 4]
[--pruners none hyperband ...] [--percent] [--per-run]``; ``--quick`` is two tasks, seed 0.
All of it (17 tasks x 5 seeds, six pruners) takes 6 to 25 minutes on 2 cores (quiet or busy),
most of it in Optuna's MedianPruner.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import optuna
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rung_rank import RungRankPruner  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CACHE = Path("/tmp/tunesvc-lcbench-curves")
BUDGET = 5000
EPOCHS = 50  # LCBench's; HyperbandPruner is told max_resource=50, LearningCurvePruner max_epochs
CONFIGS = 5000
TOLERANCE = 0.005  # 0.5 accuracy points, on fractions


def find_lcbench(given: str | None) -> Path | None:
    candidates = [given, os.environ.get("TUNESVC_LCBENCH"),
                  str(REPO.parent / "shared" / "benchmarks" / "lcbench")]
    for c in candidates:
        if c and (Path(c) / "curves.py").is_file():
            return Path(c)
    return None


def load_lcbench(folder: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("lcbench_curves", folder / "curves.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stream(lcbench: ModuleType, task: str, seed: int) -> np.ndarray:
    """Validation accuracy (fractions) of the stream's configurations, [CONFIGS, 50]."""
    path = CACHE / f"{task}-seed{seed}-{CONFIGS}.npy"
    if path.exists():
        return np.load(path)
    acc = lcbench.sample_curves(task, CONFIGS, seed)["val_acc"].astype(np.float64) / 100.0
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, acc)
    return acc


Stopper = Callable[[optuna.Trial], bool]


def tunesvc_pruner() -> tuple[optuna.pruners.BasePruner, Stopper]:
    from tunesvc import LearningCurvePruner, should_stop

    return LearningCurvePruner(max_epochs=EPOCHS), should_stop


def rung_rank() -> tuple[optuna.pruners.BasePruner, Stopper]:
    pruner = RungRankPruner()
    return pruner, lambda trial: trial.number in pruner.stopped


def never(trial: optuna.Trial) -> bool:
    return False


PRUNERS: dict[str, tuple[str, Callable[[], tuple[optuna.pruners.BasePruner, Stopper]]]] = {
    "none": ("no pruning", lambda: (optuna.pruners.NopPruner(), never)),
    "median": ("Optuna MedianPruner", lambda: (optuna.pruners.MedianPruner(), never)),
    "hyperband": (
        "Optuna HyperbandPruner(min_resource=1, max_resource=50)",
        lambda: (optuna.pruners.HyperbandPruner(min_resource=1, max_resource=50), never),
    ),
    "sha": ("Optuna SuccessiveHalvingPruner",
            lambda: (optuna.pruners.SuccessiveHalvingPruner(), never)),
    "rungs": ("LearningCurvePruner before issue 11 (rung ranking; early stop completes)",
              rung_rank),
    "tunesvc": ("tunesvc LearningCurvePruner(max_epochs=50) (should_prune, then should_stop)",
                tunesvc_pruner),
}


def search(acc: np.ndarray, name: str, study_name: str) -> list[tuple[int, float | None]]:
    """One random search over the stream with pruner ``name`` until BUDGET epochs are spent:
    per trial, (epochs spent when it ended, its value or None if it did not complete)."""
    pruner, stop = PRUNERS[name][1]()
    # A fixed name: HyperbandPruner picks a trial's bracket from a hash of it.
    study = optuna.create_study(study_name=study_name, direction="maximize", pruner=pruner)
    epochs = acc.shape[1]
    spent = 0
    trace: list[tuple[int, float | None]] = []
    while spent < BUDGET:
        trial = study.ask()
        curve = acc[trial.number]
        best, value = -math.inf, None
        for epoch in range(1, epochs + 1):
            spent += 1
            v = float(curve[epoch - 1])
            best = max(best, v)
            trial.report(v, epoch)
            if epoch == epochs:
                value = best
            elif spent >= BUDGET or trial.should_prune():
                break
            elif stop(trial):
                value = best
            if value is not None:
                break
        if value is None:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, value)
        trace.append((spent, value))
    return trace


def reach(trace: list[tuple[int, float | None]], level: float) -> int | None:
    return next((s for s, v in trace if v is not None and v >= level), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lcbench", help="folder of the LCBench surrogate (curves.py)")
    parser.add_argument("--tasks", nargs="+", help="OpenML task ids (default: DEV_TASKS)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--pruners", nargs="+", default=list(PRUNERS), choices=list(PRUNERS))
    parser.add_argument("--quick", action="store_true", help="two tasks, seed 0")
    parser.add_argument("--per-run", action="store_true", help="also print every run")
    parser.add_argument("--percent", action="store_true", help="report accuracy in percent")
    args = parser.parse_args()

    folder = find_lcbench(args.lcbench)
    if folder is None:
        print("bench_lcbench: skipped, no LCBench surrogate at ../shared/benchmarks/lcbench "
              "(give --lcbench DIR or $TUNESVC_LCBENCH)")
        return
    if importlib.util.find_spec("onnxruntime") is None:
        print("bench_lcbench: skipped, onnxruntime is not installed (pip install onnxruntime)")
        return
    lcbench = load_lcbench(folder)
    tasks = args.tasks or list(lcbench.DEV_TASKS)
    seeds = args.seeds
    if args.quick:
        tasks, seeds = tasks[:2], [0]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if "none" not in args.pruners:
        args.pruners.insert(0, "none")

    speedups: dict[str, list[float]] = {n: [] for n in args.pruners}
    seconds: dict[str, float] = dict.fromkeys(args.pruners, 0.0)
    started = time.monotonic()
    for task in tasks:
        for seed in seeds:
            acc = stream(lcbench, task, seed) * (100.0 if args.percent else 1.0)
            tolerance = TOLERANCE * (100.0 if args.percent else 1.0)
            level = -math.inf
            base: int | None = None
            cells = []
            for name in args.pruners:
                t0 = time.perf_counter()
                trace = search(acc, name, f"{task}-{seed}-{name}")
                seconds[name] += time.perf_counter() - t0
                if name == "none":
                    level = max(v for _, v in trace if v is not None) - tolerance
                    base = reach(trace, level)
                assert base is not None
                at = reach(trace, level)
                speedups[name].append(base / at if at is not None else 0.0)
                cells.append(f"{name} {speedups[name][-1]:.2f}")
            if args.per_run:
                print(f"{task} seed {seed}: " + ", ".join(cells), flush=True)

    print(f"\n{len(tasks)} tasks x seeds {' '.join(map(str, seeds))} ({len(tasks) * len(seeds)} "
          f"runs), {BUDGET} epochs each, accuracy as {'percent' if args.percent else 'fractions'},"
          f" level = no-pruning best - {TOLERANCE * 100:.1f} points; "
          f"{time.monotonic() - started:.0f} s\n")
    print("| pruner | median speed-up | runs >= 2x | reached | seconds |")
    print("|---|---|---|---|---|")
    for name in args.pruners:
        s = speedups[name]
        print(f"| {PRUNERS[name][0]} | {statistics.median(s):.2f} | "
              f"{sum(x >= 2 for x in s) / len(s):.2f} | {sum(x > 0 for x in s) / len(s):.2f} | "
              f"{seconds[name]:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
