"""Running one trial of a tunesvc study: claim it, train it, record how it ended.

Every trial of a tunesvc study is created at ``study create`` time as a WAITING trial with fixed
params (the grid's cells, or the seeded random draws). A worker claims one with an atomic
WAITING -> RUNNING transition in the database, so two workers never run the same cell and the
study-wide budget is exact however many workers join.

While it runs a trial, a worker beats for it (see :mod:`tunesvc.worker._heartbeat`); a trial whose
worker dies is failed by another worker and queued again on the same slot. Database calls made
here are retried while the database is away. A stop request (SIGINT, SIGTERM) interrupts the
objective only; the interrupted trial is marked FAIL and queued again, so none stays RUNNING.
"""

from __future__ import annotations

import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from tunesvc._errors import ObjectiveError, TunesvcError
from tunesvc.curves._curves import CURVES_ATTR, DIAGNOSIS_ATTR, OUTCOME_ATTR, Curves, EpochRecord
from tunesvc.pruning._pruner import NUM_CLASSES_ATTR
from tunesvc.spec._objective import Objective
from tunesvc.spec._spec import ChoiceParam, Direction, ParamSpec, RangeParam, StudySpec
from tunesvc.worker._heartbeat import (
    HEARTBEAT_INTERVAL_S,
    RETRY_OF_ATTR,
    SLOT_ATTR,
    WORKER_ATTR,
    DatabaseHealth,
    Heartbeat,
    fail_lost_trials,
    heartbeat_ages,
    is_duplicate_retry,
    is_transient,
    requeue,
    requeue_orphans,
    retry_db,
)
from tunesvc.worker._writer import TrialWriter

ERROR_ATTR = "error"
REASON_ATTR = "reason"
"""User attribute: why training ended before its epochs (divergence or an early stop)."""
STUDY_NOTE_EVERY_S = 30.0
"""Least seconds between two rewrites of the study's dashboard note by one worker."""
CURVES_EVERY_S = 2.0
"""Least seconds between two writes of a running trial's curves (live views lag this much)."""

__all__ = ["ERROR_ATTR", "RETRY_OF_ATTR", "SLOT_ATTR", "WORKER_ATTR"]


