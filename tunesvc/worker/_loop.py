"""One worker's life: join a study by name, claim and run trials until nothing is left.

:func:`work` is what a worker is, in this process or in a worker process of a pool
(:mod:`tunesvc.worker._pool`): it loads the study, resolves its objective once, builds the
:class:`~tunesvc.worker._context.TrialContext` and runs :func:`run_loop`. It prints nothing;
progress goes to ``on_event`` and finished trials to the observers.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import optuna

from tunesvc._errors import ObjectiveError, SpecError, StudyNotFoundError
from tunesvc.pruning import make_pruner
from tunesvc.spec import Plan, ResolvedStudy, resolve_objective, resolve_study
from tunesvc.storage import (
    Claim,
    StudyQueue,
    StudyReads,
    StudyRef,
    artifacts_dir,
    attrs,
    redact,
    storage_errors,
    study_folder,
)
from tunesvc.worker._board import Board, CurvePruner, Finished, Reader
from tunesvc.worker._claim import claim_trial, others_running
from tunesvc.worker._context import TrialContext
from tunesvc.worker._devices import visible_gpus, worker_devices
from tunesvc.worker._events import (
    Budget,
    Observer,
    ObserverThread,
    StopRequest,
    TrialResult,
    WorkerEvent,
)
from tunesvc.worker._heartbeat import HEARTBEAT_INTERVAL_S, MAX_LOST_RETRIES, DatabaseHealth
from tunesvc.worker._members import run_members
from tunesvc.worker._runner import run_trial

HEARTBEAT_ENV = "TUNESVC_HEARTBEAT_S"
MAX_RETRIES_ENV = "TUNESVC_MAX_RETRIES"


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker runs (picklable: a pool hands it to each worker process).

    ``device`` overrides the spec's; ``index`` and ``workers`` place this worker in a pool of
    ``workers`` on one machine (``auto`` and ``cuda`` spread a pool over the visible GPUs).
    ``n_trials`` and ``timeout`` bound this worker (a pool shares ``n_trials`` through a
    :class:`Budget` instead). ``observers`` are told of finished trials, off the training path.
    ``population`` > 1 trains that many trials at once (see :mod:`tunesvc.worker._members`);
    each worker of a pool runs a population of its own.
    """

    device: str | None = None
    n_trials: int | None = None
    timeout: float | None = None
    heartbeat_s: int = HEARTBEAT_INTERVAL_S
    max_retries: int = MAX_LOST_RETRIES
    index: int = 0
    workers: int = 1
    observers: tuple[Observer, ...] = ()
    population: int = 1


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


@dataclass(frozen=True)
class WorkerRun:
    """What one worker did: the trials it ran; ``idle`` when it found nothing to run and no
    other worker's trial to wait for."""

    results: list[TrialResult]
    idle: bool = False


def open_context(
    storage: optuna.storages.RDBStorage,
    name: str,
    url: str,
    options: WorkerOptions,
    *,
    on_event: Callable[[WorkerEvent], None] | None = None,
) -> TrialContext:
    """What every trial of study ``name`` shares in this worker: the study, its spec resolved
    against its objective (imported once, here), the pruner, the device, the heartbeat."""
    study_id = _study_id(storage, name, url)
    study = optuna.load_study(study_name=name, storage=storage)
    spec = attrs.study_spec(study, name)
    try:
        resolved = resolve_study(spec, resolve_objective(spec.objective))
    except (ObjectiveError, SpecError) as e:
        raise type(e)(f"{e} (this machine cannot run study {name!r}; the study is "
                      "untouched)") from None
    study.pruner = make_pruner(spec.pruner, spec.pruner_settings, epochs=_epochs(resolved))
    device = options.device or spec.device
    gpus = visible_gpus() if device in ("auto", "cuda") else 0
    health = DatabaseHealth(grace_s=2 * options.heartbeat_s)
    reads = StudyReads(storage, study_id)
    board = None
    if isinstance(study.pruner, CurvePruner):
        board = Board(study.pruner, _finished_reader(reads), health)
    return TrialContext(
        study=study, storage=storage, study_id=study_id, resolved=resolved,
        queue=StudyQueue(storage, study_id), reads=reads, plan=Plan.from_spec(resolved.spec),
        study_dir=study_folder(artifacts_dir(url), study, study_id),
        device=worker_devices(device, options.workers, gpus)[options.index],
        worker=options.index, heartbeat_s=options.heartbeat_s,
        max_retries=options.max_retries,
        health=health, on_event=on_event, board=board,
        observers=ObserverThread(StudyRef(study, storage, study_id), options.observers),
    )


def _finished_reader(reads: StudyReads) -> Reader:
    """What the board reads: the study's trials finished since the last read, never more."""

    def read(cursor: Any) -> tuple[list[Finished], Any]:
        rows, after = reads.finished_since(cursor)
        return [(r.number, r.state, r.intermediate_values) for r in rows], after

    return read


