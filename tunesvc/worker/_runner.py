"""Running one claimed trial of a tunesvc study to its end, and recording how it ended.

While it runs a trial, a worker beats for it (see :mod:`tunesvc.worker._heartbeat`); a trial
whose worker dies is failed by another worker and queued again on the same slot. Database calls
made here are retried while the database is away. A stop request (SIGINT, SIGTERM) interrupts
the objective only; the interrupted trial is marked FAIL and queued again, so none stays
RUNNING. A pruned, a diverged and a failed trial stay apart: PRUNED with outcome ``pruned``,
PRUNED with outcome ``diverged``, FAIL with the error recorded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import optuna
from optuna.trial import TrialState

from tunesvc._errors import ObjectiveError, StudyNotFoundError, TunesvcError
from tunesvc.curves import Curves, EpochRecord, diagnose, diagnose_values
from tunesvc.storage import Claim, attrs
from tunesvc.worker._context import TrialContext
from tunesvc.worker._events import TrialResult, WorkerEvent
from tunesvc.worker._heartbeat import Heartbeat
from tunesvc.worker._sampler import SlotSampler
from tunesvc.worker._trial import SpecTrial

if TYPE_CHECKING:
    from tunesvc.training import FitResult, TrainingSetup

CURVES_EVERY_S = 2.0
"""Least seconds between two writes of a running trial's curves (live views lag this much)."""


@dataclass(frozen=True)
class Ending:
    """How a trial ended, before it is recorded (see :func:`end_trial`)."""

    state: TrialState
    outcome: str
    value: float | None = None
    error: str | None = None


def run_trial(ctx: TrialContext, claim: Claim) -> TrialResult:
    """Run one claimed trial to its end and record state, outcome, diagnosis and any error.

    Ctrl-C (or a stop request) marks the trial FAIL (``interrupted``), queues its params again
    and re-raises, so no trial is left RUNNING. A trial that another worker failed meanwhile
    (its heartbeats did not arrive) is left to its retry: outcome ``lost``, nothing written.

    A plain objective whose suggestions disagree with the spec stops the run: the trial goes
    back to the queue (WAITING, no budget spent) and :class:`ObjectiveError` is raised. A study
    deleted while its trial runs (``study delete --force``) raises
    :class:`StudyNotFoundError`: there is nothing left to record.
    """
    with study_still_there(ctx):
        return run_opened(ctx, open_trial(ctx, claim), claim.slot)


@contextmanager
def study_still_there(ctx: TrialContext) -> Iterator[None]:
    """Around running trials: Optuna's ``KeyError`` ("Record does not exist.") met because the
    trial's study was deleted meanwhile becomes :class:`StudyNotFoundError`."""
    try:
        yield
    except KeyError:
        gone = _study_gone(ctx)
        if gone is None:
            raise
        raise gone from None


@contextmanager
def study_deleted(storage: optuna.storages.RDBStorage, name: str) -> Iterator[None]:
    """Around a worker's run of study ``name``: Optuna's ``KeyError`` ("Record does not
    exist."), met when the study was deleted meanwhile (``study delete --force``), becomes one
    :class:`StudyNotFoundError` line."""
    try:
        yield
    except (KeyError, StudyNotFoundError):
        try:
            storage.get_study_id_from_name(name)
        except KeyError:
            raise _deleted(name) from None
        raise


def _deleted(name: str) -> StudyNotFoundError:
    return StudyNotFoundError(f"study {name!r} was deleted while worker pid {os.getpid()} ran "
                              "it; the worker stopped")


def _study_gone(ctx: TrialContext) -> StudyNotFoundError | None:
    name = ctx.study.study_name
    try:
        if ctx.storage.get_study_id_from_name(name) == ctx.study_id:
            return None
    except KeyError:
        pass
    return _deleted(name)


