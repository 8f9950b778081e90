"""optuna-dashboard on big studies: how long its first page takes at 1,000, 10,000 and 100,000
finished trials, against what tunesvc's own commands read for the same study.

The study is written in bulk as bench_scale.py writes it (each trial with 3 params, 3 reports,
a value or not, and the user attributes a real tunesvc trial carries, ~3 KB of curves among
them). optuna-dashboard's app (the one `tunesvc dashboard` serves) then answers, timed by an HTTP
client on this machine:

- ``/api/studies``: the list page (every study's summary);
- ``/api/studies/ID?after=0``, cold: the study page's first load in a fresh dashboard process
  state (the page stays blank until it answers; it carries every trial); and warm: the same
  call again (optuna-dashboard caches finished trials in memory), which the page repeats to
  refresh;
- the answer's size in MB and what the server's process added to its peak memory.

Beside them, tunesvc's own reads of the same study: ``service.show_study`` (counts, labels,
best, running), ``service.best_trial`` and the first page of ``study trials`` (50 rows).

    python tests/benchmarks/bench_dashboard.py [--sizes 1000 10000 100000]
        [--backends sqlite postgresql]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench_scale import _database, _fill, _new_study, _rss_peak_mb  # noqa: E402

from tunesvc import service  # noqa: E402
from tunesvc.presentation import make_dashboard  # noqa: E402
from tunesvc.storage import open_storage  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _get(url: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=1800) as answer:
        body = answer.read()
    return time.perf_counter() - t0, len(body)


def measure(backend: str, n: int, tmp: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"backend": backend, "n": n}
    with _database(backend, tmp) as url:
        storage = open_storage(url)
        study_id = _new_study(storage, "big")
        _fill(storage, study_id, n, budget=n)
        for key, call in (("show", lambda: service.show_study("big", url)),
                          ("best", lambda: service.best_trial("big", url)),
                          ("trials", lambda: list(itertools.islice(
                              service.iter_trials("big", url), 50)))):
            t0 = time.perf_counter()
            call()
            row[key] = time.perf_counter() - t0
        dashboard = make_dashboard(open_storage(url), tmp, shown_as=backend, port=0)
        thread = threading.Thread(target=dashboard.serve_forever, daemon=True)
        thread.start()
        base = dashboard.url.removesuffix("/dashboard")
        try:
            peak = _rss_peak_mb()
            row["list"], _ = _get(f"{base}/api/studies")
            row["cold"], size = _get(f"{base}/api/studies/{study_id}?after=0")
            row["warm"], _ = _get(f"{base}/api/studies/{study_id}?after=0")
            row["mb"] = size / 1e6
            row["rss"] = _rss_peak_mb() - peak
        finally:
            dashboard.shutdown()
        storage.engine.dispose()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--backends", nargs="+", choices=["sqlite", "postgresql"],
                        default=["sqlite", "postgresql"])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tunesvc-dashboard-") as tmp:
        for backend in args.backends:
            for n in args.sizes:
                t0 = time.monotonic()
                rows.append(measure(backend, n, Path(tmp)))
                print(f"{backend} N={n:,}: {time.monotonic() - t0:.0f} s: {rows[-1]}",
                      flush=True)
    print("\nSeconds (MB where it says). optuna-dashboard: list page, study page first load "
          "(cold) and again (warm), the study answer's size, the server's added peak memory; "
          "tunesvc: `study show`, `study best`, the first 50 rows of `study trials`.\n")
    cols = [("dashboard list", "list", ".2f"), ("study page, cold", "cold", ".1f"),
            ("study page, warm", "warm", ".1f"), ("answer MB", "mb", ".0f"),
            ("server +MB", "rss", ".0f"), ("tunesvc show", "show", ".2f"),
            ("tunesvc best", "best", ".2f"), ("tunesvc trials, 50 rows", "trials", ".2f")]
    print("| storage | N finished | " + " | ".join(c[0] for c in cols) + " |")
    print("|---|---:|" + "---:|" * len(cols))
    for row in rows:
        cells = [format(row[key], fmt) for _, key, fmt in cols]
        print(f"| {row['backend']} | {row['n']:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
