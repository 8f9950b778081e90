"""report_epoch: a plain Optuna objective records its curves in one line per epoch and is then
diagnosed and pruned from them, in plain Optuna studies on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from tunesvc import CURVES_ATTR
from tunesvc.curves._curves import Curves
from tunesvc.curves._diagnosis import diagnose
from tunesvc.pruning._epoch_report import HoldsCurves, report_epoch
from tunesvc.pruning._pruner import LearningCurvePruner
from tunesvc.storage._attrs import curves_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def digits_objective(trial: optuna.Trial) -> float:
    """A plain objective as a user writes one: its own loop, one report_epoch per epoch."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    lr = trial.suggest_float("lr", 1e-3, 1e-2, log=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    best = 0.0
    for epoch in range(1, 5):
        model.train()
        for i in range(0, 1400, 100):
            loss = nn.functional.cross_entropy(model(x[i : i + 100]), y[i : i + 100])
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        used_lr = optimizer.param_groups[0]["lr"]
        schedule.step()
        model.eval()
        with torch.no_grad():
            out_t, out_v = model(x[:1400]), model(x[1400:])
        val_acc = (out_v.argmax(1) == y[1400:]).float().mean().item()
        report_epoch(
            trial, epoch,
            train_loss=nn.functional.cross_entropy(out_t, y[:1400]).item(),
            val_loss=nn.functional.cross_entropy(out_v, y[1400:]).item(),
            train_acc=(out_t.argmax(1) == y[:1400]).float().mean().item(),
            val_acc=val_acc, lr=used_lr,
        )
        best = max(best, val_acc)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return best


def test_a_plain_objective_records_its_curves(storage_url: str) -> None:
    # The same params twice (the same run twice): neither is pruned against the other, and
    # min_gain=0 stops neither early.
    study = optuna.create_study(storage=storage_url, direction="maximize",
                                pruner=LearningCurvePruner(min_gain=0))
    for lr in (3e-3, 3e-3):
        study.enqueue_trial({"lr": lr})
    study.optimize(digits_objective, n_trials=2)
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        curves = curves_of(trial)
        assert curves is not None and curves.epoch == [1, 2, 3, 4]
        # The reported metric is the validation accuracy of each epoch, the value its best.
        assert trial.intermediate_values == dict(zip(curves.epoch, curves.val_acc, strict=True))
        assert trial.value == max(curves.val_acc)
        assert all(0 < x < 3 for x in curves.train_loss + curves.val_loss)
        lr = trial.params["lr"]
        assert curves.lr[0] == pytest.approx(lr) and curves.lr[-1] < lr / 2  # cosine
        assert math.isnan(curves.seconds[0]) and all(s > 0 for s in curves.seconds[1:])
        diagnosis = diagnose(curves, num_classes=10)
        assert diagnosis.label not in ("insufficient_data", "inconclusive"), diagnosis.reason


