"""LearningCurvePruner in real Optuna studies, on a temporary SQLite file and on PostgreSQL."""

from __future__ import annotations

import math
import time
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from tunesvc import CURVES_ATTR, Curves
from tunesvc._errors import SpecError
from tunesvc._pruner import NUM_CLASSES_ATTR, Decision, LearningCurvePruner, make_pruner
from tunesvc.curves._diagnosis import LABELS

NAN = math.nan
optuna.logging.set_verbosity(optuna.logging.WARNING)


def curve(quality: float, epochs: int) -> list[float]:
    """A learning curve rising towards ``quality``."""
    return [quality * (1 - 0.7**e) for e in range(epochs + 1)]


def add_finished(study: optuna.Study, qualities: list[float], epochs: int = 9) -> None:
    study.add_trials(
        [
            optuna.trial.create_trial(
                value=max(curve(q, epochs)),
                intermediate_values=dict(enumerate(curve(q, epochs))),
            )
            for q in qualities
        ]
    )


def running(
    study: optuna.Study, values: dict[int, float], curves: Curves | None = None
) -> FrozenTrial:
    """A RUNNING trial that reported ``values`` (and recorded ``curves``), as storage has it."""
    trial = study.ask()
    for step, v in values.items():
        trial.report(v, step)
    if curves is not None:
        trial.set_user_attr(CURVES_ATTR, curves.to_json())
        trial.set_user_attr(NUM_CLASSES_ATTR, 10)
    return next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)


def four_curves(
    train_loss: list[float],
    val_loss: list[float],
    train_acc: list[float],
    val_acc: list[float],
    epochs: list[int] | None = None,
) -> Curves:
    n = len(train_loss)
    return Curves(
        epoch=epochs if epochs is not None else list(range(n)),
        train_loss=train_loss,
        val_loss=val_loss,
        train_acc=train_acc,
        val_acc=val_acc,
        lr=[0.01] * n,
        seconds=[0.1] * n,
    )


@pytest.fixture
def study(storage_url: str) -> optuna.Study:
    return optuna.create_study(
        storage=storage_url, direction="maximize", pruner=LearningCurvePruner()
    )


def test_prunes_divergence_at_once(study: optuna.Study) -> None:
    c = four_curves([2.3, 40.0], [2.3, 45.0], [0.1, 0.1], [0.1, 0.1])
    trial = running(study, {0: 0.1, 1: 0.1}, c)
    decision = LearningCurvePruner().decide(study, trial)
    assert decision.action == "prune"
    assert decision.diagnosis.label == "diverged"
    assert decision.diagnosis.evidence["curve"] == "train_loss"


def test_prunes_a_bad_initial_loss_at_epoch_one(study: optuna.Study) -> None:
    c = four_curves([500.0, 300.0], [510.0, 320.0], [0.1, 0.1], [0.1, 0.12])
    decision = LearningCurvePruner().decide(study, running(study, {0: 0.1, 1: 0.12}, c))
    assert (decision.action, decision.diagnosis.label) == ("prune", "bad_initial_loss")


def test_prunes_divergence_of_a_plain_reported_metric(study: optuna.Study) -> None:
    trial = running(study, {0: 0.1, 1: 0.5, 2: NAN})
    assert LearningCurvePruner().decide(study, trial).diagnosis.label == "diverged"
    assert study.pruner.prune(study, trial)


