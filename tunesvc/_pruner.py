"""The learning-curve pruner: diagnose a trial's curves, stop the hopeless, rank the rest.

:class:`LearningCurvePruner` decides in three steps, each a :class:`Decision` with a
:class:`~tunesvc.curves._diagnosis.Diagnosis` attached:

1. It diagnoses the trial's own curves (the four tunesvc records, or only the reported metric of
   a plain objective). ``diverged`` and ``bad_initial_loss`` are pruned at once.
2. A label in ``early_stop`` (``overfitting`` and ``plateau`` by default) early-stops the trial:
   it will not get better, so it completes with its best value rather than being pruned.
3. At rungs (epochs ``min_epochs * reduction_factor**k``) the trial's best value so far is ranked
   against every finished trial's best value up to the same rung; outside the top
   ``1 / reduction_factor`` it is pruned, as in asynchronous successive halving.

The pruner keeps nothing on the instance. What it reads about other trials comes from storage;
finished trials never change, so their values per rung are memoized per :class:`optuna.Study`
object in this process (a cache of storage, so two workers with the same storage decide alike).
Between rungs a decision reads only the trial itself; at a rung it reads the study's finished
trials through Optuna's cache and touches only those finished since the last rung.

With ``rank_staleness_s > 0`` (tunesvc's workers use 2 s) a rung decision does not read at all
after the first: a background thread re-reads the finished trials every ``rank_staleness_s``
while decisions are being made, and the decision ranks against the latest read. Optuna's
cache re-reads every unfinished trial, tunesvc's queued ones included, so that read costs tens
of milliseconds or more; this way it overlaps training.

Example::

    study = optuna.create_study(direction="maximize", pruner=LearningCurvePruner())
    # a plain objective that calls trial.report(acc, epoch) and trial.should_prune()
"""

from __future__ import annotations

import bisect
import math
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner, NopPruner
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tunesvc._errors import SpecError
from tunesvc.curves._diagnosis import (
    LABELS,
    Diagnosis,
    DiagnosisThresholds,
    diagnose,
    diagnose_values,
)
from tunesvc.storage._attrs import curves_of

NUM_CLASSES_ATTR = "num_classes"
"""Trial user attribute with the number of classes of a cross-entropy objective, if known."""

Action = Literal["continue", "prune", "early_stop"]

PRUNE_AT_ONCE = ("diverged", "bad_initial_loss")
"""Labels that prune a trial as soon as they appear."""

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

TUNESVC_RANK_STALENESS_S = 2.0
"""``rank_staleness_s`` of a tunesvc study's diagnostic pruner unless its ``[pruner]`` says."""


@dataclass(frozen=True)
class Decision:
    """What the pruner decided for a trial at its last reported step, and why."""

    action: Action
    diagnosis: Diagnosis


