"""The study lifecycle: create, list, show, best, trials, delete.

Each function takes plain values, does its work against the storage and returns plain
dataclasses (:mod:`tunesvc.service._results`) that the CLI prints as a table or as JSON.
"""

from __future__ import annotations

import math
import random
import shlex
import shutil
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tunesvc._errors import (
    SpecError,
    StorageError,
    StudyBusyError,
    StudyExistsError,
    StudyNotFoundError,
    TunesvcError,
)
from tunesvc.pruning import make_pruner
from tunesvc.service._check import check_lr_free, check_setups, with_checked_lr
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
    check_plain_epochs,
    check_study_name,
    grid_cells,
    grid_points,
    resolve_objective,
    resolve_study,
    sample_random,
)
from tunesvc.storage import (
    CHECKPOINTS_DIR,
    artifacts_dir,
    attrs,
    checkpoint_path,
    open_storage,
    redact,
    require_sqlite_file,
    storage_errors,
    study_folder,
)
from tunesvc.storage._heartbeats import heartbeat_ages, running_heartbeats
from tunesvc.worker import heartbeat_setting

DEFAULT_RANDOM_TRIALS = 20
"""The budget of a random study whose spec gives no ``n_trials``."""


@contextmanager
def opened(url: str, *, create: bool = False) -> Iterator[optuna.storages.RDBStorage]:
    """The storage at ``url``, its connections closed afterwards; database errors inside the
    block become one-line :class:`~tunesvc.StorageError`\\ s. A SQLite file that does not
    exist is an error unless ``create`` (only creating a study creates a database file)."""
    storage = open_storage(url, create=create)
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
    from_check: bool = False,
) -> StudySummary:
    """Validate ``spec`` fully, then create study ``name`` with every trial queued. Nothing is
    written when anything is wrong. ``user_attrs`` are extra study attributes
    (``attrs.X.item(value)`` pairs); ``resolved`` saves resolving the objective again;
    ``from_check`` takes lr's range from the LR range test (:func:`with_checked_lr`), run only
    once the name is known to be free.

    Validated here: the name (:data:`~tunesvc.spec._spec.NAME_RULE`), the spec against its
    objective (param names, numbers where the objective takes numbers, no epochs for a plain
    objective), the pruner's settings, and a structured objective's setup at the corners of
    the search space (:func:`check_setups`).
    """
    check_study_name(name)
    objective = resolved.objective if resolved is not None else resolve_objective(spec.objective)
    check_plain_epochs(spec, objective)
    if from_check:
        check_lr_free(spec)
        _require_new(name, url)  # before the LR range test's seconds are spent
        spec, resolved = with_checked_lr(spec, objective), None
    resolved = resolved or resolve_study(spec, objective)
    make_pruner(resolved.spec.pruner, resolved.spec.pruner_settings,  # its settings are valid
                epochs=resolved.epochs if resolved.objective.structured else None)
    planned = plan_trials(resolved.spec)
    check_setups(resolved)
    with opened(url, create=True) as storage:
        if any(s.study_name == name for s in storage.get_all_studies()):
            raise _exists(name, url)
        try:
            study = optuna.create_study(study_name=name, storage=storage,
                                        direction=resolved.direction)
        except optuna.exceptions.DuplicatedStudyError:
            raise _exists(name, url) from None
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


def _exists(name: str, url: str) -> StudyExistsError:
    return StudyExistsError(f"study {name!r} already exists in {redact(url)}; pick another "
                            f"name or `tunesvc study delete {shlex.quote(name)}`")


def _require_new(name: str, url: str) -> None:
    """A :class:`StudyExistsError` when study ``name`` exists (a storage that does not exist
    yet holds none, and is not created here)."""
    try:
        require_sqlite_file(url)
    except StorageError:
        return  # no file yet, so no study in it
    with opened(url) as storage:
        if any(s.study_name == name for s in storage.get_all_studies()):
            raise _exists(name, url)


def summarize(study: optuna.Study, spec: StudySpec, *, tunesvc: bool = True) -> StudySummary:
    """``study`` in a few numbers: slots planned and done (a retried slot counts once), trials by
    state, the best trial. ``tunesvc`` False: a study tunesvc did not create, whose trials are
    all there is to plan."""
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    latest: dict[int, FrozenTrial] = {}
    for t in trials:  # by number: a slot's retries come after its earlier attempts
        latest[_slot(t)] = t
    done = sum(1 for t in latest.values() if t.state.is_finished())
    best = attrs.best_of(trials, study.direction.name.lower())
    return StudySummary(
        name=study.study_name,
        direction=study.direction.name.lower(),
        objective=spec.objective,
        sampler=spec.sampler,
        planned=max(planned_size(spec) if tunesvc else 0, len(latest)),
        counts=dict(sorted(counts.items())),
        best=None if best is None else trial_info(best),
        done=done,
    )


def _slot(t: FrozenTrial) -> int:
    slot = attrs.SLOT.get(t)
    return t.number if slot is None else slot