def climbing_objective(trial: optuna.Trial, *, curves: bool) -> float:
    """Validation accuracy that looks fine while the train loss blows up at epoch 2."""
    train_loss = [2.3, 1.2, 9.0, 30.0, 60.0]
    val_acc = [0.1, 0.6, 0.62, 0.63, 0.64]
    for epoch, (tl, va) in enumerate(zip(train_loss, val_acc, strict=True)):
        if curves:
            report_epoch(trial, epoch, train_loss=tl, val_acc=va, lr=0.1)
        else:
            trial.report(va, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return val_acc[-1]


@pytest.mark.parametrize("curves", [True, False], ids=["report_epoch", "report_only"])
def test_the_pruner_sees_what_report_epoch_records(sqlite_url: str, curves: bool) -> None:
    study = optuna.create_study(storage=sqlite_url, direction="maximize",
                                pruner=LearningCurvePruner())  # one trial: no bar to miss
    study.optimize(lambda t: climbing_objective(t, curves=curves), n_trials=1)
    (trial,) = study.trials
    if curves:  # the train loss climbed 3.9x its start at epoch 2: pruned there
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert max(trial.intermediate_values) == 2
    else:  # the validation accuracy alone shows nothing wrong
        assert trial.state == optuna.trial.TrialState.COMPLETE


@pytest.mark.parametrize(
    ("direction", "kwargs", "reported"),
    [
        ("maximize", {}, 0.7),
        ("minimize", {}, 0.9),
        ("minimize", {"metric": "train_loss"}, 0.5),
        ("maximize", {"metric": "train_acc"}, 0.8),
    ],
)
def test_the_reported_metric(sqlite_url: str, direction: str, kwargs: dict[str, Any],
                             reported: float) -> None:
    study = optuna.create_study(storage=sqlite_url, direction=direction)
    trial = study.ask()
    got = report_epoch(trial, 0, train_loss=0.5, val_loss=0.9, train_acc=0.8, val_acc=0.7,
                       **kwargs)
    assert got == reported
    assert study.trials[0].intermediate_values == {0: reported}


@pytest.mark.parametrize(
    ("direction", "kwargs", "message"),
    [
        ("maximize", {"val_loss": 0.9}, "^val_acc: the reported metric, but it was not given"),
        ("minimize", {"val_acc": 0.7}, "^val_loss: the reported metric"),
        ("maximize", {"val_loss": 0.9, "metric": "val_loss"}, "^metric: the study wants to "
                                                              "maximize but 'val_loss'"),
        ("maximize", {"val_acc": 0.7, "metric": "acc"}, "^metric: expected one of"),
        ("maximize", {"val_acc": 0.7, "epoch": -1}, "^epoch: expected an int >= 0"),
        ("maximize", {"val_acc": 0.7, "epoch": 1}, r"^epoch: expected an epoch above the last "
                                                   r"one reported \(1\), got 1"),
    ],
)
def test_refused_and_nothing_recorded(sqlite_url: str, direction: str,
                                      kwargs: dict[str, Any], message: str) -> None:
    study = optuna.create_study(storage=sqlite_url, direction=direction)
    trial = study.ask()
    report_epoch(trial, 1, train_loss=1.0, val_loss=1.0, val_acc=0.5)
    epoch = kwargs.pop("epoch", 2)
    with pytest.raises(ValueError, match=message):
        report_epoch(trial, epoch, **kwargs)
    stored = curves_of(study.trials[0])
    assert stored is not None and stored.epoch == [1]
    assert list(study.trials[0].intermediate_values) == [1]


class HolderTrial(optuna.trial.Trial):
    """A trial that keeps its curves itself and writes them when it sees fit, as tunesvc's
    worker trial does."""

    def __init__(self, study: optuna.Study, trial_id: int) -> None:
        super().__init__(study, trial_id)
        self.curves: Curves | None = None
        self.stored = 0

    def store_curves(self) -> None:
        self.stored += 1


def test_a_trial_that_holds_its_curves(sqlite_url: str) -> None:
    study = optuna.create_study(storage=sqlite_url, direction="minimize")
    trial = HolderTrial(study, study.ask()._trial_id)
    assert isinstance(trial, HoldsCurves)
    for epoch in range(3):
        report_epoch(trial, epoch, val_loss=1.0 / (epoch + 1), lr=0.1)
    assert trial.curves is not None and trial.curves.epoch == [0, 1, 2]
    assert trial.curves.val_loss == [1.0, 0.5, 1 / 3] and math.isnan(trial.curves.train_loss[0])
    assert trial.stored == 3
    # It writes its curves itself; report_epoch only reported the metric.
    assert CURVES_ATTR not in study.trials[0].user_attrs
    assert study.trials[0].intermediate_values == {0: 1.0, 1: 0.5, 2: 1 / 3}


def test_num_classes_lets_the_pruner_judge_the_initial_loss(sqlite_url: str) -> None:
    """An epoch-0 loss of 40 is far from log(10): pruned at once, as a structured trial is."""
    def objective(trial: optuna.Trial) -> float:
        for epoch, (tl, va) in enumerate([(40.0, 0.1), (2.0, 0.5), (1.0, 0.7)]):
            report_epoch(trial, epoch, train_loss=tl, val_acc=va, num_classes=10)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return 0.7

    study = optuna.create_study(storage=sqlite_url, direction="maximize",
                                pruner=LearningCurvePruner())  # one trial: no bar to miss
    study.optimize(objective, n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.last_step == 0
    assert trial.user_attrs["num_classes"] == 10
    with pytest.raises(ValueError, match="^num_classes: expected an int >= 2, got 1"):
        report_epoch(study.ask(), 0, val_acc=0.1, num_classes=1)
