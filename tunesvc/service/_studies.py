"""The study lifecycle: create, list, show, best, trials, delete.

Each function takes plain values, does its work against the storage and returns plain
dataclasses (:mod:`tunesvc.service._results`) that the CLI prints as a table or as JSON.
"""

from __future__ import annotations

import shlex
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from tunesvc._errors import (
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
    row_info,
)
from tunesvc.spec import (
    Plan,
    ResolvedStudy,
    StudySpec,
    check_plain_epochs,
    check_study_name,
    resolve_objective,
    resolve_study,
)
from tunesvc.storage import (
    CHECKPOINTS_DIR,
    StudyQueue,
    StudyReads,
    TrialRow,
    artifacts_dir,
    attrs,
    checkpoint_path,
    open_storage,
    redact,
    require_sqlite_file,
    storage_errors,
    study_folder,
)
from tunesvc.worker import heartbeat_setting


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


def create_study(
    name: str,
    spec: StudySpec,
    url: str,
    *,
    user_attrs: list[tuple[str, Any]] | None = None,
    resolved: ResolvedStudy | None = None,
    from_check: bool = False,
) -> StudySummary:
    """Validate ``spec`` fully, then create study ``name`` with its queue: the budget's slots,
    each a grid cell or a seeded draw claimed lazily by the workers (:class:`~tunesvc.spec.Plan`,
    :class:`~tunesvc.storage.StudyQueue`), so creating 100,000 trials writes none. Nothing is
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
    plan = Plan.from_spec(resolved.spec)  # a grid's size and budget agree
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
                warnings.simplefilter("ignore")  # set_metric_names is experimental
                study.set_metric_names([resolved.metric])
            StudyQueue.create(storage, storage.get_study_id_from_name(name), plan.budget)
        except BaseException:
            optuna.delete_study(study_name=name, storage=storage)  # nothing half-written
            raise
        return summarize(storage, name, study.direction, resolved.spec)


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


_INFO_KEYS = (attrs.OUTCOME.key, attrs.DIAGNOSIS.key, attrs.ERROR.key, attrs.SLOT.key,
              attrs.RETRY_OF.key, attrs.RETRIED_AS.key, attrs.WORKER.key)
"""The user attributes a trial's row is read with (never the curves)."""


