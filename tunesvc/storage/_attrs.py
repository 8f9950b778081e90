"""tunesvc's schema on top of Optuna's: every user attribute tunesvc writes on a trial or a
study, with one typed reader and writer each. Nothing else in tunesvc spells a key.

Everything is a plain Optuna user attribute (JSON), so optuna-dashboard shows it and Optuna's
own migrations keep it. An :class:`Attr` reads from anything that has ``user_attrs`` (a
``FrozenTrial``, a ``Trial``, a ``Study``) or from the mapping itself, and gives ``None`` when
the attribute is absent or not of its shape (a study or trial tunesvc did not write).

Example::

    curves = CURVES.get(frozen_trial)           # Curves | None
    trial.set_user_attr(*OUTCOME.item("pruned"))
    storage.set_trial_user_attr(trial_id, *DIAGNOSIS.item(diagnosis))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar, get_args

from optuna.trial import FrozenTrial, TrialState

from tunesvc._errors import SpecError, TunesvcError
from tunesvc.curves._curves import Curves
from tunesvc.curves._diagnosis import Diagnosis
from tunesvc.spec._spec import StudySpec, parse_spec_dict

T = TypeVar("T")

Outcome = Literal[
    "completed", "early_stopped", "pruned", "diverged", "failed", "interrupted", "lost",
    "duplicate",
]
"""How a trial ended in tunesvc's words (its Optuna state says less):

- ``completed``: COMPLETE, trained to its last epoch;
- ``early_stopped``: COMPLETE at its best value, stopped by the pruner (overfitting, plateau);
- ``pruned``: PRUNED by the pruner;
- ``diverged``: PRUNED, its loss became NaN or infinite;
- ``failed``: FAIL, the objective raised (the error is in ``error``);
- ``interrupted``: FAIL, stopped by Ctrl-C or SIGTERM; queued again on its slot;
- ``lost``: FAIL, its worker stopped beating; queued again on its slot;
- ``duplicate``: FAIL, never run: a second retry of one attempt (older studies only).
"""
OUTCOMES: tuple[str, ...] = get_args(Outcome)
RETRIED_OUTCOMES = ("interrupted", "lost")
"""Outcomes whose slot is run again."""


class HasUserAttrs(Protocol):
    @property
    def user_attrs(self) -> dict[str, Any]: ...


Holder = HasUserAttrs | Mapping[str, Any]


@dataclass(frozen=True)
class Attr(Generic[T]):
    """One user attribute: its ``key``, how its JSON value is read (``load``, which returns
    ``None`` or raises for a value of the wrong shape) and written (``dump``)."""

    key: str
    load: Callable[[Any], T | None]
    dump: Callable[[T], Any]

    def get(self, holder: Holder) -> T | None:
        """The attribute's value, or ``None`` when absent or malformed."""
        attrs = holder if isinstance(holder, Mapping) else holder.user_attrs
        raw = attrs.get(self.key)
        if raw is None:
            return None
        try:
            return self.load(raw)
        except (TypeError, ValueError, KeyError, SpecError):
            return None

    def item(self, value: T) -> tuple[str, Any]:
        """``(key, JSON value)``, for ``set_user_attr(*attr.item(value))``."""
        return self.key, self.dump(value)


def _int(x: Any) -> int | None:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return int(x) if float(x).is_integer() else None


def _str(x: Any) -> str | None:
    return x if isinstance(x, str) else None


def _outcome(x: Any) -> str | None:
    return x if isinstance(x, str) and x in OUTCOMES else None


def _dict(x: Any) -> dict[str, Any] | None:
    return dict(x) if isinstance(x, Mapping) else None


def _strs(x: Any) -> list[str] | None:
    return [str(v) for v in x] if isinstance(x, list) else None


def _ints(x: Any) -> list[int] | None:
    if not isinstance(x, list):
        return None
    out = [_int(v) for v in x]
    return None if any(v is None for v in out) else [v for v in out if v is not None]


def _same(x: T) -> T:
    return x


@dataclass(frozen=True)
class Where:
    """Where a trial runs: host, process id, device and the worker's index on its machine."""

    host: str | None = None
    pid: int | None = None
    device: str | None = None
    worker: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "device": self.device,
                "worker": self.worker}

    @classmethod
    def from_json(cls, data: Any) -> Where:
        if not isinstance(data, Mapping):
            raise TypeError("not a mapping")
        return cls(_str(data.get("host")), _int(data.get("pid")), _str(data.get("device")),
                   _int(data.get("worker")))


@dataclass(frozen=True)
class Attempt:
    """An earlier attempt at a slot: its trial number, why it ended (``lost`` or
    ``interrupted``) and where it ran."""

    trial: int
    reason: str
    worker: Where | None = None

    def to_json(self) -> dict[str, Any]:
        return {"trial": self.trial, "reason": self.reason,
                "worker": None if self.worker is None else self.worker.to_json()}

    @classmethod
    def from_json(cls, data: Any) -> Attempt:
        if not isinstance(data, Mapping) or _int(data.get("trial")) is None:
            raise TypeError("not an attempt")
        worker = data.get("worker")
        return cls(int(data["trial"]), str(data.get("reason", "lost")),
                   Where.from_json(worker) if isinstance(worker, Mapping) else None)


