"""The learning-curve diagnoses as pure functions: one table of labelled curves, and properties
over arbitrary curves (gaps, duplicates, NaN, inf, constants) that must never crash."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunesvc.curves._curves import Curves
from tunesvc.curves._diagnosis import (
    ADVICE,
    ALL_ADVICE,
    CLIMB_ADVICE,
    CONVERGED_ADVICE,
    LABELS,
    STILL_RISING_UNDERFIT_ADVICE,
    Diagnosis,
    DiagnosisThresholds,
    diagnose,
    diagnose_values,
)

NAN = math.nan
INF = math.inf


def make(
    train_loss: list[float],
    val_loss: list[float] | None = None,
    train_acc: list[float] | None = None,
    val_acc: list[float] | None = None,
    lr: list[float] | None = None,
    epochs: list[int] | None = None,
) -> Curves:
    n = len(train_loss)
    return Curves(
        epoch=epochs if epochs is not None else list(range(n)),
        train_loss=train_loss,
        val_loss=val_loss if val_loss is not None else [x * 1.05 for x in train_loss],
        train_acc=train_acc if train_acc is not None else [NAN] * n,
        val_acc=val_acc if val_acc is not None else [NAN] * n,
        lr=lr if lr is not None else [0.01] * n,
        seconds=[0.1] * n,
    )


def rising(start: float, end: float, n: int) -> list[float]:
    """Concave rise from start to end over n points (fast at first, like a learning curve)."""
    return [start + (end - start) * (1 - 0.8**i) / (1 - 0.8 ** (n - 1)) for i in range(n)]


def falling_loss(n: int, start: float = 2.3, end: float = 0.3) -> list[float]:
    return rising(start, end, n)


N = 20
CASES = [
    (
        "bad_initial_loss",
        make([40.0, 20.0, 10.0, 5.0, 3.0], train_acc=[0.1] * 5, val_acc=[0.1] * 5),
        10,
    ),
    ("diverged", make([2.3, 1.5, 1.2, NAN]), 10),
    ("diverged", make([2.3, 1.5, INF, 1.0]), None),
    ("diverged", make([2.3, 4.0, 9.0, 30.0, 50.0]), 10),
    (
        "bad_init",
        make(
            [2.30, 2.30, 2.29, 2.30, 2.29, 2.29, 1.5, 0.8, 0.5, 0.4],
            train_acc=[0.1] * 6 + [0.5, 0.8, 0.9, 0.95],
            val_acc=[0.1] * 6 + [0.5, 0.8, 0.88, 0.9],
        ),
        10,
    ),
    (
        "plateau",
        make(
            falling_loss(N),
            train_acc=rising(0.1, 0.93, 12) + [0.93] * 8,
            val_acc=rising(0.1, 0.92, 12) + [0.92] * 8,
        ),
        10,
    ),
    (
        "decay_too_early",
        make(
            [2.3, 1.6, 1.1] + [0.9] * 17,
            train_acc=[0.1, 0.4, 0.6] + [0.65] * 17,
            val_acc=[0.1, 0.4, 0.6] + [0.64] * 17,
            lr=[0.1] * 3 + [0.001] * 17,
        ),
        10,
    ),
    (
        "overfitting",
        make(
            falling_loss(N, end=0.01),
            val_loss=[2.3, 1.5, 1.0, 0.8, 0.7] + [0.7 + 0.05 * i for i in range(15)],
            train_acc=rising(0.1, 1.0, N),
            val_acc=rising(0.1, 0.8, 6) + [0.8 - 0.005 * i for i in range(1, 15)],
        ),
        10,
    ),
    (
        "underfitting",
        make(
            falling_loss(N, end=1.6),
            train_acc=rising(0.1, 0.45, N),
            val_acc=rising(0.1, 0.44, N),
            lr=[0.01 * (1 - i / N) for i in range(N)],
        ),
        10,
    ),
    (
        "healthy",
        make(
            falling_loss(N, end=0.2),
            train_acc=rising(0.1, 0.97, N),
            val_acc=rising(0.1, 0.94, N),
        ),
        10,
    ),
    ("insufficient_data", make([2.3]), 10),
    ("insufficient_data", make([]), 10),
    ("insufficient_data", make([NAN, NAN, NAN], val_loss=[NAN] * 3), None),
    # Missing epochs: the same overfitting story with holes in it.
    (
        "overfitting",
        make(
            [2.3, 1.0, 0.5, 0.2, 0.1, 0.05, 0.02],
            val_loss=[2.3, 1.1, 0.8, 0.9, 1.0, 1.1, 1.3],
            train_acc=[0.1, 0.7, 0.85, 0.95, 0.98, 1.0, 1.0],
            val_acc=[0.1, 0.65, 0.75, 0.74, 0.72, 0.70, 0.68],
            epochs=[0, 1, 3, 6, 9, 14, 20],
        ),
        10,
    ),
]


@pytest.mark.parametrize(
    ("label", "curves", "num_classes"),
    CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)],
)
def test_diagnose_labels_curves(label: str, curves: Curves, num_classes: int | None) -> None:
    d = diagnose(curves, num_classes=num_classes)
    assert d.label == label, d.reason
    assert d.advice == ADVICE[label]
    assert d.reason
    assert json.dumps(d.to_json(), allow_nan=False)


def test_initial_loss_near_log_classes_is_not_flagged() -> None:
    curves = make(falling_loss(N), train_acc=rising(0.1, 0.97, N), val_acc=rising(0.1, 0.94, N))
    assert diagnose(curves, num_classes=10).label == "healthy"
    # The same curve judged as a 1000-class problem starts far below log(1000).
    assert diagnose(curves, num_classes=1000).label == "bad_initial_loss"


def test_bad_initial_loss_needs_epoch_zero() -> None:
    curves = make([40.0, 20.0, 10.0, 5.0], epochs=[1, 2, 3, 4])
    assert diagnose(curves, num_classes=10).label != "bad_initial_loss"


def test_thresholds_are_used() -> None:
    curves = make([2.3, 4.0, 5.0, 5.5])  # climbs to 2.4x its start
    assert diagnose(curves).label != "diverged"
    assert diagnose(curves, thresholds=DiagnosisThresholds(diverge_ratio=2.0)).label == "diverged"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("min_points", 0),
        ("window", 1.5),
        ("diverge_ratio", 1.0),
        ("overfit_gap", -0.1),
        ("decay_ratio", 1.0),
        ("flat_gain", NAN),
        ("noise_z", -1.0),
        ("underfit_acc", True),
    ],
)
def test_invalid_thresholds_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"^{field}: expected"):
        DiagnosisThresholds(**{field: value})  # type: ignore[arg-type]


# Rose to ~0.93, then jitters there by about +-0.01 (a 1000-sample validation set's noise) at
# a constant learning rate, the last evaluation a new best by 0.01: above flat_gain, inside the
# noise.
JITTER = [0.93, 0.915, 0.94, 0.92, 0.935, 0.915, 0.93, 0.918, 0.928, 0.95]


def noisy_plateau(lr: list[float] | None = None) -> Curves:
    return make(
        falling_loss(N, end=0.2),
        train_acc=rising(0.1, 0.95, 10) + [0.95] * 10,
        val_acc=rising(0.1, 0.93, 10) + JITTER,
        lr=lr,
    )


def test_a_new_best_within_the_noise_is_a_plateau() -> None:
    d = diagnose(noisy_plateau(), num_classes=10)
    assert d.label == "plateau", d.reason
    evidence = d.evidence
    assert isinstance(evidence["recent_gain"], float) and evidence["recent_gain"] > 0.005
    assert isinstance(evidence["noise"], float) and 0.005 < evidence["noise"] < 0.03
    assert evidence["flat_threshold"] == pytest.approx(2 * evidence["noise"], abs=1e-6)
    # Judged by flat_gain alone (noise_z 0), the same noisy new best reads as progress.
    off = diagnose(noisy_plateau(), num_classes=10, thresholds=DiagnosisThresholds(noise_z=0))
    assert off.label == "healthy", off.reason
    # The same jitter with decay is no plateau: the learning rate did not stay constant.
    decayed = noisy_plateau(lr=[0.01 * 0.9**i for i in range(N)])
    converged = diagnose(decayed, num_classes=10)
    assert converged.label == "healthy", converged.reason
    # ...but it is no longer rising, so "train longer" is not the advice.
    assert converged.evidence["still_rising"] == 0
    assert converged.advice == CONVERGED_ADVICE
    assert "converged" in converged.reason
    assert off.evidence["still_rising"] == 1 and off.advice == ADVICE["healthy"]


def test_steady_progress_beats_the_noise() -> None:
    """A curve still rising by 0.04 an epoch through +-0.005 jitter stays healthy."""
    val = [0.1 + 0.04 * i + (0.005 if i % 2 else -0.005) for i in range(N)]
    curves = make(falling_loss(N, end=0.2), train_acc=[v + 0.03 for v in val], val_acc=val)
    d = diagnose(curves, num_classes=10)
    assert d.label == "healthy", d.reason
    assert d.evidence["still_rising"] == 1 and d.advice == ADVICE["healthy"]
    # A 3-step rise of 0.12 dwarfs the noise: the metric-only diagnosis agrees.
    assert diagnose_values(val, "maximize").label == "healthy"


@pytest.mark.parametrize(
    ("values", "direction", "label"),
    [
        ([0.1, 0.5, 0.7, 0.8, 0.85, 0.88, 0.9], "maximize", "healthy"),
        # Flat: a plateau or a finished schedule; one curve cannot tell without the LR.
        ([0.1, 0.5, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9], "maximize", "inconclusive"),
        ([2.3, 1.0, 0.5, 0.4, 0.4, 0.4, 0.4, 0.4], "minimize", "inconclusive"),
        # A validation loss back up 35% from its minimum: overfitting or a slow divergence.
        ([2.3, 1.0, 0.8, 0.9, 1.0, 1.1, 1.2], "minimize", "inconclusive"),
        # An accuracy that fell back most of the way to its start: no overfitting does that.
        ([0.1, 0.6, 0.7, 0.5, 0.3, 0.2, 0.15], "maximize", "diverged"),
        # Overfitting's small loss of validation accuracy is not a collapse.
        ([0.1, 0.6, 0.8, 0.82, 0.8, 0.79, 0.78], "maximize", "inconclusive"),
        # Issue 14: a spike, then stuck at chance (log 10) for good.
        ([2.305, 4.54, 2.303, 2.303, 2.302, 2.303], "minimize", "diverged"),
        ([0.1, 0.5, NAN], "maximize", "diverged"),
        ([2.3, 1.0, 0.5, 0.4, 0.35, 0.32], "minimize", "healthy"),
        ([2.3, 5.0, 9.0, 20.0], "minimize", "diverged"),
        ([2.3, 2.3, 2.3, 2.3, 2.29, 1.0, 0.5], "minimize", "bad_init"),
        ([0.1, 0.1, 0.1, 0.1, 0.1, 0.6, 0.8], "maximize", "bad_init"),
        ([0.5], "maximize", "insufficient_data"),
        ([], "minimize", "insufficient_data"),
        ([0.3, 0.3, 0.3, 0.3], "maximize", "inconclusive"),  # never moved: cannot tell why
        ([0.2, 0.15, 0.15], "maximize", "inconclusive"),  # too short to judge, and not rising
    ],
)
def test_diagnose_values(values: list[float], direction: str, label: str) -> None:
    d = diagnose_values(values, direction)  # type: ignore[arg-type]
    assert d.label == label, d.reason
    assert d.advice in ALL_ADVICE[label]


@pytest.mark.parametrize(
    ("values", "direction", "seen"),
    [
        ([0.1, 0.5, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9], "maximize", "flat"),
        ([2.3, 1.0, 0.8, 0.9, 1.0, 1.1, 1.2], "minimize", "worsening"),
    ],
)
def test_inconclusive_says_what_it_saw(values: list[float], direction: str, seen: str) -> None:
    d = diagnose_values(values, direction)  # type: ignore[arg-type]
    assert (d.label, d.evidence["seen"]) == ("inconclusive", seen)
    assert "report_epoch" in d.advice


def test_diagnosis_json_round_trip() -> None:
    d = Diagnosis("diverged", "r", ADVICE["diverged"], 3, {"a": 1.5, "b": NAN, "c": "x"})
    back = Diagnosis.from_json(json.loads(json.dumps(d.to_json(), allow_nan=False)))
    assert back.label == d.label and back.epoch == 3 and back.evidence["b"] is None


values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.floats(min_value=0.0, max_value=3.0),
    st.sampled_from([0.0, 1.0, NAN, INF, -INF, 2.302585]),
)


@st.composite
def any_curves(draw: st.DrawFn) -> Curves:
    n = draw(st.integers(0, 30))
    epochs = draw(
        st.one_of(
            st.just(list(range(n))),
            st.lists(st.integers(0, 60), min_size=n, max_size=n),  # gaps, duplicates, disorder
        )
    )
    cols = {
        name: draw(st.lists(values, min_size=n, max_size=n))
        for name in ("train_loss", "val_loss", "train_acc", "val_acc", "lr", "seconds")
    }
    return Curves(epoch=epochs, **cols)


@settings(max_examples=150, deadline=None)
@given(
    curves=any_curves(),
    num_classes=st.sampled_from([None, 2, 10]),
    reference=st.one_of(st.none(), st.floats(0.0, 1.0)),
    ahead=st.booleans(),
)
def test_diagnose_never_crashes(
    curves: Curves, num_classes: int | None, reference: float | None, ahead: bool
) -> None:
    d = diagnose(curves, num_classes=num_classes, reference_acc=reference, lr_decay_ahead=ahead)
    assert d.label in LABELS
    assert d.advice in ALL_ADVICE[d.label]
    data = json.loads(json.dumps(d.to_json(), allow_nan=False))
    assert Diagnosis.from_json(data).label == d.label
    if d.epoch is not None:
        assert d.epoch in curves.epoch


@settings(max_examples=200, deadline=None)
@given(
    v=st.lists(values, max_size=40),
    direction=st.sampled_from(["maximize", "minimize"]),
)
def test_diagnose_values_never_crashes(v: list[float], direction: str) -> None:
    d = diagnose_values(v, direction)  # type: ignore[arg-type]
    # One curve shows neither the learning rate nor the train curves: no label that needs them.
    assert d.label in ("diverged", "bad_init", "inconclusive", "healthy", "insufficient_data")
    assert d.advice in ALL_ADVICE[d.label]
    json.dumps(d.to_json(), allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(3, 30),
    c=st.floats(0.01, 10.0),
    acc=st.floats(0.0, 1.0),
)
def test_constant_curves_are_never_a_fault_of_change(n: int, c: float, acc: float) -> None:
    """A curve that never moves has neither diverged, nor plateaued, nor overfitted."""
    d = diagnose(make([c] * n, val_loss=[c] * n, train_acc=[acc] * n, val_acc=[acc] * n))
    assert d.label not in ("diverged", "plateau", "overfitting", "bad_init", "decay_too_early")


@settings(max_examples=100, deadline=None)
@given(n=st.integers(2, 30), pos=st.data())
def test_a_nan_loss_at_the_end_is_divergence(n: int, pos: st.DataObject) -> None:
    loss = falling_loss(n)
    loss[-1] = pos.draw(st.sampled_from([NAN, INF]))
    assert diagnose(make(loss, val_loss=falling_loss(n))).label == "diverged"


# Mild faults, in the shapes real runs gave (tests/benchmarks/bench_fault_suite.py).
MILD = [
    # Issue 15: weight decay pulls the residual MLP back: train loss 1.03 at epoch 2 -> 1.80
    # (log 6) at epoch 30, train accuracy 0.655 -> 0.160. Never 3x its start.
    (
        "diverged",
        make(
            [1.97, 1.2, 1.03] + [1.03 + 0.77 * i / 27 for i in range(1, 28)],
            val_loss=[1.99, 1.2, 1.05] + [1.05 + 0.75 * i / 27 for i in range(1, 28)],
            train_acc=[0.13, 0.6, 0.655] + [0.655 - 0.495 * i / 27 for i in range(1, 28)],
            val_acc=[0.12, 0.6, 0.65] + [0.65 - 0.49 * i / 27 for i in range(1, 28)],
            lr=[0.003 * 0.5 * (1 + math.cos(math.pi * i / 30)) for i in range(30)],
        ),
        6,
    ),
    # Issue 14: lr 0.1, the loss spiked to 4.54 and the network sat at chance ever after.
    (
        "diverged",
        make(
            [2.305, 4.54, 2.31, 2.303, 2.303, 2.303, 2.302, 2.303],
            val_loss=[2.305, 2.35, 2.31, 2.304, 2.303, 2.303, 2.303, 2.303],
            train_acc=[0.1, 0.1, 0.09, 0.1, 0.09, 0.1, 0.1, 0.09],
            val_acc=[0.1, 0.09, 0.1, 0.1, 0.09, 0.1, 0.1, 0.1],
        ),
        10,
    ),
    # LR x0.1 at 25% of 30 epochs: the curve had nearly converged before the step.
    (
        "decay_too_early",
        make(
            falling_loss(30, end=0.05),
            train_acc=rising(0.13, 0.99, 30),
            val_acc=[0.12, 0.85, 0.89, 0.9, 0.92, 0.93, 0.93, 0.94, 0.935]
            + [0.955, 0.957, 0.958] + [0.958 + (0.002 if i % 2 else 0.0) for i in range(18)],
            lr=[0.003] * 9 + [0.0003] * 21,
        ),
        6,
    ),
    # Healthy: flat for a while at a constant rate, then a step at 60% and converged.
    (
        "healthy",
        make(
            falling_loss(30, end=0.01),
            train_acc=rising(0.13, 0.999, 30),
            val_acc=rising(0.12, 0.94, 15) + [0.94, 0.942, 0.94] + [0.955] * 12,
            lr=[0.003] * 18 + [0.0003] * 12,
        ),
        6,
    ),
]


@pytest.mark.parametrize(("label", "curves", "num_classes"), MILD,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(MILD)])
def test_mild_faults(label: str, curves: Curves, num_classes: int) -> None:
    d = diagnose(curves, num_classes=num_classes)
    assert d.label == label, d.reason
    assert d.advice in ALL_ADVICE[label]


def test_a_slow_climb_is_advised_on_both_of_its_causes() -> None:
    d = diagnose(MILD[0][1], num_classes=6)
    assert d.evidence["kind"] in ("climbed_back", "collapsed")
    assert d.advice == CLIMB_ADVICE and "weight decay" in d.advice
    # A NaN is plainly a learning rate too high.
    nan = diagnose(make([2.3, 1.5, NAN]), num_classes=10)
    assert (nan.label, nan.advice) == ("diverged", ADVICE["diverged"])


def test_a_run_whose_lr_decays_never_hears_use_lr_decay() -> None:
    flat = rising(0.1, 0.9, 10) + [0.9] * 10
    curves = make(falling_loss(N), train_acc=[v + 0.02 for v in flat], val_acc=flat)
    assert diagnose(curves).label == "plateau"
    for lr in ([0.01] * 15 + [0.001] * 5, [0.01 * 0.5 * (1 + math.cos(math.pi * i / N))
                                           for i in range(N)]):
        curves.lr = lr
        d = diagnose(curves)
        assert d.label == "healthy" and d.advice == CONVERGED_ADVICE, d.reason


def test_no_plateau_without_a_learning_rate() -> None:
    flat = rising(0.1, 0.9, 10) + [0.9] * 10
    curves = make(falling_loss(N), train_acc=[v + 0.02 for v in flat], val_acc=flat,
                  lr=[NAN] * N)
    d = diagnose(curves)
    assert (d.label, d.evidence["seen"]) == ("inconclusive", "flat"), d.reason
    assert "constant learning rate" not in d.advice


def test_without_train_curves_says_what_it_did_not_check() -> None:
    val = rising(0.1, 0.9, N)
    curves = make([NAN] * N, val_loss=falling_loss(N), val_acc=val)
    d = diagnose(curves)
    assert d.label == "healthy" and d.evidence["still_rising"] == 1
    assert "not checked for overfitting, underfitting" in d.reason


def underfit(end: float, still_rising: bool = False) -> Curves:
    val = rising(0.1, end, N) if still_rising else rising(0.1, end, 10) + [end] * 10
    return make(falling_loss(N, end=0.5), train_acc=[v + 0.01 for v in val], val_acc=val,
                lr=[0.01 * 0.5 * (1 + math.cos(math.pi * i / N)) for i in range(N)])


@pytest.mark.parametrize(
    ("end", "reference", "label"),
    [
        (0.85, 0.95, "underfitting"),  # 0.10 below what the study reaches
        (0.85, 0.88, "healthy"),  # within underfit_margin of it
        (0.85, None, "healthy"),  # no reference: above underfit_acc 0.8
        (0.70, None, "underfitting"),
        (0.30, 0.35, "healthy"),  # a hard task: the study's best is low too
    ],
)
def test_underfitting_is_judged_against_the_study(
    end: float, reference: float | None, label: str
) -> None:
    d = diagnose(underfit(end), num_classes=10, reference_acc=reference)
    assert d.label == label, d.reason
    if label == "underfitting":
        assert d.evidence["reference_acc"] == reference
        assert d.advice == ADVICE["underfitting"]


def test_underfitting_still_rising_is_told_to_train_longer() -> None:
    d = diagnose(underfit(0.6, still_rising=True), num_classes=10, reference_acc=0.95)
    assert d.label == "underfitting" and d.evidence["still_rising"] == 1
    assert d.advice == STILL_RISING_UNDERFIT_ADVICE


@pytest.mark.parametrize("reference", [1.5, -0.1, NAN, True, "0.9"])
def test_reference_acc_is_validated(reference: object) -> None:
    with pytest.raises(ValueError, match="^reference_acc: expected an accuracy in"):
        diagnose(underfit(0.8), reference_acc=reference)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(curves=any_curves(), num_classes=st.sampled_from([None, 2, 10]))
def test_never_claims_what_the_curves_cannot_show(
    curves: Curves, num_classes: int | None
) -> None:
    """Without an LR series no plateau; without train curves no over- or underfitting; an LR
    that fell is never told to decay."""
    n = len(curves.epoch)
    no_lr = Curves(**{**vars(curves), "lr": [NAN] * n})
    assert diagnose(no_lr, num_classes=num_classes).label != "plateau"
    no_train = Curves(**{**vars(curves), "train_loss": [NAN] * n, "train_acc": [NAN] * n})
    label = diagnose(no_train, num_classes=num_classes).label
    assert label not in ("overfitting", "underfitting")
    if n >= 2:
        decayed = Curves(**{**vars(curves), "lr": [1.0 / (1 + e) for e in curves.epoch]})
        assert diagnose(decayed, num_classes=num_classes).label != "plateau"


def test_an_accuracy_wobbling_under_a_still_falling_loss_is_not_divergence() -> None:
    """bench_fault_labels' width-1 MLP on digits (seed 0): train accuracy up to 0.267 at epoch
    3 and back to 0.22, while the train loss falls to a new low at every epoch but one. A model
    too small to use its better loss underfits; it did not diverge."""
    train_loss = [2.536, 2.517, 2.454, 2.377, 2.315, 2.267, 2.212, 2.18, 2.151, 2.133, 2.101,
                  2.098, 2.066, 2.073, 2.066, 2.052, 2.047, 2.038, 2.035, 2.033, 2.03]
    train_acc = [0.121, 0.123, 0.093, 0.267, 0.261, 0.24, 0.227, 0.221, 0.213, 0.22, 0.22, 0.219,
                 0.22, 0.22, 0.211, 0.213, 0.216, 0.218, 0.218, 0.213, 0.221]
    val_acc = [0.103, 0.106, 0.184, 0.284, 0.242, 0.226, 0.201, 0.198, 0.201, 0.248, 0.234,
               0.231, 0.237, 0.231, 0.234, 0.226, 0.228, 0.231, 0.231, 0.231, 0.231]
    curves = make(train_loss, train_acc=train_acc, val_acc=val_acc)
    assert diagnose(curves, num_classes=10).label == "underfitting"
    # The same accuracies over a train loss that gave its progress back: a collapse.
    back = train_loss[:4] + [2.3 + 0.02 * i for i in range(len(train_loss) - 4)]
    d = diagnose(make(back, train_acc=train_acc, val_acc=val_acc), num_classes=10)
    assert d.label == "diverged", d.reason
