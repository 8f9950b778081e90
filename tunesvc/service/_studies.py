"""The study lifecycle: create, run, list, show, best, trials, delete.

Each function takes plain values, does its work against the storage and returns plain
dataclasses that the CLI prints as a table or as JSON. Tests call these directly.
"""

from __future__ import annotations

import math
import os
import random
import warnings
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tunesvc._errors import (
    ObjectiveError,
    SpecError,
    StudyExistsError,
    StudyNotFoundError,
    TunesvcError,
)
from tunesvc.curves._curves import DIAGNOSIS_ATTR, OUTCOME_ATTR
from tunesvc.spec._objective import Objective, resolve_objective
from tunesvc.spec._spec import (
    Direction,
    ParamValue,
    StudySpec,
    grid_cells,
    parse_spec_dict,
    sample_random,
)
from tunesvc.storage._database import artifacts_dir, open_storage, redact, storage_errors
from tunesvc.worker._heartbeat import (
    HEARTBEAT_INTERVAL_S,
    MAX_LOST_RETRIES,
    WORKER_ATTR,
    DatabaseHealth,
    RetryLostTrial,
    heartbeat_ages,
)
from tunesvc.worker._runner import (
    ERROR_ATTR,
    SLOT_ATTR,
    Budget,
    TrialContext,
    TrialResult,
    WorkerEvent,
    others_running,
    run_loop,
)

