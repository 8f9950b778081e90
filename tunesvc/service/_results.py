"""What the service returns: plain dataclasses the CLI prints as a table or as JSON."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from optuna.trial import TrialState

from tunesvc.storage import TrialRow, attrs


@dataclass(frozen=True)
class TrialInfo:
    """One trial as users see it. ``diagnosis`` is the JSON form of
    :class:`~tunesvc.curves.Diagnosis` (label, reason, advice, epoch, evidence)."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    outcome: str | None = None
    diagnosis: dict[str, Any] | None = None
    error: str | None = None
    duration_s: float | None = None
    epochs: int = 0
    checkpoint: str | None = None
    """The slot's checkpoint file, when asked for (``study best``) and one exists."""

    @property
    def label(self) -> str | None:
        """The diagnosis label, if the trial has one."""
        return None if self.diagnosis is None else str(self.diagnosis.get("label"))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StudySummary:
    """A study in a few numbers: ``planned`` slots, trials by state (``WAITING`` counts what is
    still queued) and the best completed trial."""

    name: str
    direction: str
    objective: str
    sampler: str
    planned: int
    counts: dict[str, int]
    best: TrialInfo | None
    done: int = 0
    """Slots finished: a slot whose trial was lost or interrupted and ran again counts once."""

    @property
    def finished(self) -> int:
        return self.done

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["best"] = None if self.best is None else self.best.to_json()
        return out


@dataclass(frozen=True)
class RunningTrial:
    """A RUNNING trial: where it runs, how far it got, how long since its last heartbeat
    (``None``: it never beat, e.g. started by plain Optuna)."""

    number: int
    host: str | None
    pid: int | None
    device: str | None
    epoch: int
    heartbeat_age_s: float | None
    params: dict[str, Any]


@dataclass(frozen=True)
class StudyDetail:
    summary: StudySummary
    spec: dict[str, Any]
    diagnoses: dict[str, int]
    running: list[TrialInfo]
    storage: str
    workers: list[RunningTrial] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**self.summary.to_json(), "spec": self.spec, "diagnoses": self.diagnoses,
                "running": [t.to_json() for t in self.running], "storage": self.storage,
                "workers": [asdict(w) for w in self.workers]}


@dataclass(frozen=True)
class RunSummary:
    study: str
    ran: list[TrialInfo]
    remaining: int
    best: TrialInfo | None
    already_finished: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"study": self.study, "ran": [t.to_json() for t in self.ran],
                "remaining": self.remaining, "already_finished": self.already_finished,
                "best": None if self.best is None else self.best.to_json(),
                "counts": self.counts}


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def row_info(row: TrialRow, *, params: dict[str, Any] | None = None) -> TrialInfo:
    """A trial read by :class:`~tunesvc.storage.StudyReads` as users see it; ``params`` stand
    in for a queued trial's, which it records only when it runs."""
    duration = None
    if row.datetime_start is not None and row.datetime_complete is not None:
        duration = (row.datetime_complete - row.datetime_start).total_seconds()
    elif row.datetime_start is not None and row.state == TrialState.RUNNING:
        duration = (datetime.now() - row.datetime_start).total_seconds()
    diagnosis = attrs.DIAGNOSIS.get(row.user_attrs)
    outcome, error = attrs.OUTCOME.get(row.user_attrs), attrs.ERROR.get(row.user_attrs)
    if row.state == TrialState.FAIL and outcome in (None, "lost") and \
            attrs.SLOT.get(row.user_attrs) is not None:
        outcome = "lost"
        error = error or _lost_error(row.user_attrs, attrs.RETRIED_AS.get(row.user_attrs))
    return TrialInfo(
        number=row.number,
        state=row.state.name,
        value=_finite(row.value),
        params=dict(row.params) or dict(params or {}),
        outcome=outcome,
        diagnosis=None if diagnosis is None else diagnosis.to_json(),
        error=error,
        duration_s=None if duration is None else round(duration, 3),
        epochs=max(row.last_step or 0, 0),
    )


def _lost_error(t: attrs.Holder, retried_as: int | None) -> str:
    where = attrs.WORKER.get(t)
    worker = "" if where is None else f" (pid {where.pid} on {where.host})"
    retry = "" if retried_as is None else f"; its slot ran again as trial {retried_as}"
    return f"lost: its worker{worker} stopped sending heartbeats{retry}"
