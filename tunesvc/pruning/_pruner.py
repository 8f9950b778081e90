"""The learning-curve pruner: diagnose a trial's curves, forecast where they end, prune the
hopeless and early-stop the converged.

:class:`LearningCurvePruner` decides in three steps, each a :class:`Decision` with a
:class:`~tunesvc.curves._diagnosis.Diagnosis` attached:

1. It diagnoses the trial's own curves (the four tunesvc records, or only the reported metric of
   a plain objective). ``diverged`` and ``bad_initial_loss`` are pruned at once; a label listed
   in ``early_stop`` (none by default) early-stops the trial.
2. It forecasts the reported metric to the last epoch (:mod:`tunesvc.curves._forecast`) and
   prunes the trial when even the optimistic end of the forecast stays short of the best value a
   completed trial reached (:mod:`tunesvc.pruning._policy`).
3. It early-stops a trial whose curve has as good as converged: at its recent rate it would gain
   less than ``min_gain`` by the last epoch. The trial completes with its best value.

:meth:`LearningCurvePruner.decide` is pure: it decides on the trial's values, its curves and a
:class:`~tunesvc.pruning._policy.FinishedTrials` summary the caller keeps (tunesvc's worker
feeds it the trials it finished itself at once, so one worker decides repeatably, plus what it
reads of other workers' trials). :meth:`~LearningCurvePruner.prune` is the plain Optuna door:
it keeps one summary per study, brought up to date from ``study.get_trials()`` at each call
(only trials new or unfinished since its last look are examined), and is ``True`` only for a
prune. A plain objective learns of an early stop from :func:`should_stop` and returns its best
value, so an early stop never loses a trial's value.

Example::

    study = optuna.create_study(direction="maximize", pruner=LearningCurvePruner(max_epochs=20))

    def objective(trial):
        best = 0.0
        for epoch in range(1, 21):
            accuracy = train_one_epoch_and_evaluate()
            best = max(best, accuracy)
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
            if tunesvc.should_stop(trial):
                break  # converged: complete with the best epoch
        return best
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, Protocol, runtime_checkable

import optuna
from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner, NopPruner
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tunesvc._errors import SpecError
from tunesvc.curves import (
    LABELS,
    Curves,
    Diagnosis,
    DiagnosisThresholds,
    diagnose,
    diagnose_values,
)
from tunesvc.pruning._policy import FinishedTrials, PolicySettings, decide_policy
from tunesvc.storage import attrs

Action = Literal["continue", "prune", "early_stop"]
Direction = Literal["maximize", "minimize"]

PRUNE_AT_ONCE = ("diverged", "bad_initial_loss")
"""Labels that prune a trial as soon as they appear."""

REMOVED_SETTINGS = ("min_epochs", "reduction_factor", "min_trials", "rank_staleness_s")
"""Settings of the rung-ranking pruner before issue 11; a spec naming one is told to drop it."""


@dataclass(frozen=True)
class Decision:
    """What the pruner decided for a trial at its last reported step, and why.

    A ``prune`` or ``early_stop`` carries the reason in ``diagnosis.reason`` and the numbers in
    ``diagnosis.evidence``: ``decided_at_epoch`` and ``decided_by`` (``"diagnosis"`` or
    ``"forecast"``); for the forecast also ``best_so_far``, ``forecast`` (the point forecast of
    the final value), ``forecast_optimistic`` (the end of its interval the decision used),
    ``horizon``, ``bar`` (the best completed trial's value), ``rank`` (where the optimistic end
    would rank among the completed trials) and ``completed_trials``.
    """

    action: Action
    diagnosis: Diagnosis


class LearningCurvePruner(BasePruner):
    """Prune diverged and hopeless trials, early-stop converged ones, from their learning curves.

    Works in any Optuna study: :meth:`prune` is true only for a prune; an objective that calls
    :func:`should_stop` after ``should_prune()`` completes converged trials early. tunesvc's
    worker calls :meth:`decide` itself with its own :class:`FinishedTrials`.

    Args:
        max_epochs: The last step a trial reports. ``None``: the last step of the longest
            completed trial (then the first trial always runs to its end).
        min_gain: Early-stop a trial whose best value would improve by less than this fraction
            of it by the last epoch, as its forecast says (0.0025: 0.23 points at 90% accuracy,
            reported in percent or as a fraction alike); the first trial of a study, which no
            completed trial precedes, at ten times this. 0 never early-stops on the forecast.
        early_stop: Diagnosis labels that early-stop a trial as soon as they appear (e.g.
            ``("overfitting",)``). None by default: on real curves a ``plateau`` often rises
            again when the learning rate decays, so the forecast decides instead.
        num_classes: Classes of a cross-entropy objective, for ``bad_initial_loss``; a trial's
            ``num_classes`` user attribute (or :meth:`decide`'s argument) takes precedence.
            ``None``: skip that check.
        thresholds: Thresholds of the diagnoses; :class:`DiagnosisThresholds` defaults.
    """

    def __init__(
        self,
        *,
        max_epochs: int | None = None,
        min_gain: float = 0.0025,
        early_stop: Sequence[str] = (),
        num_classes: int | None = None,
        thresholds: DiagnosisThresholds | None = None,
    ) -> None:
        self._settings = PolicySettings(max_epochs=max_epochs, min_gain=min_gain)
        if isinstance(early_stop, str) or not all(isinstance(x, str) for x in early_stop):
            raise ValueError(f"early_stop: expected a list of labels, got {early_stop!r}")
        allowed = [x for x in LABELS if x not in PRUNE_AT_ONCE]
        for label in early_stop:
            if label not in allowed:
                raise ValueError(
                    f"early_stop: expected labels among {', '.join(allowed)}, got {label!r}"
                )
        if num_classes is not None:
            _check_int("num_classes", num_classes, 2)
        if thresholds is not None and not isinstance(thresholds, DiagnosisThresholds):
            raise ValueError(f"thresholds: expected DiagnosisThresholds, got {thresholds!r}")
        self._early_stop = tuple(early_stop)
        self._num_classes = num_classes
        self._thresholds = thresholds or DiagnosisThresholds()
        self._studies: weakref.WeakKeyDictionary[Study, _StudyBoard] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    @property
    def settings(self) -> PolicySettings:
        """``max_epochs`` and ``min_gain``."""
        return self._settings

    def new_board(self) -> FinishedTrials:
        """An empty summary of one study's finished trials, for :meth:`decide`."""
        return FinishedTrials()

    def decide(
        self,
        values: Mapping[int, float],
        curves: Curves | None,
        finished: FinishedTrials,
        direction: Direction,
        *,
        num_classes: int | None = None,
    ) -> Decision:
        """Decide for a running trial at its last reported step, with the diagnosis behind it.

        Pure: it reads nothing but its arguments. ``values`` are the reported values by step;
        ``curves`` the trial's four curves when tunesvc recorded them (they are what is
        diagnosed; else ``values`` are); ``finished`` the study's finished trials as the caller
        knows them.
        """
        diagnosis = self._diagnose(values, curves, direction, num_classes)
        if not values:
            return Decision("continue", diagnosis)
        step = max(values)
        if diagnosis.label in PRUNE_AT_ONCE or diagnosis.label in self._early_stop:
            action: Action = "prune" if diagnosis.label in PRUNE_AT_ONCE else "early_stop"
            at = {**diagnosis.evidence, "decided_at_epoch": step, "decided_by": "diagnosis"}
            return Decision(action, replace(diagnosis, evidence=at))
        verdict = decide_policy(values, finished, direction, self._settings)
        if verdict.action == "continue":
            return Decision("continue", diagnosis)
        evidence = {
            **diagnosis.evidence,
            **verdict.evidence,
            "decided_at_epoch": step,
            "decided_by": "forecast",
        }
        reason = f"{verdict.reason}; curves: {diagnosis.reason}"
        return Decision(
            verdict.action, replace(diagnosis, reason=reason, epoch=step, evidence=evidence)
        )

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        """``True`` when :meth:`decision_for` says prune (an early stop is not a prune: see
        :func:`should_stop`)."""
        return self.decision_for(study, trial).action == "prune"

    def decision_for(self, study: Study, trial: FrozenTrial) -> Decision:
        """Decide for ``trial`` of ``study`` at its last reported step, against the study's
        finished trials as ``study.get_trials()`` has them now, and remember the decision for
        :func:`should_stop`."""
        board = self._board(study)
        direction: Direction = (
            "maximize" if study.direction == StudyDirection.MAXIMIZE else "minimize"
        )
        num_classes = attrs.NUM_CLASSES.get(trial)
        with board.lock:
            board.refresh(study)
            decision = self.decide(
                trial.intermediate_values, attrs.curves_of(trial), board.finished, direction,
                num_classes=num_classes,
            )
            board.last[trial.number] = decision
        return decision

    def last_decision(self, study: Study, number: int) -> Decision | None:
        """The decision :meth:`decision_for` last made for trial ``number`` of ``study`` while
        it runs, or ``None``."""
        with self._lock:
            board = self._studies.get(study)
        if board is None:
            return None
        with board.lock:
            return board.last.get(number)

    def _board(self, study: Study) -> _StudyBoard:
        with self._lock:
            board = self._studies.get(study)
            if board is None:
                board = self._studies[study] = _StudyBoard()
            return board

    def _diagnose(
        self,
        values: Mapping[int, float],
        curves: Curves | None,
        direction: Direction,
        num_classes: int | None,
    ) -> Diagnosis:
        if curves is not None and len(curves) > 0:
            classes = num_classes if num_classes is not None else self._num_classes
            return diagnose(curves, num_classes=classes, thresholds=self._thresholds)
        steps = sorted(values)
        return diagnose_values(
            [values[s] for s in steps], direction, steps=steps, thresholds=self._thresholds
        )

    def __getstate__(self) -> dict[str, Any]:
        # The per-study summaries are a cache of storage: a copy starts without them.
        state = dict(self.__dict__)
        del state["_studies"], state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._studies = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()


@runtime_checkable
class HoldsDecision(Protocol):
    """A trial that keeps the pruner's last decision on it (tunesvc's worker trial)."""

    decision: Decision | None


def should_stop(trial: optuna.trial.Trial) -> bool:
    """Whether the study's :class:`LearningCurvePruner` early-stopped ``trial`` at its last
    ``should_prune()``: the objective should then return its best value (the trial completes).

    Call it right after ``trial.should_prune()`` at each step; if that was not called for this
    trial yet, it is called here. ``False`` with any other pruner.

    Example::

        trial.report(accuracy, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
        if tunesvc.should_stop(trial):
            return best_accuracy
    """
    if isinstance(trial, HoldsDecision):  # tunesvc's worker asked the pruner itself
        return trial.decision is not None and trial.decision.action == "early_stop"
    pruner = trial.study.pruner
    if not isinstance(pruner, LearningCurvePruner):
        return False
    decision = pruner.last_decision(trial.study, trial.number)
    if decision is None:
        trial.should_prune()
        decision = pruner.last_decision(trial.study, trial.number)
    return decision is not None and decision.action == "early_stop"


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")


_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class _StudyBoard:
    """One study's :class:`FinishedTrials` as this process last read it, and the last decision
    per running trial.

    Trials ``0 .. next_number - 1`` have been looked at; ``pending`` are those of them that had
    not finished then. Finished trials never change, so a refresh examines only the new and the
    pending ones.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: FinishedTrials = field(default_factory=FinishedTrials)
    next_number: int = 0
    pending: set[int] = field(default_factory=set)
    last: dict[int, Decision] = field(default_factory=dict)

    def refresh(self, study: Study) -> None:
        """Bring ``finished`` up to the study's trials in storage (call with ``lock`` held)."""
        # Unfiltered, this is Optuna's list as is: sorted by number, numbers 0..n-1, so it is
        # indexed by number.
        trials = study.get_trials(deepcopy=False)
        if any(trials[i].number != i for i in (0, len(trials) - 1) if 0 <= i < len(trials)):
            by_number = {t.number: t for t in trials}  # not numbered densely: look each up
        else:
            by_number = None
        to_check = sorted(self.pending) + list(range(self.next_number, len(trials)))
        self.next_number = max(self.next_number, len(trials))
        for number in to_check:
            t = by_number.get(number) if by_number is not None else trials[number]
            if t is None:
                continue
            if t.state in _FINISHED:
                self.finished.add(number, t.state.name, t.intermediate_values)
            if t.state.is_finished():
                self.pending.discard(number)
                self.last.pop(number, None)
            else:
                self.pending.add(number)


def make_pruner(
    name: str, settings: Mapping[str, Any] | None = None, *, epochs: int | None = None
) -> BasePruner:
    """The pruner a spec names, built from its ``[pruner]`` table.

    ``name`` is ``"diagnostic"`` (:class:`LearningCurvePruner`; settings are its arguments plus
    any :class:`DiagnosisThresholds` field; ``epochs``, the study's epochs per trial, is its
    ``max_epochs`` unless the table sets one), ``"median"`` (``n_startup_trials``,
    ``n_warmup_steps``, ``interval_steps``, ``n_min_trials``), ``"hyperband"``
    (``min_resource``, ``max_resource``, ``reduction_factor``, ``bootstrap_count``) or
    ``"none"`` (no settings).

    Raises :class:`SpecError` naming the field, e.g. ``pruner.max_epochs: expected an int >= 1
    or None, got -3``.

    Example::

        make_pruner("diagnostic", {"min_gain": 0.001, "window": 5}, epochs=30)
    """
    settings = dict(settings or {})
    try:
        if name == "diagnostic":
            return _make_diagnostic(settings, epochs)
        if name == "median":
            _only(
                settings, {"n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"}
            )
            for key, low in (
                ("n_startup_trials", 0),
                ("n_warmup_steps", 0),
                ("interval_steps", 1),
                ("n_min_trials", 1),
            ):
                if key in settings:
                    _check_int(key, settings[key], low)
            return MedianPruner(**settings)
        if name == "hyperband":
            _only(
                settings, {"min_resource", "max_resource", "reduction_factor", "bootstrap_count"}
            )
            for key, low in (("min_resource", 1), ("reduction_factor", 2), ("bootstrap_count", 0)):
                if key in settings:
                    _check_int(key, settings[key], low)
            if "max_resource" in settings and settings["max_resource"] != "auto":
                _check_int("max_resource", settings["max_resource"], 1)
            return HyperbandPruner(**settings)
        if name == "none":
            _only(settings, set())
            return NopPruner()
    except ValueError as e:
        raise SpecError(f"pruner.{e}") from None
    raise SpecError(f"pruner: expected one of diagnostic, median, hyperband, none, got {name!r}")


def _only(settings: Mapping[str, Any], allowed: set[str]) -> None:
    for key in settings:
        if key not in allowed:
            expected = ", ".join(sorted(allowed)) or "no settings for this pruner"
            raise ValueError(f"{key}: unknown setting; expected {expected}")


def _make_diagnostic(settings: dict[str, Any], epochs: int | None) -> LearningCurvePruner:
    for key in REMOVED_SETTINGS:
        if key in settings:
            raise ValueError(
                f"{key}: no longer a setting (the pruner forecasts each curve instead of ranking "
                "trials at rungs); remove it from the [pruner] table"
            )
    threshold_names = {f.name for f in fields(DiagnosisThresholds)}
    own = {"max_epochs", "min_gain", "early_stop", "num_classes"}
    _only(settings, own | threshold_names)
    if epochs is not None:
        settings.setdefault("max_epochs", epochs)
    thresholds = DiagnosisThresholds(**{k: v for k, v in settings.items() if k in threshold_names})
    kwargs = {k: v for k, v in settings.items() if k in own}
    if "early_stop" in kwargs and isinstance(kwargs["early_stop"], list):
        kwargs["early_stop"] = tuple(kwargs["early_stop"])
    return LearningCurvePruner(**kwargs, thresholds=thresholds)
