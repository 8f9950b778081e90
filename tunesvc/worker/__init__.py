"""Running a study: claim a trial, train it, beat for it, write its reports, record its end;
worker processes on one machine. The worker prints nothing: progress goes to an ``on_event``
callable and finished trials to :class:`Observer`\\ s."""

from __future__ import annotations

from tunesvc.worker._devices import visible_gpus, worker_devices
from tunesvc.worker._events import Budget, Observer, TrialResult, WorkerEvent
from tunesvc.worker._loop import WorkerOptions, WorkerRun, heartbeat_setting, work
from tunesvc.worker._pool import run_pool

__all__ = [
    "Budget",
    "Observer",
    "TrialResult",
    "WorkerEvent",
    "WorkerOptions",
    "WorkerRun",
    "heartbeat_setting",
    "run_pool",
    "visible_gpus",
    "work",
    "worker_devices",
]
