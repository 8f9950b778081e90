"""Claiming work: a trial from the study's lazy queue, in one transaction
(:meth:`tunesvc.storage.StudyQueue.claim`), so two workers never run the same slot and the
study-wide budget is exact however many workers join.

Before claiming, the worker fails and queues again the trials whose workers stopped beating.
With nothing left to claim, it queues the retries that dead workers failed to queue (orphans)
and looks once more.
"""

from __future__ import annotations

import logging
import os
import socket

from tunesvc.storage import Claim, attrs
from tunesvc.worker._context import TrialContext
from tunesvc.worker._heartbeat import fail_lost_trials, is_transient

_logger = logging.getLogger("tunesvc")

ORPHAN_AFTER_S = 30.0
"""A trial failed as interrupted whose retry is still missing this long after the grace period
past its last heartbeat is an orphan: the worker that failed it died before it queued the retry
(lost trials are failed and queued again in one transaction and are never orphaned). It is
queued again by the next worker that finds the queue empty; queueing is idempotent."""


def claim_trial(ctx: TrialContext) -> Claim | None:
    """The next trial this worker runs, now RUNNING with its heartbeat; ``None`` when the
    queue is empty."""
    fail_lost_trials(ctx.queue, grace_s=2 * ctx.heartbeat_s, max_retries=ctx.max_retries,
                     health=ctx.health)
    where = attrs.Where(socket.gethostname(), os.getpid(), ctx.device, ctx.worker).to_json()
    claimed: Claim | None = ctx.retry(lambda: ctx.queue.claim(ctx.plan, where))
    if claimed is None and _requeue_orphans(ctx):
        claimed = ctx.retry(lambda: ctx.queue.claim(ctx.plan, where))
    return claimed


def _requeue_orphans(ctx: TrialContext) -> bool:
    """Queue the retries that dead workers failed to queue; whether any was queued."""
    if not ctx.health.settled():
        return False  # just back from an outage: other workers may not have caught up yet
    try:
        orphans = ctx.queue.orphans(2 * ctx.heartbeat_s + ORPHAN_AFTER_S, ctx.max_retries)
        for orphan in orphans:
            retry = ctx.queue.requeue(orphan.trial_id, orphan.reason)
            _logger.warning("trial %d was failed (%s) by a worker that died before queueing "
                            "its retry; queued again as trial %d", orphan.number,
                            orphan.reason, retry.number)
    except Exception as e:
        if not is_transient(e):
            raise
        ctx.health.failed()
        return False
    return bool(orphans)


def others_running(ctx: TrialContext) -> bool:
    """Whether other workers still run trials that beat: one of them may yet be lost and
    queued again, so an idle worker stays to run it."""
    return bool(ctx.retry(ctx.reads.others_running))