def test_prunes_the_bottom_at_a_rung_and_keeps_the_best(study: optuna.Study) -> None:
    add_finished(study, [0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    pruner = LearningCurvePruner(reduction_factor=3)
    worst = running(study, dict(enumerate(curve(0.55, 3))))
    best = running(study, dict(enumerate(curve(0.97, 3))))
    decision = pruner.decide(study, worst)
    assert decision.action == "prune"
    assert decision.diagnosis.evidence["rung"] == 3
    assert decision.diagnosis.evidence["trials_at_rung"] == 6
    assert decision.diagnosis.evidence["kept"] == 2
    assert "ranked" in decision.diagnosis.reason
    assert pruner.decide(study, best).action == "continue"


def test_decides_only_at_rungs(study: optuna.Study) -> None:
    add_finished(study, [0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    pruner = LearningCurvePruner(reduction_factor=3)
    assert pruner.decide(study, running(study, dict(enumerate(curve(0.5, 3))))).action == "prune"
    # Epoch 4 is past rung 3, whose decision was made at epoch 3: no new ranking until 9.
    assert pruner.decide(study, running(study, dict(enumerate(curve(0.5, 4))))).action == (
        "continue"
    )
    # A trial that skipped epoch 3 is ranked at its first report past it.
    skipped = {0: 0.0, 1: 0.1, 2: 0.15, 5: 0.2}
    assert pruner.decide(study, running(study, skipped)).action == "prune"


def test_minimize_direction(storage_url: str) -> None:
    study = optuna.create_study(storage=storage_url, direction="minimize")
    study.add_trials(
        [
            optuna.trial.create_trial(
                value=1 - q, intermediate_values={e: 1 - v for e, v in enumerate(curve(q, 9))}
            )
            for q in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
        ]
    )
    pruner = LearningCurvePruner()
    good = running(study, {e: 1 - v for e, v in enumerate(curve(0.97, 3))})
    bad = running(study, {e: 1 - v for e, v in enumerate(curve(0.55, 3))})
    assert pruner.decide(study, good).action == "continue"
    assert pruner.decide(study, bad).action == "prune"


def test_early_stops_overfitting(study: optuna.Study) -> None:
    n = 12
    train_acc = [min(1.0, 0.1 + 0.15 * e) for e in range(n)]
    val_acc = [0.1, 0.4, 0.6, 0.75, 0.8, 0.8, 0.79, 0.78, 0.77, 0.76, 0.75, 0.74]
    c = four_curves(
        [2.3 * 0.6**e for e in range(n)],
        [2.3, 1.5, 1.0, 0.8, 0.7, 0.72, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3],
        train_acc,
        val_acc,
    )
    trial = running(study, dict(enumerate(val_acc)), c)
    decision = LearningCurvePruner().decide(study, trial)
    assert decision.action == "early_stop"
    assert decision.diagnosis.label == "overfitting"
    assert LearningCurvePruner().prune(study, trial)
    assert LearningCurvePruner(early_stop=()).decide(study, trial).action == "continue"


def test_plain_objective_with_report_only(storage_url: str) -> None:
    """A plain objective: the best trials complete, the worst are pruned, all by report()."""
    qualities = [0.6, 0.9, 0.5, 0.95, 0.4, 0.7, 0.3, 0.85, 0.2, 0.99, 0.35, 0.45]

    def objective(trial: optuna.Trial) -> float:
        q = qualities[trial.number]
        for step, v in enumerate(curve(q, 12)):
            trial.report(v, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return max(curve(q, 12))

    study = optuna.create_study(
        storage=storage_url, direction="maximize", pruner=LearningCurvePruner()
    )
    study.optimize(objective, n_trials=len(qualities))
    states = {qualities[t.number]: t.state for t in study.trials}
    assert states[0.99] == TrialState.COMPLETE
    assert states[0.95] == TrialState.COMPLETE
    pruned = sorted(q for q, s in states.items() if s == TrialState.PRUNED)
    assert pruned == [0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.7, 0.85]


DEGENERATE = {
    "missing_epochs": four_curves(
        [2.3, 1.0, 0.7], [2.3, 1.1, 0.9], [0.1, 0.6, 0.8], [0.1, 0.6, 0.75], epochs=[0, 3, 7]
    ),
    "single_point": four_curves([2.3], [2.3], [0.1], [0.1]),
    "constant": four_curves([1.0] * 6, [1.0] * 6, [0.5] * 6, [0.5] * 6),
    "nan_everywhere": four_curves([NAN] * 4, [NAN] * 4, [NAN] * 4, [NAN] * 4),
    "nan_accuracies": four_curves(
        [2.3, 1.0, 0.5, 0.4], [2.3, 1.1, 0.6, 0.5], [NAN] * 4, [NAN] * 4
    ),
    "nan_in_the_middle": four_curves(
        [2.3, NAN, 0.5, 0.4], [2.3, 1.1, NAN, 0.5], [0.1, 0.5, NAN, 0.8], [0.1, NAN, 0.7, 0.75]
    ),
    "empty": four_curves([], [], [], []),
}


def test_degenerate_curves_never_crash(study: optuna.Study) -> None:
    add_finished(study, [0.5, 0.9])
    labels = {}
    for name, c in DEGENERATE.items():
        values = {e: v for e, v in zip(c.epoch, c.val_acc, strict=True)} or {0: 0.1}
        decision = LearningCurvePruner().decide(study, running(study, values, c))
        assert isinstance(decision, Decision)
        assert decision.diagnosis.label in LABELS
        labels[name] = decision.diagnosis.label
    assert labels["single_point"] == labels["empty"] == "insufficient_data"
    assert labels["nan_everywhere"] == "insufficient_data"


def test_no_report_yet(study: optuna.Study) -> None:
    decision = LearningCurvePruner().decide(study, running(study, {}))
    assert decision == Decision("continue", decision.diagnosis)
    assert decision.diagnosis.label == "insufficient_data"


def test_fresh_instances_and_fresh_study_objects_decide_alike(storage_url: str) -> None:
    """No state on the instance, and the per-process memo is only a cache of storage."""
    study = optuna.create_study(storage=storage_url, direction="maximize")
    add_finished(study, [0.3, 0.5, 0.7, 0.9])
    trials = [
        running(study, dict(enumerate(curve(q, e)))) for q in (0.4, 0.8, 0.95) for e in (1, 3)
    ]
    first = [LearningCurvePruner().decide(study, t) for t in trials]
    add_finished(study, [0.85, 0.92])  # more trials finish; the memo must see them
    second = [LearningCurvePruner().decide(study, t) for t in trials]
    other_worker = optuna.load_study(study_name=study.study_name, storage=storage_url)
    assert [LearningCurvePruner().decide(other_worker, t) for t in trials] == second
    assert first != second  # the two new finishers changed some ranks
    # A low-numbered trial finishing late is found too: warmed memo and a cold one agree.
    study.tell(trials[1].number, state=TrialState.PRUNED)
    warm = [LearningCurvePruner().decide(study, t) for t in trials[2:]]
    cold_worker = optuna.load_study(study_name=study.study_name, storage=storage_url)
    assert [LearningCurvePruner().decide(cold_worker, t) for t in trials[2:]] == warm
    assert [d.action for d in first].count("prune") >= 1


def test_rank_staleness_ranks_against_a_background_read(storage_url: str) -> None:
    """With rank_staleness_s, a rung decision uses the last read (no database read of its own)
    and a background thread brings the read up to date within about that many seconds."""
    study = optuna.create_study(storage=storage_url, direction="maximize")
    add_finished(study, [0.3, 0.5, 0.7])
    trial = running(study, dict(enumerate(curve(0.6, 3))))
    lazy = LearningCurvePruner(reduction_factor=3, rank_staleness_s=3600)
    assert lazy.decide(study, trial).diagnosis.evidence["trials_at_rung"] == 3  # first: reads
    add_finished(study, [0.8, 0.9, 0.95, 0.97])
    # The next decision ranks against that read: the new finishers are not seen for an hour.
    assert lazy.decide(study, trial).diagnosis.evidence["trials_at_rung"] == 3

    other_worker = optuna.load_study(study_name=study.study_name, storage=storage_url)
    quick = LearningCurvePruner(reduction_factor=3, rank_staleness_s=0.2)
    assert quick.decide(other_worker, trial).diagnosis.evidence["trials_at_rung"] == 7
    add_finished(study, [0.1, 0.99])
    deadline = time.monotonic() + 20
    while quick.decide(other_worker, trial).diagnosis.evidence["trials_at_rung"] != 9:
        assert time.monotonic() < deadline, "the background read never caught up"
        time.sleep(0.05)
    # Caught up, it decides as a read at every decision (rank_staleness_s=0) does.
    caught_up = quick.decide(other_worker, trial)
    assert caught_up == LearningCurvePruner(reduction_factor=3).decide(study, trial)
    assert caught_up.action == "prune"


def test_make_pruner_gives_tunesvc_studies_a_background_read() -> None:
    assert make_pruner("diagnostic")._rank_staleness_s == 2.0  # type: ignore[attr-defined]
    assert LearningCurvePruner()._rank_staleness_s == 0.0
    pruner = make_pruner("diagnostic", {"rank_staleness_s": 0})
    assert pruner._rank_staleness_s == 0.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("diagnostic", {"min_epochs": -3}, "pruner.min_epochs: expected an int >= 1, got -3"),
        ("diagnostic", {"reduction_factor": 1}, "pruner.reduction_factor: expected an int >= 2"),
        ("diagnostic", {"min_trials": "2"}, "pruner.min_trials: expected an int >= 1, got '2'"),
        ("diagnostic", {"early_stop": ["diverged"]}, "pruner.early_stop: expected labels"),
        ("diagnostic", {"early_stop": "plateau"}, "pruner.early_stop: expected a list"),
        ("diagnostic", {"window": 0}, "pruner.window: expected an int >= 1, got 0"),
        ("diagnostic", {"overfit_gap": -1.0}, "pruner.overfit_gap: expected a finite number"),
        ("diagnostic", {"num_classes": 1}, "pruner.num_classes: expected an int >= 2"),
        ("diagnostic", {"patience": 3}, "pruner.patience: unknown setting; expected "),
        ("diagnostic", {"rank_staleness_s": -1}, "pruner.rank_staleness_s: expected seconds"),
        ("median", {"n_startup_trials": -1}, "pruner.n_startup_trials: expected an int >= 0"),
        ("median", {"interval_steps": 0.5}, "pruner.interval_steps: expected an int >= 1"),
        ("hyperband", {"reduction_factor": 1}, "pruner.reduction_factor: expected an int >= 2"),
        ("hyperband", {"max_resource": "lots"}, "pruner.max_resource: expected an int >= 1"),
        ("hyperband", {"min_epochs": 1}, "pruner.min_epochs: unknown setting"),
        ("none", {"n_startup_trials": 1}, "pruner.n_startup_trials: unknown setting"),
        ("asha", {}, "pruner: expected one of diagnostic, median, hyperband, none, got 'asha'"),
    ],
)
def test_invalid_settings_name_the_field(
    name: str, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError) as info:
        make_pruner(name, settings)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("name", "settings", "kind"),
    [
        ("diagnostic", {}, LearningCurvePruner),
        (
            "diagnostic",
            {"reduction_factor": 2, "window": 5, "early_stop": ["overfitting"]},
            LearningCurvePruner,
        ),
        ("median", {"n_startup_trials": 3}, optuna.pruners.MedianPruner),
        ("hyperband", {"max_resource": 30}, optuna.pruners.HyperbandPruner),
        ("none", {}, optuna.pruners.NopPruner),
    ],
)
def test_make_pruner(name: str, settings: dict[str, Any], kind: type) -> None:
    assert isinstance(make_pruner(name, settings), kind)


def test_constructor_validates_like_optuna() -> None:
    with pytest.raises(ValueError, match="min_epochs"):
        LearningCurvePruner(min_epochs=0)
