"""Population training on CUDA, checked on a GPU machine (never part of the CPU suite).

Run from the repo root: ``python tests/gpu/check_population.py OUT_FILE``. Under 5 minutes on
one H100/H200. It prints PASS/FAIL lines and bench_population's table (digits_mlp for K up
to 4096, mnist1d_mlp up to 1024), writes both to OUT_FILE, and exits non-zero if a check fails.

Checks, on the device:

- each member of a digits_mlp population (AdamW and SGD; lr, weight decay, dropout, schedule,
  seed and epochs differing) against the same trial alone with fit: losses within a relative
  1e-3, accuracies within two samples. Looser than the CPU's 1e-6: on CUDA fit's optimizer
  runs torch's foreach kernels and cuBLAS picks other kernels for batched and single products
  (TF32 stays off, torch's default for matmul); the largest differences seen are printed;
- removing members (pruned mid-run, diverged) leaves the others' curves as they were, within
  a relative 1e-3 (the largest difference is printed: 0 on the CPU, bit for bit; cuBLAS may
  pick its kernels by batch count);
- a population checkpoint resumes on the device to the curves of an uninterrupted run;
- mnist1d_cnn through vmap: its gap to fit beside fit's own gap to a run whose initial
  weights are perturbed by 1e-7 (this training amplifies any rounding: informational).

``--device cpu --quick`` runs the same on the CPU with small K (how the script is tested).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))

import bench_population  # noqa: E402

from objectives import digits_mlp, mnist1d_cnn  # noqa: E402
from tunesvc.training._fit import FitResult, TrainingSetup, fit, resolve_device  # noqa: E402
from tunesvc.training._population import MemberEnd, Population  # noqa: E402

lines: list[str] = []
failures: list[str] = []


def say(text: str) -> None:
    print(text, flush=True)
    lines.append(text)


def check(name: str, ok: bool, detail: str = "") -> None:
    say(f"{'PASS' if ok else 'FAIL'}  {name}  {detail}")
    if not ok:
        failures.append(name)


MEMBERS: dict[str, tuple[dict[str, Any], int, int]] = {
    "a": ({"lr": 3e-3, "weight_decay": 1e-4, "dropout": 0.1}, 0, 3),
    "b": ({"lr": 1e-2, "weight_decay": 0.0, "dropout": 0.0, "schedule": "constant"}, 1, 3),
    "c": ({"lr": 1e-3, "weight_decay": 1e-2, "dropout": 0.4, "schedule": "step"}, 2, 2),
    "d": ({"lr": 3e-2, "weight_decay": 1e-3, "dropout": 0.2}, 3, 3),
}


def setup_of(key: str, optimizer: str) -> TrainingSetup:
    return digits_mlp.build({**MEMBERS[key][0], "optimizer": optimizer})


def run(population: Population) -> dict[Any, MemberEnd]:
    ends: dict[Any, MemberEnd] = {}
    while population:
        ends.update({end.key: end for end in population.step()})
    return ends


def population_of(optimizer: str, device: str, **kwargs: Any) -> Population:
    population = Population(device=device)
    for key, (_, seed, epochs) in MEMBERS.items():
        population.add(key, setup_of(key, optimizer), epochs=epochs, seed=seed, **kwargs)
    return population


def gap(a: FitResult | None, b: FitResult | None) -> tuple[float, float]:
    """Largest relative loss difference and largest accuracy difference of two results."""
    assert a is not None and b is not None
    assert a.curves.epoch == b.curves.epoch, (a.curves.epoch, b.curves.epoch)
    loss = max(
        abs(x - y) / max(abs(y), 1e-12)
        for name in ("train_loss", "val_loss")
        for x, y in zip(getattr(a.curves, name), getattr(b.curves, name), strict=True)
    )
    acc = max(
        abs(x - y)
        for name in ("train_acc", "val_acc")
        for x, y in zip(getattr(a.curves, name), getattr(b.curves, name), strict=True)
    )
    return loss, acc


def check_members_equal_fit(device: str) -> None:
    val_rows = len(digits_mlp.build({}).val[1])  # type: ignore[index]
    for optimizer in ("adamw", "sgd"):
        ends = run(population_of(optimizer, device))
        worst = (0.0, 0.0)
        for key, (_, seed, epochs) in MEMBERS.items():
            alone = fit(setup_of(key, optimizer), epochs=epochs, seed=seed, device=device)
            loss, acc = gap(ends[key].result, alone)
            worst = (max(worst[0], loss), max(worst[1], acc))
        check(f"member == alone ({optimizer})", worst[0] <= 1e-3 and worst[1] <= 2 / val_rows,
              f"max rel loss diff {worst[0]:.2e}, max acc diff {worst[1]:.4f}")  # fmt: skip


def check_removal(device: str) -> None:
    whole = run(population_of("adamw", device))
    population = population_of("adamw", device)
    population.add("diverges", digits_mlp.build({"lr": 1e9}), epochs=3)
    population.add("pruned", digits_mlp.build({}), epochs=3, on_epoch=lambda r: r.epoch == 1)
    ends = run(population)
    diverged = ends["diverges"].result
    worst = max(gap(ends[k].result, whole[k].result)[0] for k in MEMBERS)
    check("removing members leaves the others' curves",
          worst <= 1e-3 and diverged is not None and diverged.diverged,
          f"max rel diff {worst:.2e} (0 = bit for bit), diverged member: "
          f"{diverged.reason if diverged else None}")  # fmt: skip


def check_resume(device: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        whole = run(population_of("adamw", device))
        paths = {key: Path(tmp) / f"{key}.pt" for key in MEMBERS}
        population = Population(device=device)
        for key, (_, seed, epochs) in MEMBERS.items():
            population.add(key, setup_of(key, "adamw"), epochs=epochs, seed=seed,
                           checkpoint_path=paths[key],
                           on_epoch=lambda r: r.epoch == 2)  # fmt: skip
        run(population)  # every member stopped after its epoch-2 checkpoint
        resumed = Population(device=device)
        for key, (_, seed, epochs) in MEMBERS.items():
            resumed.add(key, setup_of(key, "adamw"), epochs=epochs, seed=seed,
                        checkpoint_path=paths[key])  # fmt: skip
        ends = run(resumed)
        worst = max(gap(ends[k].result, whole[k].result)[0] for k in MEMBERS)
        check("resume from checkpoints == uninterrupted", worst <= 1e-5,
              f"max rel diff {worst:.2e}")  # fmt: skip


def check_cnn(device: str, epochs: int) -> None:
    setup = mnist1d_cnn.build({"dropout": 0.0})
    pop = Population(device=device)
    pop.add(0, setup, epochs=epochs, seed=0)
    member = run(pop)[0].result
    alone = fit(setup, epochs=epochs, seed=0, device=device)
    factory = setup.model
    assert callable(factory) and not isinstance(factory, nn.Module)

    def perturbed() -> nn.Module:
        model = factory()
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1 + 1e-7)
        return model

    setup.model = perturbed
    nudged = fit(setup, epochs=epochs, seed=0, device=device)
    say(f"INFO  mnist1d_cnn ({epochs} epochs): member vs alone max rel loss diff "
        f"{gap(member, alone)[0]:.2e}; fit vs fit with weights x (1 + 1e-7) "
        f"{gap(nudged, alone)[0]:.2e}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="file the report is written to")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small K (a CPU run of the script)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    started = time.perf_counter()
    say(f"Machine: {bench_population.machine(device)}")
    check_members_equal_fit(str(device))
    check_removal(str(device))
    check_resume(str(device))
    check_cnn(str(device), 2)
    say(f"(checks took {time.perf_counter() - started:.0f} s)")
    digits_ks, mlp_ks = ([1, 8], [1, 8]) if args.quick else (
        [1, 8, 64, 256, 1024, 4096], [1, 64, 1024]
    )  # fmt: skip
    rows = bench_population.measure("digits_mlp", digits_ks, 2, 4, 1, device)
    rows += bench_population.measure("mnist1d_mlp", mlp_ks, 2, 2, 1, device)
    say("\nTrial-epochs per second, 2 epochs per trial, random lr / weight_decay / dropout\n")
    say(bench_population.table(rows))
    say(f"\n(total {time.perf_counter() - started:.0f} s; failed: {failures or 'none'})")
    args.out.write_text("\n".join(lines) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
