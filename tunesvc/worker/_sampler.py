"""The sampler a worker's trial suggests through: the slot's params, and seeded draws for the
rest.

A claimed trial knows its slot's params (:class:`tunesvc.spec.Plan`). When the objective
suggests one of them, Optuna asks this sampler, which returns the slot's value; Optuna then
records it with the objective's own distribution, as for any suggestion. A param the spec does
not declare (a plain objective's own) is drawn from a generator seeded by the study's seed and
the slot, so it too is the same whichever worker runs the slot, and again on a retry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial


class SlotSampler(BaseSampler):
    """Returns ``params`` (a slot's values) for the names they hold; draws the others with a
    :class:`RandomSampler` seeded from ``seed`` and ``slot``."""

    def __init__(self, params: Mapping[str, Any], *, seed: int, slot: int) -> None:
        self._params = dict(params)
        self._random = RandomSampler(seed=seed * 1_000_003 + slot)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        if param_name in self._params:
            return self._params[param_name]
        return self._random.sample_independent(study, trial, param_name, param_distribution)
