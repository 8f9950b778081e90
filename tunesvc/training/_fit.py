"""The training loop of tunesvc: one PyTorch trial from a :class:`TrainingSetup` to a
:class:`FitResult`, with learning curves, divergence detection and checkpoint resume.

The loop knows nothing of Optuna. It calls ``on_epoch(record)`` once per evaluation (epoch 0,
before any update, then after every epoch); the Optuna glue reports and stores curves from there.

Hyperparameters are plain values on the setup (``lr``, ``weight_decay``, ``momentum``,
``schedule``), never a built optimizer, so that a later mode can train many trials of one
architecture at once with stacked parameters.

Example::

    setup = TrainingSetup(
        model=lambda: nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)),
        train=(x_train, y_train), val=(x_val, y_val),
        optimizer="adamw", lr=3e-3, weight_decay=1e-4, schedule="cosine", batch_size=64,
    )
    result = fit(setup, epochs=20, seed=0, on_epoch=print)
    result.value  # best val_acc over epochs 0..20
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from tunesvc._errors import TrainingError
from tunesvc.curves._curves import CURVE_NAMES, Curves, EpochRecord
from tunesvc.training._checkpoint import load_checkpoint, save_checkpoint

Data: TypeAlias = "tuple[Tensor, Tensor] | Dataset[Any]"
"""Train or validation data: ``(X, y)`` tensors (rows are samples) or a Dataset of pairs."""

LossFn: TypeAlias = Callable[[Tensor, Tensor], Tensor]
"""A loss ``loss(output, target)`` returning the mean over the batch as a scalar tensor."""

OPTIMIZERS = ("adamw", "sgd")
"""Optimizer names a :class:`TrainingSetup` accepts."""

SCHEDULES = ("constant", "step", "cosine")
"""Learning-rate schedule names a :class:`TrainingSetup` accepts."""

LOSSES = ("cross_entropy", "mse")
"""Loss names a :class:`TrainingSetup` accepts; any ``LossFn`` callable is accepted too."""

METRIC_DIRECTIONS = {
    "train_loss": "minimize",
    "val_loss": "minimize",
    "train_acc": "maximize",
    "val_acc": "maximize",
}
"""The Optuna direction that goes with each curve used as a trial's metric."""

OnEpoch: TypeAlias = Callable[[EpochRecord], "bool | None"]
"""Called with each evaluation; returning ``True`` stops training (an early stop)."""


@dataclass
class TrainingSetup:
    """What one trial trains: model, data, loss and hyperparameters as plain values.

    ``model`` is a module or, better, a function returning one: :func:`fit` calls it after
    seeding, so the same params and seed give the same initial weights and the same curves.

    ``optimizer`` is ``"adamw"`` (``torch.optim.AdamW``) or ``"sgd"`` (SGD with ``momentum``;
    ``momentum`` is ignored by AdamW). ``schedule`` sets the learning rate per epoch:
    ``"constant"``; ``"step"`` (multiplied by ``gamma`` once ``step_at`` of the epochs are
    done); ``"cosine"`` (from ``lr`` down towards 0). See :func:`scheduled_lr`.

    ``loss`` is ``"cross_entropy"`` (integer class labels; accuracies are recorded), ``"mse"``
    (targets shaped like the output; accuracies are ``None``) or a callable returning the batch
    mean (accuracies are recorded when the output is ``(batch, classes)`` and targets are integer
    labels). ``num_classes``, when given, is checked against the model's output width (and
    read by diagnoses for chance level). ``num_workers`` only applies to Dataset data; tensors
    are batched on the device.
    """

    model: nn.Module | Callable[[], nn.Module]
    train: Data
    val: Data
    loss: str | LossFn = "cross_entropy"
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "constant"
    step_at: float = 0.5
    gamma: float = 0.1
    batch_size: int = 64
    eval_batch_size: int = 1024
    num_workers: int = 0
    num_classes: int | None = None


@dataclass(frozen=True)
class FitResult:
    """How a trial's training ended.

    ``value`` is the metric at the trial's BEST evaluation (epoch 0 included; the first one on
    ties), e.g. the highest ``val_acc``; ``None`` when no evaluation was finite. ``num_classes``
    is the model's output width when it classifies. ``curves``
    holds every evaluation, the one where training diverged included. ``reason`` says in one
    line why training ended before ``epochs`` (divergence or early stop), else ``None``.
    """

    curves: Curves
    metric: str
    value: float | None
    best_epoch: int | None
    num_classes: int | None = None
    diverged: bool = False
    stopped_early: bool = False
    reason: str | None = None


