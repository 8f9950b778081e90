"""What a worker tells the world: events for a progress display, results, and observers.

A worker knows no display and no dashboard. It sends :class:`WorkerEvent`\\ s to one
``on_event`` callable (the CLI's progress display, possibly in another process), and tells its
:class:`Observer`\\ s when a trial finished and when the study changed; tunesvc's dashboard
notes are one such observer (:class:`tunesvc.presentation.DashboardNotes`). Observers run in a
thread of their own, off the training path (see :class:`ObserverThread`).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from optuna.trial import TrialState

from tunesvc.storage import StudyRef

_logger = logging.getLogger("tunesvc")


@dataclass
class TrialResult:
    """How one trial a worker ran ended."""

    number: int
    state: TrialState
    outcome: str
    value: float | None
    error: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerEvent:
    """What a worker reports to whoever displays progress (sent between processes)."""

    kind: Literal["claimed", "epoch", "finished", "waiting", "note"]
    worker: int
    trial: int | None = None
    epoch: int | None = None
    result: TrialResult | None = None
    device: str | None = None
    direction: str | None = None
    message: str | None = None


class Observer(Protocol):
    """Told when a trial finished and when the study changed (after a run of trials). Called
    from the worker's observer thread, never from the training loop; must be picklable, since
    worker processes receive their observers from the command that starts them."""

    def trial_finished(self, ref: StudyRef, trial_id: int) -> None: ...

    def study_changed(self, ref: StudyRef, *, final: bool) -> None: ...


class StopRequest:
    """A worker's stop request (SIGINT/SIGTERM): it interrupts the objective if one runs,
    else the worker claims nothing more. Set from a signal handler in the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self.in_objective = False

    def request(self) -> None:
        self.requested = True
        # Only the objective is interrupted: a claim or the recording of a result runs to its
        # end, however many signals arrive, so no trial is left half-written or RUNNING.
        if self.in_objective:
            raise KeyboardInterrupt


class Budget:
    """Trials a group of worker processes may still start (``n_trials`` of one command)."""

    def take(self) -> bool:
        raise NotImplementedError

    def give_back(self) -> None:
        raise NotImplementedError


_Call = tuple[str, int | None, bool]


class ObserverThread:
    """Runs observers in one daemon thread, in the order the worker calls them, so that the
    training loop never waits for a note or a figure. An observer that raises is logged and
    skipped: a note is for people and never fails a trial. :meth:`close` waits for what is
    queued (the study's final note) before the worker process ends.
    """

    def __init__(self, ref: StudyRef, observers: Sequence[Observer]) -> None:
        self._ref = ref
        self._observers = list(observers)
        self._queue: queue.Queue[_Call | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def trial_finished(self, trial_id: int) -> None:
        self._put(("trial", trial_id, False))

    def study_changed(self, *, final: bool = False) -> None:
        self._put(("study", None, final))

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _put(self, call: _Call) -> None:
        if not self._observers:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tunesvc-observers",
                                            daemon=True)
            self._thread.start()
        self._queue.put(call)

    def _run(self) -> None:
        while (call := self._queue.get()) is not None:
            kind, trial_id, final = call
            for observer in self._observers:
                try:
                    if kind == "trial" and trial_id is not None:
                        observer.trial_finished(self._ref, trial_id)
                    else:
                        observer.study_changed(self._ref, final=final)
                except Exception as e:  # noqa: BLE001 - see the class docstring
                    _logger.warning("%s could not record trial %s: %s: %s",
                                    type(observer).__name__, trial_id, type(e).__name__, e)