class StopRequest:
    """A worker's stop request (SIGINT/SIGTERM): it interrupts the objective if one runs,
    else the worker claims nothing more. Set from a signal handler in the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self.in_objective = False

    def request(self) -> None:
        self.requested = True
        # Only the objective is interrupted: a claim or the recording of a result runs to its
        # end, however many signals arrive, so no trial is left half-written or RUNNING.
        if self.in_objective:
            raise KeyboardInterrupt


@dataclass(frozen=True)
class WorkerEvent:
    """What a worker reports to whoever displays progress (sent between processes)."""

    kind: Literal["claimed", "epoch", "finished", "waiting"]
    worker: int
    trial: int | None = None
    epoch: int | None = None
    result: TrialResult | None = None
    device: str | None = None
    direction: str | None = None


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
    worker: int = 0
    heartbeat_s: float = HEARTBEAT_INTERVAL_S
    health: DatabaseHealth = field(
        default_factory=lambda: DatabaseHealth(2 * HEARTBEAT_INTERVAL_S)
    )
    stop: StopRequest = field(default_factory=StopRequest)
    study_note_at: float = -math.inf
    on_event: Callable[[WorkerEvent], None] | None = None
    _writer: TrialWriter | None = field(default=None, repr=False)

    def writer(self) -> TrialWriter:
        """This worker's background writer of reports and curves (started on first use)."""
        if self._writer is None:
            self._writer = TrialWriter(self.storage, self.retry)
        return self._writer

    def close_writer(self) -> None:
        """Flush the writer and end its thread (a later :meth:`writer` starts a new one)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def emit(self, event: WorkerEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def retry(self, call: Callable[[], Any]) -> Any:
        return retry_db(call, health=self.health)


@dataclass
class TrialResult:
    number: int
    state: TrialState
    outcome: str
    value: float | None
    error: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


def claim_trial(ctx: TrialContext) -> int | None:
    """Atomically move one WAITING trial to RUNNING; its trial id, or None when none is left.

    The heartbeat is recorded before the claim, so a worker killed right after claiming still
    leaves a trial that other workers see go stale. With nothing left to claim, the worker
    queues the retries that dead workers failed to queue (:func:`requeue_orphans`).
    """
    fail_lost_trials(ctx.study, ctx.health)
    swept = False
    while True:
        trials = ctx.retry(lambda: ctx.study.get_trials(deepcopy=False))
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        if not waiting:
            if not swept and _requeue_orphans(ctx, trials):
                swept = True
                continue
            return None
        for frozen in sorted(waiting, key=lambda t: t.number):
            trial_id = _claim(ctx, frozen)
            if trial_id is not None:
                return trial_id
        # Every trial we saw was taken by another worker meanwhile: look again.


def _requeue_orphans(ctx: TrialContext, trials: list[FrozenTrial]) -> bool:
    if not ctx.health.settled():
        return False  # just back from an outage: other workers may not have caught up yet
    try:
        return bool(requeue_orphans(ctx.study, ctx.storage, trials, grace_s=2 * ctx.heartbeat_s,
                                    health=ctx.health))
    except Exception as e:
        if not is_transient(e):
            raise
        ctx.health.failed()
        return False


def _claim(ctx: TrialContext, frozen: FrozenTrial) -> int | None:
    def claim() -> int | None:
        trial_id = ctx.storage.get_trial_id_from_study_id_trial_number(
            ctx.study_id, frozen.number
        )
        ctx.storage.record_heartbeat(trial_id)
        try:
            if not ctx.storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                return None
        except optuna.exceptions.UpdateFinishedTrialError:
            return None
        return trial_id

    trial_id: int | None = ctx.retry(claim)
    if trial_id is not None and ctx.retry(lambda: is_duplicate_retry(ctx.study, frozen)):
        # A second retry of one attempt (queued by a sweep and by the late worker): the
        # lower-numbered one runs; this one ends here, never run.
        tid = trial_id

        def end() -> None:
            ctx.storage.set_trial_user_attr(tid, OUTCOME_ATTR, "duplicate")
            ctx.storage.set_trial_state_values(tid, TrialState.FAIL)

        try:
            ctx.retry(end)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # an earlier attempt of end() was committed
        return None
    if trial_id is not None:
        where = {"host": socket.gethostname(), "pid": os.getpid(), "device": ctx.device,
                 "worker": ctx.worker}
        ctx.retry(lambda: ctx.storage.set_trial_user_attr(trial_id, WORKER_ATTR, where))
    return trial_id


def others_running(ctx: TrialContext) -> bool:
    """Whether other workers still run trials that beat: one of them may yet be lost and
    queued again, so an idle worker stays to run it."""
    running = ctx.retry(lambda: ctx.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    if not running:
        return False
    ages = ctx.retry(lambda: heartbeat_ages(ctx.storage, [t._trial_id for t in running]))
    return bool(ages)


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


_Trial = optuna.trial.Trial


class SpecTrial(_Trial):
    """An Optuna trial that holds the objective to the study spec and records pruning decisions.

    A plain ``objective(trial)`` receives one of these and runs unmodified.

    With tunesvc's pruner (or none), reports and curves are written by the worker's background
    writer (:mod:`tunesvc.worker._writer`): the pruner reads this trial from the object
    itself, so the training loop never waits on the database between epochs. Optuna's own
    pruners read the trial through Optuna's ``Trial``, so with them every report is written
    before it returns.
    """

    def __init__(self, study: optuna.Study, trial_id: int, ctx: TrialContext) -> None:
        from tunesvc.pruning._pruner import LearningCurvePruner

        super().__init__(study, trial_id)
        self._ctx = ctx
        self._tid = trial_id
        self._reported: dict[int, float] = {}
        self.curves: Curves | None = None
        self._curves_stored = 0
        self._curves_stored_at = -math.inf
        self.decision: Any = None
        self._background = isinstance(
            study.pruner, LearningCurvePruner | optuna.pruners.NopPruner
        )

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
            self._ctx._writer.flush()

    def set_user_attr(self, key: str, value: Any) -> None:
        self._ctx.retry(lambda: _Trial.set_user_attr(self, key, value))

    def _record_attr(self, key: str, value: Any) -> None:
        """A user attribute tunesvc records while training: through the background writer when
        reports go there too (see the class docstring), else at once."""
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
        self._record_attr(CURVES_ATTR, self.curves.to_json())
        self._curves_stored, self._curves_stored_at = len(self.curves), now

    @property
    def early_stopped(self) -> bool:
        return self.decision is not None and self.decision.action == "early_stop"

    def best_reported(self, direction: Direction) -> float | None:
        values = [v for v in self._reported.values() if math.isfinite(v)]
        if not values:
            return None
        return max(values) if direction == "maximize" else min(values)

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
        from tunesvc.pruning._pruner import LearningCurvePruner

        pruner = self.study.pruner
        if not isinstance(pruner, LearningCurvePruner):
            return bool(self._ctx.retry(lambda: _Trial.should_prune(self)))
        frozen = self.frozen()
        decision = self._ctx.retry(lambda: pruner.decision_for(self.study, frozen))
        if decision.action != "continue":
            self.decision = decision
            self._record_attr(DIAGNOSIS_ATTR, decision.diagnosis.to_json())
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
    from tunesvc.curves._diagnosis import diagnose, diagnose_values

    if trial.decision is not None:
        return  # the pruner's decision already carries the diagnosis
    if trial.curves is not None and len(trial.curves):
        diagnosis = diagnose(trial.curves, num_classes=trial.user_attrs.get(NUM_CLASSES_ATTR))
    else:
        values = [trial._reported[k] for k in sorted(trial._reported)]
        diagnosis = diagnose_values(values, ctx.direction)
    trial.set_user_attr(DIAGNOSIS_ATTR, diagnosis.to_json())


def _run_structured(trial: SpecTrial, ctx: TrialContext, slot: int) -> tuple[str, float | None]:
    from tunesvc.pruning._pruner import LearningCurvePruner
    from tunesvc.training._fit import fit

    assert ctx.objective.build is not None
    params = {name: _suggest(trial, name, p) for name, p in ctx.spec.params.items()}
    setup = ctx.objective.build({**ctx.objective.defaults, **params})
    num_classes = getattr(setup, "num_classes", None)
    if num_classes is not None:
        # The pruner judges the initial loss against log(num_classes) from the trial itself.
        trial.set_user_attr(NUM_CLASSES_ATTR, int(num_classes))
    trial.curves = Curves()
    metric = ctx.metric
    judges_epoch_0 = isinstance(ctx.study.pruner, LearningCurvePruner)

    def on_epoch(record: EpochRecord) -> bool:
        assert trial.curves is not None
        trial.curves.append(record)
        # One write fewer per epoch: curves go to storage at most every CURVES_EVERY_S (and
        # when the trial ends); the reported metric goes every epoch.
        trial.store_curves(every_s=CURVES_EVERY_S)
        value = getattr(record, metric)
        if value is not None and math.isfinite(value):
            trial.report(value, record.epoch)
        if record.epoch == 0 and not judges_epoch_0:
            return False  # rank-only pruners would judge an untrained model's noise
        if trial.should_prune():
            if trial.early_stopped:
                return True
            raise optuna.TrialPruned(f"pruned at epoch {record.epoch}")
        return False

    result = fit(
        setup,
        epochs=ctx.epochs,
        seed=ctx.spec.seed,
        device=ctx.device,
        metric=metric,
        on_epoch=on_epoch,
        checkpoint_path=checkpoint_path(ctx, slot),
    )
    if result.reason is not None:
        trial.set_user_attr(REASON_ATTR, result.reason)
    if result.diverged or result.value is None:
        trial.curves = result.curves  # with the evaluation where it diverged
        return "diverged", None
    return ("early_stopped" if result.stopped_early else "completed"), float(result.value)


def run_trial(ctx: TrialContext, trial_id: int) -> TrialResult:
    """Run one claimed trial to its end and record state, outcome, diagnosis and any error.

    A pruned, a diverged and a failed trial stay apart: PRUNED with outcome ``pruned``, PRUNED
    with outcome ``diverged``, FAIL with the error recorded. Ctrl-C (or a stop request) marks the
    trial FAIL (``interrupted``), queues its params again and re-raises, so no trial is left
    RUNNING. A trial that another worker failed meanwhile (its heartbeats did not arrive) is left
    to its retry: outcome ``lost``, nothing written.
    """
    queued = ctx.retry(lambda: ctx.storage.get_trial(trial_id))
    slot = int(queued.user_attrs.get(SLOT_ATTR, queued.number))
    # Params the spec does not declare are drawn per slot, so they too are the same whichever
    # worker runs the slot, and the same again on a retry.
    ctx.study.sampler = optuna.samplers.RandomSampler(seed=ctx.spec.seed * 1_000_003 + slot)
    trial = ctx.retry(lambda: SpecTrial(ctx.study, trial_id, ctx))
    ctx.emit(WorkerEvent("claimed", ctx.worker, trial.number, device=ctx.device,
                         direction=ctx.direction))
    state, outcome, value, error = TrialState.COMPLETE, "completed", None, None
    with Heartbeat(ctx.study, trial_id, interval_s=ctx.heartbeat_s, health=ctx.health):
        try:
            ctx.stop.in_objective = True
            try:
                if ctx.stop.requested:
                    raise KeyboardInterrupt
                if ctx.objective.structured:
                    outcome, value = _run_structured(trial, ctx, slot)
                    if outcome == "diverged":
                        state = TrialState.PRUNED
                else:
                    assert ctx.objective.function is not None
                    returned = ctx.objective.function(trial)
                    if returned is None or not math.isfinite(float(returned)):
                        raise ObjectiveError(
                            f"objective returned {returned!r}; expected a finite float"
                        )
                    value = float(returned)
            finally:
                ctx.stop.in_objective = False
        except optuna.TrialPruned:
            state, outcome = TrialState.PRUNED, "pruned"
            if trial.early_stopped and trial.best_reported(ctx.direction) is not None:
                # A plain objective raises TrialPruned when told to stop; stopping an
                # overfitting or plateaued trial is not a failure: it completes at its best.
                state, outcome = TrialState.COMPLETE, "early_stopped"
                value = trial.best_reported(ctx.direction)
        except KeyboardInterrupt:
            if _finish(ctx, trial, TrialState.FAIL, "interrupted", None,
                       "interrupted by the user"):
                requeue(ctx.study, queued, "interrupted", health=ctx.health)
            raise
        except optuna.exceptions.UpdateFinishedTrialError:
            return _lost(ctx, trial)
        except TunesvcError as e:
            state, outcome, error = TrialState.FAIL, "failed", str(e)
        except Exception as e:  # the user's objective raised: this trial fails, the run goes on
            state, outcome, error = TrialState.FAIL, "failed", f"{type(e).__name__}: {e}"
        if not _finish(ctx, trial, state, outcome, value, error):
            return _lost(ctx, trial)
    write_notes(ctx, trial, trial_id)
    result = TrialResult(trial.number, state, outcome, value, error, dict(trial.params))
    ctx.emit(WorkerEvent("finished", ctx.worker, trial.number, result=result))
    return result


def write_notes(ctx: TrialContext, trial: SpecTrial | None, trial_id: int | None) -> None:
    """Dashboard notes as trials finish: the trial's note and curves figure every time, the
    study's note and figures at most every ``STUDY_NOTE_EVERY_S`` (they read every trial).
    A note is for people: failing to write one warns and never fails the trial."""
    from tunesvc.presentation._notes import record_study_note, record_trial_notes

    try:
        if trial is not None and trial_id is not None:
            frozen = ctx.retry(lambda: ctx.storage.get_trial(trial_id))
            record_trial_notes(trial, frozen, study_id=ctx.study_id, artifacts=ctx.artifacts)
        now = time.monotonic()
        if trial is None or now - ctx.study_note_at >= STUDY_NOTE_EVERY_S:
            record_study_note(ctx.study)
            ctx.study_note_at = now
    except Exception as e:  # noqa: BLE001 - see docstring
        warnings.warn(f"tunesvc: dashboard note not written: {type(e).__name__}: {e}",
                      stacklevel=2)


def _lost(ctx: TrialContext, trial: SpecTrial) -> TrialResult:
    if ctx._writer is not None:
        ctx._writer.drain()  # this trial's remaining writes met the same finished trial
    return TrialResult(trial.number, TrialState.FAIL, "lost", None,
                       "another worker failed this trial (no heartbeat); its retry runs it",
                       dict(trial.params))


def _finish(
    ctx: TrialContext,
    trial: SpecTrial,
    state: TrialState,
    outcome: str,
    value: float | None,
    error: str | None,
) -> bool:
    """Record how the trial ended; False if another worker had already failed it as lost."""
    try:
        trial.store_curves()
        trial.flush()  # every report and curves write is in storage before the state changes
        trial.set_user_attr(OUTCOME_ATTR, outcome)
        if error is not None:
            trial.set_user_attr(ERROR_ATTR, error[:2000])
        try:
            _record_diagnosis(trial, ctx)
        except optuna.exceptions.UpdateFinishedTrialError:
            raise
        except Exception as e:  # a diagnosis must never turn a finished trial into a crash
            trial.set_user_attr(ERROR_ATTR + "_diagnosis", f"{type(e).__name__}: {e}")
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    attempts = 0

    def tell() -> None:
        nonlocal attempts
        attempts += 1
        # A retried tell whose first attempt was committed finds the trial finished: done.
        if state == TrialState.COMPLETE:
            ctx.study.tell(trial, value, skip_if_finished=attempts > 1)
        else:
            ctx.study.tell(trial, state=state, skip_if_finished=attempts > 1)

    try:
        ctx.retry(tell)
    except ValueError as e:
        if "Cannot tell a" in str(e):
            return False
        raise
    return True


class Budget:
    """Trials a group of worker processes may still start (``n_trials`` of one command)."""

    def take(self) -> bool:
        raise NotImplementedError

    def give_back(self) -> None:
        raise NotImplementedError


def run_loop(
    ctx: TrialContext,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    on_result: Callable[[TrialResult], None] | None = None,
    budget: Budget | None = None,
) -> list[TrialResult]:
    """Claim and run trials until the queue is empty, ``n_trials`` ran, or ``timeout`` passed.

    With the queue empty while other workers still run trials, the worker waits: should one of
    them be lost, its retry is queued and this worker runs it. ``budget`` is shared by the
    worker processes of one command. A stop request ends the loop with KeyboardInterrupt.
    """
    try:
        return _loop(ctx, n_trials, timeout, on_result, budget)
    finally:
        ctx.close_writer()


def _loop(
    ctx: TrialContext,
    n_trials: int | None,
    timeout: float | None,
    on_result: Callable[[TrialResult], None] | None,
    budget: Budget | None,
) -> list[TrialResult]:
    started = time.monotonic()
    results: list[TrialResult] = []
    waiting = False
    while n_trials is None or len(results) < n_trials:
        if ctx.stop.requested:
            raise KeyboardInterrupt
        if timeout is not None and time.monotonic() - started >= timeout:
            break
        if budget is not None and not budget.take():
            break
        trial_id = claim_trial(ctx)
        if trial_id is None:
            if budget is not None:
                budget.give_back()
            if not others_running(ctx):
                break
            if not waiting:
                ctx.emit(WorkerEvent("waiting", ctx.worker, device=ctx.device))
            waiting = True
            _sleep(ctx, min(ctx.heartbeat_s, 0.5))
            continue
        waiting = False
        result = run_trial(ctx, trial_id)
        results.append(result)
        if on_result is not None:
            on_result(result)
    if results:
        write_notes(ctx, None, None)  # the study's note as this worker leaves it
    return results


def _sleep(ctx: TrialContext, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not ctx.stop.requested and time.monotonic() < deadline:
        time.sleep(0.05)