SPEC_ATTR = "spec"
"""Study user attribute holding the validated spec, so any machine can run the study by name."""
DEFAULT_RANDOM_TRIALS = 20
DEFAULT_EPOCHS = 10
HEARTBEAT_ENV = "TUNESVC_HEARTBEAT_S"
MAX_RETRIES_ENV = "TUNESVC_MAX_RETRIES"

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class TrialInfo:
    """One trial as users see it."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    outcome: str | None = None
    diagnosis: dict[str, Any] | None = None
    error: str | None = None
    duration_s: float | None = None
    epochs: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StudySummary:
    name: str
    direction: str
    objective: str
    sampler: str
    planned: int
    counts: dict[str, int]
    best: TrialInfo | None

    @property
    def finished(self) -> int:
        return sum(self.counts.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL"))

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["best"] = None if self.best is None else self.best.to_json()
        return out


@dataclass(frozen=True)
class RunningTrial:
    """A RUNNING trial: where it runs, how far it got, how long since its last heartbeat
    (``None``: it never beat, e.g. started by plain Optuna)."""

    number: int
    host: str | None
    pid: int | None
    device: str | None
    epoch: int
    heartbeat_age_s: float | None
    params: dict[str, Any]


@dataclass(frozen=True)
class StudyDetail:
    summary: StudySummary
    spec: dict[str, Any]
    diagnoses: dict[str, int]
    running: list[TrialInfo]
    storage: str
    workers: list[RunningTrial] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**self.summary.to_json(), "spec": self.spec, "diagnoses": self.diagnoses,
                "running": [t.to_json() for t in self.running], "storage": self.storage,
                "workers": [asdict(w) for w in self.workers]}


@dataclass(frozen=True)
class RunSummary:
    study: str
    ran: list[TrialInfo]
    remaining: int
    best: TrialInfo | None
    already_finished: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"study": self.study, "ran": [t.to_json() for t in self.ran],
                "remaining": self.remaining, "already_finished": self.already_finished,
                "best": None if self.best is None else self.best.to_json(),
                "counts": self.counts}


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def trial_info(t: FrozenTrial) -> TrialInfo:
    duration = None
    if t.datetime_start is not None and t.datetime_complete is not None:
        duration = (t.datetime_complete - t.datetime_start).total_seconds()
    elif t.datetime_start is not None and t.state == TrialState.RUNNING:
        duration = (datetime.now() - t.datetime_start).total_seconds()
    curves = t.user_attrs.get("curves")
    epochs = len(curves.get("epoch", [])) - 1 if isinstance(curves, dict) else len(
        t.intermediate_values)
    return TrialInfo(
        number=t.number,
        state=t.state.name,
        value=_finite(t.value) if t.values is not None else None,
        params=dict(t.params or t.system_attrs.get("fixed_params", {})),
        outcome=t.user_attrs.get(OUTCOME_ATTR),
        diagnosis=t.user_attrs.get(DIAGNOSIS_ATTR),
        error=t.user_attrs.get(ERROR_ATTR),
        duration_s=None if duration is None else round(duration, 3),
        epochs=max(epochs, 0),
    )


# --- resolving a spec against its objective -------------------------------------------------


@dataclass(frozen=True)
class ResolvedStudy:
    spec: StudySpec
    objective: Objective
    direction: Direction
    metric: str
    epochs: int


def resolve(spec: StudySpec) -> ResolvedStudy:
    """Import the objective and fill what the spec leaves to it: params, direction, epochs."""
    objective = resolve_objective(spec.objective)
    params = spec.params
    if objective.structured:
        unknown = sorted(set(params) - set(objective.search_space) - set(objective.defaults))
        if unknown:
            known = ", ".join(sorted(set(objective.search_space) | set(objective.defaults)))
            raise SpecError(f"params.{unknown[0]}: objective {spec.objective!r} has no such "
                            f"param; it takes {known}")
        if not params:
            params = dict(objective.search_space)
    declared = spec.direction or objective.direction
    if declared not in ("maximize", "minimize"):
        raise SpecError(f"direction: objective {spec.objective!r} does not declare one; add "
                        "direction = \"maximize\" or \"minimize\" to the spec")
    direction: Direction = "maximize" if declared == "maximize" else "minimize"
    if objective.direction and spec.direction and objective.direction != spec.direction:
        raise SpecError(f"direction: the spec says {spec.direction} but objective "
                        f"{spec.objective!r} declares {objective.direction}")
    epochs = spec.epochs or objective.epochs or DEFAULT_EPOCHS
    metric = objective.metric or "val_acc"
    resolved_spec = replace(spec, params=dict(params), direction=direction, epochs=epochs)
    return ResolvedStudy(resolved_spec, objective, direction, metric, epochs)


def plan_trials(spec: StudySpec) -> list[dict[str, ParamValue]]:
    """The params of every trial the study will run, in claim order."""
    if spec.sampler == "grid":
        if not spec.params:
            raise SpecError("params: a grid study needs at least one param with points or values")
        cells = grid_cells(spec.params)
        if spec.n_trials is None or spec.n_trials == len(cells):
            return cells
        if spec.n_trials > len(cells):
            raise SpecError(f"n_trials: the grid has {len(cells)} cells, got n_trials = "
                            f"{spec.n_trials}; drop n_trials or lower it")
        # A budget below the grid size runs a seeded random subset of its cells.
        return random.Random(spec.seed).sample(cells, spec.n_trials)
    return sample_random(spec.params, spec.n_trials or DEFAULT_RANDOM_TRIALS, spec.seed)


def _validate_pruner(spec: StudySpec) -> None:
    from tunesvc.pruning._pruner import make_pruner

    make_pruner(spec.pruner, spec.pruner_settings)


# --- lifecycle ------------------------------------------------------------------------------


def _load(storage: optuna.storages.RDBStorage, name: str, url: str) -> optuna.Study:
    with storage_errors(url):
        names = {s.study_name for s in storage.get_all_studies()}
        if name not in names:
            hint = f"; studies there: {', '.join(sorted(names))}" if names else ""
            raise StudyNotFoundError(f"no study {name!r} in {redact(url)}{hint}")
        return optuna.load_study(study_name=name, storage=storage)


def stored_spec(study: optuna.Study) -> StudySpec:
    raw = study.user_attrs.get(SPEC_ATTR)
    if not isinstance(raw, dict):
        raise TunesvcError(f"study {study.study_name!r} was not created by tunesvc (no spec); "
                           "browse it with optuna-dashboard instead")
    return parse_spec_dict(raw)


def create_study(
    name: str, spec: StudySpec, url: str, *, user_attrs: dict[str, Any] | None = None
) -> StudySummary:
    """Validate ``spec`` fully, then create study ``name`` with every trial queued."""
    if not name or name.strip() != name:
        raise SpecError(f"study name: expected a non-empty name without surrounding spaces, "
                        f"got {name!r}")
    resolved = resolve(spec)
    _validate_pruner(resolved.spec)
    planned = plan_trials(resolved.spec)
    storage = open_storage(url)
    with storage_errors(url):
        if any(s.study_name == name for s in storage.get_all_studies()):
            raise StudyExistsError(f"study {name!r} already exists in {redact(url)}; pick "
                                   f"another name or `tunesvc study delete {name}`")
        try:
            study = optuna.create_study(study_name=name, storage=storage,
                                        direction=resolved.direction)
        except optuna.exceptions.DuplicatedStudyError:
            raise StudyExistsError(f"study {name!r} already exists in {redact(url)}") from None
        try:
            study.set_user_attr(SPEC_ATTR, resolved.spec.to_dict())
            for key, value in (user_attrs or {}).items():
                study.set_user_attr(key, value)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for slot, params in enumerate(planned):
                    study.enqueue_trial(params, user_attrs={SLOT_ATTR: slot})
        except BaseException:
            optuna.delete_study(study_name=name, storage=storage)  # nothing half-written
            raise
    return _summary(study, resolved.spec)


def _summary(study: optuna.Study, spec: StudySpec) -> StudySummary:
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    retried = sum(1 for t in trials if t.user_attrs.get("retry_of") is not None)
    return StudySummary(
        name=study.study_name,
        direction=study.direction.name.lower(),
        objective=spec.objective,
        sampler=spec.sampler,
        planned=len(trials) - retried,
        counts=dict(sorted(counts.items())),
        best=_best(study, trials),
    )


def _best(study: optuna.Study, trials: list[FrozenTrial]) -> TrialInfo | None:
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None
            and math.isfinite(t.value)]
    if not done:
        return None
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    return trial_info(pick(done, key=lambda t: (t.value, -t.number)))


def build_context(
    study: optuna.Study, storage: optuna.storages.RDBStorage, url: str,
    device: str | None = None, *, heartbeat_s: int = HEARTBEAT_INTERVAL_S,
) -> TrialContext:
    from tunesvc.pruning._pruner import make_pruner

    spec = stored_spec(study)
    try:
        resolved = resolve(spec)
    except ObjectiveError as e:
        raise ObjectiveError(f"{e} (this machine cannot run study {study.study_name!r}; the "
                             "study is untouched)") from None
    study.pruner = make_pruner(spec.pruner, spec.pruner_settings)
    study.sampler = optuna.samplers.RandomSampler(seed=spec.seed)
    return TrialContext(
        study=study,
        storage=storage,
        study_id=storage.get_study_id_from_name(study.study_name),
        spec=resolved.spec,
        objective=resolved.objective,
        direction=resolved.direction,
        metric=resolved.metric,
        epochs=resolved.epochs,
        artifacts=artifacts_dir(url),
        device=device or spec.device,
        heartbeat_s=heartbeat_s,
        health=DatabaseHealth(grace_s=2 * heartbeat_s),
    )


def heartbeat_setting() -> tuple[int, int]:
    """Heartbeat interval and lost-trial retry limit: ``$TUNESVC_HEARTBEAT_S`` (default 10) and
    ``$TUNESVC_MAX_RETRIES`` (default 3)."""
    values = []
    for env, default, low in ((HEARTBEAT_ENV, HEARTBEAT_INTERVAL_S, 1),
                              (MAX_RETRIES_ENV, MAX_LOST_RETRIES, 0)):
        raw = os.environ.get(env, str(default))
        try:
            value = int(raw)
        except ValueError:
            value = low - 1
        if value < low:
            raise SpecError(f"${env}: expected an integer >= {low}, got {raw!r}")
        values.append(value)
    return values[0], values[1]


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
    pool: tuple[int, int] | None = None,
    budget: Budget | None = None,
) -> RunSummary:
    """Run queued trials of ``name`` until the budget, the grid, ``n_trials`` or ``timeout``
    ends. Other workers, here or on other machines, may run the same study at the same time.

    ``workers`` > 1 runs that many worker processes on this machine (``device`` ``auto`` or
    ``cuda`` spreads them over the visible GPUs); ``on_event`` sees each claim, epoch and
    result. While this worker's queue is empty but other workers still run trials, it waits to
    retry any of theirs that is lost. SIGINT/SIGTERM stop the run: the running trial is queued
    again and KeyboardInterrupt is raised. ``pool`` (index, size) and ``budget`` are set for
    a worker process of a pool.
    """
    if n_trials is not None and n_trials < 1:
        raise SpecError(f"--n-trials: expected an integer >= 1, got {n_trials}")
    if timeout is not None and timeout <= 0:
        raise SpecError(f"--timeout: expected seconds > 0, got {timeout}")
    if workers < 1:
        raise SpecError(f"--workers: expected an integer >= 1, got {workers}")
    interval, max_retries = heartbeat_setting()
    interval = heartbeat_s or interval
    if workers > 1:
        return _run_pool(name, url, workers=workers, n_trials=n_trials, timeout=timeout,
                         device=device, heartbeat_s=interval, on_event=on_event,
                         on_result=on_result)
    storage = open_storage(url, heartbeat_interval=interval, grace_period=2 * interval,
                           heartbeat_stale_trial_callback=RetryLostTrial(max_retries))
    try:
        study = _load(storage, name, url)
        with storage_errors(url):
            ctx = build_context(study, storage, url, device, heartbeat_s=interval)
            if pool is not None:
                from tunesvc.worker._pool import visible_gpus, worker_devices

                gpus = visible_gpus() if ctx.device in ("auto", "cuda") else 0
                ctx.device = worker_devices(ctx.device, pool[1], gpus)[pool[0]]
            waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if not waiting and not others_running(ctx):
                return _run_summary(study, ctx.spec, [], already_finished=True)
            from tunesvc.worker._pool import graceful_stop

            ctx.worker, ctx.on_event = 0 if pool is None else pool[0], on_event
            with graceful_stop(ctx.stop):
                results = run_loop(ctx, n_trials=n_trials, timeout=timeout,
                                   on_result=on_result, budget=budget)
            return _run_summary(study, ctx.spec, results)
    finally:
        storage.engine.dispose()


def _run_pool(
    name: str, url: str, *, workers: int, n_trials: int | None, timeout: float | None,
    device: str | None, heartbeat_s: int, on_event: Callable[[WorkerEvent], None] | None,
    on_result: Callable[[TrialResult], None] | None,
) -> RunSummary:
    from tunesvc.worker._pool import run_pool

    # The workers check the study and its objective themselves (each fails with the reason);
    # meanwhile this process opens the storage for the summary (opening takes seconds).
    with ThreadPoolExecutor(max_workers=1) as opener:
        opened = opener.submit(open_storage, url)
        results = run_pool(name, url, workers=workers, device=device, n_trials=n_trials,
                           timeout=timeout, heartbeat_s=heartbeat_s, on_event=on_event,
                           on_result=on_result)
        storage = opened.result()
    try:
        study = _load(storage, name, url)
        with storage_errors(url):
            spec = stored_spec(study)
            summary = _run_summary(study, spec, results)
            if not results and not summary.remaining:
                summary = replace(summary, already_finished=True)
            return summary
    finally:
        storage.engine.dispose()


def _run_summary(
    study: optuna.Study,
    spec: StudySpec,
    results: list[TrialResult],
    already_finished: bool = False,
) -> RunSummary:
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    return RunSummary(
        study=study.study_name,
        ran=[trial_info(by_number[r.number]) for r in results if r.number in by_number],
        remaining=sum(1 for t in trials if t.state == TrialState.WAITING),
        best=_best(study, trials),
        already_finished=already_finished,
        counts=dict(sorted(Counter(t.state.name for t in trials).items())),
    )


def list_studies(url: str) -> list[StudySummary]:
    storage = open_storage(url)
    out = []
    with storage_errors(url):
        for frozen in storage.get_all_studies():
            study = optuna.load_study(study_name=frozen.study_name, storage=storage)
            try:
                spec = stored_spec(study)
            except TunesvcError:
                spec = StudySpec(objective="(not tunesvc)")
            out.append(_summary(study, spec))
    return out


def show_study(name: str, url: str) -> StudyDetail:
    storage = open_storage(url)
    study = _load(storage, name, url)
    with storage_errors(url):
        spec = stored_spec(study)
        trials = study.get_trials(deepcopy=False)
        diagnoses = Counter(
            str(t.user_attrs[DIAGNOSIS_ATTR].get("label"))
            for t in trials if isinstance(t.user_attrs.get(DIAGNOSIS_ATTR), dict)
        )
        running = [t for t in trials if t.state == TrialState.RUNNING]
        ages = heartbeat_ages(storage, [t._trial_id for t in running])
        workers = [_running_trial(t, ages.get(t._trial_id)) for t in running]
        return StudyDetail(_summary(study, spec), spec.to_dict(), dict(diagnoses),
                           [trial_info(t) for t in running], redact(url), workers)


def _running_trial(t: FrozenTrial, age: float | None) -> RunningTrial:
    where = t.user_attrs.get(WORKER_ATTR)
    where = where if isinstance(where, dict) else {}
    info = trial_info(t)
    return RunningTrial(
        number=t.number, host=where.get("host"), pid=where.get("pid"),
        device=where.get("device"), epoch=max(t.intermediate_values, default=info.epochs),
        heartbeat_age_s=None if age is None else round(age, 1), params=info.params,
    )


def best_trial(name: str, url: str) -> TrialInfo:
    storage = open_storage(url)
    study = _load(storage, name, url)
    with storage_errors(url):
        best = _best(study, study.get_trials(deepcopy=False))
    if best is None:
        raise TunesvcError(f"study {name!r} has no completed trial yet; run it with "
                           f"`tunesvc study run {name}`")
    return best


def list_trials(name: str, url: str) -> list[TrialInfo]:
    storage = open_storage(url)
    study = _load(storage, name, url)
    with storage_errors(url):
        return [trial_info(t) for t in study.get_trials(deepcopy=False)]


def delete_study(name: str, url: str) -> None:
    storage = open_storage(url)
    _load(storage, name, url)
    with storage_errors(url):
        optuna.delete_study(study_name=name, storage=storage)
