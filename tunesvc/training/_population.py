"""Population training: many trials of one architecture trained at once as one stacked model.

A small model leaves a device idle: one trial at a time is bound by kernel launches and Python,
not arithmetic. A :class:`Population` stacks the parameters of K trials (its *members*) along a
new first dimension and trains them with one forward and one backward per batch over all of
them, then a per-member optimizer step whose hyperparameters are tensors: learning rate
(through each member's own schedule, at its own epoch), weight decay, momentum, dropout rate.
Every member keeps what makes it a trial of its own: initial weights from its seed, its own
shuffle of the data and dropout masks, its curves from epoch 0, divergence, early stopping, a
checkpoint. The arithmetic of a member does not depend on the others, so removing or adding a
member leaves the others' numbers as they were (bit for bit on the CPU), and a member's curves
equal the same trial trained alone with :func:`tunesvc.fit` up to float32 rounding (batched and
single matrix products sum in different orders).

The population knows nothing of Optuna. The caller drives it like :func:`fit`, member by
member, through each member's ``on_epoch`` callback::

    population = Population(device="cuda")
    for number, setup in claimed.items():
        population.add(number, setup, epochs=20, seed=0, on_epoch=reporter(number))
    while population:
        for end in population.step():    # one epoch for every member, then their callbacks
            finish(end.key, end.result, end.error)  # ended: finished, stopped, diverged, raised
        # a new compatible trial may join here with population.add(...): it starts at epoch 0

Which setups can share a population: :func:`population_key` (equal keys: same architecture,
data, loss, optimizer and batch size) and :func:`group_setups`; a setup that cannot be
vectorized at all gets a one-line reason instead, and trains alone with :func:`fit`.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.utils.data import TensorDataset

from tunesvc._errors import TrainingError
from tunesvc.curves import Curves, EpochRecord
from tunesvc.training._checkpoint import load_checkpoint, save_checkpoint
from tunesvc.training._fit import (
    FitResult,
    OnEpoch,
    TrainingSetup,
    _record_at,
    _Run,
    check_setup_values,
    fit_result,
    resolve_device,
    scheduled_lr,
)
from tunesvc.training._seeded import (
    SeededDropout,
    element_words,
    layer_keys,
    rate_scale,
    rate_threshold,
    seed_words,
    seeded_dropout,
    shuffle_key,
    shuffle_order,
    step_keys,
)

K = TypeVar("K", bound=Hashable)

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8  # torch.optim.AdamW's defaults, which fit uses

# Parameter-free modules that act on each element alone: they take a stack of members as is.
_ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Tanhshrink,
)  # fmt: skip

_Dropout = tuple[Tensor, Tensor, Tensor]  # a dropout layer's key, threshold, scale per member

CPU_MEMBERS_PER_PASS = 32
"""On the CPU a population trains this many members at a time through each epoch (a
working set that stays in cache); on CUDA all of them at once. Either way a member's numbers
are the same."""

_EVAL_ROWS = 1 << 18  # members x rows per evaluation forward: bounds its activations' memory


@dataclass(frozen=True)
class MemberEnd:
    """A member that left its population in a :meth:`Population.step`.

    ``result`` is what :func:`fit` would have returned for the trial (finished, stopped early
    by its ``on_epoch``, or diverged); ``error`` is what its ``on_epoch`` raised instead (e.g.
    ``optuna.TrialPruned``), for the caller to handle as if :func:`fit` had raised it.
    """

    key: Hashable
    result: FitResult | None
    error: Exception | None = None


def population_key(setup: TrainingSetup) -> Hashable:
    """What must be equal for setups to train in one population: the model's structure (module
    types, their settings, parameter shapes; dropout rates may differ), the train and
    validation data (by content), the loss, the optimizer, the batch sizes.

    Raises :class:`TrainingError` with a one-line reason when ``setup`` cannot be vectorized at
    all (Dataset data, a model with buffers such as BatchNorm's running statistics, a dropout
    other than ``nn.Dropout``, a model or loss ``torch.func.vmap`` cannot batch, ...); such a
    setup trains alone with :func:`fit`.
    """
    structure = _structure_of(setup)
    structure.try_step()
    return structure.key


def group_setups(setups: Mapping[K, TrainingSetup]) -> tuple[list[list[K]], dict[K, str]]:
    """Split ``setups`` into populations (lists of keys whose setups share a
    :func:`population_key`, in first-seen order) and those that must train alone, each with
    the one-line reason why. The trial step that checks vectorizing runs once per distinct
    model, loss and data shape, not once per setup."""
    groups: dict[Hashable, list[K]] = {}
    alone: dict[K, str] = {}
    verdicts: dict[Hashable, str | None] = {}  # the trial step's, per kind of setup
    for name, setup in setups.items():
        try:
            structure = _structure_of(setup)
            if structure.kind not in verdicts:
                try:
                    structure.try_step()
                    verdicts[structure.kind] = None
                except TrainingError as err:
                    verdicts[structure.kind] = str(err)
            reason = verdicts[structure.kind]
            if reason is None:
                groups.setdefault(structure.key, []).append(name)
            else:
                alone[name] = reason
        except TrainingError as err:
            alone[name] = str(err)
    return list(groups.values()), alone


def _structure_of(setup: TrainingSetup) -> _Structure:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _Structure(_member_run(setup, 0, None))


def fit_population(
    setups: Mapping[K, TrainingSetup],
    *,
    epochs: int,
    seeds: Mapping[K, int] | int = 0,
    device: str = "auto",
    metric: str | None = None,
    on_epoch: Callable[[K, EpochRecord], bool | None] | None = None,
) -> dict[K, FitResult]:
    """Train ``setups`` (which must share a :func:`population_key`) as one population for
    ``epochs`` epochs; each member's :class:`FitResult` by key, as :func:`fit` gives it.

    ``on_epoch(key, record)`` is called with each member's evaluations; returning ``True``
    stops that member (an early stop); an exception it raises propagates.
    """
    population = Population(device=device)
    for name, setup in setups.items():
        seed = seeds if isinstance(seeds, int) else seeds[name]
        callback = None if on_epoch is None else _bind(on_epoch, name)
        population.add(name, setup, epochs=epochs, seed=seed, metric=metric, on_epoch=callback)
    results: dict[K, FitResult] = {}
    while population:
        for end in population.step():
            if end.error is not None:
                raise end.error
            assert end.result is not None
            results[end.key] = end.result  # type: ignore[index]
    return results


def _bind(
    on_epoch: Callable[[K, EpochRecord], bool | None], name: K
) -> Callable[[EpochRecord], bool | None]:
    return lambda record: on_epoch(name, record)


@dataclass
class _Member:
    """One trial in a population: what it trains with, where it is, what it has recorded."""

    key: Hashable
    setup: TrainingSetup
    epochs: int
    seed: int
    metric: str
    num_classes: int | None
    on_epoch: OnEpoch | None
    checkpoint_path: Path | None
    fingerprint: dict[str, Any]
    param_group: dict[str, Any]  # the torch optimizer's param group, for fit-format checkpoints
    shuffle: torch.Generator
    torch_rng: Tensor
    rates: list[float]  # dropout probability per dropout layer
    epoch: int = 0  # epochs trained
    curves: Curves = field(default_factory=Curves)
    replay: list[EpochRecord] | None = None  # evaluations from a checkpoint, not yet passed on
    last_checkpoint: float = field(default_factory=time.monotonic)
    lr: float = 0.0  # the learning rate of the epoch trained last

    def scheduled_lr(self, epoch: int) -> float:
        s = self.setup
        return scheduled_lr(
            s.schedule, s.lr, epoch, self.epochs, step_at=s.step_at, gamma=s.gamma
        )


class Population:
    """Trials of one architecture trained at once on one device (see the module docstring).

    ``checkpoint_every_s`` is :func:`fit`'s: with 0 a member with a ``checkpoint_path`` writes
    its checkpoint at each of its epochs' end, else only once that many seconds have passed
    since its last one (and at its last epoch). A member's checkpoint has :func:`fit`'s format:
    a trial can resume alone from a population's checkpoint, and in a population from fit's.
    """

    def __init__(
        self,
        *,
        device: str = "auto",
        checkpoint_every_s: float = 0.0,
        members_per_pass: int | None = None,
    ) -> None:
        if not checkpoint_every_s >= 0:
            raise TrainingError(
                f"checkpoint_every_s must be >= 0, got checkpoint_every_s = {checkpoint_every_s!r}"
            )
        if members_per_pass is not None and members_per_pass < 1:
            raise TrainingError(
                f"members_per_pass must be >= 1 or None, got members_per_pass = "
                f"{members_per_pass!r}"
            )
        self.device = resolve_device(device)
        self.checkpoint_every_s = checkpoint_every_s
        if members_per_pass is None and self.device.type == "cpu":
            members_per_pass = CPU_MEMBERS_PER_PASS
        self.members_per_pass = members_per_pass
        self._members: dict[Hashable, _Member] = {}
        self._stack: _Stack | None = None
        self._structure: _Structure | None = None

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, key: object) -> bool:
        return key in self._members

    def keys(self) -> list[Hashable]:
        """The members' keys, in the order they joined."""
        return list(self._members)

    def add(
        self,
        key: Hashable,
        setup: TrainingSetup,
        *,
        epochs: int,
        seed: int = 0,
        metric: str | None = None,
        on_epoch: OnEpoch | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
        resume: bool = True,
    ) -> None:
        """Start a member: the same arguments as :func:`fit`, and a ``key`` to tell it by.

        It starts at its own epoch 0 at the next :meth:`step` (or, resumed from the checkpoint
        at ``checkpoint_path``, passes its saved evaluations to ``on_epoch`` there and goes
        on from the saved epoch). The other members' numbers do not change.

        Raises :class:`TrainingError` when the setup cannot train (as :func:`fit` would), when
        it does not fit this population (saying what differs), or for a key already in it.
        """
        if key in self._members:
            raise TrainingError(f"population already has a member {key!r}; keys must differ")
        check_setup_values(setup, epochs, self.checkpoint_every_s)
        state = load_checkpoint(checkpoint_path) if checkpoint_path and resume else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            run = _member_run(setup, seed, metric)
            torch_rng = torch.get_rng_state()
            # fit's own checks of the checkpoint against the setup, and its loading.
            start = run._restore(state, epochs, str(checkpoint_path)) if state else 0
        structure = _Structure(run)
        if self._structure is None:
            structure.try_step()
        else:
            self._structure.check_joins(structure)
        member = _Member(
            key=key,
            setup=setup,
            epochs=epochs,
            seed=seed,
            metric=run.metric,
            num_classes=run.num_classes,
            on_epoch=on_epoch,
            checkpoint_path=Path(checkpoint_path) if checkpoint_path else None,
            fingerprint=run._fingerprint(epochs),
            param_group=run.optimizer.state_dict()["param_groups"][0],
            shuffle=run.shuffle,
            torch_rng=torch_rng,
            rates=[layer.p or 0.0 for layer in run.dropout.layers],
            epoch=start,
        )
        if state is not None:
            member.curves = Curves.from_json(state["curves"])
            member.replay = [_record_at(member.curves, i) for i in range(len(member.curves))]
            member.lr = float(run.optimizer.param_groups[0]["lr"])
            member.torch_rng = state["torch_rng"]
        if self._structure is None:
            self._structure = structure
            self._stack = _Stack(structure, self.device, self.members_per_pass)
        assert self._stack is not None
        self._stack.stage(member, run)
        self._members[key] = member

    def remove(self, key: Hashable) -> FitResult:
        """Take a member out (the caller stopped it: pruned, lost, ...) and return its result
        so far; the others go on with their numbers unchanged."""
        member = self._members.pop(key, None)
        if member is None:
            raise TrainingError(f"population has no member {key!r}")
        assert self._stack is not None
        self._stack.drop({key})
        stopped = member.epoch if member.epoch < member.epochs else None
        return fit_result(member.curves, member.metric, member.num_classes, stopped_at=stopped)

    def step(self) -> list[MemberEnd]:
        """One round for every member: members that just joined are evaluated at epoch 0 (or
        replay their checkpoint), then every member trains one epoch and is evaluated, and
        each evaluation goes to its member's ``on_epoch``, in the order members joined.

        Returns the members that left: finished their epochs, stopped by ``on_epoch``
        (returning ``True``, or raising: the exception is in :attr:`MemberEnd.error`), or
        diverged (a non-finite train or val loss; that evaluation is in the result's curves
        but never passed to ``on_epoch``, as in :func:`fit`).
        """
        ended: list[MemberEnd] = []
        if self._stack is not None:
            self._stack.sync()
        new = [m for m in self._members.values() if not m.curves and m.replay is None]
        if new:
            started = time.perf_counter()
            assert self._stack is not None
            train = self._stack.evaluate([m.key for m in new], on_train=True)
            val = self._stack.evaluate([m.key for m in new], on_train=False)
            seconds = time.perf_counter() - started
            for member, t, v in zip(new, train, val, strict=True):
                record = EpochRecord(0, t[0], v[0], t[1], v[1], member.scheduled_lr(1), seconds)
                self._conclude(member, record, ended, checkpoint=False)
        for member in [m for m in self._members.values() if m.replay is not None]:
            self._replay(member, ended)
        self._drop(ended)
        if self._members:
            self._train_epoch(ended)
            self._drop(ended)
        return ended

    def _replay(self, member: _Member, ended: list[MemberEnd]) -> None:
        assert member.replay is not None
        records, member.replay = member.replay, None
        for record in records:
            if _hand_over(member, record, ended):
                return
        if member.epoch >= member.epochs:
            result = fit_result(member.curves, member.metric, member.num_classes)
            ended.append(MemberEnd(member.key, result))

    def _train_epoch(self, ended: list[MemberEnd]) -> None:
        assert self._stack is not None
        self._stack.sync()
        members = [self._members[k] for k in self._stack.keys]
        started = time.perf_counter()
        for member in members:
            member.lr = member.scheduled_lr(member.epoch + 1)
        train = self._stack.train_epoch(members)
        val = self._stack.evaluate(self._stack.keys, on_train=False)
        seconds = time.perf_counter() - started
        for member, t, v in zip(members, train, val, strict=True):
            member.epoch += 1
            record = EpochRecord(member.epoch, t[0], v[0], t[1], v[1], member.lr, seconds)
            self._conclude(member, record, ended, checkpoint=True)

    def _conclude(
        self, member: _Member, record: EpochRecord, ended: list[MemberEnd], *, checkpoint: bool
    ) -> None:
        """What :func:`fit` does with an evaluation: record it; end a diverged member; write
        the checkpoint when due; pass the evaluation on; end a finished or stopped member."""
        member.curves.append(record)
        if not (math.isfinite(record.train_loss) and math.isfinite(record.val_loss)):
            result = fit_result(member.curves, member.metric, member.num_classes, diverged=record)
            ended.append(MemberEnd(member.key, result))
            return
        if checkpoint and member.checkpoint_path is not None:
            now = time.monotonic()
            if now - member.last_checkpoint >= self.checkpoint_every_s or (
                member.epoch == member.epochs
            ):
                assert self._stack is not None
                save_checkpoint(member.checkpoint_path, self._stack.checkpoint(member))
                member.last_checkpoint = time.monotonic()
        if not _hand_over(member, record, ended) and member.epoch >= member.epochs:
            result = fit_result(member.curves, member.metric, member.num_classes)
            ended.append(MemberEnd(member.key, result))

    def _drop(self, ended: Sequence[MemberEnd]) -> None:
        gone = {end.key for end in ended if end.key in self._members}
        for key in gone:
            del self._members[key]
        if gone and self._stack is not None:
            self._stack.drop(gone)


