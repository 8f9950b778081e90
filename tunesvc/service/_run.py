"""``tunesvc study run``: workers on this machine join a study by name and run its queue."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import optuna
from optuna.trial import TrialState

from tunesvc._errors import SpecError
from tunesvc.presentation import DashboardNotes
from tunesvc.service._results import RunSummary, trial_info
from tunesvc.service._studies import load_study, opened
from tunesvc.storage import artifacts_dir, attrs
from tunesvc.worker import TrialResult, WorkerEvent, WorkerOptions, heartbeat_setting, run_pool
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
) -> RunSummary:
    """Run queued trials of ``name`` until the budget, the grid, ``n_trials`` or ``timeout``
    ends. Other workers, here or on other machines, may run the same study at the same time.

    ``workers`` > 1 runs that many worker processes on this machine (``device`` ``auto`` or
    ``cuda`` spreads them over the visible GPUs); ``on_event`` sees each claim, epoch and
    result. While this worker's queue is empty but other workers still run trials, it waits to
    retry any of theirs that is lost. SIGINT/SIGTERM stop the run: the running trial is queued
    again and KeyboardInterrupt is raised. Each finished trial gets its dashboard note.
    """
    if n_trials is not None and n_trials < 1:
        raise SpecError(f"--n-trials: expected an integer >= 1, got {n_trials}")
    if timeout is not None and timeout <= 0:
        raise SpecError(f"--timeout: expected seconds > 0, got {timeout}")
    if workers < 1:
        raise SpecError(f"--workers: expected an integer >= 1, got {workers}")
    interval, max_retries = heartbeat_setting()
    options = WorkerOptions(
        device=device, n_trials=n_trials, timeout=timeout, heartbeat_s=heartbeat_s or interval,
        max_retries=max_retries, workers=workers,
        observers=(DashboardNotes(artifacts_dir(url)),),
    )
    if workers > 1:
        results = run_pool(name, url, options, on_event=on_event, on_result=on_result)
        idle = not results
    else:
        with opened(url) as storage:
            run = work_on(storage, name, url, options, on_event=on_event, on_result=on_result)
        results, idle = run.results, run.idle
    with opened(url) as storage:
        study = load_study(storage, name, url)
        summary = _run_summary(study, results)
    if idle and not summary.remaining:
        summary = replace(summary, already_finished=True)
    return summary


def _run_summary(study: optuna.Study, results: list[TrialResult]) -> RunSummary:
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    best = attrs.best_of(trials, study.direction.name.lower())
    return RunSummary(
        study=study.study_name,
        ran=[trial_info(by_number[r.number]) for r in results if r.number in by_number],
        remaining=sum(1 for t in trials if t.state == TrialState.WAITING),
        best=None if best is None else trial_info(best),
        counts=dict(sorted(Counter(t.state.name for t in trials).items())),
    )
