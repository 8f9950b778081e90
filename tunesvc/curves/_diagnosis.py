"""Learning-curve diagnoses: pure functions over one trial's curves, no Optuna, no torch.

:func:`diagnose` reads the four curves tunesvc records (train/val loss and accuracy, plus the
learning rate) and returns one :class:`Diagnosis`: a label, the reason, the numbers it looked at
and one sentence of advice. :func:`diagnose_values` does the same for a trial that reported only
its metric through ``trial.report``.

The checks run in a fixed order and the first that matches wins, so a cause comes before its
symptoms: ``bad_initial_loss``, ``diverged``, ``bad_init``, ``decay_too_early``, ``overfitting``,
``underfitting``, ``plateau``, then ``healthy``. Fewer than
:attr:`DiagnosisThresholds.min_points` usable evaluations give ``insufficient_data``.

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
    "underfitting": "Use a bigger model or less regularization.",
    "healthy": "Train longer: both curves are still rising.",
    "insufficient_data": "Record more epochs before judging this curve.",
}
"""One sentence of advice per label."""

CONVERGED_ADVICE = (
    "Done: no fault, and the curve has stopped improving; to gain more, lengthen the "
    "learning-rate schedule or try a bigger model."
)
"""The advice of a ``healthy`` trial whose curve is no longer rising (``still_rising`` 0 in
its evidence): "train longer" would not help a run that converged at the end of its
schedule."""


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
        flat_tolerance: A loss within this fraction of its first value counts as flat.
        flat_epochs: ``bad_init`` needs a flat stretch of at least this many epochs from the start.
        drop_fraction: ``bad_init`` needs the loss to fall below ``(1 - drop_fraction)`` of its
            first value after the flat stretch.
        window: Epochs at the end of the curve over which flattening is judged.
        flat_gain: The validation accuracy counts as flat when it gained less than this over
            ``window`` epochs (without accuracies: the loss fell by less than this fraction).
        noise_z: ``plateau`` also counts the curve as flat when its gain over the last
            ``window`` evaluations is under ``noise_z`` times the curve's own evaluation noise
            (one standard deviation, estimated from its second differences over the later half
            of the run; see :func:`_noise`): a new best that a noisy validation set can give
            by chance is no progress. 0 turns this off.
        min_gain: ``plateau`` needs the validation accuracy to have improved by at least this
            from its first value (without accuracies: the loss by this fraction).
        decay_ratio: A learning rate at most ``decay_ratio`` times the previous epoch's is a
            decay step.
        early_decay_fraction: ``decay_too_early`` needs the first decay step within this
            fraction of the epochs seen, the curve rising by ``min_gain`` over the ``window``
            before it and, after it, gaining per epoch under ``stall_ratio`` times that rate.
        stall_ratio: See ``early_decay_fraction``.
        overfit_gap: ``overfitting`` needs train accuracy above validation accuracy by this.
        overfit_drop: ``overfitting`` needs validation accuracy to have peaked before the last
            ``window`` evaluations while train accuracy kept rising, and then to be this far below
            its peak, or the gap this much wider, or its loss ``overfit_loss_rise`` above its
            minimum.
        overfit_loss_rise: See ``overfit_drop``; a fraction of the minimum validation loss.
        underfit_acc: ``underfitting`` needs the final train accuracy below this.
        underfit_gap: ``underfitting`` needs train and validation accuracy within this.
    """

    min_points: int = 3
    initial_loss_tolerance: float = 0.5
    diverge_ratio: float = 3.0
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
        if self.diverge_ratio <= 1:
            raise ValueError(f"diverge_ratio: expected a number > 1, got {self.diverge_ratio!r}")
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


