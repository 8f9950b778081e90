"""Pruning efficiency on real training: no pruning, MedianPruner, HyperbandPruner and
LearningCurvePruner on the same random-search trials.

For each objective and sampler seed, 40 param sets are drawn by ``RandomSampler(seed)`` from the
objective's search space and each is trained once for all epochs (``fit`` with the trial number
as seed; training on the CPU is deterministic, so a pruned run is a prefix of its full run).
Each pruner then runs a real Optuna study over the same trials in the same order: every epoch is
reported with ``trial.report`` (the four curves as a user attribute), and the trial is pruned,
early-stopped (LearningCurvePruner's ``decision_for``, as tunesvc's runner calls it: an early
stop completes the trial with its best value) or continues. "diagnostic" is told the study's
epochs (``max_epochs``), as a tunesvc study's pruner is; "diagnostic, no max_epochs" is not (a
plain study that does not say): its first trial then runs to the end.

Printed per objective and seed: epochs spent, best final validation accuracy (best over the
completed trials of their best epoch, as ``fit`` scores a trial), and the epochs spent until a
completed trial came within 0.5 points of the no-pruning best.

Run: ``python tests/benchmarks/bench_pruning.py [--trials 40] [--epochs 20] [--seeds 0 1 2]``.
Trained curves are cached (``--cache``) so a rerun only replays the studies.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rung_rank import RungRankPruner  # noqa: E402

from tunesvc import CURVES_ATTR, Curves  # noqa: E402
from tunesvc.pruning import LearningCurvePruner  # noqa: E402
from tunesvc.storage import attrs  # noqa: E402
from tunesvc.training._fit import fit  # noqa: E402

TOLERANCE = 0.005  # 0.5 accuracy points


def suggest(trial: optuna.trial.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, p in space.items():
        if "values" in p:
            params[name] = trial.suggest_categorical(name, list(p["values"]))
        elif isinstance(p["low"], int) and isinstance(p["high"], int) and not p.get("log"):
            params[name] = trial.suggest_int(name, p["low"], p["high"])
        else:
            params[name] = trial.suggest_float(name, p["low"], p["high"], log=p.get("log", False))
    return params


def train_all(objective: str, seed: int, trials: int, epochs: int, cache: Path) -> list[Curves]:
    """Curves of ``trials`` random-search trials, trained in full once (cached on disk)."""
    path = cache / f"{objective}-seed{seed}-{trials}x{epochs}.json"
    if path.exists():
        return [Curves.from_json(c) for c in json.loads(path.read_text())]
    module = importlib.import_module(f"objectives.{objective}")
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed)
    )
    out: list[Curves] = []
    for i in range(trials):
        trial = study.ask()
        params = suggest(trial, module.SEARCH_SPACE)
        t0 = time.perf_counter()
        result = fit(module.build(params), epochs=epochs, seed=i, device="cpu")
        out.append(result.curves)
        study.tell(trial, result.value if result.value is not None else 0.0)
        print(
            f"  {objective} seed {seed} trial {i}: best val_acc {result.value} "
            f"({time.perf_counter() - t0:.1f}s)",
            flush=True,
        )
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([c.to_json() for c in out]))
    return out


def replay(
    curves: list[Curves],
    pruner: optuna.pruners.BasePruner | None,
    trace: list[tuple[int, float | None]],
    study_name: str,
) -> tuple[int, float, float]:
    """Run one study over the recorded trials, appending (epochs spent so far, value or None
    when pruned) per trial to ``trace``; returns (epochs, best value, seconds per decision)."""
    # A fixed name: HyperbandPruner picks a trial's bracket from a hash of it.
    study = optuna.create_study(
        study_name=study_name,
        direction="maximize",
        pruner=pruner or optuna.pruners.NopPruner(),
    )
    spent, decide_s, decisions = 0, 0.0, 0
    for c in curves:
        trial = study.ask()
        trial.set_user_attr(*attrs.NUM_CLASSES.item(10))
        seen = Curves()
        best = -math.inf
        value: float | None = None
        for i in range(len(c)):
            epoch = c.epoch[i]
            for name in (
                "epoch",
                "train_loss",
                "val_loss",
                "train_acc",
                "val_acc",
                "lr",
                "seconds",
            ):
                getattr(seen, name).append(getattr(c, name)[i])
            acc = c.val_acc[i]
            if epoch > 0:
                spent += 1
            if not (
                math.isfinite(acc)
                and math.isfinite(c.train_loss[i])
                and math.isfinite(c.val_loss[i])
            ):
                break  # fit ends a diverged run there, without reporting it
            best = max(best, acc)
            trial.report(acc, epoch)
            if epoch == len(c) - 1:
                value = best
                break
            if pruner is None or epoch == 0:
                continue
            t0 = time.perf_counter()
            if isinstance(pruner, LearningCurvePruner):
                trial.set_user_attr(CURVES_ATTR, seen.to_json())
                frozen = optuna.trial.FrozenTrial(
                    number=trial.number,
                    state=optuna.trial.TrialState.RUNNING,
                    value=None,
                    values=None,
                    datetime_start=None,
                    datetime_complete=None,
                    params=trial.params,
                    distributions=trial.distributions,
                    user_attrs=trial.user_attrs,
                    system_attrs={},
                    intermediate_values=dict(zip(seen.epoch, seen.val_acc, strict=True)),
                    trial_id=trial._trial_id,
                )
                action = pruner.decision_for(study, frozen).action
            else:
                action = "prune" if trial.should_prune() else "continue"
                if isinstance(pruner, RungRankPruner) and trial.number in pruner.stopped:
                    action = "early_stop"  # its plateau early stop completes the trial
            decide_s += time.perf_counter() - t0
            decisions += 1
            if action == "prune":
                break
            if action == "early_stop":
                value = best
                break
        else:
            value = best if best > -math.inf else None
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
        trace.append((spent, value))
    finals = [v for _, v in trace if v is not None]
    return spent, (max(finals) if finals else math.nan), decide_s / max(1, decisions)


PRUNERS: dict[str, Callable[[int], optuna.pruners.BasePruner | None]] = {
    "none": lambda epochs: None,
    "median": lambda epochs: optuna.pruners.MedianPruner(),
    "hyperband": lambda epochs: optuna.pruners.HyperbandPruner(),
    "diagnostic": lambda epochs: LearningCurvePruner(max_epochs=epochs),
    "diagnostic, no max_epochs": lambda epochs: LearningCurvePruner(),
    "rung ranking (before issue 11)": lambda epochs: RungRankPruner(),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", nargs="+", default=["digits_mlp", "mnist1d_cnn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/tunesvc-bench-curves"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    rows = []
    for objective in args.objectives:
        for seed in args.seeds:
            curves = train_all(objective, seed, args.trials, args.epochs, args.cache)
            target = max(
                max((a for a in c.val_acc if math.isfinite(a)), default=0.0) for c in curves
            )
            for name, make in PRUNERS.items():
                trace: list[tuple[int, float | None]] = []
                spent, best, per_decision = replay(
                    curves, make(args.epochs), trace, f"{objective}-{seed}-{name}"
                )
                reached = next(
                    (s for s, v in trace if v is not None and v >= target - TOLERANCE), None
                )
                rows.append((objective, seed, name, spent, best, reached, per_decision))

    print(
        f"\n{args.trials} trials x {args.epochs} epochs, random search; "
        f"'reach' = epochs spent until a completed trial is within "
        f"{TOLERANCE * 100:.1f} points of the no-pruning best\n"
    )
    print(
        "| objective | seed | pruner | epochs | best val_acc | epochs to reach | "
        "reach / no-pruning epochs |"
    )
    print("|---|---|---|---|---|---|---|")
    totals: dict[str, list[float]] = {}
    for objective, seed, name, spent, best, reached, _ in rows:
        full = next(r[3] for r in rows if r[:2] == (objective, seed) and r[2] == "none")
        ratio = f"{reached / full:.2f}" if reached is not None else "never"
        totals.setdefault(name, []).append(reached / full if reached is not None else math.inf)
        print(
            f"| {objective} | {seed} | {name} | {spent} | {best:.4f} | "
            f"{reached if reached is not None else 'never'} | {ratio} |"
        )
    print("\n| pruner | mean reach / no-pruning epochs | runs reached |")
    print("|---|---|---|")
    for name, ratios in totals.items():
        ok = [r for r in ratios if math.isfinite(r)]
        mean = f"{sum(ok) / len(ok):.3f}" if ok else "-"
        print(f"| {name} | {mean} | {len(ok)}/{len(ratios)} |")


if __name__ == "__main__":
    main()
