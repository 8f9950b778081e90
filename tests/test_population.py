"""Population training through its public surface: real torch training of tiny models, each
member checked against the same trial trained alone with fit, and against populations
where other members come and go.

Tolerance against fit: a member's losses within a relative 1e-5 of fit's after a few epochs,
and its accuracies within one sample. A member and the lone trial make the same float32
operations, except that the population's matrix products are batched (one bmm per layer
for all members, against one mm per trial), which sums in another order: single products
differ in the last bit or two (~1e-7 relative), and training carries that along. Between
populations (members removed, added, resumed) nothing differs: the numbers are compared bit
for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from test_training import CLASSES, FEATURES, TRAIN, VAL, _data  # fit's tests' data
from torch import Tensor, nn
from torch.utils.data import Dataset

from tunesvc._errors import TrainingError
from tunesvc.curves._curves import Curves, EpochRecord
from tunesvc.training._checkpoint import load_checkpoint
from tunesvc.training._fit import FitResult, TrainingSetup, fit
from tunesvc.training._population import (
    MemberEnd,
    Population,
    fit_population,
    group_setups,
    population_key,
)
from tunesvc.training._seeded import (
    DropoutSwap,
    SeededDropout,
    _mix32,
    element_words,
    layer_keys,
    rate_scale,
    rate_threshold,
    seed_words,
    seeded_dropout,
    shuffle_order,
    step_keys,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HIDDEN = 32
REL = 1e-6


def _mlp(dropout: float = 0.2, hidden: int = HIDDEN) -> Callable[[], nn.Module]:
    def model() -> nn.Module:
        return nn.Sequential(
            nn.Linear(FEATURES, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.Tanh(), nn.Dropout(dropout / 2),
            nn.Linear(hidden, CLASSES),
        )  # fmt: skip

    return model


class _Net(nn.Module):
    """Not an nn.Sequential: the population runs it through torch.func.vmap. Its nested
    dropout comes first in named_modules, its own second, at another rate."""

    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout / 3)
        self.out = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.drop(self.block(x)) + 0.5)  # type: ignore[no-any-return]


def _setup(**changes: Any) -> TrainingSetup:
    base: dict[str, Any] = {
        "model": _mlp(),
        "train": TRAIN,
        "val": VAL,
        "optimizer": "adamw",
        "lr": 1e-2,
        "weight_decay": 1e-4,
        "schedule": "cosine",
        "batch_size": 32,
    }
    return TrainingSetup(**{**base, **changes})


# Members that differ in everything a population vectorizes: lr, weight decay, momentum,
# schedule (and its step), dropout rate, seed, epochs.
MEMBERS: dict[str, tuple[dict[str, Any], int, int]] = {
    "a": ({"lr": 1e-2, "weight_decay": 1e-4, "model": _mlp(0.2)}, 0, 5),
    "b": ({"lr": 3e-3, "weight_decay": 0.0, "model": _mlp(0.0), "schedule": "constant"}, 1, 4),
    "c": ({"lr": 5e-2, "weight_decay": 1e-2, "momentum": 0.5, "model": _mlp(0.5),
           "schedule": "step", "step_at": 0.4, "gamma": 0.3}, 2, 5),  # fmt: skip
    "d": ({"lr": 1e-3, "weight_decay": 1e-3, "momentum": 0.0, "model": _mlp(0.1)}, 3, 3),
}


def _curves(result: FitResult | Curves) -> dict[str, list[Any]]:
    curves = result.curves if isinstance(result, FitResult) else result
    data = curves.to_json()
    del data["seconds"]
    return data


def _assert_close_to_fit(member: FitResult, alone: FitResult, rows: int = len(VAL[1])) -> None:
    assert member.curves.epoch == alone.curves.epoch
    for name in ("train_loss", "val_loss"):
        assert getattr(member.curves, name) == pytest.approx(getattr(alone.curves, name),
                                                             rel=REL), name  # fmt: skip
    for name, n in (("train_acc", len(TRAIN[1])), ("val_acc", rows)):
        ours, theirs = getattr(member.curves, name), getattr(alone.curves, name)
        assert all(abs(a - b) <= 1 / n + 1e-12 for a, b in zip(ours, theirs, strict=True)), name
    assert member.curves.lr == alone.curves.lr
    assert (member.diverged, member.stopped_early, member.metric, member.num_classes) == (
        alone.diverged, alone.stopped_early, alone.metric, alone.num_classes
    )  # fmt: skip


def _run(population: Population) -> dict[Any, MemberEnd]:
    ends: dict[Any, MemberEnd] = {}
    while population:
        for end in population.step():
            ends[end.key] = end
    return ends


def _population(
    optimizer: str, keys: str = "abcd", **kwargs: Any
) -> tuple[Population, dict[str, list[EpochRecord]]]:
    population = Population(device="cpu")
    seen: dict[str, list[EpochRecord]] = {}
    for key in keys:
        changes, seed, epochs = MEMBERS[key]
        seen[key] = []
        population.add(key, _setup(optimizer=optimizer, **changes), epochs=epochs, seed=seed,
                       on_epoch=seen[key].append, **kwargs)  # fmt: skip
    return population, seen


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_each_member_trains_as_the_same_trial_alone_with_fit(optimizer: str) -> None:
    population, seen = _population(optimizer)
    ends = _run(population)

    assert set(ends) == set(MEMBERS) and len(population) == 0
    for key, (changes, seed, epochs) in MEMBERS.items():
        alone_seen: list[EpochRecord] = []
        alone = fit(_setup(optimizer=optimizer, **changes), epochs=epochs, seed=seed,
                    device="cpu", on_epoch=alone_seen.append)  # fmt: skip
        result = ends[key].result
        assert result is not None and ends[key].error is None
        _assert_close_to_fit(result, alone)
        assert [r.epoch for r in seen[key]] == list(range(epochs + 1))  # epoch 0 first
        assert result.curves.epoch == [r.epoch for r in alone_seen]


def test_a_model_that_is_not_sequential_goes_through_vmap_and_matches_fit() -> None:
    setups = {p: _setup(model=lambda p=p: _Net(p), lr=3e-3 + p / 100) for p in (0.0, 0.3)}

    results = fit_population(setups, epochs=3, seeds={0.0: 5, 0.3: 6}, device="cpu")

    for p, setup in setups.items():
        _assert_close_to_fit(results[p], fit(setup, epochs=3, seed=5 if p == 0 else 6,
                                             device="cpu"))  # fmt: skip


def test_removing_or_losing_members_leaves_the_others_bit_for_bit() -> None:
    whole = _run(_population("adamw")[0])

    population, _ = _population("adamw")
    population.add("diverges", _setup(lr=1e9), epochs=5, seed=9)
    stopped: list[int] = []

    def stop_at_two(record: EpochRecord) -> bool:
        stopped.append(record.epoch)
        return record.epoch == 2

    population.add("stops", _setup(), epochs=5, seed=0, on_epoch=stop_at_two)
    ends: dict[Any, MemberEnd] = {}
    while population:
        for end in population.step():
            ends[end.key] = end
        if "b" in population and len(ends) >= 2:
            removed = population.remove("b")  # pruned by the caller mid-run
            assert removed.stopped_early and removed.curves.epoch[-1] < 4

    diverged = ends["diverges"].result
    assert diverged is not None and diverged.diverged
    assert diverged.reason is not None and diverged.reason.startswith("diverged: train_loss")
    assert not math.isfinite(diverged.curves.train_loss[-1])
    stop = ends["stops"].result
    assert stop is not None and stop.stopped_early and stop.curves.epoch == [0, 1, 2]
    assert stopped == [0, 1, 2]
    for key in "acd":
        result, reference = ends[key].result, whole[key].result
        assert result is not None and reference is not None
        assert _curves(result) == _curves(reference), key
        assert (result.value, result.best_epoch) == (reference.value, reference.best_epoch)


def test_members_trained_a_few_at_a_time_get_the_same_numbers() -> None:
    whole = _run(_population("adamw")[0])
    population = Population(device="cpu", members_per_pass=3)  # passes of 3 and 1
    for key, (changes, seed, epochs) in MEMBERS.items():
        population.add(key, _setup(**changes), epochs=epochs, seed=seed)
    in_passes = _run(population)

    for key in MEMBERS:
        assert _curves(in_passes[key].result) == _curves(whole[key].result)  # type: ignore[arg-type]


def test_a_member_added_mid_run_starts_at_epoch_zero_and_changes_no_other() -> None:
    whole = _run(_population("sgd", keys="ab")[0])
    alone_d = _run(_population("sgd", keys="d")[0])["d"].result

    population, seen = _population("sgd", keys="ab")
    ends: dict[Any, MemberEnd] = {}
    for _ in range(2):
        ends.update({end.key: end for end in population.step()})
    changes, seed, epochs = MEMBERS["d"]
    seen["d"] = []
    population.add("d", _setup(optimizer="sgd", **changes), epochs=epochs, seed=seed,
                   on_epoch=seen["d"].append)  # fmt: skip
    ends.update(_run(population))

    assert [r.epoch for r in seen["d"]] == list(range(epochs + 1))
    for key in "ab":
        assert _curves(ends[key].result) == _curves(whole[key].result)  # type: ignore[arg-type]
    assert alone_d is not None
    assert _curves(ends["d"].result) == _curves(alone_d)  # type: ignore[arg-type]


def test_a_member_stopped_at_epoch_zero_ends_as_fit_would() -> None:
    results = {}
    population = Population(device="cpu")
    population.add("x", _setup(), epochs=3, seed=0, on_epoch=lambda r: True)
    results["x"] = _run(population)["x"].result
    alone = fit(_setup(), epochs=3, seed=0, device="cpu", on_epoch=lambda r: True)

    assert results["x"] is not None
    assert results["x"].curves.epoch == alone.curves.epoch == [0]
    assert results["x"].reason == alone.reason == "stopped early by on_epoch at epoch 0"


def test_an_exception_from_on_epoch_ends_only_that_member() -> None:
    class Pruned(Exception):
        pass

    def prune_at_one(record: EpochRecord) -> None:
        if record.epoch == 1:
            raise Pruned

    population, _ = _population("adamw", keys="ab")
    population.add("pruned", _setup(), epochs=4, seed=0, on_epoch=prune_at_one)
    ends = _run(population)

    assert isinstance(ends["pruned"].error, Pruned) and ends["pruned"].result is None
    whole = _run(_population("adamw", keys="ab")[0])
    for key in "ab":
        assert _curves(ends[key].result) == _curves(whole[key].result)  # type: ignore[arg-type]


class _Kill(BaseException):
    """Stands for the process dying: nothing catches it."""


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_a_population_killed_mid_epoch_resumes_every_member(
    tmp_path: Path, optimizer: str
) -> None:
    whole = _run(_population(optimizer)[0])

    def kill_at_three(record: EpochRecord) -> None:
        if record.epoch == 3:
            raise _Kill  # after "a" wrote its epoch-3 checkpoint: the others are at 2

    population = Population(device="cpu")
    for key, (changes, seed, epochs_) in MEMBERS.items():
        population.add(key, _setup(optimizer=optimizer, **changes), epochs=epochs_, seed=seed,
                       checkpoint_path=tmp_path / f"{key}.pt",
                       on_epoch=kill_at_three if key == "a" else None)  # fmt: skip
    with pytest.raises(_Kill):
        _run(population)
    epochs = {key: load_checkpoint(tmp_path / f"{key}.pt")["epoch"]  # type: ignore[index]
              for key in MEMBERS}  # fmt: skip
    assert epochs == {"a": 3, "b": 2, "c": 2, "d": 2}

    replayed: dict[str, list[int]] = {}
    resumed = Population(device="cpu")
    for key, (changes, seed, epochs_) in MEMBERS.items():
        replayed[key] = []
        resumed.add(key, _setup(optimizer=optimizer, **changes), epochs=epochs_, seed=seed,
                    checkpoint_path=tmp_path / f"{key}.pt",
                    on_epoch=lambda r, k=key: replayed[k].append(r.epoch))  # fmt: skip
    ends = _run(resumed)

    for key, (_, _, epochs_) in MEMBERS.items():
        assert replayed[key] == list(range(epochs_ + 1))
        assert _curves(ends[key].result) == _curves(whole[key].result), key  # type: ignore[arg-type]


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_checkpoints_pass_between_fit_and_a_population(tmp_path: Path, optimizer: str) -> None:
    changes, seed, _ = MEMBERS["c"]
    setup = _setup(optimizer=optimizer, **changes)
    alone = fit(setup, epochs=5, seed=seed, device="cpu")

    def stop_at_two(record: EpochRecord) -> bool:
        return record.epoch == 2

    # A population's checkpoint at epoch 2, finished by fit alone.
    population = Population(device="cpu")
    population.add("c", setup, epochs=5, seed=seed, on_epoch=stop_at_two,
                   checkpoint_path=tmp_path / "pop.pt")  # fmt: skip
    _run(population)
    finished_alone = fit(setup, epochs=5, seed=seed, device="cpu",
                         checkpoint_path=tmp_path / "pop.pt")  # fmt: skip
    _assert_close_to_fit(finished_alone, alone)

    # fit's checkpoint at epoch 2, finished in a population.
    fit(setup, epochs=5, seed=seed, device="cpu", on_epoch=stop_at_two,
        checkpoint_path=tmp_path / "fit.pt")  # fmt: skip
    population = Population(device="cpu")
    population.add("c", setup, epochs=5, seed=seed, checkpoint_path=tmp_path / "fit.pt")
    finished_in_population = _run(population)["c"].result
    assert finished_in_population is not None
    _assert_close_to_fit(finished_in_population, alone)


class _Pairs(Dataset[tuple[Tensor, Tensor]]):
    def __len__(self) -> int:
        return len(TRAIN[1])

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return TRAIN[0][i], TRAIN[1][i]


def _closure_loss() -> Callable[[Tensor, Tensor], Tensor]:
    weight = 1.0
    return lambda out, y: weight * F.cross_entropy(out, y)


class _Noisy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = _mlp()()

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x + torch.randn_like(x))  # type: ignore[no-any-return]


def _plain_loss(out: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(out, y, label_smoothing=0.1)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"train": _Pairs()}, "needs train and val data as (X, y) tensors"),
        ({"model": lambda: nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.BatchNorm1d(HIDDEN),
                                         nn.Linear(HIDDEN, CLASSES))},
         "model has buffers (1.running_mean"),
        ({"model": lambda: nn.Sequential(nn.Linear(FEATURES, CLASSES), nn.AlphaDropout(0.1))},
         "model layer '1' is AlphaDropout"),
        ({"loss": _closure_loss()}, "loss is a callable with state"),
        ({"model": _Noisy}, "cannot be vectorized with torch.func.vmap"),
    ],
)  # fmt: skip
def test_a_setup_that_cannot_be_vectorized_says_why_in_one_line(
    changes: dict[str, Any], reason: str
) -> None:
    groups, alone = group_setups({"ok": _setup(), "not": _setup(**changes)})

    assert groups == [["ok"]]
    assert reason in alone["not"] and "\n" not in alone["not"]
    assert "trains alone" in alone["not"]


def test_group_setups_separates_structures_and_keeps_vectorized_params_together() -> None:
    setups = {
        "base": _setup(),
        "other lr, wd, dropout, schedule": _setup(lr=0.1, weight_decay=0.0, model=_mlp(0.4),
                                                  schedule="step"),
        "wider": _setup(model=_mlp(hidden=64)),
        "other batch size": _setup(batch_size=16),
        "other data": _setup(train=_data(256, 3)),
        "same data, new tensors": _setup(train=_data(256, 1), val=_data(128, 2)),
        "sgd": _setup(optimizer="sgd"),
        "plain loss": _setup(loss=_plain_loss),
    }  # fmt: skip
    groups, alone = group_setups(setups)

    assert alone == {}
    assert groups == [
        ["base", "other lr, wd, dropout, schedule", "same data, new tensors"],
        ["wider"], ["other batch size"], ["other data"], ["sgd"], ["plain loss"],
    ]  # fmt: skip
    assert population_key(setups["base"]) == population_key(setups["same data, new tensors"])


def test_add_refuses_a_setup_of_another_structure_saying_what_differs() -> None:
    population = Population(device="cpu")
    population.add(0, _setup(), epochs=2)

    with pytest.raises(TrainingError, match="its batch_size differs .16 vs 32."):
        population.add(1, _setup(batch_size=16), epochs=2)
    with pytest.raises(TrainingError, match="its model structure differs"):
        population.add(2, _setup(model=_mlp(hidden=16)), epochs=2)
    with pytest.raises(TrainingError, match=r"its train X differs \(\(256, 8\) float32"):
        population.add(4, _setup(train=_data(256, 3)), epochs=2)
    with pytest.raises(TrainingError, match="already has a member 0"):
        population.add(0, _setup(), epochs=2)
    with pytest.raises(TrainingError, match="lr must be > 0"):
        population.add(3, _setup(lr=0.0), epochs=2)
    assert population.keys() == [0]


def test_a_plain_function_loss_is_batched_with_vmap() -> None:
    setup = _setup(loss=_plain_loss, optimizer="sgd")
    results = fit_population({"x": setup}, epochs=3, seeds=4, device="cpu")

    _assert_close_to_fit(results["x"], fit(setup, epochs=3, seed=4, device="cpu"))


# -- the seeded dropout both fit and the population use --------------------------------------


def test_fit_gives_a_module_it_was_given_its_dropout_layers_back() -> None:
    model = _mlp()()
    fit(_setup(model=model), epochs=1, device="cpu")

    assert [type(m) for m in model] == [type(m) for m in _mlp()()]
    assert not any(isinstance(m, SeededDropout) for m in model.modules())


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_seeded_dropout_drops_its_rate_and_scales_the_rest(p: float) -> None:
    model = nn.Sequential(nn.Dropout(p))
    swap = DropoutSwap(model)
    x = torch.ones(200, 500)
    masks = []
    keys = swap.layer_keys(step_keys(seed_words([11]), torch.tensor([0]), 3)[0])
    for step in range(3):
        swap.set_keys([k[step] for k in keys])
        masks.append(model.train()(x))

    dropped = float((masks[0] == 0).to(torch.float64).mean())
    assert dropped == pytest.approx(p, abs=0.01)
    kept = masks[0][masks[0] != 0]
    assert bool((kept == 1.0 / (1.0 - p)).all()) if p < 1 else kept.numel() == 0
    if 0 < p < 1:
        assert not torch.equal(masks[0], masks[1])  # a new mask every step
    assert torch.equal(model.eval()(x), x)
    swap.restore()
    assert type(model[0]) is nn.Dropout


def test_step_keys_depend_on_seed_and_step_only() -> None:
    words = seed_words([0, 1, 0])
    keys = step_keys(words, torch.tensor([0, 0, 5]), 10)

    assert torch.equal(keys[0], keys[2].roll(5)) is False  # another step, another key
    assert torch.equal(keys[0, 5:], keys[2, :5])  # the same seed and step: the same key
    assert not torch.equal(keys[0], keys[1])
    assert keys.unique().numel() == 25  # 30 keys, 5 of them the same (seed, step)


def _lowbias32(x: int) -> int:
    """The hash as Chris Wellons wrote it, on Python ints: the reference for the tensors."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=50))
