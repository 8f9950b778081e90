"""The slot plan: slot ``s`` of a study runs params that are a pure function of (spec, s).

A study's budget is a count of slots ``0 .. budget-1``; workers take slots from a counter in the
database (see :mod:`tunesvc.storage._queue`) and compute each slot's params here, so nothing is
queued in advance and the draws never depend on who draws them, or in which order.

- grid, budget = the grid's size: slot ``s`` is cell ``s`` in :func:`grid_cells` order (the
  first param slowest), decoded from ``s`` in mixed radix without building any other cell;
- grid, smaller budget: slot ``s`` is cell ``perm(s)`` of a seeded permutation of the cells (a
  Feistel network over the cell indices), so the budget runs distinct cells, a seeded subset;
- random: slot ``s`` draws from a generator seeded by ``(seed, s)``.

Example::

    plan = Plan.from_spec(spec)      # spec: a resolved StudySpec (params filled in)
    plan.budget                      # how many slots the study runs
    plan.params(3)                   # {"lr": 0.001, "hidden": 128}: the same on every machine
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from optuna.distributions import BaseDistribution

from tunesvc._errors import SpecError
from tunesvc.spec._spec import ParamSpec, ParamValue, StudySpec, _draw, grid_points

DEFAULT_RANDOM_TRIALS = 20
"""Budget of a random study whose spec sets no ``n_trials``."""
FEISTEL_ROUNDS = 6


@dataclass(frozen=True)
class Plan:
    """Which params each slot of a study runs. Build it with :meth:`from_spec`."""

    sampler: Literal["grid", "random"]
    space: Mapping[str, ParamSpec]
    seed: int
    budget: int
    axes: tuple[tuple[ParamValue, ...], ...] = ()
    """A grid's points per param, in ``space`` order (empty for random search)."""

    @classmethod
    def from_spec(cls, spec: StudySpec) -> Plan:
        """The plan of a resolved spec (its params filled in from the objective).

        Raises :class:`SpecError` for a grid without params or with a budget above its size.
        """
        space = dict(spec.params)
        if spec.sampler == "random":
            budget = spec.n_trials or DEFAULT_RANDOM_TRIALS
            return cls("random", space, spec.seed, budget)
        if not space:
            raise SpecError("params: a grid study needs at least one param with points or values")
        axes = tuple(tuple(grid_points(p)) for p in space.values())
        size = 1
        for axis in axes:
            size *= len(axis)
        if spec.n_trials is not None and spec.n_trials > size:
            raise SpecError(f"n_trials: the grid has {size} cells, got n_trials = "
                            f"{spec.n_trials}; drop n_trials or lower it")
        return cls("grid", space, spec.seed, spec.n_trials or size, axes)

    @property
    def size(self) -> int | None:
        """How many cells the grid has (``None`` for random search)."""
        if self.sampler != "grid":
            return None
        size = 1
        for axis in self.axes:
            size *= len(axis)
        return size

    def params(self, slot: int) -> dict[str, ParamValue]:
        """The params slot ``slot`` runs (``0 <= slot < budget``)."""
        if not 0 <= slot < self.budget:
            raise ValueError(f"slot: expected 0 <= slot < {self.budget}, got {slot=}")
        if self.sampler == "random":
            rng = np.random.default_rng([_zigzag(self.seed), slot])
            return {name: _draw(param, rng) for name, param in self.space.items()}
        size = self.size
        assert size is not None
        index = slot if self.budget == size else permute(slot, size, self.seed)
        return self.cell(index)

    def cell(self, index: int) -> dict[str, ParamValue]:
        """Grid cell ``index`` in :func:`tunesvc.spec.grid_cells` order (first param slowest)."""
        values: list[ParamValue] = []
        for axis in reversed(self.axes):
            index, digit = divmod(index, len(axis))
            values.append(axis[digit])
        return dict(zip(self.space, reversed(values), strict=True))

    def distributions(self) -> dict[str, BaseDistribution]:
        """The Optuna distribution each param's value is recorded with."""
        return {name: param.distribution() for name, param in self.space.items()}


def permute(index: int, size: int, seed: int) -> int:
    """Position ``index`` of a seeded permutation of ``range(size)``: O(1) time and memory.

    A balanced Feistel network on the smallest even bit width that holds ``size`` is a
    permutation of ``range(2**bits)``; walking the cycle until a value falls below ``size``
    (fewer than 4 steps on average) restricts it to a permutation of ``range(size)``.
    """
    if not 0 <= index < size:
        raise ValueError(f"index: expected 0 <= index < {size}, got {index=}")
    half = max(1, ((size - 1).bit_length() + 1) // 2)
    value = _feistel(index, half, seed)
    while value >= size:
        value = _feistel(value, half, seed)
    return value


def _feistel(value: int, half: int, seed: int) -> int:
    mask = (1 << half) - 1
    left, right = value >> half, value & mask
    digest_size = min(64, (half + 7) // 8)
    for round_ in range(FEISTEL_ROUNDS):
        key = f"{seed}:{round_}:{right}".encode()
        mixed = int.from_bytes(hashlib.blake2b(key, digest_size=digest_size).digest(), "big")
        left, right = right, left ^ (mixed & mask)
    return (left << half) | right


def _zigzag(seed: int) -> int:
    # numpy's seed sequences take non-negative entropy; specs allow any integer seed.
    return 2 * seed if seed >= 0 else -2 * seed - 1
