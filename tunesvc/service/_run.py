"""``tunesvc study run``: workers on this machine join a study by name and run its queue."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import optuna

from tunesvc._errors import SpecError
from tunesvc.presentation import DashboardNotes
from tunesvc.service._results import RunSummary
from tunesvc.service._studies import load_study, opened, summarize, trial_rows
from tunesvc.spec import check_device
from tunesvc.storage import artifacts_dir, attrs
from tunesvc.worker import (
    TrialResult,
    WorkerEvent,
    WorkerOptions,
    heartbeat_setting,
    run_pool,
    study_deleted,
    visible_gpus,
)
from tunesvc.worker import work as work_on


def run_study(
    name: str,
    url: str,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    device: str | None = None,
    workers: int = 1,
    on_result: Callable[[TrialResult], None] | None = None,
    on_event: Callable[[WorkerEvent], None] | None = None,
    heartbeat_s: int | None = None,
    population: int | None = None,
) -> RunSummary:
    """Run queued trials of ``name`` until the budget, the grid, ``n_trials`` or ``timeout``
    ends. Other workers, here or on other machines, may run the same study at the same time.

    ``workers`` > 1 runs that many worker processes on this machine (``device`` ``auto`` or
    ``cuda`` spreads them over the visible GPUs); ``on_event`` sees each claim, epoch and
    result. While this worker's queue is empty but other workers still run trials, it waits to
    retry any of theirs that is lost. ``population`` (default: the spec's ``population``) is
    how many trials each worker trains at once as one vectorized population. SIGINT/SIGTERM
    stop the run: the running trials are queued again and KeyboardInterrupt is raised. Each
    finished trial gets its dashboard note.
    """
    if n_trials is not None and n_trials < 1:
        raise SpecError(f"--n-trials: expected an integer >= 1, got {n_trials}")
    if timeout is not None and timeout <= 0:
        raise SpecError(f"--timeout: expected seconds > 0, got {timeout}")
    if workers < 1:
        raise SpecError(f"--workers: expected an integer >= 1, got {workers}")
    if population is not None and population < 1:
        raise SpecError(f"--population: expected an integer >= 1, got {population}")
    if device is not None:
        check_device(device, "--device")
    with opened(url) as storage:
        spec = attrs.study_spec(load_study(storage, name, url), name)
    _require_device(device or spec.device, "--device" if device else "device (in the spec)")
    interval, max_retries = heartbeat_setting()
    options = WorkerOptions(
        device=device, n_trials=n_trials, timeout=timeout, heartbeat_s=heartbeat_s or interval,
        max_retries=max_retries, workers=workers, population=population or spec.population,
        observers=(DashboardNotes(artifacts_dir(url)),),
    )
    if workers > 1:
        results = run_pool(name, url, options, on_event=on_event, on_result=on_result)
        idle = not results
    else:
        with opened(url) as storage, study_deleted(storage, name):
            run = work_on(storage, name, url, options, on_event=on_event, on_result=on_result)
        results, idle = run.results, run.idle
    with opened(url) as storage, study_deleted(storage, name):
        summary = _run_summary(storage, load_study(storage, name, url), results)
    if idle and not summary.remaining:
        summary = replace(summary, already_finished=True)
    return summary


def _require_device(device: str, where: str) -> None:
    """A :class:`SpecError` before any trial is claimed when this machine lacks ``device``:
    ``cuda`` or ``cuda:N`` without that GPU would fail every trial it claimed."""
    if not device.startswith("cuda"):
        return
    gpus = visible_gpus()
    index = device.partition(":")[2]
    if gpus == 0 or (index and int(index) >= gpus):
        raise SpecError(f"{where}: {device!r} is not on this machine, which has {gpus} CUDA "
                        "GPU(s); run the study where one is, or pass --device cpu (or auto)")


def _run_summary(
    storage: optuna.storages.RDBStorage, study: optuna.Study, results: list[TrialResult]
) -> RunSummary:
    name = study.study_name
    summary = summarize(storage, name, study.direction, attrs.SPEC.get(study))
    return RunSummary(
        study=name,
        ran=trial_rows(storage, name, [r.number for r in results]),
        remaining=summary.counts.get("WAITING", 0),
        best=summary.best,
        counts=summary.counts,
    )