def test_the_int32_hash_equals_the_reference_on_python_ints(words: list[int]) -> None:
    signed = torch.tensor([w - 2**32 if w >= 2**31 else w for w in words], dtype=torch.int32)

    assert [v & 0xFFFFFFFF for v in _mix32(signed).tolist()] == [_lowbias32(w) for w in words]


@pytest.mark.parametrize(("key", "layer", "p"), [(0, 0, 0.5), (-123456789, 2, 0.1),
                                                 (2**31 - 1, 7, 0.9)])  # fmt: skip
def test_a_dropout_mask_is_the_hash_of_key_layer_and_position(
    key: int, layer: int, p: float
) -> None:
    x = torch.ones(3, 5)
    keys = layer_keys(torch.tensor(key, dtype=torch.int32), layer)
    words = element_words((3, 5), x.device)
    out = seeded_dropout(x, keys, rate_threshold(p), rate_scale(p), words)

    layer_key = _lowbias32((key + (layer + 1) * 0x85EBCA77) & 0xFFFFFFFF)
    expected = [
        ((_lowbias32((i * 0x9E3779B9 + layer_key) & 0xFFFFFFFF) >> 8) >= round(p * 2**24))
        for i in range(15)
    ]
    assert (out.flatten() != 0).tolist() == expected


@given(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=8),
       st.integers(1, 300))  # fmt: skip
def test_a_shuffle_is_a_permutation_of_its_key_alone(keys: list[int], rows: int) -> None:
    orders = shuffle_order(torch.tensor(keys, dtype=torch.int32), rows)

    for key, order in zip(keys, orders, strict=True):
        assert sorted(order.tolist()) == list(range(rows))
        assert torch.equal(order, shuffle_order(torch.tensor([key], dtype=torch.int32), rows)[0])


def test_shuffles_of_different_keys_differ() -> None:
    orders = shuffle_order(torch.arange(50, dtype=torch.int32), 1000)

    assert len({tuple(o.tolist()) for o in orders}) == 50
    first = orders[:, 0].tolist()  # the first row of an epoch: spread over the rows
    assert len(set(first)) > 40