class LearningCurvePruner(BasePruner):
    """Prune diverged and hopeless trials, early-stop finished learners, rank the rest at rungs.

    Works in any Optuna study: ``prune()`` is ``decide(...).action != "continue"``. tunesvc's
    runner calls :meth:`decide` itself, so that an ``early_stop`` completes the trial with its
    best value and the diagnosis is recorded on the trial.

    Args:
        min_epochs: The first rung: no rank pruning before this step. An int >= 1.
        reduction_factor: Rungs are ``min_epochs * reduction_factor**k``; at each, the top
            ``1 / reduction_factor`` of the trials that reached it go on. An int >= 2.
        min_trials: Finished trials needed at a rung before ranking there. An int >= 1.
        early_stop: Labels that early-stop a trial (complete it with its best value).
        num_classes: Classes of a cross-entropy objective, for ``bad_initial_loss``; a trial's
            ``num_classes`` user attribute takes precedence. ``None``: skip that check.
        thresholds: Thresholds of the diagnoses; :class:`DiagnosisThresholds` defaults.
        rank_staleness_s: At a rung, rank against finished trials read at most about this many
            seconds ago, re-read in a background thread, so that the decision never waits on
            the database (except the first in a process). ``0`` (the default here; a plain
            sequential study wants it): read at every rung decision. tunesvc studies use 2.
    """

    def __init__(
        self,
        *,
        min_epochs: int = 1,
        reduction_factor: int = 3,
        min_trials: int = 1,
        early_stop: Sequence[str] = ("overfitting", "plateau"),
        num_classes: int | None = None,
        thresholds: DiagnosisThresholds | None = None,
        rank_staleness_s: float = 0.0,
    ) -> None:
        _check_int("min_epochs", min_epochs, 1)
        _check_int("reduction_factor", reduction_factor, 2)
        _check_int("min_trials", min_trials, 1)
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
        if (
            isinstance(rank_staleness_s, bool)
            or not isinstance(rank_staleness_s, int | float)
            or not 0 <= rank_staleness_s <= 3600
        ):
            raise ValueError(
                f"rank_staleness_s: expected seconds between 0 and 3600, got {rank_staleness_s!r}"
            )
        if thresholds is not None and not isinstance(thresholds, DiagnosisThresholds):
            raise ValueError(f"thresholds: expected DiagnosisThresholds, got {thresholds!r}")
        self._min_epochs = min_epochs
        self._reduction_factor = reduction_factor
        self._min_trials = min_trials
        self._early_stop = tuple(early_stop)
        self._num_classes = num_classes
        self._thresholds = thresholds or DiagnosisThresholds()
        self._rank_staleness_s = float(rank_staleness_s)

    def warm(self, study: Study) -> None:
        """Start reading ``study``'s finished trials in the background now, so that the first
        rung decision finds them read (with ``rank_staleness_s > 0``; else nothing)."""
        if self._rank_staleness_s > 0:
            memo = _memo(study)
            with memo.lock:
                memo.plans.add((self._min_epochs, self._reduction_factor))
            _start_refresher(study, memo, self._rank_staleness_s, read_now=True)

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        """``True`` when :meth:`decide` says prune or early-stop."""
        return self.decide(study, trial).action != "continue"

    def decide(self, study: Study, trial: FrozenTrial) -> Decision:
        """Decide for ``trial`` at its last reported step, with the diagnosis behind it."""
        direction = study.direction
        step = trial.last_step
        diagnosis = self._diagnose(trial, direction)
        if step is None:
            return Decision("continue", diagnosis)
        if diagnosis.label in PRUNE_AT_ONCE or diagnosis.label in self._early_stop:
            action: Action = "prune" if diagnosis.label in PRUNE_AT_ONCE else "early_stop"
            at = {**diagnosis.evidence, "decided_at_epoch": step}
            return Decision(action, replace(diagnosis, evidence=at))

        rung = _rung_of(step, self._min_epochs, self._reduction_factor)
        if rung is None or any(rung <= s < step for s in trial.intermediate_values):
            return Decision("continue", diagnosis)  # decide once per rung, at its first report
        score = _best_score(trial.intermediate_values, step, direction)
        if score is None:
            return Decision("continue", diagnosis)
        scores = _rung_scores(
            study, rung, self._min_epochs, self._reduction_factor, direction,
            staleness_s=self._rank_staleness_s,
        )
        n = len(scores)
        if n < self._min_trials:
            return Decision("continue", diagnosis)
        keep = max(1, math.ceil(n / self._reduction_factor))
        bar = scores[n - keep]  # ascending scores: the keep-th best
        rank = n - bisect.bisect_right(scores, score) + 1  # 1 = best
        evidence = {
            **diagnosis.evidence,
            "decided_at_epoch": step,
            "rung": rung,
            "rank": rank,
            "trials_at_rung": n,
            "kept": keep,
            "value": _unscore(score, direction),
            "bar": _unscore(bar, direction),
        }
        if score >= bar:
            return Decision("continue", replace(diagnosis, evidence=evidence))
        reason = (
            f"ranked {rank} of {n + 1} at rung {rung} (value {_unscore(score, direction):.4g}, "
            f"the top {keep} need {_unscore(bar, direction):.4g}); curves: {diagnosis.reason}"
        )
        return Decision("prune", replace(diagnosis, reason=reason, epoch=step, evidence=evidence))

    def _diagnose(self, trial: FrozenTrial, direction: StudyDirection) -> Diagnosis:
        curves = curves_of(trial)
        if curves is not None and len(curves) > 0:
            raw = trial.user_attrs.get(NUM_CLASSES_ATTR, self._num_classes)
            num_classes = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
            return diagnose(curves, num_classes=num_classes, thresholds=self._thresholds)
        steps = sorted(trial.intermediate_values)
        return diagnose_values(
            [trial.intermediate_values[s] for s in steps],
            "maximize" if direction == StudyDirection.MAXIMIZE else "minimize",
            steps=steps,
            thresholds=self._thresholds,
        )


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")