def open_trial(ctx: TrialContext, claim: Claim) -> SpecTrial:
    """The claimed trial as the objective sees it. It suggests its slot's params; the others
    are drawn per slot, so they too are the same whichever worker runs the slot, and the same
    again on a retry. The study's sampler is the claim's until the next claim: suggest the
    trial's params before that (:func:`start_structured` does)."""
    ctx.study.sampler = SlotSampler(claim.params, seed=ctx.spec.seed, slot=claim.slot)
    trial: SpecTrial = ctx.retry(lambda: SpecTrial(ctx.study, claim.trial_id, ctx))
    ctx.emit(WorkerEvent("claimed", ctx.worker, trial.number, device=ctx.device,
                         direction=ctx.direction))
    return trial


def run_opened(
    ctx: TrialContext, trial: SpecTrial, slot: int, start: Start | None = None
) -> TrialResult:
    """Run an opened trial alone to its end (see :func:`run_trial`), beating for it;
    ``start`` is a structured trial's :func:`start_structured`, when it was already made."""
    with Heartbeat(ctx.storage, ctx.queue, [trial.trial_id], interval_s=ctx.heartbeat_s,
                   health=ctx.health, max_retries=ctx.max_retries):
        try:
            ctx.stop.in_objective = True
            try:
                if ctx.stop.requested:
                    raise KeyboardInterrupt
                if ctx.objective.structured:
                    ending = _run_structured(trial, ctx, slot, start)
                else:
                    ending = _run_plain(trial, ctx)
            finally:
                ctx.stop.in_objective = False
        except KeyboardInterrupt:
            interrupt(ctx, trial)
            raise
        except optuna.exceptions.UpdateFinishedTrialError:
            return lost_trial(ctx, trial)
        except Exception as e:  # the user's objective raised: this trial fails, the run goes on
            ending = error_ending(ctx, trial, e)
        return end_trial(ctx, trial, ending)


def _run_plain(trial: SpecTrial, ctx: TrialContext) -> Ending:
    assert ctx.objective.function is not None
    returned = ctx.objective.function(trial)
    if returned is None or not math.isfinite(float(returned)):
        raise ObjectiveError(f"objective returned {returned!r}; expected a finite float")
    return Ending(TrialState.COMPLETE, "completed", float(returned))


def error_ending(ctx: TrialContext, trial: SpecTrial, error: Exception) -> Ending:
    """How a trial whose objective (or ``on_epoch``) raised ``error`` ended: pruned, early
    stopped, or failed with the error recorded."""
    if isinstance(error, optuna.TrialPruned):
        value = trial.best_reported(ctx.direction)
        if trial.early_stopped and value is not None:
            # A plain objective raises TrialPruned when told to stop; stopping an overfitting
            # or plateaued trial is not a failure: it completes at its best.
            return Ending(TrialState.COMPLETE, "early_stopped", value)
        return Ending(TrialState.PRUNED, "pruned", value)
    if isinstance(error, TunesvcError):
        return Ending(TrialState.FAIL, "failed", error=str(error))
    return Ending(TrialState.FAIL, "failed", error=f"{type(error).__name__}: {error}")


def interrupt(ctx: TrialContext, trial: SpecTrial) -> None:
    """Ctrl-C or a stop request met ``trial``: failed as ``interrupted`` and queued again in one
    transaction, so no moment leaves its slot unqueued (nothing, if it was lost meanwhile)."""
    if _record_end(ctx, trial, "interrupted", "interrupted by the user"):
        tid = trial.trial_id
        ctx.retry(lambda: ctx.queue.requeue(tid, "interrupted", fail_running=True))


