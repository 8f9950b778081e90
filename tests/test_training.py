"""The training loop through its public surface: real torch training on a small problem."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from tunesvc._errors import TrainingError
from tunesvc.curves import Curves, EpochRecord
from tunesvc.training._checkpoint import load_checkpoint
from tunesvc.training._fit import (
    TrainingSetup,
    fit,
    resolve_device,
    scheduled_lr,
)

FEATURES, CLASSES = 8, 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, FEATURES, generator=g)
    w = torch.randn(FEATURES, CLASSES, generator=torch.Generator().manual_seed(99))
    return x, (x @ w).argmax(dim=1)


TRAIN, VAL = _data(256, 1), _data(128, 2)


def _model(out: int = CLASSES, features: int = FEATURES) -> nn.Module:
    return nn.Sequential(
        nn.Linear(features, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, out)
    )  # fmt: skip


def _setup(**changes: Any) -> TrainingSetup:
    base: dict[str, Any] = {
        "model": _model,
        "train": TRAIN,
        "val": VAL,
        "optimizer": "sgd",
        "lr": 0.05,
        "weight_decay": 1e-4,
        "schedule": "cosine",
        "batch_size": 32,
    }
    return TrainingSetup(**{**base, **changes})


def _without_seconds(curves: Curves) -> dict[str, list[Any]]:
    data = curves.to_json()
    del data["seconds"]
    return data


def test_epoch_zero_is_the_untrained_model_then_one_record_per_epoch() -> None:
    records: list[EpochRecord] = []
    result = fit(_setup(), epochs=3, seed=5, device="cpu", on_epoch=records.append)

    assert [r.epoch for r in records] == [0, 1, 2, 3]
    assert result.curves.epoch == [0, 1, 2, 3]
    torch.manual_seed(5)  # fit seeds the same way before it calls the model factory
    untrained = _model().eval()
    with torch.no_grad():
        expected_train = F.cross_entropy(untrained(TRAIN[0]), TRAIN[1]).item()
        expected_val = F.cross_entropy(untrained(VAL[0]), VAL[1]).item()
    assert records[0].train_loss == pytest.approx(expected_train, rel=1e-6)
    assert records[0].val_loss == pytest.approx(expected_val, rel=1e-6)
    assert records[0].lr == records[1].lr == 0.05
    assert records[3].lr < records[2].lr < 0.05  # cosine decay
    assert all(r.seconds >= 0 for r in records)
    assert records[3].val_acc is not None and records[0].val_acc is not None
    assert records[3].val_acc > records[0].val_acc


def test_value_is_the_best_epoch_of_the_metric() -> None:
    result = fit(_setup(), epochs=4, seed=0, device="cpu")

    assert result.metric == "val_acc"
    assert result.value == max(result.curves.val_acc)
    assert result.best_epoch == result.curves.val_acc.index(max(result.curves.val_acc))
    assert result.num_classes == CLASSES
    assert not result.diverged and not result.stopped_early and result.reason is None


def test_mse_loss_has_no_accuracy_and_minimizes_val_loss() -> None:
    x, _ = TRAIN
    y = x.sum(dim=1, keepdim=True)
    xv, _ = VAL
    setup = _setup(
        model=lambda: _model(out=1), train=(x, y), val=(xv, xv.sum(1, keepdim=True)), loss="mse"
    )
    result = fit(setup, epochs=3, seed=0, device="cpu")

    assert result.metric == "val_loss"
    assert result.value == min(result.curves.val_loss)
    assert all(math.isnan(a) for a in result.curves.val_acc)


def test_huge_learning_rate_ends_as_diverged_without_an_exception() -> None:
    seen: list[EpochRecord] = []
    result = fit(_setup(lr=1e12), epochs=20, seed=0, device="cpu", on_epoch=seen.append)

    assert result.diverged
    assert result.reason is not None and result.reason.startswith("diverged: train_loss")
    assert "\n" not in result.reason
    last = result.curves.train_loss[-1]
    assert not math.isfinite(last)
    assert len(result.curves) < 21  # stopped at once, not after all 20 epochs
    assert all(math.isfinite(r.train_loss) for r in seen)  # on_epoch never sees the blow-up
    assert len(seen) == len(result.curves) - 1


def test_same_seed_gives_the_same_curves_and_another_seed_does_not() -> None:
    a = fit(_setup(), epochs=3, seed=7, device="cpu")
    b = fit(_setup(), epochs=3, seed=7, device="cpu")
    c = fit(_setup(), epochs=3, seed=8, device="cpu")

    assert _without_seconds(a.curves) == _without_seconds(b.curves)
    assert _without_seconds(a.curves) != _without_seconds(c.curves)


def test_fit_leaves_the_global_rng_as_it_was() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    fit(_setup(), epochs=1, seed=0, device="cpu")
    assert torch.equal(torch.get_rng_state(), before)


class _Crash(Exception):
    pass


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_resumed_run_matches_an_uninterrupted_one(tmp_path: Path, optimizer: str) -> None:
    epochs = 6
    whole = fit(
        _setup(optimizer=optimizer), epochs=epochs, seed=1, device="cpu",
        checkpoint_path=tmp_path / "whole.pt",
    )  # fmt: skip

    path = tmp_path / "cut" / "trial.pt"
    first: list[EpochRecord] = []

    def crash_after_three(record: EpochRecord) -> None:
        first.append(record)
        if record.epoch == 3:
            raise _Crash

    with pytest.raises(_Crash):  # the callback's exception comes out of fit unchanged
        fit(_setup(optimizer=optimizer), epochs=epochs, seed=1, device="cpu",
            on_epoch=crash_after_three, checkpoint_path=path)  # fmt: skip

    state = load_checkpoint(path)
    assert state is not None and state["epoch"] == 3
    assert {"model", "optimizer", "scheduler", "torch_rng", "shuffle_rng"} <= state.keys()
    assert Curves.from_json(state["curves"]).epoch == [0, 1, 2, 3]
    assert [p.name for p in path.parent.iterdir()] == ["trial.pt"]  # no temporary file left

    second: list[EpochRecord] = []
    resumed = fit(_setup(optimizer=optimizer), epochs=epochs, seed=1, device="cpu",
                  on_epoch=second.append, checkpoint_path=path)  # fmt: skip

    assert [r.epoch for r in second] == [0, 1, 2, 3, 4, 5, 6]
    # Epochs 0..3 are replayed from the checkpoint, wall times included, not trained again.
    assert [r.seconds for r in second[:4]] == [r.seconds for r in first]
    assert _without_seconds(resumed.curves) == _without_seconds(whole.curves)
    assert (resumed.value, resumed.best_epoch) == (whole.value, whole.best_epoch)


def test_checkpoint_every_s_skips_epochs_but_always_writes_the_last(tmp_path: Path) -> None:
    def crash_at_three(record: EpochRecord) -> None:
        if record.epoch == 3:
            raise _Crash

    path = tmp_path / "trial.pt"
    with pytest.raises(_Crash):
        fit(_setup(), epochs=4, seed=0, device="cpu", on_epoch=crash_at_three,
            checkpoint_path=path, checkpoint_every_s=3600)  # fmt: skip
    assert not path.exists()
    fit(_setup(), epochs=4, seed=0, device="cpu", checkpoint_path=path, checkpoint_every_s=3600)
    state = load_checkpoint(path)
    assert state is not None and state["epoch"] == 4


def test_resume_refuses_a_checkpoint_of_other_hyperparameters(tmp_path: Path) -> None:
    path = tmp_path / "trial.pt"
    fit(_setup(), epochs=2, seed=0, device="cpu", checkpoint_path=path)

    with pytest.raises(TrainingError, match="lr = 0.05, this run has lr = 0.1"):
        fit(_setup(lr=0.1), epochs=2, seed=0, device="cpu", checkpoint_path=path)
    fresh = fit(_setup(lr=0.1), epochs=2, seed=0, device="cpu", checkpoint_path=path,
                resume=False)  # fmt: skip
    assert len(fresh.curves) == 3


def test_on_epoch_returning_true_stops_early_with_the_best_so_far() -> None:
    result = fit(_setup(), epochs=10, seed=0, device="cpu", on_epoch=lambda r: r.epoch == 2)

    assert result.stopped_early and not result.diverged
    assert result.curves.epoch == [0, 1, 2]
    assert result.value == max(result.curves.val_acc)
    assert result.reason == "stopped early by on_epoch at epoch 2"


class _Pairs(Dataset[tuple[Tensor, Tensor]]):
    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i], self.y[i]


def test_a_dataset_evaluates_like_the_same_tensors() -> None:
    as_tensors = fit(_setup(), epochs=2, seed=0, device="cpu")
    as_dataset = fit(_setup(train=_Pairs(*TRAIN), val=_Pairs(*VAL)), epochs=2, seed=0,
                     device="cpu")  # fmt: skip

    assert as_dataset.curves.val_loss[0] == pytest.approx(as_tensors.curves.val_loss[0])
    assert as_dataset.curves.train_acc[0] == as_tensors.curves.train_acc[0]
    assert as_dataset.curves.val_acc[2] > as_dataset.curves.val_acc[0]


@pytest.mark.parametrize(
    ("schedule", "epoch", "expected"),
    [
        ("constant", 1, 0.1),
        ("constant", 10, 0.1),
        ("step", 5, 0.1),  # 4 of 10 epochs done
        ("step", 6, 0.01),  # half done: decayed
        ("cosine", 0, 0.1),  # epoch 0 reports epoch 1's rate
        ("cosine", 1, 0.1),
        ("cosine", 6, 0.05),
        ("cosine", 10, 0.1 * 0.5 * (1 + math.cos(math.pi * 0.9))),
    ],
)
def test_scheduled_lr(schedule: str, epoch: int, expected: float) -> None:
    got = scheduled_lr(schedule, 0.1, epoch, 10, step_at=0.5, gamma=0.1)
    assert got == pytest.approx(expected)


MISSING_CUDA = f"cuda:{torch.cuda.device_count()}"  # one past the last device: never present


@pytest.mark.parametrize(
    ("changes", "device", "message"),
    [
        ({"model": lambda: _model(out=3)}, "cpu", "model outputs 3 class scores but train"),
        ({"model": lambda: nn.Linear(FEATURES, 1)}, "cpu", "model outputs 1 class scores"),
        ({"model": lambda: nn.Flatten(0)}, "cpu", "needs model output of shape (batch, classes)"),
        ({"loss": "mse"}, "cpu", "loss 'mse' needs model output shaped like the targets"),
        ({"train": (TRAIN[0][:, :5], TRAIN[1])}, "cpu", "model cannot take the train batch"),
        ({"val": (VAL[0][:, :5], VAL[1])}, "cpu", "model cannot take the val batch"),
        ({"train": (TRAIN[0], TRAIN[1][:10])}, "cpu", "need the same number of rows"),
        ({"train": (TRAIN[0].double(), TRAIN[1])}, "cpu", "dtype torch.float64"),
        ({"train": (TRAIN[0], TRAIN[1].float())}, "cpu", "needs integer class labels"),
        ({"train": [1, 2]}, "cpu", "train must be (X, y) tensors or a torch Dataset"),
        ({"num_classes": 10}, "cpu", "num_classes is 10 but the model outputs 4"),
        ({"loss": lambda out, y: out - 1}, "cpu", "loss must return the batch mean"),
        ({"optimizer": "adam"}, "cpu", "unknown optimizer 'adam': use one of 'adamw', 'sgd'"),
        ({"schedule": "linear"}, "cpu", "unknown schedule 'linear'"),
        ({"loss": "hinge"}, "cpu", "unknown loss 'hinge'"),
        ({"lr": 0.0}, "cpu", "lr must be > 0, got lr = 0.0"),
        ({"momentum": 1.5}, "cpu", "momentum must be in [0, 1)"),
        ({}, MISSING_CUDA, f"device '{MISSING_CUDA}' is not present"),
        ({}, "gpu", "device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got 'gpu'"),
    ],
)
def test_bad_input_raises_a_one_line_training_error(
    changes: dict[str, Any], device: str, message: str
) -> None:
    with pytest.raises(TrainingError) as caught:
        fit(_setup(**changes), epochs=1, seed=0, device=device)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_each_device_this_machine_has_trains_and_resumes(device: str, tmp_path: Path) -> None:
    whole = fit(_setup(), epochs=4, seed=0, device=device)

    def crash_at_two(record: EpochRecord) -> None:
        if record.epoch == 2:
            raise _Crash

    path = tmp_path / "c.pt"
    with pytest.raises(_Crash):
        fit(_setup(), epochs=4, seed=0, device=device, on_epoch=crash_at_two,
            checkpoint_path=path)  # fmt: skip
    resumed = fit(_setup(), epochs=4, seed=0, device=device, checkpoint_path=path)

    assert whole.curves.val_acc[-1] > whole.curves.val_acc[0]
    assert resumed.curves.val_loss == pytest.approx(whole.curves.val_loss, rel=1e-5)