def _rung_of(step: int, min_epochs: int, factor: int) -> int | None:
    """The highest rung at or below ``step``, or None before the first."""
    if step < min_epochs:
        return None
    rung = min_epochs
    while rung * factor <= step:
        rung *= factor
    return rung


def _score(value: float, direction: StudyDirection) -> float:
    """Higher is better, whatever the direction."""
    return value if direction == StudyDirection.MAXIMIZE else -value


def _unscore(score: float, direction: StudyDirection) -> float:
    return score if direction == StudyDirection.MAXIMIZE else -score


def _best_score(values: Mapping[int, float], upto: int, direction: StudyDirection) -> float | None:
    scores = [_score(v, direction) for s, v in values.items() if s <= upto and math.isfinite(v)]
    return max(scores) if scores else None


@dataclass
class _StudyMemo:
    """Finished trials' best scores per rung, for one Study object in this process.

    Trials ``0 .. next_number - 1`` have been looked at; ``pending`` are those of them that had
    not finished then. Finished trials never change, so nothing here goes stale; it only lags
    storage by the time since the last read.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    next_number: int = 0
    pending: set[int] = field(default_factory=set)
    rungs: dict[tuple[int, int, int], list[float]] = field(default_factory=dict)
    trials: list[tuple[dict[int, float], int]] = field(default_factory=list)
    has_read: bool = False
    used_at: float = 0.0
    refresher: threading.Thread | None = None
    plans: set[tuple[int, int]] = field(default_factory=set)
    """(min_epochs, reduction_factor) of the pruners warmed on this study: a background read
    also prepares their rungs' scores, so that no decision sorts every finished trial."""
    last_step: int = -1


_MEMOS: weakref.WeakKeyDictionary[Study, _StudyMemo] = weakref.WeakKeyDictionary()
_MEMOS_LOCK = threading.Lock()
_REFRESH_IDLE_S = 60.0
"""A background refresher stops after this long without a rung decision."""


def _rung_scores(
    study: Study,
    rung: int,
    min_epochs: int,
    factor: int,
    direction: StudyDirection,
    *,
    staleness_s: float = 0.0,
) -> list[float]:
    """Ascending best scores up to ``rung`` of the finished trials that reached it."""
    memo = _memo(study)
    if staleness_s <= 0 or not memo.has_read:
        _read(study, memo)
    if staleness_s > 0:
        _start_refresher(study, memo, staleness_s, read_now=False)
    _prepare(memo, (rung, min_epochs, factor), direction)
    with memo.lock:
        return list(memo.rungs[(rung, min_epochs, factor)])


def _prepare(memo: _StudyMemo, key: tuple[int, int, int], direction: StudyDirection) -> None:
    """Make sure ``memo.rungs[key]`` exists; the sort over every finished trial happens outside
    the lock, so a decision at another rung does not wait for it."""
    with memo.lock:
        if key in memo.rungs:
            return
        trials = list(memo.trials)
    scores: list[float] = []
    for values, last in trials:
        _add(scores, values, last, key[0], direction)
    with memo.lock:
        if key in memo.rungs:
            return
        for values, last in memo.trials[len(trials):]:  # finished meanwhile
            _add(scores, values, last, key[0], direction)
        memo.rungs[key] = scores


def _memo(study: Study) -> _StudyMemo:
    with _MEMOS_LOCK:
        return _MEMOS.setdefault(study, _StudyMemo())


def _start_refresher(study: Study, memo: _StudyMemo, every_s: float, *, read_now: bool) -> None:
    with memo.lock:
        memo.used_at = time.monotonic()
        if memo.refresher is None:
            memo.refresher = threading.Thread(
                target=_refresh_loop, args=(weakref.ref(study), memo, every_s, read_now),
                name="tunesvc-rank-refresh", daemon=True,
            )
            memo.refresher.start()


