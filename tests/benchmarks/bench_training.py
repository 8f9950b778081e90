"""Training wrapper overhead and default-param accuracies of the built-in objectives.

Overhead: epochs of ``mnist1d_mlp`` (default params) through :func:`tunesvc.training._fit.fit`
with the curves stored on an Optuna trial in a SQLite file every epoch (report, user attribute,
should_prune, as the runner's glue does), against the same bare PyTorch loop without Optuna:
same model, data on the device, batches, optimizer, schedule and a val evaluation per epoch.
Runs alternate (bare, wrapper, bare, ...) and the fastest of each kind counts, so load from
other processes hits both alike. Target: at most 1.10x.

Accuracies: each objective's ``build(DEFAULTS)`` for its default epochs (mnist1d_cnn: 30),
best val accuracy. Targets: digits_mlp >= 0.95, mnist1d_cnn >= 0.90.

    python tests/benchmarks/bench_training.py [--epochs 30] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tunesvc import CURVES_ATTR, Curves, EpochRecord  # noqa: E402
from tunesvc.storage import open_storage  # noqa: E402
from tunesvc.training import TrainingSetup, fit, resolve_device, scheduled_lr  # noqa: E402

TARGETS = {"digits_mlp": 0.95, "mnist1d_cnn": 0.90}


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    load = f", load avg {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (
        f"{cpu}, {os.cpu_count()} cores{load}{gpu}; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), optuna {optuna.__version__}, "
        f"Python {platform.python_version()}"
    )


def bare_loop(setup: TrainingSetup, epochs: int, seed: int, device: torch.device) -> float:
    """The loop a user would write by hand; returns the last val accuracy."""
    torch.manual_seed(seed)
    assert not isinstance(setup.model, nn.Module)
    model = setup.model().to(device)
    x, y = (t.to(device) for t in setup.train)  # type: ignore[union-attr]
    xv, yv = (t.to(device) for t in setup.val)  # type: ignore[union-attr]
    opt = torch.optim.AdamW(model.parameters(), lr=setup.lr, weight_decay=setup.weight_decay)
    gen = torch.Generator().manual_seed(seed + 1)
    n, bs, acc = x.shape[0], setup.batch_size, 0.0
    for epoch in range(1, epochs + 1):
        for group in opt.param_groups:
            group["lr"] = scheduled_lr(setup.schedule, setup.lr, epoch, epochs)
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            out = model(xv)
            _val_loss = F.cross_entropy(out, yv).item()
            acc = (out.argmax(1) == yv).float().mean().item()
    return acc


def optuna_glue(url: str, epochs: int, curves_every_s: float) -> Callable[[EpochRecord], bool]:
    """What the runner does per epoch to store curves: the curves user attribute and a report.
    The pruner's own cost (should_prune) is left out: it depends on the pruner.

    With ``curves_every_s`` > 0, the curves attribute is written only when that long has passed
    since the last write, and at the last epoch. The storage is opened as tunesvc opens it
    (WAL, synchronous=NORMAL for SQLite).
    """
    study = optuna.create_study(storage=open_storage(url), direction="maximize")
    trial = study.ask()
    curves = Curves()
    last_write = -math.inf

    def on_epoch(record: EpochRecord) -> bool:
        nonlocal last_write
        curves.append(record)
        now = time.perf_counter()
        if now - last_write >= curves_every_s or record.epoch == epochs:
            trial.set_user_attr(CURVES_ATTR, curves.to_json())
            last_write = now
        if record.val_acc is not None and math.isfinite(record.val_acc):
            trial.report(record.val_acc, record.epoch)
        return False

    return on_epoch


# name: (store curves on SQLite, seconds between curves writes, checkpoint each epoch)
KINDS: dict[str, tuple[bool, float, bool] | None] = {
    "bare PyTorch loop": None,
    "fit, no callback": (False, 0.0, False),
    "fit + Optuna SQLite curves": (True, 0.0, False),
    "fit + SQLite report; curves attr at most 1/s": (True, 1.0, False),
    "fit + Optuna SQLite curves + checkpoint": (True, 0.0, True),
}
TARGET_ROW = "fit + Optuna SQLite curves"


def overhead(args: argparse.Namespace, device: torch.device, tmp: Path) -> list[list[str]]:
    setup = importlib.import_module("objectives.mnist1d_mlp").build({})
    epochs = args.epochs
    best = dict.fromkeys(KINDS, math.inf)
    for i in range(-1, args.repeats):  # round -1 warms up imports, allocator, SQLite paths
        for k, (name, kind) in enumerate(KINDS.items()):
            if kind is None:
                t0 = time.perf_counter()
                bare_loop(setup, epochs, 0, device)
            else:
                store, every, checkpoint = kind
                # Creating the study is set-up, not an epoch's cost: it is not timed.
                url = f"sqlite:///{tmp}/{k}-{i}.db"
                on_epoch = optuna_glue(url, epochs, every) if store else None
                path = tmp / f"{k}-{i}.pt" if checkpoint else None
                t0 = time.perf_counter()
                fit(setup, epochs=epochs, seed=0, device=str(device), on_epoch=on_epoch,
                    checkpoint_path=path)  # fmt: skip
            if i >= 0:
                best[name] = min(best[name], (time.perf_counter() - t0) / epochs)
    base = best["bare PyTorch loop"]
    rows = []
    for name, seconds in best.items():
        ratio = seconds / base
        verdict = "" if name == "bare PyTorch loop" else "(no target)"
        if name == TARGET_ROW:
            verdict = "ok" if ratio <= 1.10 else "over"
        rows.append([name, f"{seconds * 1e3:.1f}", f"{ratio:.3f}x", verdict])
    return rows


def accuracies(args: argparse.Namespace, device: torch.device) -> list[list[str]]:
    rows = []
    for name in ("digits_mlp", "mnist1d_mlp", "mnist1d_cnn"):
        module = importlib.import_module(f"objectives.{name}")
        epochs = 30 if name == "mnist1d_cnn" else module.EPOCHS
        for seed in args.seeds:
            t0 = time.perf_counter()
            result = fit(module.build({}), epochs=epochs, seed=seed, device=str(device))
            seconds = time.perf_counter() - t0
            target = TARGETS.get(name)
            value = result.value or math.nan
            verdict = "" if target is None else ("ok" if value >= target else "MISSED")
            rows.append([
                name, str(seed), str(epochs), f"{value:.4f}", str(result.best_epoch),
                f"{result.curves.val_acc[-1]:.4f}", f"{seconds:.1f}",
                "-" if target is None else f">= {target:.2f} {verdict}",
            ])  # fmt: skip
    return rows


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="epochs per overhead run")
    parser.add_argument("--repeats", type=int, default=5, help="overhead runs of each kind")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="accuracy seeds")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"Machine: {machine(device)}\n")
    with tempfile.TemporaryDirectory() as tmp:
        rows = overhead(args, device, Path(tmp))
    print(f"Wrapper overhead, mnist1d_mlp defaults, {args.epochs} epochs, best of {args.repeats}")
    print(table(["run", "ms / epoch", "vs bare", "target <= 1.10x"], rows))
    if not args.skip_accuracy:
        print("\nDefault-param accuracies (best val_acc over epochs 0..N)")
        header = ["objective", "seed", "epochs", "best val_acc", "best epoch", "last val_acc",
                  "seconds", "target"]  # fmt: skip
        print(table(header, accuracies(args, device)))


if __name__ == "__main__":
    main()
