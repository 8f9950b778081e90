"""LearningCurvePruner: its pure ``decide``, and in real Optuna studies on a temporary SQLite
file and on PostgreSQL (``prune``, ``should_stop``, repeatability)."""

from __future__ import annotations

import copy
import math
import pickle
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from tunesvc import CURVES_ATTR, Curves, should_stop
from tunesvc._errors import SpecError
from tunesvc.curves._diagnosis import LABELS
from tunesvc.pruning import Decision, LearningCurvePruner, make_pruner
from tunesvc.pruning._policy import FinishedTrials
from tunesvc.storage import attrs

NAN = math.nan
EPOCHS = 12
optuna.logging.set_verbosity(optuna.logging.WARNING)


def curve(quality: float, epochs: int = EPOCHS, speed: float = 0.7) -> dict[int, float]:
    """Validation accuracy rising towards ``quality``, epochs 1..epochs."""
    return {e: quality * (1 - speed**e) for e in range(1, epochs + 1)}


def finished(*qualities: float) -> FinishedTrials:
    """Completed trials whose curves level off early (a curve still bending at its end reads
    as evaluation noise, which keeps the pruner from stopping anything early)."""
    board = FinishedTrials()
    for i, q in enumerate(qualities):
        board.add(i, "COMPLETE", curve(q, speed=0.4))
    return board


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


PRUNER = LearningCurvePruner(max_epochs=EPOCHS)


# --- decide: pure --------------------------------------------------------------------------


def test_prunes_divergence_at_once() -> None:
    c = four_curves([2.3, 40.0], [2.3, 45.0], [0.1, 0.1], [0.1, 0.1])
    decision = PRUNER.decide({0: 0.1, 1: 0.1}, c, finished(), "maximize")
    assert decision.action == "prune"
    assert decision.diagnosis.label == "diverged"
    assert decision.diagnosis.evidence["curve"] == "train_loss"
    assert decision.diagnosis.evidence["decided_by"] == "diagnosis"


def test_prunes_a_bad_initial_loss_at_epoch_one() -> None:
    c = four_curves([500.0, 300.0], [510.0, 320.0], [0.1, 0.1], [0.1, 0.12])
    decision = PRUNER.decide({0: 0.1, 1: 0.12}, c, finished(), "maximize", num_classes=10)
    assert (decision.action, decision.diagnosis.label) == ("prune", "bad_initial_loss")
    no_classes = PRUNER.decide({0: 0.1, 1: 0.12}, c, finished(), "maximize")
    assert no_classes.diagnosis.label != "bad_initial_loss"  # the check needs num_classes


def test_prunes_divergence_of_a_plain_reported_metric() -> None:
    decision = PRUNER.decide({1: 0.1, 2: 0.5, 3: NAN}, None, finished(), "maximize")
    assert (decision.action, decision.diagnosis.label) == ("prune", "diverged")


def test_prunes_when_the_forecast_falls_short_of_the_best_completed_trial() -> None:
    board = finished(0.6, 0.9, 0.8)
    decision = PRUNER.decide(curve(0.5, 4), None, board, "maximize")
    assert decision.action == "prune"
    e = decision.diagnosis.evidence
    assert e["decided_by"] == "forecast" and e["decided_at_epoch"] == 4
    assert e["bar"] == pytest.approx(max(curve(0.9, speed=0.4).values()))
    assert e["best_so_far"] <= e["forecast"] <= e["forecast_optimistic"] < e["bar"]
    assert e["rank"] == 3 and e["completed_trials"] == 3 and e["horizon"] == EPOCHS
    assert "short of the best completed trial" in decision.diagnosis.reason
    assert decision.diagnosis.epoch == 4
    # A better curve at the same epoch continues; so does any curve with no trial completed.
    assert PRUNER.decide(curve(0.97, 4), None, board, "maximize").action == "continue"
    assert PRUNER.decide(curve(0.5, 4), None, finished(), "maximize").action == "continue"


def test_a_slow_starter_is_not_pruned_while_it_climbs() -> None:
    board = finished(0.9)
    slow = {1: 0.05, 2: 0.2, 3: 0.45, 4: 0.62}  # far below the bar, but rising fast
    assert PRUNER.decide(slow, None, board, "maximize").action == "continue"


