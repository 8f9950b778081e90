"""What a worker's pruner knows of the study: the finished trials, kept in memory.

A pruner that decides on in-memory curves (:class:`CurvePruner`: tunesvc's
:class:`~tunesvc.pruning.LearningCurvePruner`) is asked by the worker, never by Optuna, so the
training loop never waits on the database for a decision. The worker keeps the pruner's summary of
the study's finished trials (:meth:`CurvePruner.new_board`):

- the trials this worker finished itself are added at once, so one worker running a study
  decides exactly as it did the last time it ran the same spec and seed;
- the other workers' are read in a background thread every ``REFRESH_S`` seconds while trials
  run, only what finished since the last read (:meth:`tunesvc.storage.StudyReads.finished_since`),
  never the study's queue. How old that read is goes into every decision's evidence
  (``finished_read_age_s``), so a stale ranking shows.

Only the database's transient errors are let pass by the reader (the next read catches up);
any other error is raised by the next decision, never swallowed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol, runtime_checkable

from optuna.trial import TrialState

from tunesvc.curves import Curves
from tunesvc.pruning import Decision, FinishedTrials
from tunesvc.spec import Direction
from tunesvc.worker._heartbeat import DatabaseHealth, is_transient

REFRESH_S = 2.0
"""Seconds between two background reads of other workers' finished trials."""
IDLE_S = 60.0
"""The reader stops after this long without a decision (a worker between studies)."""

ADD_CHUNK = 500
"""Finished trials the reader adds to the board per hold of its lock."""

_logger = logging.getLogger("tunesvc")

Finished = tuple[int, TrialState, Mapping[int, float]]
"""A finished trial as the board takes it: number, state, reported values by step."""
Reader = Callable[[Any], tuple[list[Finished], Any]]
"""``read(cursor) -> (trials finished since cursor, next cursor)``; ``None`` reads them all."""


@runtime_checkable
class CurvePruner(Protocol):
    """An Optuna pruner that can also decide, with its reason, on in-memory curves."""

    def new_board(self) -> FinishedTrials: ...

    def decide(
        self,
        values: Mapping[int, float],
        curves: Curves | None,
        finished: FinishedTrials,
        direction: Direction,
        *,
        num_classes: int | None = None,
    ) -> Decision: ...


class Board:
    """The study's finished trials as one worker knows them, and the decisions made on them.

    Thread-safe: the training thread decides and adds its own trials, the reader thread adds
    other workers'.
    """

    def __init__(
        self, pruner: CurvePruner, read: Reader, health: DatabaseHealth,
        *, refresh_s: float = REFRESH_S,
    ) -> None:
        self._pruner = pruner
        self._read = read
        self._health = health
        self._refresh_s = refresh_s
        self._finished = pruner.new_board()
        self._lock = threading.Lock()
        self._cursor: Any = None
        self._read_at: float | None = None
        self._used_at = time.monotonic()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def add(self, number: int, state: TrialState, values: Mapping[int, float]) -> None:
        """A trial that finished (COMPLETE or PRUNED; anything else is not ranked)."""
        with self._lock:
            self._finished.add(number, state, values)

    def decide(
        self,
        values: Mapping[int, float],
        curves: Curves | None,
        direction: Direction,
        *,
        num_classes: int | None = None,
    ) -> Decision:
        """The pruner's decision for a running trial on what this board holds now; starts the
        background reader on first use."""
        self._start()
        with self._lock:
            error, self._error = self._error, None
            if error is not None:
                raise error
            self._used_at = time.monotonic()
            decision = self._pruner.decide(values, curves, self._finished, direction,
                                           num_classes=num_classes)
            age = None if self._read_at is None else time.monotonic() - self._read_at
        if decision.action == "continue":
            return decision
        evidence = {**decision.diagnosis.evidence,
                    "finished_read_age_s": None if age is None else round(age, 1)}
        return replace(decision, diagnosis=replace(decision.diagnosis, evidence=evidence))

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=self._refresh_s + 5)
            self._thread = None

    def _start(self) -> None:
        if self._thread is None and not self._closed.is_set():
            self._thread = threading.Thread(target=self._run, name="tunesvc-board", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            if time.monotonic() - self._used_at > IDLE_S:
                break
            try:
                rows, cursor = self._read(self._cursor)
                self._health.succeeded()
            except Exception as e:
                if is_transient(e):
                    self._health.failed()  # the database is away: the next read catches up
                else:
                    _logger.warning("reading the study's finished trials failed: %s: %s",
                                    type(e).__name__, e)
                    with self._lock:
                        self._error = e
                    break
            else:
                # In chunks, the lock released between them: a first read of a big study (10,000
                # trials and more) never holds up the training thread's decision for all of it.
                for start in range(0, len(rows), ADD_CHUNK):
                    with self._lock:
                        for number, state, values in rows[start:start + ADD_CHUNK]:
                            self._finished.add(number, state, values)
                with self._lock:
                    self._cursor, self._read_at = cursor, time.monotonic()
            self._closed.wait(self._refresh_s)
        with self._lock:
            self._thread = None