def scheduled_lr(
    schedule: str, lr: float, epoch: int, epochs: int, *, step_at: float = 0.5, gamma: float = 0.1
) -> float:
    """The learning rate used during ``epoch`` (1-based; epoch 0 reports epoch 1's rate).

    >>> scheduled_lr("step", 0.1, 6, 10, step_at=0.5, gamma=0.1)
    0.01
    """
    done = max(epoch - 1, 0) / epochs  # fraction of training finished when the epoch starts
    if schedule == "constant":
        return lr
    if schedule == "step":
        return lr * gamma if done >= step_at else lr
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * done))
    raise TrainingError(_choice_message("schedule", schedule, SCHEDULES))


def resolve_device(device: str) -> torch.device:
    """The torch device for ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA if any).

    Raises :class:`TrainingError` for a device this machine does not have.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    kind, _, index = device.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise TrainingError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0 or (index and int(index) >= count):
        raise TrainingError(
            f"device {device!r} is not present: this machine has {count} CUDA device(s); "
            "use device='cpu' or 'auto'"
        )
    return torch.device("cuda", int(index) if index else torch.cuda.current_device())


def fit(
    setup: TrainingSetup,
    *,
    epochs: int,
    seed: int = 0,
    device: str = "auto",
    metric: str | None = None,
    on_epoch: OnEpoch | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    resume: bool = True,
    checkpoint_every_s: float = 0.0,
) -> FitResult:
    """Train ``setup`` for ``epochs`` epochs and return its curves and best metric value.

    Evaluates at epoch 0 (before any update) and after every epoch, and calls ``on_epoch``
    with each finite evaluation; exceptions it raises (e.g. ``optuna.TrialPruned``) propagate
    unchanged, returning ``True`` stops training early. ``metric`` is the curve whose best value
    becomes ``FitResult.value``: ``val_acc`` by default, ``val_loss`` for a loss without
    accuracy; its direction is :data:`METRIC_DIRECTIONS`.

    A non-finite train or val loss ends training at the end of that epoch with
    ``diverged=True``; that evaluation is in the result's curves but is not passed to
    ``on_epoch``. With ``checkpoint_path``, a checkpoint is written atomically at each epoch's
    end (with ``checkpoint_every_s`` > 0, only once that many seconds have passed since the
    last one, and at the last epoch), and with ``resume`` a run finds it, calls ``on_epoch``
    with the saved evaluations and continues, giving the same curves (but wall times) as an
    uninterrupted run.

    The global torch RNG is seeded from ``seed`` for the run and restored afterwards.

    Raises :class:`TrainingError` for a setup that cannot train, with what to fix.
    """
    _check_setup(setup, epochs, checkpoint_every_s)
    dev = resolve_device(device)
    rng_devices = [dev.index] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(seed)
        run = _Run(setup, dev, seed, metric)
        return run.fit(epochs, on_epoch, checkpoint_path, resume, checkpoint_every_s)


class _Batches:
    """Batches of one split: device tensors indexed directly, or a DataLoader over a Dataset."""

    def __init__(self, data: Data, name: str, setup: TrainingSetup, device: torch.device):
        self.name = name
        self.device = device
        self.batch_size = setup.batch_size
        self.eval_batch_size = setup.eval_batch_size
        self.x: Tensor | None = None
        self.y: Tensor | None = None
        self.dataset: Dataset[Any] | None = None
        self.num_workers = setup.num_workers
        if isinstance(data, TensorDataset) and len(data.tensors) == 2:
            data = (data.tensors[0], data.tensors[1])
        if isinstance(data, (tuple, list)):
            if len(data) != 2 or not all(isinstance(t, Tensor) for t in data):
                raise TrainingError(
                    f"{name} must be (X, y) tensors or a torch Dataset, got a "
                    f"{type(data).__name__} of {', '.join(type(t).__name__ for t in data)}"
                )
            x, y = data
            if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
                raise TrainingError(
                    f"{name} X and y need the same number of rows (> 0), got X of shape "
                    f"{tuple(x.shape)} and y of shape {tuple(y.shape)}"
                )
            if not y.is_floating_point() and not y.is_complex():
                y = y.long()  # integer class labels of any width; losses want int64
            # Moved once; every epoch then indexes device memory, no copies through the host.
            self.x, self.y = x.to(device), y.to(device)
            self.n = x.shape[0]
        elif isinstance(data, Dataset) and isinstance(data, Sized):
            if len(data) == 0:
                raise TrainingError(f"{name} dataset is empty; give it at least one sample")
            self.dataset = data
            self.n = len(data)
        else:
            raise TrainingError(
                f"{name} must be (X, y) tensors or a sized torch Dataset, "
                f"got {type(data).__name__}"
            )

    def first(self) -> tuple[Tensor, Tensor]:
        """A small first batch, for checking shapes before training."""
        return next(self.eval_batches(min(self.batch_size, 256)))

    def train_batches(self, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled training batches, the order drawn from ``generator``."""
        if self.x is not None and self.y is not None:
            x, y, bs = self.x, self.y, self.batch_size
            perm = torch.randperm(self.n, generator=generator).to(self.device, non_blocking=True)
            for start in range(0, self.n, bs):
                idx = perm[start : start + bs]
                yield x.index_select(0, idx), y.index_select(0, idx)
        else:
            yield from self._loader(self.batch_size, generator)

    def eval_batches(self, batch_size: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches in order, for evaluation."""
        bs = batch_size or self.eval_batch_size
        if self.x is not None and self.y is not None:
            for start in range(0, self.n, bs):
                yield self.x[start : start + bs], self.y[start : start + bs]
        else:
            yield from self._loader(bs, None)

    def _loader(
        self, batch_size: int, generator: torch.Generator | None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        assert self.dataset is not None
        loader = DataLoader(
            self.dataset,
            batch_size=batch_size,
            shuffle=generator is not None,
            generator=generator,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for batch in loader:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise TrainingError(
                    f"{self.name} dataset items must be (x, y) pairs, got batches of "
                    f"{type(batch).__name__}"
                )
            xb, yb = batch
            if not yb.is_floating_point():
                yb = yb.long()
            yield xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)


class _Run:
    """One fit call's state: model, optimizer, data on the device, RNG for shuffling."""

    def __init__(self, setup: TrainingSetup, device: torch.device, seed: int, metric: str | None):
        self.setup = setup
        self.device = device
        self.seed = seed
        model = setup.model if isinstance(setup.model, nn.Module) else setup.model()
        if not isinstance(model, nn.Module):
            raise TrainingError(
                f"model must be a torch.nn.Module or a function returning one, "
                f"got {type(model).__name__}"
            )
        self.model = model.to(device)
        self.train = _Batches(setup.train, "train", setup, device)
        self.val = _Batches(setup.val, "val", setup, device)
        self.num_classes: int | None = None
        self.loss_fn, self.classifies = self._check_model_and_loss()
        if metric is None:
            metric = "val_acc" if self.classifies else "val_loss"
        if metric not in CURVE_NAMES:
            raise TrainingError(f"metric must be one of {', '.join(CURVE_NAMES)}, got {metric!r}")
        if metric.endswith("_acc") and not self.classifies:
            raise TrainingError(
                f"metric {metric!r} needs a classification loss with integer labels; "
                "use metric='val_loss'"
            )
        self.metric = metric
        self.optimizer = make_optimizer(setup, self.model)
        self.shuffle = torch.Generator().manual_seed(seed + 1)

    def fit(
        self,
        epochs: int,
        on_epoch: OnEpoch | None,
        checkpoint_path: str | os.PathLike[str] | None,
        resume: bool,
        checkpoint_every_s: float,
    ) -> FitResult:
        curves = Curves()
        last_checkpoint = time.monotonic()
        state = load_checkpoint(checkpoint_path) if checkpoint_path and resume else None
        if state is not None:
            start = self._restore(state, epochs, str(checkpoint_path))
            curves = Curves.from_json(state["curves"])
            for i in range(len(curves)):
                if on_epoch is not None and on_epoch(_record_at(curves, i)):
                    return self._result(curves, stopped_at=curves.epoch[i])
        else:
            start = 0
            t0 = time.perf_counter()
            train_loss, train_acc = self._evaluate(self.train)
            val_loss, val_acc = self._evaluate(self.val)
            lr = self._lr(1, epochs)
            record = EpochRecord(
                0, train_loss, val_loss, train_acc, val_acc, lr, time.perf_counter() - t0
            )
            curves.append(record)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                return self._result(curves, diverged=record)
            if on_epoch is not None and on_epoch(record):
                return self._result(curves, stopped_at=0)
        for epoch in range(start + 1, epochs + 1):
            t0 = time.perf_counter()
            lr = self._lr(epoch, epochs)
            train_loss, train_acc = self._train_epoch(lr)
            val_loss, val_acc = self._evaluate(self.val)
            record = EpochRecord(
                epoch, train_loss, val_loss, train_acc, val_acc, lr, time.perf_counter() - t0
            )
            curves.append(record)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                return self._result(curves, diverged=record)
            due = time.monotonic() - last_checkpoint >= checkpoint_every_s or epoch == epochs
            if checkpoint_path is not None and due:
                save_checkpoint(checkpoint_path, self._state(epoch, epochs, curves))
                last_checkpoint = time.monotonic()
            if on_epoch is not None and on_epoch(record):
                return self._result(curves, stopped_at=epoch)
        return self._result(curves)

    def _lr(self, epoch: int, epochs: int) -> float:
        s = self.setup
        return scheduled_lr(s.schedule, s.lr, epoch, epochs, step_at=s.step_at, gamma=s.gamma)

    def _train_epoch(self, lr: float) -> tuple[float, float | None]:
        model, optimizer, loss_fn = self.model, self.optimizer, self.loss_fn
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        # Per batch only what must be kept (the loss, the predicted classes), on the device;
        # sums and one sync per epoch, so the train figures cost one small kernel per batch.
        losses: list[Tensor] = []
        sizes: list[int] = []
        predicted: list[Tensor] = []
        targets: list[Tensor] = []
        for xb, yb in self.train.train_batches(self.shuffle):
            out = model(xb)
            loss = loss_fn(out, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            losses.append(loss.detach())
            sizes.append(yb.shape[0])
            if self.classifies:
                predicted.append(out.detach().argmax(dim=1))
                targets.append(yb)
        n = self.train.n
        weights = torch.tensor(sizes, dtype=torch.float64, device=self.device)
        loss_sum = (torch.stack(losses).to(torch.float64) * weights).sum().item()
        if not self.classifies:
            return loss_sum / n, None
        correct = (torch.cat(predicted) == torch.cat(targets)).sum().item()
        return loss_sum / n, correct / n

    @torch.no_grad()
    def _evaluate(self, batches: _Batches) -> tuple[float, float | None]:
        model, loss_fn = self.model, self.loss_fn
        model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for xb, yb in batches.eval_batches():
            out = model(xb)
            loss_sum.add_(loss_fn(out, yb), alpha=yb.shape[0])
            if self.classifies:
                correct.add_((out.argmax(dim=1) == yb).sum())
        n = batches.n
        return loss_sum.item() / n, (correct.item() / n if self.classifies else None)

    def _result(
        self, curves: Curves, *, diverged: EpochRecord | None = None, stopped_at: int | None = None
    ) -> FitResult:
        best_epoch, value = _best(curves, self.metric)
        reason = None
        if diverged is not None:
            which = "train" if not math.isfinite(diverged.train_loss) else "val"
            loss = diverged.train_loss if which == "train" else diverged.val_loss
            reason = (
                f"diverged: {which}_loss = {loss} at epoch {diverged.epoch} "
                f"(lr = {diverged.lr:g}); lower the learning rate"
                if diverged.epoch
                else f"diverged: {which}_loss = {loss} before any update; check the data for "
                "NaN or infinite values"
            )
        elif stopped_at is not None:
            reason = f"stopped early by on_epoch at epoch {stopped_at}"
        return FitResult(
            curves=curves,
            metric=self.metric,
            value=value,
            best_epoch=best_epoch,
            num_classes=self.num_classes,
            diverged=diverged is not None,
            stopped_early=stopped_at is not None,
            reason=reason,
        )

    def _fingerprint(self, epochs: int) -> dict[str, Any]:
        s = self.setup
        return {
            "epochs": epochs,
            "seed": self.seed,
            "loss": s.loss if isinstance(s.loss, str) else "callable",
            "optimizer": s.optimizer,
            "lr": s.lr,
            "weight_decay": s.weight_decay,
            "momentum": s.momentum,
            "schedule": s.schedule,
            "step_at": s.step_at,
            "gamma": s.gamma,
            "batch_size": s.batch_size,
            "train_rows": self.train.n,
        }

    def _state(self, epoch: int, epochs: int, curves: Curves) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "setup": self._fingerprint(epochs),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            # The schedule is a pure function of (setup, epoch, epochs): its state is the epoch.
            "scheduler": {"schedule": self.setup.schedule, "epoch": epoch},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": (
                torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
            ),
            "shuffle_rng": self.shuffle.get_state(),
            "curves": curves.to_json(),
        }

    def _restore(self, state: dict[str, Any], epochs: int, path: str) -> int:
        saved, ours = state.get("setup", {}), self._fingerprint(epochs)
        for key, value in ours.items():
            if saved.get(key) != value:
                raise TrainingError(
                    f"checkpoint {path} was written by a run with {key} = {saved.get(key)!r}, "
                    f"this run has {key} = {value!r}; delete it or pass resume=False"
                )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as err:
            raise TrainingError(
                f"checkpoint {path} does not fit this model ({str(err).splitlines()[0]}); "
                "delete it or pass resume=False"
            ) from err
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.shuffle.set_state(state["shuffle_rng"])
        return int(state["epoch"])

    def _check_model_and_loss(self) -> tuple[LossFn, bool]:
        """Run one small batch of each split through model and loss; name what does not fit."""
        loss = self.setup.loss
        loss_fn = loss_function(loss)
        param = next(self.model.parameters(), None)
        is_classifier = loss == "cross_entropy"
        for batches in (self.train, self.val):
            xb, yb = batches.first()
            where = f"{batches.name} batch X {tuple(xb.shape)}"
            if param is not None and xb.is_floating_point() and xb.dtype != param.dtype:
                raise TrainingError(
                    f"{batches.name} X has dtype {xb.dtype} but the model's parameters are "
                    f"{param.dtype}; convert X with .to({param.dtype})"
                )
            self.model.eval()
            try:
                with torch.no_grad():
                    out = self.model(xb)
            except (RuntimeError, ValueError, TypeError, IndexError) as err:
                raise TrainingError(
                    f"model cannot take the {where}: {str(err).splitlines()[0]}; make the data's "
                    "sample shape match the model's input"
                ) from err
            if not isinstance(out, Tensor):
                raise TrainingError(
                    f"model must return one tensor, got {type(out).__name__} for the {where}"
                )
            got = f"model output {tuple(out.shape)} and targets y {tuple(yb.shape)} ({yb.dtype})"
            if loss == "cross_entropy":
                if yb.is_floating_point() or yb.ndim != 1:
                    raise TrainingError(
                        f"loss 'cross_entropy' needs integer class labels y of shape (batch,), "
                        f"got {got}; pass y.long() labels or use loss='mse'"
                    )
                if out.ndim != 2 or out.shape[0] != yb.shape[0]:
                    raise TrainingError(
                        f"loss 'cross_entropy' needs model output of shape (batch, classes), "
                        f"got {got}; make the model's last layer output one score per class"
                    )
                classes = out.shape[1]
                if self.setup.num_classes is not None and classes != self.setup.num_classes:
                    raise TrainingError(
                        f"num_classes is {self.setup.num_classes} but the model outputs {classes}"
                        f" class scores; make its last layer output {self.setup.num_classes}"
                    )
                self._check_labels(batches, classes)
            elif loss == "mse" and out.shape != yb.shape:
                raise TrainingError(
                    f"loss 'mse' needs model output shaped like the targets, got {got}; "
                    "reshape y or the model's last layer"
                )
            if loss not in LOSSES:
                try:
                    value = loss_fn(out, yb)
                except (RuntimeError, ValueError, TypeError, IndexError) as err:
                    raise TrainingError(
                        f"loss cannot take {got}: {str(err).splitlines()[0]}; make the model "
                        "output fit the loss"
                    ) from err
                if not isinstance(value, Tensor) or value.numel() != 1:
                    raise TrainingError(
                        f"loss must return the batch mean as a scalar tensor, got "
                        f"{getattr(value, 'shape', type(value).__name__)} for {got}"
                    )
                is_classifier = classifies(loss, out, yb)
            if is_classifier:
                self.num_classes = int(out.shape[1])
        return loss_fn, is_classifier

    def _check_labels(self, batches: _Batches, classes: int) -> None:
        y = batches.y if batches.y is not None else batches.first()[1]
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= classes:
            raise TrainingError(
                f"model outputs {classes} class scores but {batches.name} labels range over "
                f"{low}..{high}; make the model's last layer output {max(high + 1, classes)} "
                "scores or relabel to 0..classes-1"
            )


