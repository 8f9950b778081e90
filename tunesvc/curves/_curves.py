"""Learning curves as tunesvc stores them on an Optuna trial.

A trial trained by tunesvc carries one user attribute, ``curves``: a JSON object of equal-length
lists, one entry per evaluation. Epoch 0 is the evaluation before any update. Non-finite numbers
are stored as ``null`` (JSON has no NaN, and optuna-dashboard parses user attributes as JSON), and
read back as ``nan``.

Example::

    curves = Curves()
    curves.append(EpochRecord(epoch=0, train_loss=2.30, val_loss=2.31, train_acc=0.1,
                              val_acc=0.1, lr=0.1, seconds=0.0))
    Curves.from_json(curves.to_json()).val_acc  # [0.1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

CURVE_NAMES = ("train_loss", "val_loss", "train_acc", "val_acc")


@dataclass(frozen=True)
class EpochRecord:
    """One evaluation of a trial: after ``epoch`` epochs of training (0 = before any update).

    Train figures are averaged over the epoch (epoch 0: one pass over the train data without
    updates). Accuracies are ``None`` when the loss is not a classification loss.
    """

    epoch: int
    train_loss: float
    val_loss: float
    train_acc: float | None
    val_acc: float | None
    lr: float
    seconds: float


def _load(x: Any) -> float:
    return math.nan if x is None else float(x)


def _dump(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


@dataclass
class Curves:
    """The four learning curves of one trial, plus learning rate and wall time per epoch."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def append(self, record: EpochRecord) -> None:
        self.epoch.append(record.epoch)
        self.train_loss.append(record.train_loss)
        self.val_loss.append(record.val_loss)
        self.train_acc.append(math.nan if record.train_acc is None else record.train_acc)
        self.val_acc.append(math.nan if record.val_acc is None else record.val_acc)
        self.lr.append(record.lr)
        self.seconds.append(record.seconds)

    def __len__(self) -> int:
        return len(self.epoch)

    def to_json(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"epoch": list(self.epoch)}
        for f in fields(self):
            if f.name != "epoch":
                out[f.name] = [_dump(x) for x in getattr(self, f.name)]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Curves:
        epochs = [int(e) for e in data.get("epoch", [])]
        n = len(epochs)
        kwargs: dict[str, Any] = {"epoch": epochs}
        for f in fields(cls):
            if f.name == "epoch":
                continue
            column = [_load(x) for x in data.get(f.name, [])][:n]
            kwargs[f.name] = column + [math.nan] * (n - len(column))
        return cls(**kwargs)