def summarize(
    storage: optuna.storages.RDBStorage,
    name: str,
    direction: StudyDirection,
    spec: StudySpec | None,
) -> StudySummary:
    """Study ``name`` in a few numbers, by SQL aggregates (flat at 100,000 trials): slots
    planned and done (a retried slot counts once), trials by state (``WAITING`` counts what is
    still queued), the best trial. ``spec`` None: a study tunesvc did not create, whose trials
    are all there is."""
    reads = StudyReads(storage, storage.get_study_id_from_name(name))
    counts = reads.counts()
    retries = reads.count_with_attr(attrs.RETRY_OF.key)
    state = reads.queue_state()
    unclaimed = 0 if state is None else state.unclaimed
    if unclaimed:
        counts["WAITING"] = counts.get("WAITING", 0) + unclaimed
    total = sum(counts.values())
    # Each slot's latest attempt decides whether it is done: a retry replaces its attempt.
    finished = sum(counts.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL")) - retries
    best = reads.best(direction, _INFO_KEYS)
    return StudySummary(
        name=name,
        direction=direction.name.lower(),
        objective="(not tunesvc)" if spec is None else spec.objective,
        sampler="-" if spec is None else spec.sampler,
        planned=total - retries,
        counts=dict(sorted(counts.items())),
        best=None if best is None else row_info(best),
        done=max(0, finished),
    )


def list_studies(url: str) -> list[StudySummary]:
    """Every study in the storage (one not created by tunesvc shows as ``(not tunesvc)``)."""
    out = []
    with opened(url) as storage:
        for frozen in storage.get_all_studies():
            spec = attrs.SPEC.get(frozen.user_attrs)
            out.append(summarize(storage, frozen.study_name, frozen.direction, spec))
    return out


def show_study(name: str, url: str) -> StudyDetail:
    """Study ``name``: its spec, counts by state and by diagnosis, the best trial, the running
    trials with where they run and their heartbeat age."""
    with opened(url) as storage:
        study = load_study(storage, name, url)
        spec = attrs.study_spec(study, name)
        reads = StudyReads(storage, storage.get_study_id_from_name(name))
        diagnoses = {str(k): v for k, v in reads.counts_by_field(attrs.DIAGNOSIS.key,
                                                                 "label").items()
                     if k is not None}
        running = reads.running(_INFO_KEYS)
        workers = [_running_trial(r.trial, r.heartbeat_age_s) for r in running]
        return StudyDetail(summarize(storage, name, study.direction, spec), spec.to_dict(),
                           dict(sorted(diagnoses.items())),
                           [row_info(r.trial) for r in running], redact(url), workers)


def _running_trial(row: TrialRow, age: float | None) -> RunningTrial:
    where = attrs.WORKER.get(row.user_attrs) or attrs.Where()
    return RunningTrial(
        number=row.number, host=where.host, pid=where.pid, device=where.device,
        epoch=row.last_step or 0,
        heartbeat_age_s=None if age is None else round(age, 1), params=dict(row.params),
    )


def best_trial(name: str, url: str) -> TrialInfo:
    """The best completed trial of ``name`` (a :class:`TunesvcError` before there is one), with
    the path of its slot's checkpoint when one exists (a structured objective's: the model and
    optimizer as its training left them, at its last epoch)."""
    with opened(url) as storage:
        study = load_study(storage, name, url)
        study_id = storage.get_study_id_from_name(name)
        best = StudyReads(storage, study_id).best(study.direction, _INFO_KEYS)
        folder = study_folder(artifacts_dir(url), study, study_id)
    if best is None:
        raise TunesvcError(f"study {name!r} has no completed trial yet; run it with "
                           f"`tunesvc study run {shlex.quote(name)}`")
    slot = attrs.SLOT.get(best.user_attrs)
    checkpoint = checkpoint_path(folder, best.number if slot is None else slot)
    return replace(row_info(best), checkpoint=str(checkpoint) if checkpoint.is_file() else None)


def iter_trials(name: str, url: str) -> Iterator[TrialInfo]:
    """Every trial of ``name``, by number, read a page at a time (memory stays flat however
    many trials the study holds). A queued retry shows its slot's params. A missing study or
    storage raises here, before anything is read."""
    with opened(url) as storage:
        load_study(storage, name, url)
    return _stream_trials(name, url)


def _stream_trials(name: str, url: str) -> Iterator[TrialInfo]:
    with opened(url) as storage:
        study = load_study(storage, name, url)
        spec = attrs.SPEC.get(study)
        plan = None if spec is None else Plan.from_spec(spec)
        reads = StudyReads(storage, storage.get_study_id_from_name(name))
        for row in reads.trials(_INFO_KEYS):
            slot = attrs.SLOT.get(row.user_attrs)
            queued = (plan.params(slot) if plan is not None and slot is not None
                      and row.state == TrialState.WAITING and 0 <= slot < plan.budget else None)
            yield row_info(row, params=queued)


def list_trials(name: str, url: str) -> list[TrialInfo]:
    """Every trial of ``name``, by number (see :func:`iter_trials` to stream them)."""
    return list(iter_trials(name, url))


def trial_rows(storage: optuna.storages.RDBStorage, name: str, numbers: list[int]
               ) -> list[TrialInfo]:
    """The trials ``numbers`` of study ``name`` (those a command ran), by number."""
    reads = StudyReads(storage, storage.get_study_id_from_name(name))
    return [row_info(r) for r in reads.by_number(numbers, _INFO_KEYS)]


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
    running = [r for r in StudyReads(storage, study_id).running()
               if r.heartbeat_age_s is not None and r.heartbeat_age_s <= 2 * interval]
    if not running:
        return
    workers = []
    for r in running:
        where = attrs.WORKER.get(r.trial.user_attrs) or attrs.Where()
        workers.append(f"trial {r.trial.number} on {where.host or '?'} pid {where.pid or '?'}")
    name = study.study_name
    raise StudyBusyError(
        f"study {name!r} has {len(running)} running trial(s) whose workers still beat "
        f"({'; '.join(workers)}); stop them first, or `tunesvc study delete {shlex.quote(name)} "
        "--force` (they stop at their next write)"
    )
