"""The study lifecycle: create, list, show, best, trials, delete.

Each function takes plain values, does its work against the storage and returns plain
dataclasses (:mod:`tunesvc.service._results`) that the CLI prints as a table or as JSON.
"""

from __future__ import annotations

import random
import shutil
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tunesvc._errors import SpecError, StudyExistsError, StudyNotFoundError, TunesvcError
from tunesvc._pruner import make_pruner
from tunesvc.service._results import (
    RunningTrial,
    StudyDetail,
    StudySummary,
    TrialInfo,
    trial_info,
)
from tunesvc.spec import (
    ParamValue,
    ResolvedStudy,
    StudySpec,
    grid_cells,
    resolve_objective,
    resolve_study,
    sample_random,
)
from tunesvc.storage import (
    CHECKPOINTS_DIR,
    artifacts_dir,
    attrs,
    open_storage,
    redact,
    storage_errors,
    study_folder,
)
from tunesvc.storage._heartbeats import heartbeat_ages

DEFAULT_RANDOM_TRIALS = 20
"""The budget of a random study whose spec gives no ``n_trials``."""


@contextmanager
def opened(url: str) -> Iterator[optuna.storages.RDBStorage]:
    """The storage at ``url``, its connections closed afterwards; database errors inside the
    block become one-line :class:`~tunesvc.StorageError`\\ s."""
    storage = open_storage(url)
    try:
        with storage_errors(url):
            yield storage
    finally:
        storage.engine.dispose()


def load_study(storage: optuna.storages.RDBStorage, name: str, url: str) -> optuna.Study:
    """Study ``name``, or :class:`StudyNotFoundError` naming the studies there."""
    names = {s.study_name for s in storage.get_all_studies()}
    if name not in names:
        hint = f"; studies there: {', '.join(sorted(names))}" if names else ""
        raise StudyNotFoundError(f"no study {name!r} in {redact(url)}{hint}")
    return optuna.load_study(study_name=name, storage=storage)


def resolve(spec: StudySpec) -> ResolvedStudy:
    """Import the objective ``spec`` names (once) and fill what the spec leaves to it."""
    return resolve_study(spec, resolve_objective(spec.objective))


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


def create_study(
    name: str,
    spec: StudySpec,
    url: str,
    *,
    user_attrs: list[tuple[str, Any]] | None = None,
    resolved: ResolvedStudy | None = None,
) -> StudySummary:
    """Validate ``spec`` fully, then create study ``name`` with every trial queued. Nothing is
    written when anything is wrong. ``user_attrs`` are extra study attributes
    (``attrs.X.item(value)`` pairs); ``resolved`` saves resolving the objective again."""
    if not name or name.strip() != name:
        raise SpecError(f"study name: expected a non-empty name without surrounding spaces, "
                        f"got {name!r}")
    resolved = resolved or resolve(spec)
    make_pruner(resolved.spec.pruner, resolved.spec.pruner_settings)  # its settings are valid
    planned = plan_trials(resolved.spec)
    with opened(url) as storage:
        if any(s.study_name == name for s in storage.get_all_studies()):
            raise StudyExistsError(f"study {name!r} already exists in {redact(url)}; pick "
                                   f"another name or `tunesvc study delete {name}`")
        try:
            study = optuna.create_study(study_name=name, storage=storage,
                                        direction=resolved.direction)
        except optuna.exceptions.DuplicatedStudyError:
            raise StudyExistsError(f"study {name!r} already exists in {redact(url)}") from None
        try:
            for key, value in [attrs.SPEC.item(resolved.spec), attrs.UID.item(uuid.uuid4().hex),
                               attrs.METRIC.item(resolved.metric), *(user_attrs or [])]:
                study.set_user_attr(key, value)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # set_metric_names and enqueue: experimental
                study.set_metric_names([resolved.metric])
                for slot, params in enumerate(planned):
                    study.enqueue_trial(params, user_attrs=dict([attrs.SLOT.item(slot)]))
        except BaseException:
            optuna.delete_study(study_name=name, storage=storage)  # nothing half-written
            raise
        return summarize(study, resolved.spec)


def summarize(study: optuna.Study, spec: StudySpec) -> StudySummary:
    """``study`` in a few numbers."""
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    retried = sum(1 for t in trials if attrs.RETRY_OF.get(t) is not None)
    best = attrs.best_of(trials, study.direction.name.lower())
    return StudySummary(
        name=study.study_name,
        direction=study.direction.name.lower(),
        objective=spec.objective,
        sampler=spec.sampler,
        planned=len(trials) - retried,
        counts=dict(sorted(counts.items())),
        best=None if best is None else trial_info(best),
    )


def list_studies(url: str) -> list[StudySummary]:
    """Every study in the storage (one not created by tunesvc shows as ``(not tunesvc)``)."""
    out = []
    with opened(url) as storage:
        for frozen in storage.get_all_studies():
            study = optuna.load_study(study_name=frozen.study_name, storage=storage)
            spec = attrs.SPEC.get(study) or StudySpec(objective="(not tunesvc)")
            out.append(summarize(study, spec))
    return out


def show_study(name: str, url: str) -> StudyDetail:
    """Study ``name``: its spec, counts by state and by diagnosis, the best trial, the running
    trials with where they run and their heartbeat age."""
    with opened(url) as storage:
        study = load_study(storage, name, url)
        spec = attrs.study_spec(study, name)
        trials = study.get_trials(deepcopy=False)
        diagnoses = Counter(d.label for d in map(attrs.DIAGNOSIS.get, trials) if d is not None)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        study_id = storage.get_study_id_from_name(name)
        ids = {t.number: storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
               for t in running}
        ages = heartbeat_ages(storage, list(ids.values()))
        workers = [_running_trial(t, ages.get(ids[t.number])) for t in running]
        return StudyDetail(summarize(study, spec), spec.to_dict(), dict(diagnoses),
                           [trial_info(t) for t in running], redact(url), workers)


def _running_trial(t: FrozenTrial, age: float | None) -> RunningTrial:
    where = attrs.WORKER.get(t) or attrs.Where()
    info = trial_info(t)
    return RunningTrial(
        number=t.number, host=where.host, pid=where.pid, device=where.device,
        epoch=max(t.intermediate_values, default=info.epochs),
        heartbeat_age_s=None if age is None else round(age, 1), params=info.params,
    )


def best_trial(name: str, url: str) -> TrialInfo:
    """The best completed trial of ``name`` (a :class:`TunesvcError` before there is one)."""
    with opened(url) as storage:
        study = load_study(storage, name, url)
        best = attrs.best_of(study.get_trials(deepcopy=False), study.direction.name.lower())
    if best is None:
        raise TunesvcError(f"study {name!r} has no completed trial yet; run it with "
                           f"`tunesvc study run {name}`")
    return trial_info(best)


def list_trials(name: str, url: str) -> list[TrialInfo]:
    """Every trial of ``name``, by number."""
    with opened(url) as storage:
        study = load_study(storage, name, url)
        return [trial_info(t) for t in study.get_trials(deepcopy=False)]


def delete_study(name: str, url: str) -> None:
    """Delete study ``name``, its trials and its artifacts (checkpoints)."""
    with opened(url) as storage:
        study = load_study(storage, name, url)
        folder = study_folder(artifacts_dir(url), study, storage.get_study_id_from_name(name))
        optuna.delete_study(study_name=name, storage=storage)
    if folder.parent.name == CHECKPOINTS_DIR:
        shutil.rmtree(folder, ignore_errors=True)