def end_trial(ctx: TrialContext, trial: SpecTrial, ending: Ending) -> TrialResult:
    """Record how ``trial`` ended, tell the pruner's board, the observers and ``on_event``;
    its :class:`TrialResult` (outcome ``lost`` if another worker had failed it)."""
    if trial.mismatch is not None:
        raise _put_back(ctx, trial, trial.mismatch)
    if not _finish(ctx, trial, ending.state, ending.outcome, ending.value, ending.error):
        return lost_trial(ctx, trial)
    if ctx.board is not None:
        ctx.board.add(trial.number, ending.state, trial.reported)  # one worker decides alike
    if ctx.observers is not None:
        ctx.observers.trial_finished(trial.trial_id)
    result = TrialResult(trial.number, ending.state, ending.outcome, ending.value, ending.error,
                         dict(trial.params), label=trial.label)
    ctx.emit(WorkerEvent("finished", ctx.worker, trial.number, result=result))
    return result


Start: TypeAlias = tuple["TrainingSetup", Callable[[EpochRecord], bool]]
"""A structured trial's setup and the ``on_epoch`` that reports it (see start_structured)."""


def start_structured(trial: SpecTrial, ctx: TrialContext) -> Start:
    """A structured trial's params suggested, its setup built, and the ``on_epoch`` callback
    that records its curves, reports its metric and asks the pruner (raising TrialPruned, or
    returning True to stop early)."""
    assert ctx.objective.build is not None
    params = {name: trial.suggest_spec_param(name, p) for name, p in ctx.spec.params.items()}
    setup = ctx.objective.build({**ctx.objective.defaults, **params})
    num_classes = getattr(setup, "num_classes", None)
    if num_classes is not None:
        # The pruner judges the initial loss against log(num_classes) from the trial itself.
        trial.set_user_attr(*attrs.NUM_CLASSES.item(int(num_classes)))
    trial.curves = Curves()
    metric = ctx.metric
    judges_epoch_0 = ctx.board is not None  # it diagnoses epoch 0 (the initial loss)

    def on_epoch(record: EpochRecord) -> bool:
        assert trial.curves is not None
        trial.curves.append(record)
        # One write fewer per epoch: curves go to storage at most every CURVES_EVERY_S (and
        # when the trial ends); the reported metric goes every epoch.
        trial.store_curves(every_s=CURVES_EVERY_S)
        value = getattr(record, metric)
        if value is not None and math.isfinite(value):
            trial.report(value, record.epoch)
        if record.epoch == 0 and not judges_epoch_0:
            return False  # rank-only pruners would judge an untrained model's noise
        if trial.should_prune():
            if trial.early_stopped:
                return True
            raise optuna.TrialPruned(f"pruned at epoch {record.epoch}")
        return False

    return setup, on_epoch


def _run_structured(
    trial: SpecTrial, ctx: TrialContext, slot: int, start: Start | None
) -> Ending:
    # torch loads here, on the first structured trial: the CLI and plain studies stay fast.
    from tunesvc.training import fit

    setup, on_epoch = start if start is not None else start_structured(trial, ctx)
    result = fit(
        setup,
        epochs=ctx.epochs,
        seed=ctx.spec.seed,
        device=ctx.device,
        metric=ctx.metric,
        on_epoch=on_epoch,
        checkpoint_path=ctx.checkpoint_path(slot),
    )
    return fit_ending(trial, result)


def fit_ending(trial: SpecTrial, result: FitResult) -> Ending:
    """How a structured trial whose training returned ``result`` ended: completed, early
    stopped, or diverged (PRUNED, with the evaluation where it diverged in its curves)."""
    if result.reason is not None:
        trial.set_user_attr(*attrs.REASON.item(result.reason))
    if result.diverged or result.value is None:
        trial.curves = result.curves
        return Ending(TrialState.PRUNED, "diverged")
    outcome = "early_stopped" if result.stopped_early else "completed"
    return Ending(TrialState.COMPLETE, outcome, float(result.value))


