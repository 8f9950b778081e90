"""The CUDA path, checked on a GPU machine (never part of the CPU suite).

Run from the repo root: `python tests/gpu/check_cuda.py [OUT_DIR]`. It prints a report and a
table, and exits non-zero if any check fails. Checks: device resolution (auto, cuda, cuda:0,
a missing cuda:N), default-param accuracy of digits_mlp and mnist1d_cnn on the GPU, same seed
gives the same curve, checkpoint resume on the GPU equals an uninterrupted run, a whole study
run with `--device cuda` on SQLite, and CPU-vs-GPU epoch time for mnist1d_cnn.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from objectives import digits_mlp, mnist1d_cnn  # noqa: E402
from tunesvc import TrainingError  # noqa: E402
from tunesvc.training._fit import fit, resolve_device  # noqa: E402

failures: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {name}  {detail}", flush=True)
    if not ok:
        failures.append(name)


def main(out: Path) -> int:
    print(f"torch {torch.__version__}, cuda {torch.version.cuda}, "
          f"{torch.cuda.get_device_name(0)}", flush=True)
    check("auto resolves to cuda", resolve_device("auto").type == "cuda")
    check("cuda:0 resolves", str(resolve_device("cuda:0")) == "cuda:0")
    missing = f"cuda:{torch.cuda.device_count()}"
    try:
        resolve_device(missing)
        check(f"{missing} is refused", False, "no error raised")
    except TrainingError as e:
        check(f"{missing} is refused", "\n" not in str(e), str(e))

    rows = []
    runs = (("digits_mlp", digits_mlp, 20), ("mnist1d_cnn", mnist1d_cnn, 30))
    for name, module, epochs in runs:
        timings = {}
        for device in ("cpu", "cuda"):
            t0 = time.perf_counter()
            setup = module.build(dict(module.DEFAULTS))
            result = fit(setup, epochs=epochs, seed=0, device=device)
            timings[device] = (time.perf_counter() - t0, result)
        cpu_s, cpu_res = timings["cpu"]
        gpu_s, gpu_res = timings["cuda"]
        curves = gpu_res.curves
        finite = all(math.isfinite(x) for x in curves.val_loss + curves.train_loss)
        check(f"{name} on cuda: finite curves, epochs 0..{epochs}",
              finite and curves.epoch == list(range(epochs + 1)))
        target = 0.95 if name == "digits_mlp" else 0.90
        check(f"{name} on cuda reaches {target:.0%}", (gpu_res.value or 0) >= target,
              f"best val_acc {gpu_res.value:.4f}")
        rows.append((name, epochs, cpu_s, gpu_s, cpu_res.value, gpu_res.value))

    again = fit(mnist1d_cnn.build(dict(mnist1d_cnn.DEFAULTS)), epochs=5, seed=3, device="cuda")
    twice = fit(mnist1d_cnn.build(dict(mnist1d_cnn.DEFAULTS)), epochs=5, seed=3, device="cuda")
    pairs = zip(again.curves.val_loss, twice.curves.val_loss, strict=True)
    diff = max(abs(a - b) for a, b in pairs)
    check("same seed, same curve on cuda", diff < 1e-4, f"max |val_loss diff| = {diff:.2e}")

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "c.pt"
        full = fit(digits_mlp.build(dict(digits_mlp.DEFAULTS)), epochs=6, seed=1, device="cuda")
        fit(digits_mlp.build(dict(digits_mlp.DEFAULTS)), epochs=6, seed=1, device="cuda",
            checkpoint_path=ckpt, on_epoch=lambda r: r.epoch >= 3 or None)
        resumed = fit(digits_mlp.build(dict(digits_mlp.DEFAULTS)), epochs=6, seed=1,
                      device="cuda", checkpoint_path=ckpt)
        d = max(abs(a - b) for a, b in zip(full.curves.val_loss, resumed.curves.val_loss,
                                            strict=True))
        check("checkpoint resume on cuda equals an uninterrupted run", d < 1e-4,
              f"max |val_loss diff| = {d:.2e}, epochs {resumed.curves.epoch}")

        env = {**os.environ, "TUNESVC_STORAGE": f"sqlite:///{tmp}/t.db",
               "TUNESVC_ARTIFACTS": f"{tmp}/artifacts", "TUNESVC_DATA_DIR": f"{tmp}/data"}
        cli = [sys.executable, "-m", "tunesvc"]
        subprocess.run([*cli, "study", "create", "g", "--objective", "mnist1d_cnn",
                        "--n-trials", "3", "--epochs", "5"], check=True, env=env)
        run = subprocess.run([*cli, "study", "run", "g", "--device", "cuda"], env=env,
                             capture_output=True, text=True)
        print(run.stdout, run.stderr)
        trials = json.loads(subprocess.run([*cli, "study", "trials", "g", "--json"], env=env,
                                           capture_output=True, text=True).stdout)
        check("study run --device cuda finishes every trial",
              run.returncode == 0 and len(trials) == 3
              and all(t["state"] in ("COMPLETE", "PRUNED") for t in trials),
              str([t["state"] for t in trials]))

    table = ["| objective | epochs | CPU s | H100 s | CPU best val_acc | H100 best val_acc |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, epochs, cpu_s, gpu_s, cpu_v, gpu_v in rows:
        table.append(f"| {name} | {epochs} | {cpu_s:.1f} | {gpu_s:.1f} | {cpu_v:.4f} | "
                     f"{gpu_v:.4f} |")
    print("\n".join(table))
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.md").write_text("\n".join(table) + f"\n\nfailures: {failures}\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "gpu-out")))