def work(
    storage: optuna.storages.RDBStorage,
    name: str,
    url: str,
    options: WorkerOptions,
    *,
    on_event: Callable[[WorkerEvent], None] | None = None,
    on_result: Callable[[TrialResult], None] | None = None,
    budget: Budget | None = None,
) -> WorkerRun:
    """Be one worker of study ``name`` (``url`` only names the storage in messages) until its
    queue is empty, ``options`` say stop, or SIGINT/SIGTERM (then the running trial is queued
    again and KeyboardInterrupt is raised)."""
    with storage_errors(url):
        ctx = open_context(storage, name, url, options, on_event=on_event)
        state = ctx.reads.queue_state()
        queued = (0 if state is None else state.unclaimed) + ctx.reads.counts().get("WAITING", 0)
        if not queued and not others_running(ctx):
            return WorkerRun([], idle=True)
        with graceful_stop(ctx.stop):
            return WorkerRun(run_loop(ctx, n_trials=options.n_trials, timeout=options.timeout,
                                      on_result=on_result, budget=budget,
                                      population=options.population))


def _epochs(resolved: ResolvedStudy) -> int | None:
    """The last epoch a trial reports, when tunesvc trains it (a plain objective's is unknown)."""
    return resolved.epochs if resolved.objective.structured else None


def _study_id(storage: optuna.storages.RDBStorage, name: str, url: str) -> int:
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        names = sorted(s.study_name for s in storage.get_all_studies())
        hint = f"; studies there: {', '.join(names)}" if names else ""
        raise StudyNotFoundError(f"no study {name!r} in {redact(url)}{hint}") from None


def run_loop(
    ctx: TrialContext,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    on_result: Callable[[TrialResult], None] | None = None,
    budget: Budget | None = None,
    population: int = 1,
) -> list[TrialResult]:
    """Claim and run trials until the queue is empty, ``n_trials`` ran, or ``timeout`` passed.

    With the queue empty while other workers still run trials, the worker waits: should one of
    them be lost, its retry is queued and this worker runs it. ``budget`` is shared by the
    worker processes of one command. ``population`` > 1 trains that many trials of a structured
    objective at once (:func:`~tunesvc.worker._members.run_members`); a plain objective runs
    one trial at a time, and says so. A stop request ends the loop with KeyboardInterrupt.
    """
    results: list[TrialResult] = []

    def finished(result: TrialResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    claims = _Claims(ctx, n_trials, timeout, budget)
    try:
        if population > 1 and not ctx.objective.structured:
            ctx.emit(WorkerEvent("note", ctx.worker, message=f"population: {population} "
                                 "ignored: a plain objective trains its own trials, one at a "
                                 "time"))
        if population > 1 and ctx.objective.structured:
            run_members(ctx, population, claims.next, finished)
        else:
            while (claim := claims.next(True)) is not None:
                finished(run_trial(ctx, claim))
        return results
    finally:
        ctx.close_writer()
        if ctx.board is not None:
            ctx.board.close()
        if ctx.observers is not None:
            if results:
                ctx.observers.study_changed(final=True)  # the study as this worker leaves it
            ctx.observers.close()


class _Claims:
    """The trials this worker may still start: at most ``n_trials``, none after ``timeout``,
    each taken from the pool's ``budget``; one claim at a time."""

    def __init__(
        self, ctx: TrialContext, n_trials: int | None, timeout: float | None,
        budget: Budget | None,
    ) -> None:
        self._ctx = ctx
        self._n_trials = n_trials
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._budget = budget
        self._started = 0
        self._empty_until = -math.inf

    def next(self, wait: bool) -> Claim | None:
        """The next trial, now RUNNING; ``None`` when there is none now (with ``wait``: none
        left, the queue being empty and no other worker's trial running that may be lost).
        A stop request raises KeyboardInterrupt."""
        ctx, waiting = self._ctx, False
        if not wait and time.monotonic() < self._empty_until:
            return None  # found empty a moment ago: a live population need not ask every epoch
        while self._n_trials is None or self._started < self._n_trials:
            if ctx.stop.requested:
                raise KeyboardInterrupt
            if self._deadline is not None and time.monotonic() >= self._deadline:
                return None
            if self._budget is not None and not self._budget.take():
                return None
            claim = claim_trial(ctx)
            if claim is not None:
                self._started += 1
                return claim
            if self._budget is not None:
                self._budget.give_back()
            if not wait:
                self._empty_until = time.monotonic() + min(ctx.heartbeat_s, 1.0)
                return None
            if not others_running(ctx):
                return None
            if not waiting:
                ctx.emit(WorkerEvent("waiting", ctx.worker, device=ctx.device))
            waiting = True
            _sleep(ctx, min(ctx.heartbeat_s, 0.5))
        return None


def _sleep(ctx: TrialContext, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not ctx.stop.requested and time.monotonic() < deadline:
        time.sleep(0.05)


@contextmanager
def graceful_stop(stop: StopRequest) -> Iterator[None]:
    """Turn SIGINT and SIGTERM into a stop request while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.request()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
