"""A worker's background writer: a running trial's reports and curves go to storage off the
training loop's critical path.

A reported epoch costs a database round trip or more (about 12 ms with four workers on a
2-core machine, more on a distant server); small models train an epoch in tens of
milliseconds. The training thread hands the write to this thread and goes on; the writes reach
storage in the order they were made, each retried while the database is away.

Nothing is lost or reordered: :meth:`TrialWriter.flush` waits for every write handed over so
far and raises the first error one of them met (for example
:class:`optuna.exceptions.UpdateFinishedTrialError` when another worker failed the trial as
lost). The runner flushes before it finishes a trial, so the state change comes after the
trial's last report, and the trial's next hand-over raises such an error too, so a lost trial
stops training at its next epoch. Errors are kept per trial: in a population (many trials
running in one worker) one member's lost trial never drops or fails another member's writes.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import optuna

__all__ = ["TrialWriter"]

_Write = tuple[str, int, Any, Any]
"""(kind, trial_id, key, value): kind "value" (key = step) or "attr" (key = attribute name)."""


class TrialWriter:
    """Writes intermediate values and user attributes of running trials, in order, from one
    daemon thread per worker process.

    ``retry`` wraps each storage call (the runner's retry while the database is away).
    A pending write of the same user attribute of the same trial is replaced rather than
    queued again, so a slow database sees the latest curves once, not every snapshot.
    """

    def __init__(
        self,
        storage: optuna.storages.BaseStorage,
        retry: Callable[[Callable[[], Any]], Any] = lambda call: call(),
    ) -> None:
        self._storage = storage
        self._retry = retry
        self._queue: deque[_Write] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._errors: dict[int, BaseException] = {}  # by trial id, first error each
        self._thread: threading.Thread | None = None
        self._closed = False

    def report(self, trial_id: int, step: int, value: float) -> None:
        """Queue ``trial.report(value, step)``'s write."""
        self._put(("value", trial_id, step, value), coalesce=False)

    def set_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        """Queue a user attribute's write; replaces a queued write of the same key."""
        self._put(("attr", trial_id, key, value), coalesce=True)

    def flush(self, trial_id: int | None = None) -> None:
        """Wait until every queued write is in storage; raise the first error a write of trial
        ``trial_id`` met (of any trial with ``None``).

        An error is raised once (here or by the trial's next hand-over), then forgotten; the
        trial's writes queued after it were dropped.
        """
        error = self.drain(trial_id)
        if error is not None:
            raise error

    def drain(self, trial_id: int | None = None) -> BaseException | None:
        """Like :meth:`flush`, but return the error instead of raising it."""
        with self._cond:
            while self._queue or self._busy:
                self._cond.wait()
            if trial_id is None:
                trial_id = next(iter(self._errors), None)
            return None if trial_id is None else self._errors.pop(trial_id, None)

    def close(self) -> None:
        """Wait for the queued writes, then end the thread (an error left is dropped: flush
        first to see it)."""
        self.drain()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()

    @property
    def pending(self) -> int:
        """Writes queued and not yet in storage."""
        with self._cond:
            return len(self._queue) + int(self._busy)

    def _put(self, write: _Write, *, coalesce: bool) -> None:
        with self._cond:
            error = self._errors.pop(write[1], None)
            if error is not None:
                raise error
            if self._closed:
                raise RuntimeError("TrialWriter is closed")
            if coalesce:
                for i, queued in enumerate(self._queue):
                    if queued[:3] == write[:3]:
                        self._queue[i] = write
                        return
            self._queue.append(write)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tunesvc-writer", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                write = self._queue.popleft()
                self._busy = True
            error: BaseException | None = None
            try:
                self._retry(functools.partial(self._apply, write))
            except BaseException as e:  # noqa: BLE001 - handed to the training thread
                error = e
            with self._cond:
                self._busy = False
                if error is not None:
                    trial_id = write[1]
                    self._errors.setdefault(trial_id, error)
                    # The trial is over for this worker (see flush()); other trials go on.
                    kept = [w for w in self._queue if w[1] != trial_id]
                    self._queue.clear()
                    self._queue.extend(kept)
                self._cond.notify_all()

    def _apply(self, write: _Write) -> None:
        kind, trial_id, key, value = write
        if kind == "value":
            self._storage.set_trial_intermediate_value(trial_id, key, value)
        else:
            self._storage.set_trial_user_attr(trial_id, key, value)