def _history(x: Any) -> list[Attempt] | None:
    if not isinstance(x, list):
        return None
    out = []
    for item in x:
        try:
            out.append(Attempt.from_json(item))
        except TypeError:
            continue
    return out


# --- on a trial ---------------------------------------------------------------------------------

CURVES: Attr[Curves] = Attr("curves", Curves.from_json, Curves.to_json)
"""The trial's learning curves (see :class:`~tunesvc.curves.Curves`)."""
DIAGNOSIS: Attr[Diagnosis] = Attr("diagnosis", Diagnosis.from_json, Diagnosis.to_json)
"""What the trial's curves say: label, reason, epoch, evidence, advice."""
OUTCOME: Attr[str] = Attr("outcome", _outcome, _same)
"""How the trial ended (see :data:`Outcome`)."""
ERROR: Attr[str] = Attr("error", _str, lambda text: text[:2000])
"""Why a failed trial failed, in one line (at most 2,000 characters)."""
DIAGNOSIS_ERROR: Attr[str] = Attr("error_diagnosis", _str, lambda text: text[:2000])
"""Why the diagnosis of a finished trial could not be made (a bug; the trial stands)."""
REASON: Attr[str] = Attr("reason", _str, _same)
"""Why training ended before its epochs (divergence or an early stop)."""
NUM_CLASSES: Attr[int] = Attr("num_classes", _int, int)
"""Classes of a cross-entropy objective (chance level for the diagnoses)."""
SLOT: Attr[int] = Attr("slot", _int, int)
"""Which draw of the study's plan the trial runs (a grid cell, a random draw); a retry runs
its slot again."""
RETRY_OF: Attr[int] = Attr("retry_of", _int, int)
"""On a retry: the number of the trial it runs again."""
RETRIED_AS: Attr[int] = Attr("retried_as", _int, int)
"""On a lost or interrupted trial: the number of its retry (set with the retry, atomically)."""
RETRY_HISTORY: Attr[list[Attempt]] = Attr(
    "retry_history", _history, lambda attempts: [a.to_json() for a in attempts])
"""On a retry: every earlier attempt at its slot, oldest first."""
WORKER: Attr[Where] = Attr("worker", Where.from_json, Where.to_json)
"""Where the trial runs or ran."""

# --- on a study ---------------------------------------------------------------------------------

UID: Attr[str] = Attr("uid", _str, _same)
"""A random id drawn when the study is created: its artifacts (checkpoints) live under it, so a
new study of the same name never meets an old one's files."""
SPEC: Attr[StudySpec] = Attr("spec", parse_spec_dict, StudySpec.to_dict)
"""The validated study spec, so any machine can run the study by name."""
METRIC: Attr[str] = Attr("metric", _str, _same)
"""The name of the trials' value (``val_acc``, ...), for axis titles and optuna-dashboard."""
STAGE: Attr[str] = Attr("stage", _str, _same)
"""The recipe stage that made the study: coarse, refine or final."""
PARENT: Attr[str] = Attr("parent", _str, _same)
"""The study this one was refined from."""
REFINE_NOTES: Attr[list[str]] = Attr("refine_notes", _strs, list)
"""What refining changed, one line per param."""
REFINED_FROM: Attr[list[int]] = Attr("refined_from", _ints, list)
"""The parent's trial numbers a refined study narrowed around."""
FROM_TRIAL: Attr[int] = Attr("from_trial", _int, int)
"""The trial whose configuration the recipe's final stage trains longer."""
CHECK: Attr[dict[str, Any]] = Attr("check", _dict, dict)
"""The pre-tuning checks' report the recipe ran before its coarse study."""



def curves_of(trial: Holder) -> Curves | None:
    """The curves tunesvc recorded on ``trial``, or ``None`` for a trial it did not train."""
    return CURVES.get(trial)


def best_of(trials: Iterable[FrozenTrial], direction: str) -> FrozenTrial | None:
    """The best trial, as tunesvc means it everywhere: the COMPLETE trial with the best finite
    value for ``direction`` (the lowest number on ties), or ``None``."""
    sign = 1.0 if direction == "maximize" else -1.0
    best: FrozenTrial | None = None
    for t in trials:
        if t.state != TrialState.COMPLETE or t.value is None or not math.isfinite(t.value):
            continue
        if best is None or sign * t.value > sign * float(best.value or 0.0) or (
                t.value == best.value and t.number < best.number):
            best = t
    return best


def study_spec(study: HasUserAttrs, name: str) -> StudySpec:
    """Study ``name``'s spec; a :class:`TunesvcError` for a study tunesvc did not create."""
    spec = SPEC.get(study)
    if spec is None:
        raise TunesvcError(f"study {name!r} was not created by tunesvc (no spec); browse it "
                           "with optuna-dashboard instead")
    return spec
