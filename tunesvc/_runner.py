"""Running one trial of a tunesvc study: claim it, train it, record how it ended.

Every trial of a tunesvc study is created at ``study create`` time as a WAITING trial with fixed
params (the grid's cells, or the seeded random draws). A worker claims one with an atomic
WAITING -> RUNNING transition in the database, so two workers never run the same cell and the
study-wide budget is exact however many workers join.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from tunesvc._curves import CURVES_ATTR, DIAGNOSIS_ATTR, OUTCOME_ATTR, Curves, EpochRecord
from tunesvc._errors import ObjectiveError, TunesvcError
from tunesvc._objectives import Objective
from tunesvc._spec import ChoiceParam, Direction, ParamSpec, RangeParam, StudySpec

SLOT_ATTR = "slot"
"""User attribute: the index of the queued draw (grid cell or random draw) a trial runs."""
ERROR_ATTR = "error"
RETRY_OF_ATTR = "retry_of"


@dataclass
class TrialContext:
    """What every trial of one study shares, built once per worker."""

    study: optuna.Study
    storage: optuna.storages.RDBStorage
    study_id: int
    spec: StudySpec
    objective: Objective
    direction: Direction
    metric: str
    epochs: int
    artifacts: Path
    device: str


@dataclass
class TrialResult:
    number: int
    state: TrialState
    outcome: str
    value: float | None
    error: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


def claim_trial(ctx: TrialContext) -> int | None:
    """Atomically move one WAITING trial to RUNNING; its trial id, or None when none is left."""
    while True:
        waiting = ctx.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not waiting:
            return None
        for frozen in sorted(waiting, key=lambda t: t.number):
            trial_id = ctx.storage.get_trial_id_from_study_id_trial_number(
                ctx.study_id, frozen.number
            )
            try:
                if ctx.storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                    return trial_id
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        # Every trial we saw was taken by another worker meanwhile: look again.


def _contains(outer: BaseDistribution, value: CategoricalChoiceType) -> bool:
    try:
        return bool(outer._contains(outer.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def _describe(d: BaseDistribution) -> str:
    if isinstance(d, CategoricalDistribution):
        return f"values {list(d.choices)}"
    if isinstance(d, FloatDistribution | IntDistribution):
        kind = "int" if isinstance(d, IntDistribution) else "float"
        extra = ", log" if d.log else ""
        return f"{kind} {d.low}..{d.high}{extra}"
    return repr(d)


def check_agreement(name: str, spec: ParamSpec, suggested: BaseDistribution) -> None:
    """The spec's declaration of ``name`` must lie inside what the objective suggests."""
    ok: bool
    if isinstance(spec, ChoiceParam):
        ok = all(_contains(suggested, v) for v in spec.values)
    else:
        declared = spec.distribution()
        ok = (
            type(declared) is type(suggested)
            and isinstance(suggested, FloatDistribution | IntDistribution)
            and isinstance(declared, FloatDistribution | IntDistribution)
            and declared.log == suggested.log
            and suggested.low <= declared.low
            and declared.high <= suggested.high
        )
    if not ok:
        raise ObjectiveError(
            f"param {name!r}: the spec declares {_describe(spec.distribution())} but the "
            f"objective suggests {_describe(suggested)}; make the spec's range lie inside the "
            "objective's (same type and log)"
        )