def _finite(xs: Sequence[float]) -> list[float]:
    return [x for x in xs if math.isfinite(x)]


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
) -> Diagnosis:
    """Diagnose one trial from its learning curves.

    Args:
        curves: The trial's curves; NaN marks a missing or non-finite value, epochs may be
            missing or out of order.
        num_classes: Classes of a cross-entropy loss, for ``bad_initial_loss``; ``None`` skips
            that check.
        thresholds: The thresholds to use; :class:`DiagnosisThresholds` defaults when omitted.

    Returns:
        The first matching :class:`Diagnosis` in the order the module docstring gives.
    """
    th = thresholds or DiagnosisThresholds()
    rows = _rows(curves)
    epochs = sorted(set(curves.epoch))
    last_epoch = epochs[-1] if epochs else None

    train_loss = _series(list(rows["train_loss"]), list(rows["train_loss"].values()))
    val_loss = _series(list(rows["val_loss"]), list(rows["val_loss"].values()))
    train_acc = _series(list(rows["train_acc"]), list(rows["train_acc"].values()))
    val_acc = _series(list(rows["val_acc"]), list(rows["val_acc"].values()))
    loss = train_loss if len(train_loss) >= len(val_loss) else val_loss

    # bad_initial_loss: a cause visible at epoch 0, whatever followed.
    if num_classes is not None and num_classes >= 2 and 0 in rows["train_loss"]:
        loss0 = rows["train_loss"][0]
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
                curve=name,
                value=str(value),
                epoch_of_first_bad_value=bad_epoch,
            )
    # A rising validation loss alone is overfitting's sign, so the climb is judged on the train
    # loss, and on the validation loss only when no train loss was recorded.
    climbing = [("train_loss", train_loss)] if len(train_loss) else [("val_loss", val_loss)]
    for name, s in climbing:
        found = _climbed(s, th, curve=name, what=name)
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
    found = _decay_too_early(rows["lr"], metric, loss, th)
    if found is not None:
        return found

    have_acc = len(train_acc) >= th.min_points and len(val_acc) >= th.min_points
    if have_acc:
        found = _overfitting(train_acc, val_acc, val_loss, th)
        if found is not None:
            return found
        found = _underfitting(train_acc, val_acc, th)
        if found is not None:
            return found
    elif len(val_loss) >= th.min_points and len(train_loss) >= th.min_points:
        found = _overfitting_by_loss(train_loss, val_loss, th)
        if found is not None:
            return found

    found = _plateau(metric, loss, rows["lr"], th)
    if found is not None:
        return found
    return _healthy(train_acc if have_acc else None, metric, loss, th)


def diagnose_values(
    values: Sequence[float],
    direction: Literal["maximize", "minimize"],
    *,
    steps: Sequence[int] | None = None,
    thresholds: DiagnosisThresholds | None = None,
) -> Diagnosis:
    """Diagnose a trial from the one metric it reported (``trial.report``), step by step.

    Only the labels one curve can support come out: ``diverged`` (NaN or inf), ``bad_init``,
    ``plateau``, ``healthy`` or ``insufficient_data``. A maximized metric is read as an accuracy
    (absolute gains), a minimized one as a loss (relative changes).
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
    if direction == "minimize":
        found = _climbed(s, th, curve="value", what="the value")
        if found is not None:
            return found
        found = _bad_init(s, th)
        if found is not None:
            return found
        found = _plateau(None, s, {}, th)
        return found if found is not None else _healthy(None, None, s, th)
    found = _bad_init(_Series(s.epochs, [-v for v in s.values]), th, absolute=True)
    if found is not None:
        return found
    found = _plateau(s, s, {}, th)
    return found if found is not None else _healthy(None, s, s, th)


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
    lr: dict[int, float], metric: _Series | None, loss: _Series, th: DiagnosisThresholds
) -> Diagnosis | None:
    """A sharp LR drop early in the run, with progress stalling right after it."""
    lr_s = _series(list(lr), list(lr.values()))
    steps = [
        i
        for i in range(1, len(lr_s))
        if lr_s.values[i - 1] > 0 and lr_s.values[i] <= th.decay_ratio * lr_s.values[i - 1]
    ]
    if not steps:
        return None
    i = steps[0]
    decay_epoch = lr_s.epochs[i]
    last_epoch = max(lr_s.epochs[-1], loss.epochs[-1])
    if decay_epoch > th.early_decay_fraction * last_epoch:
        return None
    s = metric if metric is not None else loss
    absolute = metric is not None
    # k: the last evaluation trained at the old rate; the window before it and everything after.
    k = next((j for j, e in enumerate(s.epochs) if e >= decay_epoch), len(s)) - 1
    if k < 1 or len(s) - 1 - k < th.window:
        return None
    lo = max(0, k - th.window)
    rate_before = _gain(s, lo, k + 1, absolute) / max(1, s.epochs[k] - s.epochs[lo])
    rate_after = _gain(s, k, len(s), absolute) / max(1, s.epochs[-1] - s.epochs[k])
    if rate_before * th.window < th.min_gain or rate_after > th.stall_ratio * rate_before:
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
    the gap wide."""
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
    train_acc: _Series, val_acc: _Series, th: DiagnosisThresholds
) -> Diagnosis | None:
    """Train and validation accuracy close together and both low."""
    t, v = train_acc.values[-1], val_acc.values[-1]
    if t >= th.underfit_acc or abs(t - v) > th.underfit_gap:
        return None
    return _make(
        "underfitting",
        f"train accuracy {t:.3f} and validation accuracy {v:.3f} are close and both below "
        f"{th.underfit_acc}",
        train_acc.epochs[-1],
        train_acc_last=t,
        val_acc_last=v,
        underfit_acc=th.underfit_acc,
        underfit_gap=th.underfit_gap,
    )


