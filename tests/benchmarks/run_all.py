"""`make bench`: run every benchmark in this folder, one process each, and print their tables.

Each bench_*.py prints a markdown table comparing tunesvc with raw Optuna or bare PyTorch in
the same run. `python tests/benchmarks/run_all.py NAME...` runs only the named ones
(e.g. `training pruner`).
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> str:
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def main(names: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if names:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in names]
    print(f"# tunesvc benchmarks on {machine()}\n", flush=True)
    failed = 0
    for script in scripts:
        print(f"## {script.stem}\n", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(script)], cwd=HERE.parent.parent)
        print(f"\n({script.name}: {time.monotonic() - started:.0f} s, exit {code})\n",
              flush=True)
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