def _hand_over(member: _Member, record: EpochRecord, ended: list[MemberEnd]) -> bool:
    """Pass ``record`` to the member's ``on_epoch``; whether that ended the member (it asked to
    stop, or raised: either is in ``ended``)."""
    try:
        stop = member.on_epoch is not None and member.on_epoch(record)
    except Exception as err:  # noqa: BLE001 - the member's outcome, handed to the caller
        ended.append(MemberEnd(member.key, None, err))
        return True
    if stop:
        result = fit_result(
            member.curves, member.metric, member.num_classes, stopped_at=record.epoch
        )
        ended.append(MemberEnd(member.key, result))
    return bool(stop)


def _member_run(setup: TrainingSetup, seed: int, metric: str | None) -> _Run:
    """fit's own set-up of a trial (validated, the model built after seeding), on the CPU: the
    population moves what it keeps to its device once."""
    if not _tensor_pair(setup.train) or not _tensor_pair(setup.val):
        raise TrainingError(
            "a population needs train and val data as (X, y) tensors, got a Dataset; "
            "this trial trains alone"
        )
    return _Run(setup, torch.device("cpu"), seed, metric)


def _tensor_pair(data: Any) -> bool:
    if isinstance(data, TensorDataset):
        return len(data.tensors) == 2
    return isinstance(data, (tuple, list)) and all(isinstance(t, Tensor) for t in data)


