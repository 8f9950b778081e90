"""The trial an objective receives in a tunesvc worker: an Optuna ``Trial`` held to the spec.

A plain ``objective(trial)`` runs unmodified on a :class:`SpecTrial`. With tunesvc's pruner (or
none), reports and curves go through the worker's background writer
(:mod:`tunesvc.worker._writer`) and the pruner decides on what the trial holds in memory, so the
training loop never waits on the database between epochs. Optuna's own pruners read the trial
through Optuna's ``Trial``, so with them every report is written before it returns.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from tunesvc._errors import ObjectiveError
from tunesvc.curves import Curves
from tunesvc.pruning import Decision
from tunesvc.spec import ChoiceParam, Direction, ParamSpec, RangeParam, check_agreement
from tunesvc.storage import attrs
from tunesvc.worker._events import WorkerEvent

if TYPE_CHECKING:
    from tunesvc.worker._context import TrialContext

_Trial = optuna.trial.Trial


class SpecTrial(_Trial):
    """An Optuna trial that holds the objective to the study spec and records pruning
    decisions (see the module docstring)."""

    def __init__(self, study: optuna.Study, trial_id: int, ctx: TrialContext) -> None:
        super().__init__(study, trial_id)
        # The worker's own storage, not the study's cache of it: the queue created this trial
        # in SQL, and Optuna's cache records params only for trials it has read.
        self.storage = ctx.storage
        self._ctx = ctx
        self._tid = trial_id
        self._reported: dict[int, float] = {}
        self.curves: Curves | None = None
        self._curves_stored = 0
        self._curves_stored_at = -math.inf
        self.decision: Decision | None = None
        self.label: str | None = None
        """The label of the diagnosis recorded when the trial ended."""
        self.mismatch: ObjectiveError | None = None
        """The first suggestion that disagreed with the spec: the spec, not this trial, is
        wrong, so the run stops and the trial goes back to the queue (see run_trial)."""
        # With no pruner, or one the worker asks itself, nothing reads this trial back from
        # storage while it runs: its writes can go through the background writer.
        self._background = ctx.board is not None or isinstance(
            study.pruner, optuna.pruners.NopPruner
        )

    def _check(self, name: str, distribution: BaseDistribution) -> None:
        declared = self._ctx.spec.params.get(name)
        try:
            if declared is not None:
                check_agreement(name, declared, distribution)
            elif self._ctx.spec.sampler == "grid":
                raise ObjectiveError(
                    f"param {name!r}: the objective suggests it but the grid spec does not "
                    "declare it; add it to [params] with points or values"
                )
        except ObjectiveError as e:
            self.mismatch = self.mismatch or e  # kept: the objective may catch what it raises
            raise

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        self._check(name, FloatDistribution(low, high, step=step, log=log))
        return float(self._ctx.retry(lambda: _Trial.suggest_float(self, name, low, high,
                                                                  step=step, log=log)))

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        self._check(name, IntDistribution(low, high, step=step, log=log))
        return int(self._ctx.retry(lambda: _Trial.suggest_int(self, name, low, high, step=step,
                                                              log=log)))

    def suggest_categorical(  # type: ignore[override]
        self, name: str, choices: Sequence[CategoricalChoiceType]
    ) -> CategoricalChoiceType:
        self._check(name, CategoricalDistribution(choices))
        value: CategoricalChoiceType = self._ctx.retry(
            lambda: _Trial.suggest_categorical(self, name, choices)
        )
        return value

    def suggest_spec_param(self, name: str, param: ParamSpec) -> Any:
        """Suggest ``name`` as the spec declares it (a structured objective's params)."""
        if isinstance(param, ChoiceParam):
            return self.suggest_categorical(name, list(param.values))
        assert isinstance(param, RangeParam)
        if param.is_int:
            step = 1 if param.step is None else int(param.step)
            return self.suggest_int(name, int(param.low), int(param.high), step=step,
                                    log=param.log)
        return self.suggest_float(name, param.low, param.high, step=param.step, log=param.log)

    def report(self, value: float, step: int) -> None:
        if not self._background:
            self._ctx.retry(lambda: _Trial.report(self, value, step))
        else:
            value, step = _report_args(value, step)
            if step in self._reported:
                warnings.warn(
                    f"The reported value is ignored because this step={step} is already "
                    "reported.",
                    stacklevel=2,
                )
                return
            self._ctx.writer().report(self._tid, step, value)
        self._reported.setdefault(step, float(value))
        self._ctx.emit(WorkerEvent("epoch", self._ctx.worker, self.number, epoch=step))

    def flush(self) -> None:
        """Wait until this trial's reports and curves are in storage (see :mod:`_writer`)."""
        if self._ctx._writer is not None:
            self._ctx._writer.flush(self._tid)

    def set_user_attr(self, key: str, value: Any) -> None:
        self._ctx.retry(lambda: _Trial.set_user_attr(self, key, value))

    def record(self, item: tuple[str, Any]) -> None:
        """A user attribute tunesvc records while training (``attrs.X.item(value)``): through
        the background writer when reports go there too (see the module docstring), else at
        once."""
        key, value = item
        if self._background:
            self._ctx.writer().set_user_attr(self._tid, key, value)
        else:
            self.set_user_attr(key, value)

    def store_curves(self, *, every_s: float = 0.0) -> None:
        """Write the curves to the trial's user attribute if they grew and ``every_s`` passed
        since the last write. The pruner reads them from this trial object, never from the
        database, so fewer writes change no decision."""
        if self.curves is None or len(self.curves) == self._curves_stored:
            return
        now = time.monotonic()
        if now - self._curves_stored_at < every_s:
            return
        self.record(attrs.CURVES.item(self.curves))
        self._curves_stored, self._curves_stored_at = len(self.curves), now

    @property
    def trial_id(self) -> int:
        """The trial's id in the storage."""
        return self._tid

    @property
    def early_stopped(self) -> bool:
        return self.decision is not None and self.decision.action == "early_stop"

    @property
    def reported(self) -> dict[int, float]:
        """What the trial reported so far, by step."""
        return dict(self._reported)

    def best_reported(self, direction: Direction) -> float | None:
        values = [v for v in self._reported.values() if math.isfinite(v)]
        if not values:
            return None
        return max(values) if direction == "maximize" else min(values)

    def frozen(self) -> FrozenTrial:
        """This running trial as a FrozenTrial, from what it holds (no database read)."""
        user_attrs = dict(self.user_attrs)
        if self.curves is not None:
            user_attrs.update([attrs.CURVES.item(self.curves)])
        return FrozenTrial(
            number=self.number,
            state=TrialState.RUNNING,
            value=None,
            values=None,
            datetime_start=self.datetime_start,
            datetime_complete=None,
            params=self.params,
            distributions=self.distributions,
            user_attrs=user_attrs,
            system_attrs={},
            intermediate_values=dict(self._reported),
            trial_id=self._tid,
        )

    def should_prune(self) -> bool:
        """Whether to stop this trial: pruned, or early-stopped (see :attr:`early_stopped`).
        A pruner that decides on in-memory curves is asked by the worker on this trial's
        values and curves; any other is asked through Optuna."""
        board = self._ctx.board
        if board is None:
            return bool(self._ctx.retry(lambda: _Trial.should_prune(self)))
        decision = board.decide(self._reported, self.curves, self._ctx.direction,
                                num_classes=attrs.NUM_CLASSES.get(self))
        if decision.action != "continue":
            self.decision = decision
            self.record(attrs.DIAGNOSIS.item(decision.diagnosis))
        return bool(decision.action != "continue")


def _report_args(value: Any, step: Any) -> tuple[float, int]:
    """``trial.report``'s arguments checked as Optuna checks them."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"The `value` argument is of type '{type(value)}' but supposed to be a float."
        ) from None
    try:
        step = int(step)
    except (TypeError, ValueError):
        raise TypeError(
            f"The `step` argument is of type '{type(step)}' but supposed to be an int."
        ) from None
    if step < 0:
        raise ValueError(f"`step={step}` must be non-negative.")
    return value, step