def test_early_stops_a_converged_curve() -> None:
    flat = {e: 0.95 for e in range(1, 7)}
    decision = PRUNER.decide(flat, None, finished(0.9), "maximize")
    assert decision.action == "early_stop"
    e = decision.diagnosis.evidence
    assert e["gain_left"] < e["min_gain"]  # no trend left, only the completed curves' noise
    assert "converged" in decision.diagnosis.reason
    never = LearningCurvePruner(max_epochs=EPOCHS, min_gain=0)
    assert never.decide(flat, None, finished(0.9), "maximize").action == "continue"


def test_early_stop_labels_stop_at_once() -> None:
    n = 12
    train_acc = [min(1.0, 0.1 + 0.15 * e) for e in range(n)]
    val_acc = [0.1, 0.4, 0.6, 0.75, 0.8, 0.8, 0.79, 0.78, 0.77, 0.76, 0.75, 0.74]
    c = four_curves(
        [2.3 * 0.6**e for e in range(n)],
        [2.3, 1.5, 1.0, 0.8, 0.7, 0.72, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3],
        train_acc,
        val_acc,
    )
    values = dict(enumerate(val_acc))
    overfit = LearningCurvePruner(max_epochs=30, early_stop=("overfitting",))
    decision = overfit.decide(values, c, finished(), "maximize")
    assert (decision.action, decision.diagnosis.label) == ("early_stop", "overfitting")
    # Without the label the forecast decides: the best epoch is long past, so it stops too.
    assert LearningCurvePruner(max_epochs=30).decide(values, c, finished(), "maximize").action == (
        "early_stop"
    )


def test_minimize_direction() -> None:
    losses = FinishedTrials()
    for i, q in enumerate((0.5, 0.6, 0.7, 0.9)):
        losses.add(i, "COMPLETE", {e: 1 - v for e, v in curve(q).items()})
    good = {e: 1 - v for e, v in curve(0.97, 4).items()}
    bad = {e: 1 - v for e, v in curve(0.5, 4).items()}
    assert PRUNER.decide(good, None, losses, "minimize").action == "continue"
    decision = PRUNER.decide(bad, None, losses, "minimize")
    assert decision.action == "prune"
    assert decision.diagnosis.evidence["forecast_optimistic"] > decision.diagnosis.evidence["bar"]


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


@pytest.mark.parametrize("name", sorted(DEGENERATE))
def test_degenerate_curves_never_crash(name: str) -> None:
    c = DEGENERATE[name]
    values = {e: v for e, v in zip(c.epoch, c.val_acc, strict=True)} or {0: 0.1}
    decision = PRUNER.decide(values, c, finished(0.5, 0.9), "maximize")
    assert isinstance(decision, Decision)
    assert decision.diagnosis.label in LABELS
    if name in ("single_point", "empty", "nan_everywhere"):
        assert decision.diagnosis.label == "insufficient_data"


def test_no_report_yet() -> None:
    decision = PRUNER.decide({}, None, finished(0.9), "maximize")
    assert decision.action == "continue"
    assert decision.diagnosis.label == "insufficient_data"


def test_decide_reads_only_its_arguments() -> None:
    board = finished(0.6, 0.9)
    a = PRUNER.decide(curve(0.5, 4), None, board, "maximize")
    b = LearningCurvePruner(max_epochs=EPOCHS).decide(curve(0.5, 4), None, board, "maximize")
    assert a == b
    board.add(7, "COMPLETE", curve(0.2))  # a worse trial completes: the bar stays
    c = PRUNER.decide(curve(0.5, 4), None, board, "maximize")
    assert (c.action, c.diagnosis.evidence["bar"]) == (a.action, a.diagnosis.evidence["bar"])
    assert c.diagnosis.evidence["completed_trials"] == 3


# --- in Optuna studies ----------------------------------------------------------------------


def running(study: optuna.Study, values: dict[int, float]) -> FrozenTrial:
    """A RUNNING trial that reported ``values``, as storage has it."""
    trial = study.ask()
    for step, v in values.items():
        trial.report(v, step)
    return next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)


