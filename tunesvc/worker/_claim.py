"""Claiming a queued trial: an atomic WAITING -> RUNNING transition in the database, so two
workers never run the same cell and the study-wide budget is exact however many workers join.

The heartbeat is recorded before the claim, so a worker killed right after claiming still leaves
a trial that other workers see go stale. With nothing left to claim, the worker queues the
retries that dead workers failed to queue (:func:`~tunesvc.worker._heartbeat.requeue_orphans`).
"""

from __future__ import annotations

import os
import socket

import optuna
from optuna.trial import FrozenTrial, TrialState

from tunesvc.storage import attrs
from tunesvc.storage._heartbeats import running_heartbeats
from tunesvc.worker._context import TrialContext
from tunesvc.worker._heartbeat import (
    fail_lost_trials,
    is_duplicate_retry,
    is_transient,
    requeue_orphans,
)


def claim_trial(ctx: TrialContext) -> int | None:
    """Atomically move one WAITING trial to RUNNING; its trial id, or None when none is left."""
    fail_lost_trials(ctx.storage, ctx.study, ctx.study_id, grace_s=2 * ctx.heartbeat_s,
                     max_retries=ctx.max_retries, health=ctx.health)
    swept = False
    while True:
        trials = ctx.retry(lambda: ctx.study.get_trials(deepcopy=False))
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        if not waiting:
            if not swept and _requeue_orphans(ctx, trials):
                swept = True
                continue
            return None
        for frozen in sorted(waiting, key=lambda t: t.number):
            trial_id = _claim(ctx, frozen)
            if trial_id is not None:
                return trial_id
        # Every trial we saw was taken by another worker meanwhile: look again.


def _requeue_orphans(ctx: TrialContext, trials: list[FrozenTrial]) -> bool:
    if not ctx.health.settled():
        return False  # just back from an outage: other workers may not have caught up yet
    try:
        return bool(requeue_orphans(ctx.study, ctx.storage, trials, grace_s=2 * ctx.heartbeat_s,
                                    max_retries=ctx.max_retries, health=ctx.health))
    except Exception as e:
        if not is_transient(e):
            raise
        ctx.health.failed()
        return False


def _claim(ctx: TrialContext, frozen: FrozenTrial) -> int | None:
    def claim() -> int | None:
        trial_id = ctx.storage.get_trial_id_from_study_id_trial_number(
            ctx.study_id, frozen.number
        )
        ctx.storage.record_heartbeat(trial_id)
        try:
            if not ctx.storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                return None
        except optuna.exceptions.UpdateFinishedTrialError:
            return None
        return trial_id

    trial_id: int | None = ctx.retry(claim)
    if trial_id is not None and ctx.retry(lambda: is_duplicate_retry(ctx.study, frozen)):
        # A second retry of one attempt (queued by a sweep and by the late worker): the
        # lower-numbered one runs; this one ends here, never run.
        tid = trial_id

        def end() -> None:
            ctx.storage.set_trial_user_attr(tid, *attrs.OUTCOME.item("duplicate"))
            ctx.storage.set_trial_state_values(tid, TrialState.FAIL)

        try:
            ctx.retry(end)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # an earlier attempt of end() was committed
        return None
    if trial_id is not None:
        where = attrs.Where(socket.gethostname(), os.getpid(), ctx.device, ctx.worker)
        ctx.retry(lambda: ctx.storage.set_trial_user_attr(trial_id, *attrs.WORKER.item(where)))
    return trial_id


def others_running(ctx: TrialContext) -> bool:
    """Whether other workers still run trials that beat: one of them may yet be lost and
    queued again, so an idle worker stays to run it."""
    running = ctx.retry(lambda: running_heartbeats(ctx.storage, ctx.study_id))
    return any(age is not None for _number, age in running.values())
