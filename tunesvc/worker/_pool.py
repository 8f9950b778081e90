"""Several workers on one machine: worker processes and stop signals.

``tunesvc study run NAME --workers K`` starts K worker processes (``multiprocessing`` spawn, so
CUDA and PyTorch threads start fresh in each); every one joins the study through the database,
exactly as a worker on another machine does. They report claims, epochs and results over a
pipe each to this process, which hands them to its ``on_event``.

SIGINT and SIGTERM stop a worker gracefully: the objective is interrupted, the trial marked
FAIL and queued again, and the worker exits (see :class:`tunesvc.worker._events.StopRequest`).
The parent passes SIGTERM on to its workers and kills any still running after ``STOP_GRACE_S``;
their trials are then retried by the heartbeat mechanism. A worker whose parent dies (even by
``kill -9``) stops the same way within ``PARENT_CHECK_S``: its trial is queued again.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from types import FrameType

from tunesvc import _errors
from tunesvc._errors import TunesvcError
from tunesvc.storage import open_storage
from tunesvc.worker._events import Budget, TrialResult, WorkerEvent
from tunesvc.worker._loop import WorkerOptions, work

STOP_GRACE_S = 8.0
"""Seconds the parent waits for stopping workers before killing them."""
PARENT_CHECK_S = 0.5
"""How often a worker process checks that its parent still lives."""


class SharedBudget(Budget):
    """``n_trials`` shared by the worker processes of one command."""

    def __init__(self, ctx: multiprocessing.context.SpawnContext, n: int) -> None:
        self._left = ctx.Value("i", n)

    def take(self) -> bool:
        with self._left.get_lock():
            if self._left.value <= 0:
                return False
            self._left.value -= 1
            return True

    def give_back(self) -> None:
        with self._left.get_lock():
            self._left.value += 1


@dataclass(frozen=True)
class WorkerFailed:
    """A worker process ended with a tunesvc error (sent to the parent)."""

    worker: int
    error_class: str
    message: str


def _share_cores(workers: int) -> None:
    """K workers on one machine split its cores: torch's default of one thread per core in
    every process oversubscribes the CPU and slows CPU training many times over."""
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _worker_main(
    name: str,
    url: str,
    options: WorkerOptions,
    events: Connection,
    budget: Budget | None,
) -> None:
    _share_cores(workers=options.workers)
    _stop_when_orphaned()
    storage = None
    # One pipe per worker, not a shared queue: a worker killed mid-message holds no lock that
    # the others need.
    try:
        storage = open_storage(url)
        work(storage, name, url, options, on_event=_sender(events), budget=budget)
    except TunesvcError as e:
        _send(events, WorkerFailed(options.index, type(e).__name__, str(e)))
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        if storage is not None:
            storage.engine.dispose()
        events.close()


def _stop_when_orphaned() -> None:
    """Stop this worker gracefully (its trial queued again) once its parent is gone: a thread
    watches the parent's pid and sends this process the SIGTERM a parent would have passed on."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="tunesvc-parent-watch", daemon=True).start()


def _sender(events: Connection) -> Callable[[WorkerEvent], None]:
    def send(event: WorkerEvent) -> None:
        _send(events, event)

    return send


def _send(events: Connection, message: object) -> None:
    """Send to the parent; a parent gone mid-run is no error of the trial's: the parent watch
    stops this worker."""
    try:
        events.send(message)
    except OSError:
        pass


def run_pool(
    name: str,
    url: str,
    options: WorkerOptions,
    *,
    on_event: Callable[[WorkerEvent], None] | None = None,
    on_result: Callable[[TrialResult], None] | None = None,
) -> list[TrialResult]:
    """Run ``options.workers`` worker processes on study ``name`` until they all end; the
    results of their trials. They share ``options.n_trials``; each picks its device from
    ``options.device`` (see :func:`~tunesvc.worker._devices.worker_devices`). A stop signal
    stops them all and raises KeyboardInterrupt here."""
    mp = multiprocessing.get_context("spawn")
    workers = options.workers
    budget = SharedBudget(mp, options.n_trials) if options.n_trials is not None else None
    pipes = [mp.Pipe(duplex=False) for _ in range(workers)]
    procs = [
        mp.Process(target=_worker_main, name=f"tunesvc-worker-{i}", daemon=False,
                   args=(name, url, replace(options, index=i, n_trials=None), pipes[i][1],
                         budget))
        for i in range(workers)
    ]
    readers = [reader for reader, _ in pipes]
    results: list[TrialResult] = []
    failures: list[WorkerFailed] = []
    stopping: list[float] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if not stopping:
            stopping.append(time.monotonic())
        for p in procs:
            if p.pid is not None and p.is_alive() and signum == signal.SIGTERM:
                os.kill(p.pid, signal.SIGTERM)  # SIGINT from a terminal reached them already

    in_main = threading.current_thread() is threading.main_thread()
    previous = ({s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
                if in_main else {})
    try:
        for p in procs:
            p.start()
        for _, writer in pipes:
            writer.close()  # the workers hold them; a reader sees EOF when its worker ends
        while readers:
            if stopping and time.monotonic() - stopping[0] > STOP_GRACE_S:
                for p in procs:
                    if p.is_alive():
                        p.kill()
            for reader in wait(readers, timeout=0.2):
                assert isinstance(reader, Connection)
                try:
                    event = reader.recv()
                except (EOFError, OSError, pickle.UnpicklingError):
                    readers.remove(reader)  # that worker ended (or died mid-message)
                    continue
                if isinstance(event, WorkerFailed):
                    failures.append(event)
                    continue
                if event.kind == "finished" and event.result is not None:
                    results.append(event.result)
                    if on_result is not None:
                        on_result(event.result)
                if on_event is not None:
                    on_event(event)
        for p in procs:
            p.join()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    if stopping:
        raise KeyboardInterrupt
    if failures and not results:
        first = failures[0]
        error_class = getattr(_errors, first.error_class, TunesvcError)
        raise error_class(first.message)
    crashed = [p.exitcode for p in procs if p.exitcode]
    if len(crashed) == len(procs) and not results:
        raise TunesvcError(f"all {len(procs)} workers ended with an error (exit codes "
                           f"{', '.join(map(str, crashed))}); their tracebacks are above")
    return results