def _read(study: Study, memo: _StudyMemo) -> None:
    """Bring ``memo`` up to the study's trials in storage."""
    # Unfiltered, this is Optuna's cached list as is (sorted by number, no per-trial filter):
    # trial numbers run 0..n-1, so the list is indexed by number and only the trials that are
    # new or were unfinished last time are looked at.
    trials = study.get_trials(deepcopy=False)
    direction = study.direction
    with memo.lock:
        if len(trials) < memo.next_number:
            return  # an older read than one applied meanwhile (lists only grow)
        if any(trials[i].number != i for i in (0, len(trials) - 1) if 0 <= i < len(trials)):
            # Not numbered as memoized (cannot happen with Optuna's storages): start over.
            memo.next_number = 0
            memo.pending.clear()
            memo.rungs.clear()
            memo.trials.clear()
        to_check = sorted(memo.pending) + list(range(memo.next_number, len(trials)))
        memo.next_number = len(trials)
        for number in to_check:
            t = trials[number]
            if t.state in _FINISHED:
                memo.pending.discard(number)
                values = {s: v for s, v in t.intermediate_values.items() if math.isfinite(v)}
                last = max(t.intermediate_values, default=-1)
                memo.trials.append((values, last))
                memo.last_step = max(memo.last_step, last)
                for (r, _, _), scores in memo.rungs.items():
                    _add(scores, values, last, r, direction)
            elif t.state.is_finished():
                memo.pending.discard(number)  # failed: never ranked against
            else:
                memo.pending.add(number)
        memo.has_read = True
        plans, last_step = list(memo.plans), memo.last_step
    for min_epochs, factor in plans:
        rung = min_epochs
        while rung <= last_step:
            _prepare(memo, (rung, min_epochs, factor), direction)
            rung *= factor


def _refresh_loop(
    study_ref: weakref.ref[Study], memo: _StudyMemo, every_s: float, read_now: bool
) -> None:
    """Read ``memo`` (now if ``read_now``), then again every ``every_s`` while rung decisions
    use it."""
    while True:
        if not read_now:
            time.sleep(every_s)
        read_now = False
        study = study_ref()
        with memo.lock:
            if study is None or time.monotonic() - memo.used_at > _REFRESH_IDLE_S:
                memo.refresher = None
                return
        try:
            _read(study, memo)
        except Exception:  # noqa: BLE001 - the database is away: decide on the last read
            pass
        del study


def _add(
    scores: list[float], values: dict[int, float], last: int, rung: int, direction: StudyDirection
) -> None:
    if last < rung:
        return
    best = _best_score(values, rung, direction)
    if best is not None:
        bisect.insort(scores, best)


def make_pruner(name: str, settings: Mapping[str, Any] | None = None) -> BasePruner:
    """The pruner a spec names, built from its ``[pruner]`` table.

    ``name`` is ``"diagnostic"`` (:class:`LearningCurvePruner`; settings are its arguments plus
    any :class:`DiagnosisThresholds` field), ``"median"`` (``n_startup_trials``,
    ``n_warmup_steps``, ``interval_steps``, ``n_min_trials``), ``"hyperband"``
    (``min_resource``, ``max_resource``, ``reduction_factor``, ``bootstrap_count``) or
    ``"none"`` (no settings).

    Raises :class:`SpecError` naming the field, e.g. ``pruner.min_epochs: expected an int >= 1,
    got -3``.

    Example::

        make_pruner("diagnostic", {"reduction_factor": 2, "window": 5})
    """
    settings = dict(settings or {})
    try:
        if name == "diagnostic":
            return _make_diagnostic(settings)
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


def _make_diagnostic(settings: dict[str, Any]) -> LearningCurvePruner:
    threshold_names = {f.name for f in fields(DiagnosisThresholds)}
    own = {"min_epochs", "reduction_factor", "min_trials", "early_stop", "num_classes",
           "rank_staleness_s"}
    _only(settings, own | threshold_names)
    settings.setdefault("rank_staleness_s", TUNESVC_RANK_STALENESS_S)
    thresholds = DiagnosisThresholds(**{k: v for k, v in settings.items() if k in threshold_names})
    kwargs = {k: v for k, v in settings.items() if k in own}
    if "early_stop" in kwargs and isinstance(kwargs["early_stop"], list):
        kwargs["early_stop"] = tuple(kwargs["early_stop"])
    return LearningCurvePruner(**kwargs, thresholds=thresholds)