class SpecTrial(optuna.trial.Trial):
    """An Optuna trial that holds the objective to the study spec and records pruning decisions.

    A plain ``objective(trial)`` receives one of these and runs unmodified.
    """

    def __init__(self, study: optuna.Study, trial_id: int, ctx: TrialContext) -> None:
        super().__init__(study, trial_id)
        self._ctx = ctx
        self._tid = trial_id
        self._reported: dict[int, float] = {}
        self.curves: Curves | None = None
        self.decision: Any = None

    def _check(self, name: str, distribution: BaseDistribution) -> None:
        declared = self._ctx.spec.params.get(name)
        if declared is not None:
            check_agreement(name, declared, distribution)
        elif self._ctx.spec.sampler == "grid":
            raise ObjectiveError(
                f"param {name!r}: the objective suggests it but the grid spec does not declare "
                "it; add it to [params] with points or values"
            )

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        self._check(name, FloatDistribution(low, high, step=step, log=log))
        return super().suggest_float(name, low, high, step=step, log=log)

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        self._check(name, IntDistribution(low, high, step=step, log=log))
        return super().suggest_int(name, low, high, step=step, log=log)

    def suggest_categorical(  # type: ignore[override]
        self, name: str, choices: Sequence[CategoricalChoiceType]
    ) -> CategoricalChoiceType:
        self._check(name, CategoricalDistribution(choices))
        return super().suggest_categorical(name, choices)

    def report(self, value: float, step: int) -> None:
        super().report(value, step)
        self._reported.setdefault(step, float(value))

    def frozen(self) -> FrozenTrial:
        """This running trial as a FrozenTrial, from what it holds (no database read)."""
        user_attrs = dict(self.user_attrs)
        if self.curves is not None:
            user_attrs[CURVES_ATTR] = self.curves.to_json()
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
        from tunesvc._pruner import LearningCurvePruner

        pruner = self.study.pruner
        if not isinstance(pruner, LearningCurvePruner):
            return super().should_prune()
        decision = pruner.decide(self.study, self.frozen())
        if decision.action != "continue":
            self.decision = decision
            self.set_user_attr(DIAGNOSIS_ATTR, decision.diagnosis.to_json())
        return bool(decision.action != "continue")


def _suggest(trial: optuna.trial.Trial, name: str, param: ParamSpec) -> Any:
    if isinstance(param, ChoiceParam):
        return trial.suggest_categorical(name, list(param.values))
    assert isinstance(param, RangeParam)
    if param.is_int:
        step = 1 if param.step is None else int(param.step)
        return trial.suggest_int(name, int(param.low), int(param.high), step=step, log=param.log)
    return trial.suggest_float(name, param.low, param.high, step=param.step, log=param.log)


def checkpoint_path(ctx: TrialContext, slot: int) -> Path:
    """Checkpoints are keyed by slot, so a retried trial resumes where the lost one stopped."""
    return ctx.artifacts / ctx.study.study_name / f"slot-{slot}" / "checkpoint.pt"


def _record_diagnosis(trial: SpecTrial, ctx: TrialContext) -> None:
    from tunesvc._diagnosis import diagnose, diagnose_values

    if trial.decision is not None:
        return  # the pruner's decision already carries the diagnosis
    if trial.curves is not None and len(trial.curves):
        diagnosis = diagnose(trial.curves, num_classes=getattr(trial, "num_classes", None))
    else:
        values = [trial._reported[k] for k in sorted(trial._reported)]
        diagnosis = diagnose_values(values, ctx.direction)
    trial.set_user_attr(DIAGNOSIS_ATTR, diagnosis.to_json())


def _run_structured(trial: SpecTrial, ctx: TrialContext, slot: int) -> tuple[str, float | None]:
    from tunesvc._training import fit

    assert ctx.objective.build is not None
    params = {name: _suggest(trial, name, p) for name, p in ctx.spec.params.items()}
    setup = ctx.objective.build({**ctx.objective.defaults, **params})
    trial.num_classes = getattr(setup, "num_classes", None)  # type: ignore[attr-defined]
    trial.curves = Curves()
    metric = ctx.metric

    def on_epoch(record: EpochRecord) -> bool:
        assert trial.curves is not None
        trial.curves.append(record)
        trial.set_user_attr(CURVES_ATTR, trial.curves.to_json())
        value = getattr(record, metric)
        if value is not None and math.isfinite(value):
            trial.report(value, record.epoch)
        if record.epoch == 0:
            return False
        if trial.should_prune():
            if trial.decision is not None and trial.decision.action == "early_stop":
                return True
            raise optuna.TrialPruned(f"pruned at epoch {record.epoch}")
        return False

    result = fit(
        setup,
        epochs=ctx.epochs,
        seed=ctx.spec.seed,
        device=ctx.device,
        on_epoch=on_epoch,
        checkpoint_path=checkpoint_path(ctx, slot),
    )
    if result.diverged or result.value is None:
        return "diverged", None
    return ("early_stopped" if result.stopped_early else "completed"), float(result.value)