def _put_back(ctx: TrialContext, trial: SpecTrial, mismatch: ObjectiveError) -> ObjectiveError:
    """Queue ``trial`` again as it was (WAITING on its slot, never FAIL: the spec is wrong, not
    the trial) and say why the run stops."""
    if ctx._writer is not None:
        ctx._writer.drain(trial.trial_id)  # its reports so far land before it is queued again
    tid = trial.trial_id
    ctx.retry(lambda: ctx.storage.set_trial_state_values(tid, TrialState.WAITING))
    return ObjectiveError(f"{mismatch}; the run stopped and trial {trial.number} went back to "
                          "the queue (fix the objective, or create the study again with a spec "
                          "that agrees)")


def _record_diagnosis(trial: SpecTrial, ctx: TrialContext) -> None:
    if trial.decision is not None:
        trial.label = trial.decision.diagnosis.label
        return  # the pruner's decision already carries the diagnosis
    if trial.curves is not None and len(trial.curves):
        diagnosis = diagnose(trial.curves, num_classes=attrs.NUM_CLASSES.get(trial),
                             reference_acc=_reference_acc(ctx))
    else:
        reported = trial.reported
        diagnosis = diagnose_values([reported[k] for k in sorted(reported)], ctx.direction,
                                    steps=sorted(reported))
    trial.set_user_attr(*attrs.DIAGNOSIS.item(diagnosis))
    trial.label = diagnosis.label


def _reference_acc(ctx: TrialContext) -> float | None:
    """The best validation accuracy a completed trial of the study reached (underfitting is
    judged against it), or ``None`` before there is one."""
    try:
        best = ctx.retry(lambda: ctx.storage.get_best_trial(ctx.study_id))
    except ValueError:
        return None  # no completed trial yet
    curves = attrs.CURVES.get(best)
    accs = [a for a in (curves.val_acc if curves is not None else []) if math.isfinite(a)]
    if accs:
        return max(accs)
    return best.value if ctx.metric == "val_acc" else None


def lost_trial(ctx: TrialContext, trial: SpecTrial) -> TrialResult:
    """``trial`` was failed by another worker (no heartbeat): left to its retry, nothing more
    written; its result says ``lost``."""
    if ctx._writer is not None:
        ctx._writer.drain(trial.trial_id)  # its remaining writes met the same finished trial
    gone = _study_gone(ctx)  # `study delete --force` fails the trial, then deletes the study
    if gone is not None:
        raise gone
    return TrialResult(trial.number, TrialState.FAIL, "lost", None,
                       "another worker failed this trial (no heartbeat); its retry runs it",
                       dict(trial.params))


def _finish(
    ctx: TrialContext,
    trial: SpecTrial,
    state: TrialState,
    outcome: str,
    value: float | None,
    error: str | None,
) -> bool:
    """Record how the trial ended; False if another worker had already failed it as lost."""
    if not _record_end(ctx, trial, outcome, error):
        return False
    values = None if value is None else [value]
    tid = trial.trial_id

    def write() -> bool:
        try:
            return bool(ctx.storage.set_trial_state_values(tid, state, values))
        except optuna.exceptions.UpdateFinishedTrialError:
            # Finished already: by an earlier attempt of this write whose answer was lost (then
            # it holds what we wrote), or by another worker that failed it as lost.
            now = ctx.storage.get_trial(tid)
            return now.state == state and now.values == values

    return bool(ctx.retry(write))


def _record_end(ctx: TrialContext, trial: SpecTrial, outcome: str, error: str | None) -> bool:
    """Everything a finished trial carries but its state: its last reports and curves, outcome,
    error and diagnosis. False if another worker had already failed it as lost."""
    try:
        trial.store_curves()
        trial.flush()  # every report and curves write is in storage before the state changes
        trial.set_user_attr(*attrs.OUTCOME.item(outcome))
        if error is not None:
            trial.set_user_attr(*attrs.ERROR.item(error))
        try:
            _record_diagnosis(trial, ctx)
        except optuna.exceptions.UpdateFinishedTrialError:
            raise
        except Exception as e:  # a diagnosis must never turn a finished trial into a crash
            trial.set_user_attr(*attrs.DIAGNOSIS_ERROR.item(f"{type(e).__name__}: {e}"))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return True
