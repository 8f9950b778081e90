"""What the service returns: plain dataclasses the CLI prints as a table or as JSON."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from tunesvc.storage import attrs


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

    @property
    def finished(self) -> int:
        return sum(self.counts.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL"))

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


def trial_info(t: FrozenTrial) -> TrialInfo:
    """``t`` as users see it."""
    duration = None
    if t.datetime_start is not None and t.datetime_complete is not None:
        duration = (t.datetime_complete - t.datetime_start).total_seconds()
    elif t.datetime_start is not None and t.state == TrialState.RUNNING:
        duration = (datetime.now() - t.datetime_start).total_seconds()
    curves = attrs.CURVES.get(t)
    epochs = len(curves) - 1 if curves is not None else len(t.intermediate_values)
    diagnosis = attrs.DIAGNOSIS.get(t)
    return TrialInfo(
        number=t.number,
        state=t.state.name,
        value=_finite(t.value) if t.values is not None else None,
        # A queued trial's draw sits in Optuna's enqueue attribute until it runs.
        params=dict(t.params or t.system_attrs.get("fixed_params", {})),
        outcome=attrs.OUTCOME.get(t),
        diagnosis=None if diagnosis is None else diagnosis.to_json(),
        error=attrs.ERROR.get(t),
        duration_s=None if duration is None else round(duration, 3),
        epochs=max(epochs, 0),
    )

