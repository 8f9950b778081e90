"""What every trial of one study shares in one worker process, built once: the storage, the
study, its resolved spec and objective, the device, the heartbeat, the background writer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from tunesvc.spec import Direction, Objective, Plan, ResolvedStudy, StudySpec
from tunesvc.storage import StudyQueue, StudyReads, checkpoint_path
from tunesvc.worker._board import Board
from tunesvc.worker._events import ObserverThread, StopRequest, WorkerEvent
from tunesvc.worker._heartbeat import HEARTBEAT_INTERVAL_S, DatabaseHealth, retry_db
from tunesvc.worker._writer import TrialWriter


@dataclass
class TrialContext:
    """What every trial of one study shares, built once per worker."""

    study: optuna.Study
    storage: optuna.storages.RDBStorage
    study_id: int
    resolved: ResolvedStudy
    queue: StudyQueue
    """Where this worker claims trials and queues retries."""
    reads: StudyReads
    plan: Plan
    """Which params each slot runs."""
    study_dir: Path
    """The study's own artifacts folder (see :func:`tunesvc.storage.study_folder`)."""
    device: str
    worker: int = 0
    heartbeat_s: float = HEARTBEAT_INTERVAL_S
    max_retries: int = 3
    health: DatabaseHealth = field(
        default_factory=lambda: DatabaseHealth(2 * HEARTBEAT_INTERVAL_S)
    )
    stop: StopRequest = field(default_factory=StopRequest)
    on_event: Callable[[WorkerEvent], None] | None = None
    observers: ObserverThread | None = None
    board: Board | None = None
    """The finished trials a pruner that decides on in-memory curves ranks against; ``None``
    with any other pruner (Optuna's read the study themselves)."""
    _writer: TrialWriter | None = field(default=None, repr=False)

    @property
    def spec(self) -> StudySpec:
        return self.resolved.spec

    @property
    def objective(self) -> Objective:
        return self.resolved.objective

    @property
    def direction(self) -> Direction:
        return self.resolved.direction

    @property
    def metric(self) -> str:
        return self.resolved.metric

    @property
    def epochs(self) -> int:
        return self.resolved.epochs

    def writer(self) -> TrialWriter:
        """This worker's background writer of reports and curves (started on first use)."""
        if self._writer is None:
            self._writer = TrialWriter(self.storage, self.retry)
        return self._writer

    def close_writer(self) -> None:
        """Flush the writer and end its thread (a later :meth:`writer` starts a new one)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def emit(self, event: WorkerEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def retry(self, call: Callable[[], Any]) -> Any:
        return retry_db(call, health=self.health)

    def checkpoint_path(self, slot: int) -> Path:
        """Where slot ``slot``'s checkpoint lives: keyed by slot, so a retried trial resumes
        where the lost one stopped; in the study's own folder, so it belongs to this study of
        this storage and to no other, ever."""
        return checkpoint_path(self.study_dir, slot)