def add_completed(study: optuna.Study, qualities: list[float]) -> None:
    curves = [curve(q, speed=0.4) for q in qualities]
    study.add_trials(
        [optuna.trial.create_trial(value=max(c.values()), intermediate_values=c) for c in curves]
    )


def test_prune_is_true_only_for_a_prune(storage_url: str) -> None:
    study = optuna.create_study(storage=storage_url, direction="maximize", pruner=PRUNER)
    add_completed(study, [0.6, 0.9])
    hopeless = running(study, curve(0.5, 4))
    converged = running(study, {e: 0.95 for e in range(1, 7)})
    assert PRUNER.prune(study, hopeless)
    assert PRUNER.decision_for(study, converged).action == "early_stop"
    assert not PRUNER.prune(study, converged)  # an early stop is no prune: the value is kept


def test_diagnoses_curves_recorded_on_the_trial(storage_url: str) -> None:
    study = optuna.create_study(storage=storage_url, direction="maximize", pruner=PRUNER)
    trial = study.ask()
    trial.report(0.1, 0)
    trial.report(0.12, 1)
    c = four_curves([500.0, 300.0], [510.0, 320.0], [0.1, 0.1], [0.1, 0.12])
    trial.set_user_attr(CURVES_ATTR, c.to_json())
    trial.set_user_attr(*attrs.NUM_CLASSES.item(10))
    frozen = study.get_trials(deepcopy=False)[trial.number]
    assert PRUNER.decision_for(study, frozen).diagnosis.label == "bad_initial_loss"


def test_the_board_follows_storage(storage_url: str) -> None:
    """Trials finishing after the last look are found, a low-numbered one finishing late too,
    and another process's fresh Study object decides alike."""
    study = optuna.create_study(storage=storage_url, direction="maximize")
    add_completed(study, [0.3, 0.5])
    late = study.ask()  # runs while later trials finish
    probe = running(study, curve(0.6, 4))
    pruner = LearningCurvePruner(max_epochs=EPOCHS)
    assert pruner.decision_for(study, probe).action == "continue"
    add_completed(study, [0.95])
    assert pruner.decision_for(study, probe).action == "prune"
    for step, v in curve(0.99).items():
        late.report(v, step)
    study.tell(late, max(curve(0.99).values()))
    decision = pruner.decision_for(study, probe)
    assert decision.diagnosis.evidence["bar"] == pytest.approx(max(curve(0.99).values()))
    other = optuna.load_study(study_name=study.study_name, storage=storage_url)
    assert LearningCurvePruner(max_epochs=EPOCHS).decision_for(other, probe) == decision


QUALITIES = [0.6, 0.9, 0.5, 0.95, 0.4, 0.7, 0.3, 0.85, 0.2, 0.99, 0.35, 0.45, 0.93, 0.97]