class _Structure:
    """The part of a trial that members of one population share, checked for vectorizing:
    model structure, data, loss, optimizer, batch sizes; and how to run the stacked model."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        setup, model = run.setup, run.model
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.dropout._DropoutNd) and not isinstance(
                module, SeededDropout
            ):
                raise TrainingError(
                    f"model layer {name!r} is {type(module).__name__}; a population only "
                    "vectorizes nn.Dropout, so this trial trains alone"
                )
        buffers = [
            f"{name}.{buffer}" if name else buffer
            for name, module in model.named_modules()
            if not isinstance(module, SeededDropout)
            for buffer, _ in module.named_buffers(recurse=False)
        ]
        if buffers:
            raise TrainingError(
                f"model has buffers ({', '.join(buffers[:3])}), e.g. BatchNorm running "
                "statistics, which a population does not stack; this trial trains alone"
            )
        if not isinstance(setup.loss, str) and not _plain_function(setup.loss):
            raise TrainingError(
                "loss is a callable with state (a closure or an object); a population needs "
                "a loss name or a plain function, so this trial trains alone"
            )
        assert run.train.x is not None and run.val.x is not None
        assert run.train.y is not None and run.val.y is not None
        self.sequential = _sequential_plan(model) if run.train.x.ndim == 2 else None
        self.settings: dict[str, Any] = {
            "model structure": _model_signature(model),
            "loss": setup.loss if isinstance(setup.loss, str) else _function_name(setup.loss),
            "optimizer": setup.optimizer,
            "batch_size": setup.batch_size,
            "eval_batch_size": setup.eval_batch_size,
        }
        self.data = {"train X": run.train.x, "train y": run.train.y, "val X": run.val.x,
                     "val y": run.val.y}  # fmt: skip

    @property
    def kind(self) -> Hashable:
        """The settings and the data's shapes: what the trial step's verdict depends on."""
        shapes = tuple((tuple(t.shape), t.dtype) for t in self.data.values())
        return (*self.settings.values(), shapes)

    @property
    def key(self) -> Hashable:
        """The settings and a digest of the data: equal for setups that can share."""
        digests = tuple(_tensor_digest(t) for t in self.data.values())
        return (*self.settings.values(), digests)

    def check_joins(self, other: _Structure) -> None:
        """Raise a one-line :class:`TrainingError` saying what differs when ``other`` cannot
        join a population of this structure (the data compared element by element)."""
        differs = [name for name, ours in self.settings.items() if ours != other.settings[name]]
        differs += [
            name for name, ours in self.data.items()
            if not _same_tensor(ours, other.data[name])
        ]  # fmt: skip
        if differs:
            name = differs[0]
            ours, theirs = (
                (_short(self.settings[name]), _short(other.settings[name]))
                if name in self.settings
                else (_describe(self.data[name]), _describe(other.data[name]))
            )  # fmt: skip
            raise TrainingError(
                f"setup does not fit this population: its {name} differs "
                f"({theirs} vs {ours}); give it a population of its own"
            )

    def try_step(self) -> None:
        """One training step of a population of two copies on a few rows: an error says in one
        line why the model or loss cannot be vectorized."""
        run = self.run
        members = [_probe_member(run, 0), _probe_member(run, 1)]
        try:
            stack = _Stack(self, torch.device("cpu"), members_per_pass=1, rows=8)
            for member in members:
                stack.stage(member, run)
            stack.sync()
            stack.train_epoch(members)
            stack.evaluate(stack.keys, on_train=False)
        except TrainingError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError, NotImplementedError) as err:
            raise TrainingError(
                f"model or loss cannot be vectorized with torch.func.vmap ({_first_line(err)});"
                " this trial trains alone"
            ) from err


def _probe_member(run: _Run, seed: int) -> _Member:
    return _Member(
        key=seed,
        setup=run.setup,
        epochs=1,
        seed=seed,
        metric=run.metric,
        num_classes=run.num_classes,
        on_epoch=None,
        checkpoint_path=None,
        fingerprint={},
        param_group={},
        shuffle=torch.Generator().manual_seed(seed),
        torch_rng=torch.get_rng_state(),
        rates=[layer.p or 0.0 for layer in run.dropout.layers],
        lr=run.setup.lr,
    )


def _plain_function(fn: Any) -> bool:
    return callable(fn) and getattr(fn, "__closure__", ()) is None and hasattr(fn, "__code__")


def _function_name(fn: Any) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def _model_signature(model: nn.Module) -> tuple[Any, ...]:
    """Module names, types and settings (dropout rates left out), parameter shapes and dtypes:
    what two models must share for one stacked forward to compute either."""
    modules = []
    for name, module in model.named_modules():
        settings = tuple(
            sorted(
                (attr, repr(value))
                for attr, value in vars(module).items()
                if not attr.startswith("_")
                and attr != "training"
                and not (isinstance(module, SeededDropout) and attr == "p")
            )
        )
        kind = type(module)
        modules.append((name, f"{kind.__module__}.{kind.__qualname__}", settings))
    params = tuple(
        (name, tuple(p.shape), str(p.dtype), p.requires_grad)
        for name, p in model.named_parameters()
    )
    return (tuple(modules), params)


def _tensor_digest(t: Tensor) -> tuple[Any, ...]:
    data = t.detach().cpu().contiguous()
    digest = hashlib.blake2b(data.view(torch.uint8).numpy().tobytes(), digest_size=16)
    return (tuple(t.shape), str(t.dtype), digest.hexdigest())


def _same_tensor(a: Tensor, b: Tensor) -> bool:
    return a is b or (a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b)))


def _describe(t: Tensor) -> str:
    return f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')} {_tensor_digest(t)[2][:8]}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _sequential_plan(model: nn.Module) -> list[tuple[str, Any]] | None:
    """The layers of an ``nn.Sequential`` of Linear, elementwise and dropout layers, for the
    stacked forward without vmap (fewer, larger kernels); ``None`` for any other model."""
    if type(model) is not nn.Sequential:
        return None
    plan: list[tuple[str, Any]] = []
    for name, module in model.named_children():
        if type(module) is nn.Linear:
            plan.append(("linear", (f"{name}.weight", f"{name}.bias" if module.bias is not None
                                    else None)))  # fmt: skip
        elif type(module) in _ELEMENTWISE:
            plan.append(("elementwise", module))
        elif type(module) is SeededDropout:
            plan.append(("dropout", module.layer))
        else:
            return None
    return plan


class _Stack:
    """The members' tensors stacked along a first dimension: parameters, optimizer state,
    per-member hyperparameters; and the stacked forward, loss, optimizer step, evaluation."""

    def __init__(
        self,
        structure: _Structure,
        device: torch.device,
        members_per_pass: int | None = None,
        rows: int | None = None,
    ):
        run = structure.run
        self.device = device
        self.members_per_pass = members_per_pass
        self.classifies = run.classifies
        self.loss = run.setup.loss
        self.loss_fn = run.loss_fn
        self.sgd = run.setup.optimizer == "sgd"
        self.sequential = structure.sequential
        assert run.train.x is not None and run.train.y is not None
        assert run.val.x is not None and run.val.y is not None
        # The data, once, on the device (rows: a few, for a trial step).
        self.train_x = run.train.x[:rows].to(device)
        self.train_y = run.train.y[:rows].to(device)
        self.val_x = run.val.x[:rows].to(device)
        self.val_y = run.val.y[:rows].to(device)
        self.batch_size = run.setup.batch_size
        self.batches = -(-self.train_x.shape[0] // self.batch_size)
        self.eval_batch_size = run.setup.eval_batch_size
        self.names = [name for name, _ in run.model.named_parameters()]
        self.trainable = [name for name, p in run.model.named_parameters() if p.requires_grad]
        self.dropouts = {name: m.layer for name, m in run.model.named_modules()
                         if isinstance(m, SeededDropout)}  # fmt: skip
        # The module vmap calls with each member's tensors; its own are never used.
        self.module = copy.deepcopy(run.model).to(device)
        for module in self.module.modules():
            if isinstance(module, SeededDropout):
                module.p = None  # rates come per member, from the stacked buffers
        self.keys: list[Hashable] = []  # the members, in stacking order
        self.row: dict[Hashable, int] = {}
        self.params: dict[str, Tensor] = {}
        self.state: dict[str, list[Tensor]] = {}  # exp_avg, exp_avg_sq | momentum_buffer
        self.per_member: dict[str, Tensor] = {}  # (K,) hyperparameters and counters
        self._staged: list[tuple[Hashable, dict[str, list[Tensor]], dict[str, Tensor]]] = []
        self._dropped: set[Hashable] = set()
        self._words: dict[tuple[int, ...], Tensor] = {}  # dropout's element_words per shape

    # -- members in and out: staged, then stacked in one go by sync() ---------------------

    def stage(self, member: _Member, run: _Run) -> None:
        """Take ``member`` in at the next :meth:`sync`, from its run's (possibly restored)
        model and optimizer."""
        params = dict(run.model.named_parameters())
        opt_state = run.optimizer.state
        steps = 0
        tensors: dict[str, list[Tensor]] = {}
        for name in self.names:
            p = params[name].detach()
            state = opt_state.get(params[name], {})
            if self.sgd:
                buf = state.get("momentum_buffer")
                tensors[name] = [p, torch.zeros_like(p) if buf is None else buf.detach()]
            else:
                if "step" in state:
                    steps = int(state["step"].item())
                tensors[name] = [
                    p,
                    state["exp_avg"].detach() if "exp_avg" in state else torch.zeros_like(p),
                    state["exp_avg_sq"].detach() if "exp_avg_sq" in state
                    else torch.zeros_like(p),
                ]  # fmt: skip
        s = member.setup
        scalars = {
            "weight_decay": torch.tensor(s.weight_decay, dtype=torch.float64),
            "momentum": torch.tensor(s.momentum, dtype=torch.float64),
            "seed_word": seed_words([member.seed])[0],
            "steps": torch.tensor(steps, dtype=torch.int64),
        }
        for i, rate in enumerate(member.rates):
            scalars[f"threshold{i}"] = rate_threshold(rate)
            scalars[f"scale{i}"] = rate_scale(rate)
        self._staged.append((member.key, tensors, scalars))

    def drop(self, keys: set[Hashable]) -> None:
        """Take the members ``keys`` out at the next :meth:`sync`."""
        self._staged = [entry for entry in self._staged if entry[0] not in keys]
        self._dropped |= keys & set(self.row)

    def sync(self) -> None:
        """Apply the drops and stagings since the last call: one copy of every stacked tensor
        for any number of members, whose rows keep their order."""
        if self._dropped:
            keep = [i for i, key in enumerate(self.keys) if key not in self._dropped]
            index = torch.tensor(keep, dtype=torch.int64, device=self.device)
            self.keys = [self.keys[i] for i in keep]
            self.params = {name: _leaf(p.detach().index_select(0, index), p.requires_grad)
                           for name, p in self.params.items()}  # fmt: skip
            self.state = {name: [t.index_select(0, index) for t in tensors]
                          for name, tensors in self.state.items()}  # fmt: skip
            self.per_member = {name: t.index_select(0, index)
                               for name, t in self.per_member.items()}  # fmt: skip
            self._dropped.clear()
        if self._staged:
            dev, staged = self.device, self._staged
            for name in self.names:
                rows = [torch.stack([entry[1][name][i] for entry in staged]).to(dev)
                        for i in range(len(staged[0][1][name]))]  # fmt: skip
                old = self.params.get(name)
                self.params[name] = _leaf(_cat(old, rows[0]), name in self.trainable)
                old_state = self.state.get(name, [None] * (len(rows) - 1))
                self.state[name] = [_cat(o, r) for o, r in zip(old_state, rows[1:], strict=True)]
            for name in staged[0][2]:
                column = torch.stack([entry[2][name] for entry in staged]).to(dev)
                self.per_member[name] = _cat(self.per_member.get(name), column)
            self.keys += [entry[0] for entry in staged]
            self._staged = []
        self.row = {key: i for i, key in enumerate(self.keys)}

    # -- the stacked model ---------------------------------------------------------------

    def forward(
        self, params: Mapping[str, Tensor], x: Tensor, dropout: Sequence[_Dropout] | None
    ) -> Tensor:
        """Every member's output, ``(K, B, ...)``; ``x`` is ``(K, B, ...)`` or, shared by
        all members, ``(B, ...)``. ``dropout`` holds each dropout layer's per-member key,
        threshold and scale of this step, ``(K,)`` each; ``None`` evaluates (eval mode)."""
        count = next(iter(params.values())).shape[0]
        if self.sequential is not None:
            return self._sequential_forward(params, x, dropout, count)
        buffers: dict[str, Tensor] = {}
        for name, layer in self.dropouts.items():
            if dropout is not None:  # in eval mode dropout reads none of them
                key, threshold, scale = dropout[layer]
                buffers[f"{name}.key"], buffers[f"{name}.threshold"] = key, threshold
                buffers[f"{name}.scale"] = scale
        self.module.train(dropout is not None)

        def one(p: dict[str, Tensor], b: dict[str, Tensor], xm: Tensor) -> Tensor:
            out = functional_call(self.module, (p, b), (xm,))
            assert isinstance(out, Tensor)
            return out

        x_dim = 0 if x.dim() == self.train_x.dim() + 1 else None
        out = vmap(one, in_dims=(0, 0, x_dim))(dict(params), buffers, x)
        assert isinstance(out, Tensor)
        return out

    def _sequential_forward(
        self,
        params: Mapping[str, Tensor],
        x: Tensor,
        dropout: Sequence[_Dropout] | None,
        count: int,
    ) -> Tensor:
        assert self.sequential is not None
        h = x if x.dim() == 3 else x.expand(count, *x.shape)
        for kind, what in self.sequential:
            if kind == "linear":
                weight, bias = params[what[0]], params[what[1]] if what[1] else None
                h = (
                    torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
                    if bias is not None
                    else torch.bmm(h, weight.transpose(1, 2))
                )
            elif kind == "elementwise":
                h = what(h)
            elif dropout is not None:  # a dropout layer, in training
                shape = (count,) + (1,) * (h.dim() - 1)
                words = self._words.get(tuple(h.shape[1:]))
                if words is None:
                    words = element_words(tuple(h.shape[1:]), self.device)
                    self._words[tuple(h.shape[1:])] = words
                key, threshold, scale = dropout[what]
                h = seeded_dropout(
                    h, key.view(shape), threshold.view(shape), scale.view(shape), words
                )
        return h

    def losses(self, out: Tensor, y: Tensor) -> Tensor:
        """Each member's mean loss over its batch, ``(K,)``."""
        count, rows = out.shape[0], out.shape[1]
        if self.loss == "cross_entropy":
            per_row = F.cross_entropy(out.flatten(0, 1), y.flatten(0, 1), reduction="none")
            return per_row.view(count, rows).mean(1)
        if self.loss == "mse":
            return F.mse_loss(out, y, reduction="none").flatten(1).mean(1)
        result = vmap(self.loss_fn)(out, y)
        assert isinstance(result, Tensor)
        return result.reshape(count)

    # -- training ------------------------------------------------------------------------

    def train_epoch(self, members: Sequence[_Member]) -> list[tuple[float, float | None]]:
        """One epoch for every member at once; each member's mean train loss and accuracy."""
        dev, count = self.device, len(members)
        n, bs = self.train_x.shape[0], self.batch_size
        shuffles = torch.tensor([shuffle_key(m.shuffle) for m in members], dtype=torch.int32)
        perms = shuffle_order(shuffles.to(dev), n)
        per, dtype = self.per_member, self.params[self.names[0]].dtype
        lr = torch.tensor([m.lr for m in members], dtype=torch.float64, device=dev)
        first = torch.tensor([m.epoch * self.batches for m in members], device=dev)
        # Everything a step needs that is not a batch, once an epoch.
        keys = step_keys(per["seed_word"], first, self.batches)
        layers = range(len(self.dropouts))
        dropout_keys = [layer_keys(keys, i).t().contiguous() for i in layers]
        dropout_rates = [(per[f"threshold{i}"], per[f"scale{i}"].to(dtype)) for i in layers]
        # (batches, K): a step's row and a pass's members are then one view.
        coefficients = {name: c.to(dtype).t().contiguous()
                        for name, c in self._coefficients(lr, per["steps"]).items()}  # fmt: skip
        loss_sum = torch.zeros(count, dtype=torch.float64, device=dev)
        correct = torch.zeros(count, dtype=torch.int64, device=dev)
        size = self.members_per_pass or count
        for rows in (slice(a, min(a + size, count)) for a in range(0, count, size)):
            # Views of the stacked tensors: the steps update them in place.
            params = {name: _leaf(p.detach()[rows], name in self.trainable)
                      for name, p in self.params.items()}  # fmt: skip
            state = {name: [t[rows] for t in tensors] for name, tensors in self.state.items()}
            trainable = [params[name] for name in self.trainable]
            for step in range(self.batches):
                idx = perms[rows, step * bs : (step + 1) * bs]
                xb = _gather(self.train_x, idx)
                yb = _gather(self.train_y, idx)
                dropout = [(k[step, rows], threshold[rows], scale[rows])
                           for k, (threshold, scale) in zip(dropout_keys, dropout_rates,
                                                            strict=True)]  # fmt: skip
                out = self.forward(params, xb, dropout)
                losses = self.losses(out, yb)
                grads = torch.autograd.grad(losses.sum(), trainable)
                with torch.no_grad():
                    scalars = {k: c[step, rows] for k, c in coefficients.items()}
                    self._optimizer_step(params, state, grads, scalars)
                    loss_sum[rows].add_(losses.detach().to(torch.float64), alpha=idx.shape[1])
                    if self.classifies:
                        correct[rows].add_((out.detach().argmax(dim=-1) == yb).sum(dim=1))
        per["steps"] = per["steps"] + self.batches
        train_loss = (loss_sum / n).tolist()
        if not self.classifies:
            return [(loss, None) for loss in train_loss]
        return list(zip(train_loss, (correct.to(torch.float64) / n).tolist(), strict=True))

    def _coefficients(self, lr: Tensor, steps: Tensor) -> dict[str, Tensor]:
        """Per member and step of this epoch, ``(K, batches)``, the scalars torch's optimizer
        would compute in Python doubles, computed in float64 the same way."""
        per, batches = self.per_member, self.batches

        def each_step(values: Tensor) -> Tensor:
            return values.unsqueeze(1).expand(-1, batches)

        if self.sgd:
            return {
                "neg_lr": each_step(-lr),
                "weight_decay": each_step(per["weight_decay"]),
                "momentum": each_step(per["momentum"]),
            }
        # Bias corrections from beta ** step as Python computes them, per distinct step count.
        counts = steps.tolist()
        distinct = sorted(set(counts))
        table1 = torch.tensor(
            [[1 - _BETA1 ** (s + b + 1) for b in range(batches)] for s in distinct],
            dtype=torch.float64,
        )
        table2 = torch.tensor(
            [[(1 - _BETA2 ** (s + b + 1)) ** 0.5 for b in range(batches)] for s in distinct],
            dtype=torch.float64,
        )
        row = torch.tensor([distinct.index(s) for s in counts], dtype=torch.int64)
        bias1 = table1.index_select(0, row).to(self.device)
        bias2_sqrt = table2.index_select(0, row).to(self.device)
        return {
            "decay": each_step(1 - lr * per["weight_decay"]),
            "neg_step": -(lr.unsqueeze(1) / bias1),
            "bias2_sqrt": bias2_sqrt,
        }

    def _optimizer_step(
        self,
        params: Mapping[str, Tensor],
        state: Mapping[str, list[Tensor]],
        grads: Sequence[Tensor],
        c: Mapping[str, Tensor],
    ) -> None:
        """torch.optim.AdamW's or SGD's single-tensor step, per member, with per-member
        scalars as tensors (``c``: this step's, ``(K,)`` each, in the parameters' dtype): the
        same float32 operations in the same order."""
        for name, grad in zip(self.trainable, grads, strict=True):
            p = params[name]
            shape = (p.shape[0],) + (1,) * (p.dim() - 1)
            if self.sgd:
                (buf,) = state[name]
                # grad.add(param, alpha=wd) and param.add_(buf, alpha=-lr) are fused
                # multiply-adds in torch; addcmul with a tensor factor is the same one.
                g = torch.addcmul(grad, p, c["weight_decay"].view(shape))
                buf.mul_(c["momentum"].view(shape)).add_(g)
                p.addcmul_(buf, c["neg_lr"].view(shape))
            else:
                exp_avg, exp_avg_sq = state[name]
                p.mul_(c["decay"].view(shape))
                exp_avg.lerp_(grad, 1 - _BETA1)
                exp_avg_sq.mul_(_BETA2).addcmul_(grad, grad, value=1 - _BETA2)
                denom = (exp_avg_sq.sqrt() / c["bias2_sqrt"].view(shape)).add_(_EPS)
                p.add_(c["neg_step"].view(shape) * exp_avg / denom)

    # -- evaluation ----------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(
        self, keys: Sequence[Hashable], *, on_train: bool
    ) -> list[tuple[float, float | None]]:
        """Mean loss and accuracy of the members ``keys`` on the train or val data, in eval
        mode, in order of the data as fit evaluates it."""
        x, y = (self.train_x, self.train_y) if on_train else (self.val_x, self.val_y)
        self.sync()
        rows = [self.row[k] for k in keys]
        n, bs = x.shape[0], self.eval_batch_size
        chunk = max(1, min(_EVAL_ROWS // min(bs, n), self.members_per_pass or len(rows)))
        results: list[tuple[float, float | None]] = []
        for start in range(0, len(rows), chunk):
            index = torch.tensor(rows[start : start + chunk], device=self.device)
            params = {name: p.detach().index_select(0, index) for name, p in self.params.items()}
            count = index.shape[0]
            loss_sum = torch.zeros(count, dtype=torch.float64, device=self.device)
            correct = torch.zeros(count, dtype=torch.int64, device=self.device)
            for begin in range(0, n, bs):
                xb, yb = x[begin : begin + bs], y[begin : begin + bs]
                out = self.forward(params, xb, None)
                targets = yb.expand(count, *yb.shape)
                loss_sum.add_(self.losses(out, targets).to(torch.float64), alpha=yb.shape[0])
                if self.classifies:
                    correct.add_((out.argmax(dim=-1) == targets).sum(dim=1))
            losses = (loss_sum / n).tolist()
            accuracies = (correct.to(torch.float64) / n).tolist()
            results += [(loss, acc if self.classifies else None)
                        for loss, acc in zip(losses, accuracies, strict=True)]  # fmt: skip
        return results

    # -- checkpoints ---------------------------------------------------------------------

    def checkpoint(self, member: _Member) -> dict[str, Any]:
        """The member's checkpoint in :func:`fit`'s format (see ``_Run._state``)."""
        self.sync()
        row = self.row[member.key]
        model = {name: self.params[name][row].detach().cpu().clone() for name in self.names}
        state: dict[int, dict[str, Tensor]] = {}
        for i, name in enumerate(self.trainable):
            tensors = [t[row].cpu().clone() for t in self.state[name]]
            if self.sgd:
                if member.setup.momentum != 0:
                    state[i] = {"momentum_buffer": tensors[0]}
            else:
                steps = float(self.per_member["steps"][row].item())
                step = torch.tensor(steps, dtype=torch.float32)
                state[i] = {"step": step, "exp_avg": tensors[0], "exp_avg_sq": tensors[1]}
        group = {**member.param_group, "lr": member.lr}
        cuda_rng = None
        if self.device.type == "cuda":
            with torch.random.fork_rng(devices=[self.device]):
                torch.manual_seed(member.seed)  # fit's CUDA RNG: seeded, never drawn from
                cuda_rng = torch.cuda.get_rng_state(self.device)
        return {
            "epoch": member.epoch,
            "setup": member.fingerprint,
            "model": model,
            "optimizer": {"state": state, "param_groups": [group]},
            "scheduler": {"schedule": member.setup.schedule, "epoch": member.epoch},
            "torch_rng": member.torch_rng,
            "cuda_rng": cuda_rng,
            "shuffle_rng": member.shuffle.get_state(),
            "curves": member.curves.to_json(),
        }




def _cat(stacked: Tensor | None, rows: Tensor) -> Tensor:
    return rows if stacked is None else torch.cat([stacked.detach(), rows])


def _leaf(t: Tensor, grad: bool) -> Tensor:
    return t.detach().requires_grad_(grad)


def _gather(data: Tensor, index: Tensor) -> Tensor:
    """``data[index]`` for an index of ``(K, B)`` rows: ``(K, B, ...)``."""
    return data.index_select(0, index.flatten()).view(*index.shape, *data.shape[1:])
