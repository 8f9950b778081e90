"""Several workers on one machine: worker processes, stop signals, the progress display.

``tunesvc study run NAME --workers K`` starts K worker processes (``multiprocessing`` spawn, so
CUDA and PyTorch threads start fresh in each); every one joins the study through the database,
exactly as a worker on another machine does. They report claims, epochs and results over a
queue to this process, which shows them live or as plain lines.

SIGINT and SIGTERM stop a worker gracefully: the objective is interrupted, the trial marked
FAIL and queued again, and the worker exits (see :class:`tunesvc.worker._runner.StopRequest`). The
parent passes SIGTERM on to its workers and kills any still running after ``STOP_GRACE_S``;
their trials are then retried by the heartbeat mechanism.
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.context
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from tunesvc import _errors
from tunesvc._errors import TunesvcError
from tunesvc.worker._runner import Budget, StopRequest, TrialResult, WorkerEvent

STOP_GRACE_S = 8.0
"""Seconds the parent waits for stopping workers before killing them (the issue allows 10)."""


def worker_devices(device: str, workers: int, gpus: int) -> list[str]:
    """The device of each of ``workers`` workers: ``auto`` and ``cuda`` spread over the
    ``gpus`` visible GPUs round-robin (``auto`` is the CPU without one); anything else
    (``cpu``, ``cuda:1``) pins every worker there.

    Example::

        worker_devices("cuda", 3, gpus=2)  # ['cuda:0', 'cuda:1', 'cuda:0']
    """
    if device in ("auto", "cuda") and gpus > 0:
        return [f"cuda:{i % gpus}" for i in range(workers)]
    if device == "auto":
        return ["cpu"] * workers
    return [device] * workers


def visible_gpus() -> int:
    """GPUs this process may use; 0 without touching torch on a machine with no NVIDIA driver
    (importing torch takes seconds)."""
    if not Path("/proc/driver/nvidia/gpus").exists():
        return 0
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


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
    pool: tuple[int, int],
    device: str | None,
    timeout: float | None,
    heartbeat_s: int,
    events: Connection,
    budget: Budget | None,
) -> None:
    from tunesvc.service._studies import run_study

    _share_cores(workers=pool[1])
    # One pipe per worker, not a shared queue: a worker killed mid-message holds no lock that
    # the others need.
    try:
        run_study(name, url, device=device, timeout=timeout, pool=pool,
                  heartbeat_s=heartbeat_s, on_event=events.send, budget=budget)
    except TunesvcError as e:
        events.send(WorkerFailed(pool[0], type(e).__name__, str(e)))
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        events.close()


def run_pool(
    name: str,
    url: str,
    *,
    workers: int,
    device: str | None,
    n_trials: int | None,
    timeout: float | None,
    heartbeat_s: int,
    on_event: Callable[[WorkerEvent], None] | None = None,
    on_result: Callable[[TrialResult], None] | None = None,
) -> list[TrialResult]:
    """Run ``workers`` worker processes on study ``name`` until they all end; the results of
    their trials. Each worker picks its device from ``device`` (see :func:`worker_devices`). A
    stop signal stops them all and raises KeyboardInterrupt here."""
    mp = multiprocessing.get_context("spawn")
    budget = SharedBudget(mp, n_trials) if n_trials is not None else None
    pipes = [mp.Pipe(duplex=False) for _ in range(workers)]
    procs = [
        mp.Process(target=_worker_main, name=f"tunesvc-worker-{i}", daemon=False,
                   args=(name, url, (i, workers), device, timeout, heartbeat_s, pipes[i][1],
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


# --- progress display -------------------------------------------------------------------------


@dataclass
class _WorkerRow:
    device: str = "-"
    trial: int | None = None
    epoch: int | None = None
    state: str = "starting"


@dataclass
class ProgressDisplay:
    """Shows a run's progress: live (a table that redraws) on a terminal, else one plain line
    per finished trial; ``quiet`` shows nothing until the summary.

    Use as the ``on_event`` of :func:`tunesvc.service._studies.run_study`, inside ``with``.
    """

    live: bool = False
    quiet: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    counts: dict[str, int] = field(default_factory=dict)
    best: TrialResult | None = None
    direction: str | None = None
    workers: dict[int, _WorkerRow] = field(default_factory=dict)
    _live: Any = None

    def __enter__(self) -> ProgressDisplay:
        if self.live and not self.quiet:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._render(), console=Console(file=self.out),
                              refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(None, None, None)
            self._live = None

    def __call__(self, event: WorkerEvent) -> None:
        row = self.workers.setdefault(event.worker, _WorkerRow())
        if event.device:
            row.device = event.device
        if event.kind == "claimed":
            self.direction = event.direction or self.direction
            row.trial, row.epoch, row.state = event.trial, None, "running"
        elif event.kind == "epoch":
            row.trial, row.epoch = event.trial, event.epoch
        elif event.kind == "waiting":
            row.trial, row.epoch, row.state = None, None, "waiting for others"
        elif event.kind == "finished" and event.result is not None:
            row.trial, row.epoch, row.state = None, None, "idle"
            self._count(event.result)
            if not self.live and not self.quiet:
                print(self.line(event.result), file=self.out, flush=True)
        if self._live is not None:
            self._live.update(self._render())

    def _count(self, result: TrialResult) -> None:
        key = result.state.name.lower()
        self.counts[key] = self.counts.get(key, 0) + 1
        if result.value is None or not math.isfinite(result.value) or result.outcome == "lost":
            return
        if self.best is None or self._better(result.value, self.best.value):
            self.best = result

    def _better(self, a: float, b: float | None) -> bool:
        if b is None:
            return True
        return a < b if self.direction == "minimize" else a > b

    @staticmethod
    def line(result: TrialResult) -> str:
        value = f" value={result.value:.4g}" if result.value is not None else ""
        params = " ".join(f"{k}={_fmt(v)}" for k, v in result.params.items())
        detail = f" ({result.error})" if result.error else ""
        return (f"trial {result.number} {result.state.name.lower()} [{result.outcome}]{value} "
                f"{params}{detail}")

    def _render(self) -> Any:
        from rich.markup import escape
        from rich.table import Table

        done = ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items())) or "none yet"
        best = "-" if self.best is None else self.line(self.best)
        table = Table(title=escape(f"finished: {done}\nbest: {best}"), title_justify="left")
        for column in ("worker", "device", "trial", "epoch", "state"):
            table.add_column(column)
        for i, row in sorted(self.workers.items()):
            table.add_row(str(i), row.device, _fmt(row.trial), _fmt(row.epoch), row.state)
        return table


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return "-" if x is None else str(x)
