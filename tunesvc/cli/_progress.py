"""The progress display of ``tunesvc study run``: a live table on a terminal, else one plain
line per finished trial (with its outcome and diagnosis label)."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from tunesvc.worker import TrialResult, WorkerEvent


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
        elif event.kind == "note" and event.message and not self.quiet:
            print(event.message, file=sys.stderr, flush=True)  # one line, beside the table
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
        label = f", {result.label}" if result.label else ""
        return (f"trial {result.number} {result.state.name.lower()} [{result.outcome}{label}]"
                f"{value} {params}{detail}")

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
