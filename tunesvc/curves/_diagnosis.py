"""Learning-curve diagnoses: pure functions over one trial's curves, no Optuna, no torch.

:func:`diagnose` reads the curves tunesvc records (train/val loss and accuracy, plus the
learning rate) and returns one :class:`Diagnosis`: a label, the reason, the numbers it looked at
and one sentence of advice. :func:`diagnose_values` does the same for a trial that reported only
its metric through ``trial.report``.

The checks run in a fixed order and the first that matches wins, so a cause comes before its
symptoms: ``bad_initial_loss``, ``diverged``, ``bad_init``, ``decay_too_early``, ``overfitting``,
``underfitting``, ``plateau``, then ``healthy`` (or ``inconclusive``, below). Fewer than
:attr:`DiagnosisThresholds.min_points` usable evaluations give ``insufficient_data``.

A diagnosis never claims what its data cannot show. A check whose curves were not recorded is
skipped (no ``plateau`` without a learning-rate series, no ``overfitting`` or ``underfitting``
without train curves), and a run that stopped improving for a reason the recorded curves cannot
name is ``inconclusive``, with what was seen in its reason and evidence (``seen``: ``flat`` or
``worsening``).

Example::

    curves = Curves(epoch=[0, 1, 2], train_loss=[2.3, float("nan"), float("nan")], ...)
    diagnose(curves, num_classes=10).label  # "diverged"
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

from tunesvc.curves._curves import Curves

Evidence = dict[str, float | int | str | None]

LABELS = (
    "bad_initial_loss",
    "diverged",
    "bad_init",
    "plateau",
    "decay_too_early",
    "overfitting",
    "underfitting",
    "healthy",
    "inconclusive",
    "insufficient_data",
)
"""Every label a diagnosis can carry."""

ADVICE = {
    "bad_initial_loss": "Check the loss function and the weight initialization.",
    "diverged": "Lower the learning rate.",
    "bad_init": "Change the initialization: the model sat flat before it started to learn.",
    "plateau": "Use learning-rate decay: the curve flattened at a constant learning rate.",
    "decay_too_early": "Decay the learning rate later: progress stopped right after it dropped.",
    "overfitting": "Add regularization or data, or use a smaller model.",
    "underfitting": "Use a bigger model, less regularization or a higher learning rate.",
    "healthy": "Train longer: the curves are still rising.",
    "inconclusive": (
        "Record the train curves and the learning rate each epoch "
        "(tunesvc.report_epoch) to tell these causes apart."
    ),
    "insufficient_data": "Record more epochs before judging this curve.",
}
"""One sentence of advice per label (some labels have a variant for the run's situation:
:data:`CONVERGED_ADVICE`, :data:`CLIMB_ADVICE`, :data:`STILL_RISING_UNDERFIT_ADVICE`)."""

CONVERGED_ADVICE = (
    "Done: no fault, and the curve has stopped improving; to gain more, lengthen the "
    "learning-rate schedule or try a bigger model."
)
"""The advice of a ``healthy`` trial whose curve is no longer rising (``still_rising`` 0 in
its evidence): "train longer" would not help a run that converged at the end of its
schedule."""

CLIMB_ADVICE = (
    "Lower the learning rate, or the weight decay if it is strong: training undid its own "
    "progress."
)
"""The advice of a ``diverged`` trial that learned and then slowly lost it (``kind``
``climbed_back`` or ``collapsed`` in its evidence): a learning rate at the edge of stability
does this, and so does a weight decay that pulls the weights back faster than the gradient
moves them."""

STILL_RISING_UNDERFIT_ADVICE = (
    "Train longer or raise the learning rate: accuracy is low but still rising."
)
"""The advice of an ``underfitting`` trial whose validation accuracy is still rising
(``still_rising`` 1 in its evidence)."""

ALL_ADVICE = {
    **{label: (advice,) for label, advice in ADVICE.items()},
    "diverged": (ADVICE["diverged"], CLIMB_ADVICE),
    "underfitting": (ADVICE["underfitting"], STILL_RISING_UNDERFIT_ADVICE),
    "healthy": (ADVICE["healthy"], CONVERGED_ADVICE),
}
"""Every advice a label can carry."""


@dataclass(frozen=True)
class DiagnosisThresholds:
    """Every threshold the diagnoses use, with its default.

    Accuracies are fractions (0.9, not 90). Loss changes are relative to the loss they start from.

    Attributes:
        min_points: Fewer finite evaluations than this give ``insufficient_data``.
        initial_loss_tolerance: ``bad_initial_loss`` when the epoch-0 cross-entropy is outside
            ``log(num_classes) * (1 ± tolerance)``.
        diverge_ratio: ``diverged`` when the train loss (the validation loss if no train loss
            was recorded) climbs above ``diverge_ratio`` times its first value. A NaN or
            infinite train or validation loss always is.
        spike_ratio: ``diverged`` when the loss spiked above ``spike_ratio`` times its first
            value and, after the spike, never fell below ``(1 - drop_fraction)`` of it: the
            first steps knocked the network out (it sits at chance) and it never learned.
        climb_giveback: ``diverged`` when training undid its own progress: over the last
            ``window`` evaluations the train loss stayed at least this fraction of the way
            back from its minimum to its first value, or the train accuracy (the validation
            accuracy if no train accuracy was recorded) at least this fraction of its gain
            below its peak, the minimum or peak coming before that window. A loss falling by
            less than ``min_gain`` of its first value, or an accuracy gaining less than
            ``min_gain``, had no progress to undo.
        flat_tolerance: A loss within this fraction of its first value counts as flat.
        flat_epochs: ``bad_init`` needs a flat stretch of at least this many epochs from the start.
        drop_fraction: ``bad_init`` needs the loss to fall below ``(1 - drop_fraction)`` of its
            first value after the flat stretch.
        window: Evaluations at the end of the curve over which flattening, a climb back or a
            rise after the minimum is judged.
        flat_gain: The validation accuracy counts as flat when it gained less than this over
            ``window`` epochs (without accuracies: the loss fell by less than this fraction).
        noise_z: ``plateau`` also counts the curve as flat when its gain over the last
            ``window`` evaluations is under ``noise_z`` times the curve's own evaluation noise
            (one standard deviation, estimated from its second differences over the later half
            of the run; see :func:`_noise`): a new best that a noisy validation set can give
            by chance is no progress. 0 turns this off.
        min_gain: ``plateau`` needs the validation accuracy to have improved by at least this
            from its first value (without accuracies: the loss by this fraction); see also
            ``climb_giveback`` and ``early_decay_fraction``.
        decay_ratio: A learning rate at most ``decay_ratio`` times the previous epoch's is a
            decay step.
        early_decay_fraction: ``decay_too_early`` needs the first decay step to come after at
            most this fraction of the epochs seen, the curve to have gained ``min_gain`` from
            its start up to the step and, after it, to gain per epoch under ``stall_ratio``
            times its rate before the step.
        stall_ratio: See ``early_decay_fraction``.
        overfit_gap: ``overfitting`` needs train accuracy above validation accuracy by this.
        overfit_drop: ``overfitting`` needs validation accuracy to have peaked before the last
            ``window`` evaluations while train accuracy kept rising, and then to be this far below
            its peak, or the gap this much wider, or its loss ``overfit_loss_rise`` above its
            minimum.
        overfit_loss_rise: See ``overfit_drop``; a fraction of the minimum validation loss.
        underfit_acc: Without a ``reference_acc``, ``underfitting`` needs the final train
            accuracy below this.
        underfit_margin: With a ``reference_acc`` (the best validation accuracy the study
            reached), ``underfitting`` needs the trial's best validation accuracy more than
            this below it.
        underfit_gap: ``underfitting`` needs train and validation accuracy within this.
    """

    min_points: int = 3
    initial_loss_tolerance: float = 0.5
    diverge_ratio: float = 3.0
    spike_ratio: float = 1.5
    climb_giveback: float = 0.3
    flat_tolerance: float = 0.02
    flat_epochs: int = 3
    drop_fraction: float = 0.2
    window: int = 3
    flat_gain: float = 0.005
    noise_z: float = 2.0
    min_gain: float = 0.05
    decay_ratio: float = 0.5
    early_decay_fraction: float = 0.3
    stall_ratio: float = 0.2
    overfit_gap: float = 0.1
    overfit_drop: float = 0.01
    overfit_loss_rise: float = 0.1
    underfit_acc: float = 0.8
    underfit_margin: float = 0.05
    underfit_gap: float = 0.05

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int":
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"{f.name}: expected an int >= 1, got {value!r}")
            elif (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (math.isfinite(value) and value >= 0)
            ):
                raise ValueError(f"{f.name}: expected a finite number >= 0, got {value!r}")
        for name in ("diverge_ratio", "spike_ratio"):
            if not getattr(self, name) > 1:
                raise ValueError(f"{name}: expected a number > 1, got {getattr(self, name)!r}")
        if not 0 < self.climb_giveback <= 1:
            raise ValueError(
                f"climb_giveback: expected a fraction in (0, 1], got {self.climb_giveback!r}"
            )
        for name in ("decay_ratio", "drop_fraction", "early_decay_fraction", "flat_tolerance"):
            if not getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a number < 1, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Diagnosis:
    """What a trial's curves say: ``label``, why (``reason``), at which ``epoch``, the numbers
    looked at (``evidence``) and one sentence of ``advice``."""

    label: str
    reason: str
    advice: str
    epoch: int | None
    evidence: Evidence

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite evidence becomes ``None``)."""
        evidence = {k: _finite_or_none(v) for k, v in self.evidence.items()}
        return {
            "label": self.label,
            "reason": self.reason,
            "advice": self.advice,
            "epoch": self.epoch,
            "evidence": evidence,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Diagnosis:
        """The inverse of :meth:`to_json`."""
        epoch = data.get("epoch")
        return cls(
            label=str(data["label"]),
            reason=str(data.get("reason", "")),
            advice=str(data.get("advice", ADVICE.get(str(data["label"]), ""))),
            epoch=None if epoch is None else int(epoch),
            evidence=dict(data.get("evidence") or {}),
        )


def _finite_or_none(x: float | int | str | None) -> float | int | str | None:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _make(
    label: str, reason: str, epoch: int | None, **evidence: float | int | str | None
) -> Diagnosis:
    return Diagnosis(label, reason, ADVICE[label], epoch, {k: _r(v) for k, v in evidence.items()})


def _r(x: float | int | str | None) -> float | int | str | None:
    return round(x, 6) if isinstance(x, float) and math.isfinite(x) else x


@dataclass(frozen=True)
class _Series:
    """One curve column, sorted by epoch, its non-finite entries dropped."""

    epochs: list[int]
    values: list[float]

    def __len__(self) -> int:
        return len(self.values)


def _series(epochs: Sequence[int], values: Sequence[float]) -> _Series:
    pairs = sorted(
        {e: v for e, v in zip(epochs, values, strict=False) if math.isfinite(v)}.items()
    )
    return _Series([e for e, _ in pairs], [v for _, v in pairs])


def _rows(curves: Curves) -> dict[str, dict[int, float]]:
    """Each column as epoch -> value, duplicates resolved to the last record."""
    out: dict[str, dict[int, float]] = {}
    for name in ("train_loss", "val_loss", "train_acc", "val_acc", "lr"):
        column: list[float] = getattr(curves, name)
        out[name] = dict(zip(curves.epoch, column, strict=False))
    return out


def _non_finite_end(epochs: Sequence[int], values: Sequence[float]) -> int | None:
    """The epoch where a loss became NaN or infinite for good, or hit infinity, else None."""
    pairs = sorted(zip(epochs, values, strict=False))
    if not pairs:
        return None
    for e, v in pairs:
        if math.isinf(v):
            return e
    if any(math.isfinite(v) for _, v in pairs) and not math.isfinite(pairs[-1][1]):
        first_bad = pairs[-1][0]
        for e, v in reversed(pairs):
            if math.isfinite(v):
                break
            first_bad = e
        return first_bad
    return None


def diagnose(
    curves: Curves,
    *,
    num_classes: int | None = None,
    thresholds: DiagnosisThresholds | None = None,
    reference_acc: float | None = None,
    lr_decay_ahead: bool = False,
) -> Diagnosis:
    """Diagnose one trial from its learning curves.

    Args:
        curves: The trial's curves; NaN marks a missing or non-finite value, epochs may be
            missing or out of order, and a column never recorded (all NaN) skips the checks
            that need it.
        num_classes: Classes of a cross-entropy loss, for ``bad_initial_loss``; ``None`` skips
            that check.
        thresholds: The thresholds to use; :class:`DiagnosisThresholds` defaults when omitted.
        reference_acc: The best validation accuracy the study reached so far, if known:
            ``underfitting`` is then judged against it (``underfit_margin``) rather than
            against the fixed ``underfit_acc``.
        lr_decay_ahead: The caller knows the learning rate will still fall later in this run
            (a step or cosine schedule with epochs to go): a curve flat at the current rate
            is then no ``plateau``, since the decay a plateau needs is on its way. The curves
            only show the rates used so far, so a diagnosis made mid-run (by a pruner) cannot
            tell this itself.

    Returns:
        The first matching :class:`Diagnosis` in the order the module docstring gives.
    """
    th = thresholds or DiagnosisThresholds()
    if reference_acc is not None and (
        isinstance(reference_acc, bool)
        or not isinstance(reference_acc, int | float)
        or not 0 <= reference_acc <= 1
    ):
        raise ValueError(f"reference_acc: expected an accuracy in [0, 1], got {reference_acc!r}")
    rows = _rows(curves)
    epochs = sorted(set(curves.epoch))
    last_epoch = epochs[-1] if epochs else None

    train_loss = _series(list(rows["train_loss"]), list(rows["train_loss"].values()))
    val_loss = _series(list(rows["val_loss"]), list(rows["val_loss"].values()))
    train_acc = _series(list(rows["train_acc"]), list(rows["train_acc"].values()))
    val_acc = _series(list(rows["val_acc"]), list(rows["val_acc"].values()))
    lr = _series(list(rows["lr"]), list(rows["lr"].values()))
    loss = train_loss if len(train_loss) >= len(val_loss) else val_loss

    # bad_initial_loss: a cause visible at epoch 0, whatever followed.
    if num_classes is not None and num_classes >= 2:
        loss0 = rows["train_loss"].get(0, math.nan)
        if math.isnan(loss0):
            loss0 = rows["val_loss"].get(0, math.nan)
        expected = math.log(num_classes)
        if not math.isnan(loss0) and abs(loss0 / expected - 1) > th.initial_loss_tolerance:
            return _make(
                "bad_initial_loss",
                f"epoch-0 loss {loss0:.4g} is far from log({num_classes}) = {expected:.4g}",
                0,
                initial_loss=loss0,
                expected_loss=expected,
                ratio=loss0 / expected,
                tolerance=th.initial_loss_tolerance,
            )

    # diverged: NaN or inf, or a loss climbing well above where it started.
    for name in ("train_loss", "val_loss"):
        column = rows[name]
        bad_epoch = _non_finite_end(list(column), list(column.values()))
        if bad_epoch is not None:
            value = column[bad_epoch]
            return _make(
                "diverged",
                f"{name} became {value} at epoch {bad_epoch}",
                bad_epoch,
                kind="non_finite",
                curve=name,
                value=str(value),
                epoch_of_first_bad_value=bad_epoch,
            )
    # A rising validation loss alone is overfitting's sign, so the climb is judged on the train
    # loss, and on the validation loss only when no train loss was recorded; a climb back from
    # progress only on train curves, or on a validation accuracy that fell back towards its
    # start (overfitting costs a little validation accuracy, never most of its gain).
    name, climbing = ("train_loss", train_loss) if len(train_loss) else ("val_loss", val_loss)
    found = _climbed(climbing, th, curve=name, what=name) or _spiked(
        climbing, th, curve=name, what=name
    )
    if found is None and len(train_loss):
        found = _climbed_back(train_loss, th)
    if found is None and not _still_falling(train_loss, th):
        # An accuracy that fell back while the train loss still falls to new lows is a model
        # too small to turn a better loss into a better argmax (accuracy wobbling at 0.2 under
        # a steadily falling loss), not a run that diverged.
        acc_name, acc = ("train_acc", train_acc) if len(train_acc) else ("val_acc", val_acc)
        found = _collapsed(acc_name, acc, th)
    if found is not None:
        return found

    if len(loss) < th.min_points and len(val_acc) < th.min_points:
        return _make(
            "insufficient_data",
            f"{max(len(loss), len(val_acc))} usable evaluations, {th.min_points} needed",
            last_epoch,
            points=max(len(loss), len(val_acc)),
            min_points=th.min_points,
        )

    found = _bad_init(train_loss if len(train_loss) >= th.min_points else loss, th)
    if found is not None:
        return found

    metric = val_acc if len(val_acc) >= th.min_points else None
    found = _decay_too_early(lr, metric, loss, th)
    if found is not None:
        return found

    have_acc = len(train_acc) >= th.min_points and len(val_acc) >= th.min_points
    if have_acc:
        found = _overfitting(train_acc, val_acc, val_loss, th)
        if found is None:
            found = _underfitting(train_acc, val_acc, th, reference_acc)
        if found is not None:
            return found
    elif len(val_loss) >= th.min_points and len(train_loss) >= th.min_points:
        found = _overfitting_by_loss(train_loss, val_loss, th)
        if found is not None:
            return found

    found = None if lr_decay_ahead else _plateau(metric, loss, lr, th)
    if found is not None:
        return found
    missing = ["the learning rate"] if not len(lr) else []
    if not len(train_loss) and not len(train_acc):
        missing.append("train curves")
    return _healthy(train_acc if have_acc else None, metric, loss, th, missing=missing)


def diagnose_values(
    values: Sequence[float],
    direction: Literal["maximize", "minimize"],
    *,
    steps: Sequence[int] | None = None,
    thresholds: DiagnosisThresholds | None = None,
) -> Diagnosis:
    """Diagnose a trial from the one metric it reported (``trial.report``), step by step.

    One curve cannot show the learning rate, nor the train curves, so only what it can show
    comes out: ``diverged`` (NaN or inf; a loss climbing far above its start, or spiking and
    never learning; an accuracy that fell back most of the way to its start), ``bad_init`` (flat,
    then a drop), ``healthy`` (still improving), ``inconclusive`` (it stopped improving, or
    moved away from its best: a plateau, a finished schedule, overfitting and a slow divergence
    look alike here; ``seen`` in the evidence says which) or ``insufficient_data``. A
    maximized metric is read as an accuracy (absolute gains), a minimized one as a loss
    (relative changes).
    """
    th = thresholds or DiagnosisThresholds()
    step_list = list(steps) if steps is not None else list(range(len(values)))
    bad_step = _non_finite_end(step_list, list(values))
    if bad_step is not None:
        value = dict(zip(step_list, values, strict=False))[bad_step]
        return _make(
            "diverged",
            f"the reported value became {value} at step {bad_step}",
            bad_step,
            kind="non_finite",
            curve="value",
            value=str(value),
            epoch_of_first_bad_value=bad_step,
        )
    s = _series(step_list, list(values))
    last = s.epochs[-1] if len(s) else (max(step_list) if step_list else None)
    if len(s) < th.min_points:
        return _make(
            "insufficient_data",
            f"{len(s)} usable values, {th.min_points} needed",
            last,
            points=len(s),
            min_points=th.min_points,
        )
    maximize = direction == "maximize"
    if maximize:
        found = _collapsed("value", s, th) or _bad_init(
            _Series(s.epochs, [-v for v in s.values]), th, absolute=True
        )
    else:
        found = (
            _climbed(s, th, curve="value", what="the value")
            or _spiked(s, th, curve="value", what="the value")
            or _bad_init(s, th)
        )
    if found is not None:
        return found
    found = _worsening(s, maximize, th)
    if found is not None:
        return found
    return _healthy(None, s if maximize else None, s, th, name="the value",
                    missing=["the learning rate", "train curves"])


def _climbed(s: _Series, th: DiagnosisThresholds, *, curve: str, what: str) -> Diagnosis | None:
    """``diverged`` when the loss-like series ``s`` (named ``what`` in the reason) climbed
    above ``diverge_ratio`` times its start."""
    peak = _climb_peak(s, th)
    if peak is None:
        return None
    start, top = s.values[0], s.values[peak]
    return _make(
        "diverged",
        f"{what} climbed to {top:.4g}, {top / start:.3g}x its start {start:.4g}",
        s.epochs[peak],
        kind="climbed",
        curve=curve,
        start=start,
        peak=top,
        ratio=top / start,
        diverge_ratio=th.diverge_ratio,
    )


def _climb_peak(s: _Series, th: DiagnosisThresholds) -> int | None:
    """Where a loss-like series peaked, if it climbed above ``diverge_ratio`` times its start."""
    if len(s) < 2 or s.values[0] <= 0:
        return None
    peak = max(range(1, len(s)), key=lambda i: s.values[i])
    return peak if s.values[peak] > th.diverge_ratio * s.values[0] else None


def _spiked(s: _Series, th: DiagnosisThresholds, *, curve: str, what: str) -> Diagnosis | None:
    """``diverged`` when the loss-like series ``s`` spiked above ``spike_ratio`` times its start
    and, in the ``window`` or more evaluations after the spike, never fell below
    ``(1 - drop_fraction)`` of its start: knocked out by its first steps, it never learned."""
    if len(s) < th.min_points or s.values[0] <= 0:
        return None
    start = s.values[0]
    peak = max(range(1, len(s)), key=lambda i: s.values[i])
    after = s.values[peak + 1 :]
    floor = (1 - th.drop_fraction) * start
    if s.values[peak] <= th.spike_ratio * start or len(after) < th.window or min(after) < floor:
        return None
    return _make(
        "diverged",
        f"{what} spiked to {s.values[peak]:.4g}, {s.values[peak] / start:.3g}x its start "
        f"{start:.4g}, at epoch {s.epochs[peak]} and never fell below {floor:.4g} after it: "
        "the first steps knocked the network out",
        s.epochs[peak],
        kind="spiked",
        curve=curve,
        start=start,
        peak=s.values[peak],
        ratio=s.values[peak] / start,
        lowest_after=min(after),
        spike_ratio=th.spike_ratio,
        drop_fraction=th.drop_fraction,
    )


def _climbed_back(loss: _Series, th: DiagnosisThresholds) -> Diagnosis | None:
    """``diverged`` when the train loss fell, then climbed back at least ``climb_giveback`` of
    the way to its start and stayed there over the last ``window`` evaluations."""
    if len(loss) < th.window + 2 or loss.values[0] <= 0:
        return None
    start = loss.values[0]
    low = min(range(len(loss) - th.window), key=lambda i: loss.values[i])
    progress = start - loss.values[low]
    recent = min(loss.values[-th.window :])
    if progress < th.min_gain * start or recent - loss.values[low] < th.climb_giveback * progress:
        return None
    back = (recent - loss.values[low]) / progress
    diagnosis = _make(
        "diverged",
        f"the train loss fell from {start:.4g} to {loss.values[low]:.4g} at epoch "
        f"{loss.epochs[low]}, then climbed back to {loss.values[-1]:.4g}: over the last "
        f"{th.window} evaluations at least {back:.0%} of its progress was undone",
        loss.epochs[-1],
        kind="climbed_back",
        curve="train_loss",
        start=start,
        minimum=loss.values[low],
        min_epoch=loss.epochs[low],
        last=loss.values[-1],
        given_back=back,
        climb_giveback=th.climb_giveback,
    )
    return dataclasses.replace(diagnosis, advice=CLIMB_ADVICE)


def _still_falling(loss: _Series, th: DiagnosisThresholds) -> bool:
    """Whether the train loss ``loss`` reached its lowest value within the last ``window``
    evaluations (it gave back none of its progress); False when too short to say."""
    if len(loss) < th.window + 2:
        return False
    return min(loss.values[-th.window :]) <= min(loss.values)


def _collapsed(name: str, acc: _Series, th: DiagnosisThresholds) -> Diagnosis | None:
    """``diverged`` when the accuracy-like series ``acc`` rose by ``min_gain`` or more, then fell
    back at least ``climb_giveback`` of its gain and stayed there over the last ``window``
    evaluations."""
    if len(acc) < th.window + 2:
        return None
    start = acc.values[0]
    top = max(range(len(acc) - th.window), key=lambda i: acc.values[i])
    gain = acc.values[top] - start
    recent = max(acc.values[-th.window :])
    if gain < th.min_gain or acc.values[top] - recent < th.climb_giveback * gain:
        return None
    lost = (acc.values[top] - recent) / gain
    what = "the value" if name == "value" else name.replace("_acc", " accuracy")
    diagnosis = _make(
        "diverged",
        f"{what} rose from {start:.3g} to {acc.values[top]:.3g} at epoch {acc.epochs[top]}, "
        f"then fell back to {acc.values[-1]:.3g}: over the last {th.window} evaluations at "
        f"least {lost:.0%} of its gain was lost",
        acc.epochs[-1],
        kind="collapsed",
        curve=name,
        start=start,
        peak=acc.values[top],
        peak_epoch=acc.epochs[top],
        last=acc.values[-1],
        given_back=lost,
        climb_giveback=th.climb_giveback,
    )
    return dataclasses.replace(diagnosis, advice=CLIMB_ADVICE)


def _bad_init(loss: _Series, th: DiagnosisThresholds, absolute: bool = False) -> Diagnosis | None:
    """Flat for ``flat_epochs`` from the start, then a drop of ``drop_fraction``."""
    if len(loss) < th.min_points:
        return None
    start = loss.values[0]
    scale = 1.0 if absolute else abs(start)
    if scale == 0:
        return None
    flat_until = 0
    for i, v in enumerate(loss.values):
        if abs(v - start) > th.flat_tolerance * scale:
            break
        flat_until = i
    flat_len = loss.epochs[flat_until] - loss.epochs[0]
    after = loss.values[flat_until + 1 :]
    if flat_len < th.flat_epochs or not after:
        return None
    low = min(after)
    drop = (start - low) / scale
    if drop < th.drop_fraction:
        return None
    return _make(
        "bad_init",
        f"the loss stayed within {th.flat_tolerance:.0%} of its start for {flat_len} epochs, "
        f"then fell {drop:.0%}"
        if not absolute
        else f"the value stayed flat for {flat_len} steps, then improved by {drop:.3g}",
        loss.epochs[flat_until],
        flat_epochs=flat_len,
        start=start if not absolute else -start,
        drop=drop,
        flat_tolerance=th.flat_tolerance,
        drop_fraction=th.drop_fraction,
    )


def _gain(s: _Series, lo: int, hi: int, absolute: bool) -> float:
    """Improvement of the best value in ``s[lo:hi]`` over ``s[lo]``: accuracy points
    (``absolute``) or the fraction a loss fell."""
    if absolute:
        return max(s.values[lo:hi]) - s.values[lo]
    start = s.values[lo]
    return (start - min(s.values[lo:hi])) / abs(start) if start != 0 else 0.0


def _decay_too_early(
    lr_s: _Series, metric: _Series | None, loss: _Series, th: DiagnosisThresholds
) -> Diagnosis | None:
    """A sharp LR drop early in the run, with progress stalling right after it."""
    steps = [
        i
        for i in range(1, len(lr_s))
        if lr_s.values[i - 1] > 0 and lr_s.values[i] <= th.decay_ratio * lr_s.values[i - 1]
    ]
    s = metric if metric is not None else loss
    if not steps or len(s) < th.min_points:
        return None
    i = steps[0]
    decay_epoch = lr_s.epochs[i]  # the first epoch trained at the lower rate
    last_epoch = max(lr_s.epochs[-1], s.epochs[-1])
    if lr_s.epochs[i - 1] > th.early_decay_fraction * last_epoch:
        return None
    absolute = metric is not None
    # k: the last evaluation trained at the old rate; the run before it and everything after.
    k = next((j for j, e in enumerate(s.epochs) if e >= decay_epoch), len(s)) - 1
    if k < 1 or len(s) - 1 - k < th.window:
        return None
    gain_before = _gain(s, 0, k + 1, absolute)
    rate_before = gain_before / max(1, s.epochs[k] - s.epochs[0])
    rate_after = _gain(s, k, len(s), absolute) / max(1, s.epochs[-1] - s.epochs[k])
    if gain_before < th.min_gain or rate_after > th.stall_ratio * rate_before:
        return None
    return _make(
        "decay_too_early",
        f"the learning rate fell to {lr_s.values[i]:.3g} at epoch {decay_epoch} "
        f"({decay_epoch}/{last_epoch} of the run) and progress stalled after it",
        decay_epoch,
        lr_before=lr_s.values[i - 1],
        lr_after=lr_s.values[i],
        decay_epoch=decay_epoch,
        last_epoch=last_epoch,
        gain_rate_before=rate_before,
        gain_rate_after=rate_after,
        curve="val_acc" if absolute else "loss",
    )
def _overfitting(
    train_acc: _Series, val_acc: _Series, val_loss: _Series, th: DiagnosisThresholds
) -> Diagnosis | None:
    """Validation accuracy peaked and fell (or its loss rose) while train accuracy kept rising,
    the gap wide: the model fits its training data better than it ever validated."""
    train = dict(zip(train_acc.epochs, train_acc.values, strict=True))
    peak_i = max(range(len(val_acc)), key=lambda i: (val_acc.values[i], -i))
    peak_epoch = val_acc.epochs[peak_i]
    last_epoch = val_acc.epochs[-1]
    if last_epoch not in train or peak_epoch not in train:
        return None
    gap_now = train[last_epoch] - val_acc.values[-1]
    gap_then = train[peak_epoch] - val_acc.values[peak_i]
    drop = val_acc.values[peak_i] - val_acc.values[-1]
    if gap_now < th.overfit_gap:
        return None  # no gap to speak of
    if val_acc.values[peak_i] - val_acc.values[0] < th.min_gain or (
        train[last_epoch] <= val_acc.values[peak_i]
    ):
        return None  # it never learned, or fits its training data no better than it validated
    # Either validation accuracy peaked before the last window and fell or fell behind...
    by_acc = (
        peak_i < len(val_acc) - th.window
        and train[last_epoch] >= train[peak_epoch] - th.flat_gain
        and max(drop, gap_now - gap_then) >= th.overfit_drop
    )
    # ...or validation loss bottomed out before the last window and has risen since.
    loss_rise = 0.0
    if len(val_loss) >= 2:
        min_i = min(range(len(val_loss)), key=lambda i: val_loss.values[i])
        if val_loss.values[min_i] > 0 and min_i < len(val_loss) - th.window:
            loss_rise = val_loss.values[-1] / val_loss.values[min_i] - 1
            at_min = train.get(val_loss.epochs[min_i], train[last_epoch])
            if train[last_epoch] < at_min - th.flat_gain:
                loss_rise = 0.0  # train accuracy fell too: not overfitting
    if not by_acc and loss_rise < th.overfit_loss_rise:
        return None
    return _make(
        "overfitting",
        f"train accuracy is {train[last_epoch]:.3f} and validation accuracy "
        f"{val_acc.values[-1]:.3f} (peak {val_acc.values[peak_i]:.3f} at epoch {peak_epoch}), "
        f"validation loss {loss_rise:+.0%} from its minimum",
        last_epoch,
        val_acc_peak=val_acc.values[peak_i],
        peak_epoch=peak_epoch,
        val_acc_last=val_acc.values[-1],
        train_acc_last=train[last_epoch],
        gap_at_peak=gap_then,
        gap_last=gap_now,
        val_loss_rise=loss_rise,
    )


def _overfitting_by_loss(
    train_loss: _Series, val_loss: _Series, th: DiagnosisThresholds
) -> Diagnosis | None:
    """Without accuracies: validation loss rose from its minimum while train loss kept falling."""
    min_i = min(range(len(val_loss)), key=lambda i: val_loss.values[i])
    if min_i == len(val_loss) - 1 or val_loss.values[min_i] <= 0:
        return None
    rise = val_loss.values[-1] / val_loss.values[min_i] - 1
    train = dict(zip(train_loss.epochs, train_loss.values, strict=True))
    e_min, e_last = val_loss.epochs[min_i], val_loss.epochs[-1]
    if e_min not in train or e_last not in train or rise < th.overfit_loss_rise:
        return None
    if train[e_last] >= train[e_min]:
        return None
    return _make(
        "overfitting",
        f"validation loss rose {rise:.0%} from its minimum at epoch {e_min} while train loss "
        "kept falling",
        e_last,
        val_loss_min=val_loss.values[min_i],
        min_epoch=e_min,
        val_loss_last=val_loss.values[-1],
        train_loss_at_min=train[e_min],
        train_loss_last=train[e_last],
        val_loss_rise=rise,
    )


def _underfitting(
    train_acc: _Series, val_acc: _Series, th: DiagnosisThresholds, reference_acc: float | None
) -> Diagnosis | None:
    """Train and validation accuracy close together and both low: below what the study reaches
    (``reference_acc``) by ``underfit_margin``, or without a reference below ``underfit_acc``."""
    t, v = train_acc.values[-1], val_acc.values[-1]
    if abs(t - v) > th.underfit_gap:
        return None
    best = max(val_acc.values)
    if reference_acc is None:
        if t >= th.underfit_acc:
            return None
        reason = (
            f"train accuracy {t:.3f} and validation accuracy {v:.3f} are close and both below "
            f"{th.underfit_acc}"
        )
    else:
        if best >= reference_acc - th.underfit_margin:
            return None
        reason = (
            f"the best validation accuracy {best:.3f} is {reference_acc - best:.3f} below the "
            f"study's best {reference_acc:.3f}, and train accuracy {t:.3f} is no better than "
            f"validation accuracy {v:.3f}: the model does not fit its training data either"
        )
    rising = False
    if len(val_acc) >= th.window + 2:
        new_best, _, flat = _recent_best_gain(val_acc, True, th)
        rising = new_best >= flat
    diagnosis = _make(
        "underfitting",
        reason + ("; still rising" if rising else ""),
        train_acc.epochs[-1],
        train_acc_last=t,
        val_acc_last=v,
        val_acc_best=best,
        reference_acc=reference_acc,
        underfit_acc=th.underfit_acc if reference_acc is None else None,
        underfit_margin=th.underfit_margin if reference_acc is not None else None,
        underfit_gap=th.underfit_gap,
        still_rising=int(rising),
    )
    if rising:
        return dataclasses.replace(diagnosis, advice=STILL_RISING_UNDERFIT_ADVICE)
    return diagnosis


def _lr_never_fell(lr: _Series) -> bool:
    """A learning-rate series was recorded and never decreased (constant, or a warmup)."""
    pairs = zip(lr.values, lr.values[1:], strict=False)
    return len(lr) > 0 and all(b >= a * (1 - 1e-6) for a, b in pairs)


def _noise(s: _Series, th: DiagnosisThresholds) -> float:
    """The evaluation noise of ``s`` (one standard deviation) over the later half of the run.

    Second differences ``s[i+1] - 2 s[i] + s[i-1]`` cancel a locally linear trend and leave
    noise of variance ``6 σ²`` (independent noise of SD ``σ`` per evaluation), and the median of
    their absolute values is ``0.6745 √6 σ`` for Gaussian noise, robust to a few spikes. 0 with
    fewer than ``window`` second differences.
    """
    tail = s.values[len(s) // 2 :]
    d2 = [abs(tail[i + 1] - 2 * tail[i] + tail[i - 1]) for i in range(1, len(tail) - 1)]
    if len(d2) < th.window:
        return 0.0
    noise = statistics.median(d2) / (0.6745 * math.sqrt(6))
    return noise if math.isfinite(noise) else 0.0


def _plateau(
    metric: _Series | None, loss: _Series, lr: _Series, th: DiagnosisThresholds
) -> Diagnosis | None:
    """Improved from the start, then flat over the last ``window`` evaluations at a learning
    rate that never decayed: a new best under ``flat_gain`` or under ``noise_z`` times the
    curve's noise. Without a learning-rate series this is never claimed."""
    s = metric if metric is not None else loss
    absolute = metric is not None
    if len(s) < th.window + 2 or not _lr_never_fell(lr):
        return None
    total = _gain(s, 0, len(s), absolute)
    recent, noise, flat = _recent_best_gain(s, absolute, th)
    if total < th.min_gain or recent >= flat:
        return None
    return _make(
        "plateau",
        f"{'validation accuracy' if absolute else 'the loss'} improved by {total:.3g}, then by "
        f"only {recent:.3g} over the last {th.window} evaluations at a constant learning rate "
        f"(flat: under the larger of {th.flat_gain:.3g} and {th.noise_z:.3g}x its noise "
        f"{noise:.3g})",
        s.epochs[-1],
        total_gain=total,
        recent_gain=recent,
        window=th.window,
        flat_gain=th.flat_gain,
        noise=noise,
        noise_z=th.noise_z,
        flat_threshold=flat,
        curve="val_acc" if absolute else "loss",
    )


def _recent_best_gain(
    s: _Series, absolute: bool, th: DiagnosisThresholds
) -> tuple[float, float, float]:
    """(gain, noise, flat): how far the last ``window`` evaluations moved the best past the best
    before them, the curve's noise, and the gain under which that counts as flat (the larger
    of ``flat_gain`` and ``noise_z`` times the noise). A loss's gain and noise are fractions of
    its first value. Needs ``len(s) >= window + 2``."""
    k = len(s) - th.window - 1
    recent = _best(s, k + 1, len(s), absolute) - _best(s, 0, k + 1, absolute)
    noise = _noise(s, th)
    if not absolute:
        scale = abs(s.values[0])
        recent, noise = (recent / scale, noise / scale) if scale else (0.0, 0.0)
    noise = noise if math.isfinite(noise) else 0.0
    return recent, noise, max(th.flat_gain, th.noise_z * noise)


def _best(s: _Series, lo: int, hi: int, absolute: bool) -> float:
    """Best value in ``s[lo:hi]`` as a gain: max accuracy, or minus the min loss."""
    return max(s.values[lo:hi]) if absolute else -min(s.values[lo:hi])


def _worsening(s: _Series, maximize: bool, th: DiagnosisThresholds) -> Diagnosis | None:
    """``inconclusive`` (seen ``worsening``) when a reported value moved away from its best and
    stayed away over the last ``window`` values: a loss ``overfit_loss_rise`` above its minimum,
    an accuracy more than its flat threshold (see :func:`_plateau`) below its peak. Overfitting
    and a slow divergence both do this; one curve cannot tell them apart."""
    if len(s) < th.window + 2:
        return None
    before = range(len(s) - th.window)
    tail = s.values[-th.window :]
    if maximize:
        best = max(before, key=lambda i: s.values[i])
        moved = s.values[best] - max(tail)
        needed = max(th.overfit_drop, _recent_best_gain(s, True, th)[2])
        what = f"fell {moved:.3g} below its peak {s.values[best]:.4g}"
    else:
        best = min(before, key=lambda i: s.values[i])
        if s.values[best] <= 0:
            return None
        moved = min(tail) / s.values[best] - 1
        needed = th.overfit_loss_rise
        what = f"rose {moved:.0%} above its minimum {s.values[best]:.4g}"
    if moved < needed:
        return None
    return _make(
        "inconclusive",
        f"the value {what} at step {s.epochs[best]} and stayed there over the last "
        f"{th.window} values: overfitting or a slow divergence, which the train curves would "
        "tell apart",
        s.epochs[-1],
        seen="worsening",
        best=s.values[best],
        best_step=s.epochs[best],
        last=s.values[-1],
        moved=moved,
        threshold=needed,
        window=th.window,
    )


def _healthy(
    train_acc: _Series | None,
    metric: _Series | None,
    loss: _Series,
    th: DiagnosisThresholds,
    *,
    missing: Sequence[str] = (),
    name: str | None = None,
) -> Diagnosis:
    """No fault. Still rising when the last ``window`` evaluations moved the best by at least
    the flat threshold :func:`_plateau` uses; otherwise converged, with
    :data:`CONVERGED_ADVICE`, unless the learning rate is among the ``missing`` curves: a curve
    that stopped improving is then ``inconclusive`` (seen ``flat``), as a plateau at a constant
    learning rate and a finished schedule look alike without it."""
    s = metric if metric is not None else loss
    absolute = metric is not None
    k = max(0, len(s) - th.window - 1)
    recent = _gain(s, k, len(s), absolute)
    evidence: Evidence = {"recent_gain": recent, "window": th.window}
    # Too short for the noise: rising when its last evaluations gained at all.
    rising, new_best, flat = recent >= th.flat_gain, 0.0, 0.0
    if len(s) >= th.window + 2:
        new_best, _, flat = _recent_best_gain(s, absolute, th)
        rising = new_best >= flat
        evidence.update(recent_best_gain=new_best, flat_threshold=flat)
    evidence["still_rising"] = int(rising)
    if train_acc is not None and metric is not None:
        evidence["gap_last"] = train_acc.values[-1] - metric.values[-1]
        evidence["val_acc_last"] = metric.values[-1]
    if missing:
        evidence["not_recorded"] = ", ".join(missing)
    curve = name or ("validation accuracy" if absolute else "the loss")
    if not rising and "the learning rate" in missing:
        return _make(
            "inconclusive",
            f"{curve} stopped improving (its best moved {new_best:.3g} over the last "
            f"{th.window} evaluations, under the flat threshold {flat:.3g}); without "
            f"{' and '.join(missing)} a plateau at a constant learning rate, a run that "
            "converged as its schedule decayed and underfitting look alike",
            s.epochs[-1],
            seen="flat",
            **evidence,
        )
    unchecked = (
        f" (without {' and '.join(missing)}, not checked for "
        + ("overfitting, underfitting or a plateau)" if "train curves" in missing
           else "a plateau)")
        if missing
        else ""
    )
    diagnosis = _make(
        "healthy",
        f"no fault found{unchecked}; {curve} gained {recent:.3g} over the last {th.window} "
        "evaluations"
        + ("" if rising else f"; its best moved {new_best:.3g}, under the flat threshold "
           f"{flat:.3g}: converged"),
        s.epochs[-1] if len(s) else None,
        **evidence,
    )
    return diagnosis if rising else dataclasses.replace(diagnosis, advice=CONVERGED_ADVICE)