def loss_function(loss: str | LossFn) -> LossFn:
    """The loss a :class:`TrainingSetup` names: ``"cross_entropy"``, ``"mse"`` or a callable."""
    if loss == "cross_entropy":
        return F.cross_entropy
    if loss == "mse":
        return F.mse_loss
    if callable(loss):
        return loss
    raise TrainingError(_choice_message("loss", str(loss), LOSSES))


def make_optimizer(
    setup: TrainingSetup,
    model: nn.Module,
    *,
    lr: float | None = None,
    weight_decay: float | None = None,
) -> torch.optim.Optimizer:
    """The optimizer ``setup`` names over ``model``'s trainable parameters, at ``setup``'s
    learning rate and weight decay unless given (the checks turn weight decay off)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("model has no trainable parameters; nothing to tune")
    lr = setup.lr if lr is None else lr
    weight_decay = setup.weight_decay if weight_decay is None else weight_decay
    if setup.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if setup.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=setup.momentum, weight_decay=weight_decay)
    raise TrainingError(_choice_message("optimizer", setup.optimizer, OPTIMIZERS))


def classifies(loss: str | LossFn, out: Tensor, y: Tensor) -> bool:
    """Whether a model output ``out`` and targets ``y`` under ``loss`` are a classification:
    one score per class per sample and integer labels (accuracies are then recorded)."""
    if loss == "mse":
        return False
    return (out.ndim == 2 and y.ndim == 1 and not y.is_floating_point()
            and out.shape[0] == y.shape[0])


def _check_setup(setup: TrainingSetup, epochs: int, checkpoint_every_s: float) -> None:
    """Plain-value checks, before anything is built or moved."""
    if setup.optimizer not in OPTIMIZERS:
        raise TrainingError(_choice_message("optimizer", setup.optimizer, OPTIMIZERS))
    if setup.schedule not in SCHEDULES:
        raise TrainingError(_choice_message("schedule", setup.schedule, SCHEDULES))
    checks = [
        ("epochs", epochs, isinstance(epochs, int) and epochs >= 1, "an integer >= 1"),
        ("lr", setup.lr, setup.lr > 0 and math.isfinite(setup.lr), "> 0"),
        ("weight_decay", setup.weight_decay, setup.weight_decay >= 0, ">= 0"),
        ("momentum", setup.momentum, 0 <= setup.momentum < 1, "in [0, 1)"),
        ("step_at", setup.step_at, 0 < setup.step_at < 1, "in (0, 1)"),
        ("gamma", setup.gamma, 0 < setup.gamma <= 1, "in (0, 1]"),
        ("batch_size", setup.batch_size, setup.batch_size >= 1, "an integer >= 1"),
        ("eval_batch_size", setup.eval_batch_size, setup.eval_batch_size >= 1, "an integer >= 1"),
        ("num_workers", setup.num_workers, setup.num_workers >= 0, "an integer >= 0"),
        ("checkpoint_every_s", checkpoint_every_s, checkpoint_every_s >= 0, ">= 0"),
    ]
    for name, value, ok, expected in checks:
        if not ok:
            raise TrainingError(f"{name} must be {expected}, got {name} = {value!r}")


def _choice_message(what: str, got: str, choices: tuple[str, ...]) -> str:
    names = ", ".join(repr(c) for c in choices)
    return f"unknown {what} {got!r}: use one of {names}"


def _record_at(curves: Curves, i: int) -> EpochRecord:
    def acc(x: float) -> float | None:
        return None if math.isnan(x) else x

    return EpochRecord(
        epoch=curves.epoch[i],
        train_loss=curves.train_loss[i],
        val_loss=curves.val_loss[i],
        train_acc=acc(curves.train_acc[i]),
        val_acc=acc(curves.val_acc[i]),
        lr=curves.lr[i],
        seconds=curves.seconds[i],
    )


def _best(curves: Curves, metric: str) -> tuple[int | None, float | None]:
    """Epoch and value of the best finite evaluation of ``metric``; first one on ties."""
    sign = 1.0 if METRIC_DIRECTIONS[metric] == "maximize" else -1.0
    best: tuple[int | None, float | None] = (None, None)
    for epoch, value in zip(curves.epoch, getattr(curves, metric), strict=True):
        if math.isfinite(value) and (best[1] is None or sign * value > sign * best[1]):
            best = (epoch, value)
    return best