def run_trial(ctx: TrialContext, trial_id: int) -> TrialResult:
    """Run one claimed trial to its end and record state, outcome, diagnosis and any error.

    A pruned, a diverged and a failed trial stay apart: PRUNED with outcome ``pruned``, PRUNED
    with outcome ``diverged``, FAIL with the error recorded. Ctrl-C marks the trial FAIL
    (``interrupted``), queues its params again and re-raises, so no trial is left RUNNING.
    """
    queued = ctx.storage.get_trial(trial_id)
    fixed_params = dict(queued.system_attrs.get("fixed_params", {}))
    slot = int(queued.user_attrs.get(SLOT_ATTR, queued.number))
    # Params the spec does not declare are drawn per slot, so they too are the same whichever
    # worker runs the slot, and the same again on a retry.
    ctx.study.sampler = optuna.samplers.RandomSampler(seed=ctx.spec.seed * 1_000_003 + slot)
    trial = SpecTrial(ctx.study, trial_id, ctx)
    state, outcome, value, error = TrialState.COMPLETE, "completed", None, None
    try:
        if ctx.objective.structured:
            outcome, value = _run_structured(trial, ctx, slot)
            if outcome == "diverged":
                state = TrialState.PRUNED
        else:
            assert ctx.objective.function is not None
            returned = ctx.objective.function(trial)
            if returned is None or not math.isfinite(float(returned)):
                raise ObjectiveError(f"objective returned {returned!r}; expected a finite float")
            value = float(returned)
    except optuna.TrialPruned:
        state, outcome = TrialState.PRUNED, "pruned"
    except KeyboardInterrupt:
        _finish(ctx, trial, TrialState.FAIL, "interrupted", None, "interrupted by the user")
        requeue(ctx, fixed_params, slot, retry_of=trial.number)
        raise
    except TunesvcError as e:
        state, outcome, error = TrialState.FAIL, "failed", str(e)
    except Exception as e:  # the user's objective raised: this trial fails, the run goes on
        state, outcome, error = TrialState.FAIL, "failed", f"{type(e).__name__}: {e}"
    _finish(ctx, trial, state, outcome, value, error)
    return TrialResult(trial.number, state, outcome, value, error, dict(trial.params))


def _finish(
    ctx: TrialContext,
    trial: SpecTrial,
    state: TrialState,
    outcome: str,
    value: float | None,
    error: str | None,
) -> None:
    trial.set_user_attr(OUTCOME_ATTR, outcome)
    if error is not None:
        trial.set_user_attr(ERROR_ATTR, error[:2000])
    try:
        _record_diagnosis(trial, ctx)
    except Exception as e:  # a diagnosis must never turn a finished trial into a crash
        trial.set_user_attr(ERROR_ATTR + "_diagnosis", f"{type(e).__name__}: {e}")
    if state == TrialState.COMPLETE:
        ctx.study.tell(trial, value)
    else:
        ctx.study.tell(trial, state=state)


def requeue(ctx: TrialContext, params: dict[str, Any], slot: int, *, retry_of: int) -> None:
    """Queue the same params again on the same slot, as a retry of trial ``retry_of``."""
    ctx.study.enqueue_trial(params, user_attrs={SLOT_ATTR: slot, RETRY_OF_ATTR: retry_of})


def run_loop(
    ctx: TrialContext,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    on_result: Callable[[TrialResult], None] | None = None,
) -> list[TrialResult]:
    """Claim and run trials until the queue is empty, ``n_trials`` ran, or ``timeout`` passed."""
    started = time.monotonic()
    results: list[TrialResult] = []
    while n_trials is None or len(results) < n_trials:
        if timeout is not None and time.monotonic() - started >= timeout:
            break
        trial_id = claim_trial(ctx)
        if trial_id is None:
            break
        result = run_trial(ctx, trial_id)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