def _lr_constant(lr: dict[int, float], first_epoch: int) -> bool:
    values = [v for e, v in lr.items() if e >= first_epoch and math.isfinite(v)]
    return not values or max(values) <= min(values) * (1 + 1e-6)


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
    metric: _Series | None, loss: _Series, lr: dict[int, float], th: DiagnosisThresholds
) -> Diagnosis | None:
    """Improved from the start, then flat over the last ``window`` epochs at a constant LR:
    a new best under ``flat_gain`` or under ``noise_z`` times the curve's noise."""
    s = metric if metric is not None else loss
    absolute = metric is not None
    if len(s) < th.window + 2:
        return None
    k = len(s) - th.window - 1
    total = _gain(s, 0, len(s), absolute)
    recent, noise, flat = _recent_best_gain(s, absolute, th)
    if total < th.min_gain or recent >= flat or not _lr_constant(lr, s.epochs[k]):
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


def _healthy(
    train_acc: _Series | None, metric: _Series | None, loss: _Series, th: DiagnosisThresholds
) -> Diagnosis:
    """No fault. Still rising when the last ``window`` evaluations moved the best by at least
    the flat threshold :func:`_plateau` uses; otherwise converged, with
    :data:`CONVERGED_ADVICE`."""
    s = metric if metric is not None else loss
    absolute = metric is not None
    k = max(0, len(s) - th.window - 1)
    recent = _gain(s, k, len(s), absolute)
    evidence: Evidence = {"recent_gain": recent, "window": th.window}
    rising, new_best, flat = True, 0.0, 0.0
    if len(s) >= th.window + 2:
        new_best, _, flat = _recent_best_gain(s, absolute, th)
        rising = new_best >= flat
        evidence.update(recent_best_gain=new_best, flat_threshold=flat)
    evidence["still_rising"] = int(rising)
    if train_acc is not None and metric is not None:
        evidence["gap_last"] = train_acc.values[-1] - metric.values[-1]
        evidence["val_acc_last"] = metric.values[-1]
    curve = "validation accuracy" if absolute else "the loss"
    diagnosis = _make(
        "healthy",
        f"no fault found; {curve} gained {recent:.3g} over the last {th.window} evaluations"
        + ("" if rising else f"; its best moved {new_best:.3g}, under the flat threshold "
           f"{flat:.3g}: converged"),
        s.epochs[-1] if len(s) else None,
        **evidence,
    )
    return diagnosis if rising else dataclasses.replace(diagnosis, advice=CONVERGED_ADVICE)