def objective(trial: optuna.Trial) -> float:
    """A plain objective: reports each epoch, prunes when told, completes early when told."""
    q = QUALITIES[trial.number]
    best = -math.inf
    for epoch, v in curve(q, EPOCHS, speed=0.6).items():
        best = max(best, v)
        trial.report(v, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
        if should_stop(trial):
            trial.set_user_attr("stopped_at", epoch)
            break
    return best


def run_study(storage_url: str, name: str) -> list[tuple[Any, ...]]:
    study = optuna.create_study(
        storage=storage_url, study_name=name, direction="maximize",
        pruner=LearningCurvePruner(max_epochs=EPOCHS),
    )
    study.optimize(objective, n_trials=len(QUALITIES))
    return [
        (t.number, t.state, t.value, t.intermediate_values, t.user_attrs.get("stopped_at"))
        for t in study.get_trials()
    ]


def test_plain_objective_prunes_the_hopeless_and_keeps_the_early_stopped(
    storage_url: str,
) -> None:
    trials = run_study(storage_url, "plain")
    completed = [QUALITIES[n] for n, state, *_ in trials if state == TrialState.COMPLETE]
    # Each new best completes; every other trial is pruned once its forecast falls short.
    assert completed == [0.6, 0.9, 0.95, 0.99]
    assert sum(state == TrialState.PRUNED for _, state, *_ in trials) == len(QUALITIES) - 4
    # The first trial, a scout with no completed trial before it, converged early: it
    # completed with its best value, not pruned.
    number, state, value, values, stopped_at = trials[0]
    assert state == TrialState.COMPLETE and stopped_at == max(values) < EPOCHS
    assert value == max(values.values())


def test_the_same_study_twice_gives_the_same_trials(sqlite_url: str) -> None:
    first = run_study(sqlite_url, "once")
    second = run_study(sqlite_url, "twice")
    assert first == second
    assert {state for _, state, *_ in first} == {TrialState.COMPLETE, TrialState.PRUNED}


def test_should_stop_is_false_with_other_pruners(sqlite_url: str) -> None:
    study = optuna.create_study(
        storage=sqlite_url, direction="maximize", pruner=optuna.pruners.NopPruner()
    )
    trial = study.ask()
    for e in range(1, 8):
        trial.report(0.95, e)
    assert not should_stop(trial)


def test_should_stop_decides_when_should_prune_was_not_called(sqlite_url: str) -> None:
    pruner = LearningCurvePruner(max_epochs=EPOCHS)
    study = optuna.create_study(storage=sqlite_url, direction="maximize", pruner=pruner)
    add_completed(study, [0.9])
    trial = study.ask()
    for e in range(1, 8):
        trial.report(0.95, e)
    assert should_stop(trial)


def test_a_copy_of_the_pruner_starts_without_the_cache(sqlite_url: str) -> None:
    study = optuna.create_study(storage=sqlite_url, direction="maximize", pruner=PRUNER)
    add_completed(study, [0.6, 0.9])
    probe = running(study, curve(0.5, 4))
    decision = PRUNER.decision_for(study, probe)
    for other in (pickle.loads(pickle.dumps(PRUNER)), copy.deepcopy(PRUNER)):
        assert other.last_decision(study, probe.number) is None
        assert other.decision_for(study, probe) == decision


# --- make_pruner ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("diagnostic", {"max_epochs": -3}, "pruner.max_epochs: expected an int >= 1 or None"),
        ("diagnostic", {"min_gain": "a"}, "pruner.min_gain: expected a finite number >= 0"),
        ("diagnostic", {"early_stop": ["diverged"]}, "pruner.early_stop: expected labels"),
        ("diagnostic", {"early_stop": "plateau"}, "pruner.early_stop: expected a list"),
        ("diagnostic", {"window": 0}, "pruner.window: expected an int >= 1, got 0"),
        ("diagnostic", {"overfit_gap": -1.0}, "pruner.overfit_gap: expected a finite number"),
        ("diagnostic", {"num_classes": 1}, "pruner.num_classes: expected an int >= 2"),
        ("diagnostic", {"patience": 3}, "pruner.patience: unknown setting; expected "),
        ("diagnostic", {"rank_staleness_s": 2}, "pruner.rank_staleness_s: no longer a setting"),
        ("diagnostic", {"reduction_factor": 3}, "pruner.reduction_factor: no longer a setting"),
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
        ("diagnostic", {"min_gain": 0.01, "window": 5, "early_stop": ["overfitting"]},
         LearningCurvePruner),
        ("median", {"n_startup_trials": 3}, optuna.pruners.MedianPruner),
        ("hyperband", {"max_resource": 30}, optuna.pruners.HyperbandPruner),
        ("none", {}, optuna.pruners.NopPruner),
    ],
)
def test_make_pruner(name: str, settings: dict[str, Any], kind: type) -> None:
    assert isinstance(make_pruner(name, settings), kind)


def test_make_pruner_takes_the_studys_epochs_as_max_epochs() -> None:
    pruner = make_pruner("diagnostic", {}, epochs=30)
    assert isinstance(pruner, LearningCurvePruner) and pruner.settings.max_epochs == 30
    own = make_pruner("diagnostic", {"max_epochs": 20}, epochs=30)
    assert isinstance(own, LearningCurvePruner) and own.settings.max_epochs == 20
    assert make_pruner("diagnostic", {}).settings.max_epochs is None  # type: ignore[attr-defined]


def test_constructor_validates_like_optuna() -> None:
    with pytest.raises(ValueError, match="max_epochs"):
        LearningCurvePruner(max_epochs=0)
    with pytest.raises(ValueError, match="thresholds"):
        LearningCurvePruner(thresholds={"window": 3})  # type: ignore[arg-type]