def planned_size(spec: StudySpec) -> int:
    """How many slots the study runs: its budget, else the grid's size (counted, not built)."""
    if spec.n_trials is not None:
        return spec.n_trials
    if spec.sampler == "grid":
        return math.prod(len(grid_points(p)) for p in spec.params.values())
    return DEFAULT_RANDOM_TRIALS


def list_studies(url: str) -> list[StudySummary]:
    """Every study in the storage (one not created by tunesvc shows as ``(not tunesvc)``)."""
    out = []
    with opened(url) as storage:
        for frozen in storage.get_all_studies():
            study = optuna.load_study(study_name=frozen.study_name, storage=storage)
            spec = attrs.SPEC.get(study)
            out.append(summarize(study, spec or StudySpec(objective="(not tunesvc)"),
                                 tunesvc=spec is not None))
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
    """The best completed trial of ``name`` (a :class:`TunesvcError` before there is one), with
    the path of its slot's checkpoint when one exists (a structured objective's: the model and
    optimizer as its training left them, at its last epoch)."""
    with opened(url) as storage:
        study = load_study(storage, name, url)
        best = attrs.best_of(study.get_trials(deepcopy=False), study.direction.name.lower())
        folder = study_folder(artifacts_dir(url), study, storage.get_study_id_from_name(name))
    if best is None:
        raise TunesvcError(f"study {name!r} has no completed trial yet; run it with "
                           f"`tunesvc study run {shlex.quote(name)}`")
    checkpoint = checkpoint_path(folder, _slot(best))
    return replace(trial_info(best), checkpoint=str(checkpoint) if checkpoint.is_file() else None)


def list_trials(name: str, url: str) -> list[TrialInfo]:
    """Every trial of ``name``, by number."""
    with opened(url) as storage:
        study = load_study(storage, name, url)
        trials = study.get_trials(deepcopy=False)
    retried_as = {attrs.RETRY_OF.get(t): t.number for t in trials}
    return [trial_info(t, retried_as=retried_as.get(t.number)) for t in trials]


def delete_study(name: str, url: str, *, force: bool = False) -> None:
    """Delete study ``name``, its trials and its artifacts (checkpoints).

    A study whose trials run on workers that still beat (a heartbeat within two intervals of
    ``$TUNESVC_HEARTBEAT_S``) is refused with a :class:`StudyBusyError` naming them, unless
    ``force``: those workers then stop at their next write to the study, with one line (a
    :class:`StudyNotFoundError` from :func:`tunesvc.worker._runner.run_trial`)."""
    with opened(url) as storage:
        study = load_study(storage, name, url)
        study_id = storage.get_study_id_from_name(name)
        if not force:
            _refuse_if_running(storage, study, study_id)
        folder = study_folder(artifacts_dir(url), study, study_id)
        for _attempt in range(DELETE_ATTEMPTS):
            if force:
                _end_unfinished(storage, study, study_id)
            try:
                optuna.delete_study(study_name=name, storage=storage)
            except KeyError:
                break  # deleted meanwhile
            if not _exists_id(storage, name, study_id):
                break
            time.sleep(0.2)
        else:
            raise TunesvcError(f"could not delete study {name!r}: its workers kept writing to "
                               "it; stop them (Ctrl-C) and delete it again")
    if folder.parent.name == CHECKPOINTS_DIR:
        shutil.rmtree(folder, ignore_errors=True)


DELETE_ATTEMPTS = 10
"""Optuna's delete_study gives up without a word when a worker writes a row of the study
meanwhile (PostgreSQL and MySQL check the foreign key; SQLite does not): it is tried again."""


def _exists_id(storage: optuna.storages.RDBStorage, name: str, study_id: int) -> bool:
    try:
        return storage.get_study_id_from_name(name) == study_id
    except KeyError:
        return False


def _end_unfinished(
    storage: optuna.storages.RDBStorage, study: optuna.Study, study_id: int
) -> None:
    """FAIL every queued and running trial of a study about to be deleted, so that its workers
    write nothing more to it (Optuna refuses writes to a finished trial) and claim nothing."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,
                                                          TrialState.RUNNING)):
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except (KeyError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # finished or gone meanwhile


def _refuse_if_running(
    storage: optuna.storages.RDBStorage, study: optuna.Study, study_id: int
) -> None:
    interval, _retries = heartbeat_setting()
    running = {tid: number for tid, (number, age) in running_heartbeats(storage, study_id).items()
               if age is not None and age <= 2 * interval}
    if not running:
        return
    workers = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.number in running.values():
            where = attrs.WORKER.get(trial) or attrs.Where()
            workers.append(f"trial {trial.number} on {where.host or '?'} pid {where.pid or '?'}")
    name = study.study_name
    raise StudyBusyError(
        f"study {name!r} has {len(running)} running trial(s) whose workers still beat "
        f"({'; '.join(workers)}); stop them first, or `tunesvc study delete {shlex.quote(name)} "
        "--force` (they stop at their next write)"
    )
