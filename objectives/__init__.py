"""Built-in objectives of tunesvc: small modules the ``tunesvc`` service can tune by name.

Each module defines ``DIRECTION``, ``METRIC``, ``EPOCHS``, ``SEARCH_SPACE`` (same schema as a
spec's ``[params]`` table), ``DEFAULTS`` (one good configuration) and ``build(params)``, which
returns a :class:`tunesvc.TrainingSetup`. Params missing from ``params`` take their defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tunesvc._errors import ObjectiveError

if TYPE_CHECKING:  # torch is imported only when an objective is built
    from torch import Tensor, nn

    from tunesvc.training._fit import TrainingSetup


def with_defaults(
    name: str, defaults: Mapping[str, Any], params: Mapping[str, Any]
) -> dict[str, Any]:
    """``defaults`` updated with ``params``; a param the objective does not know is an error."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ObjectiveError(
            f"objective {name} has no param {', '.join(map(repr, unknown))}; "
            f"its params are {', '.join(sorted(defaults))}"
        )
    return {**defaults, **params}


def classifier_setup(
    p: Mapping[str, Any],
    model: Callable[[], nn.Module],
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    num_classes: int,
) -> TrainingSetup:
    """The built-ins' setup: ``model`` on ``data`` (train x, y, validation x, y), trained with
    the optimizer, lr, weight_decay, schedule and batch_size of the resolved params ``p``."""
    from tunesvc.training._fit import TrainingSetup

    x_train, y_train, x_val, y_val = data
    return TrainingSetup(
        model=model,
        train=(x_train, y_train),
        val=(x_val, y_val),
        optimizer=str(p["optimizer"]),
        lr=float(p["lr"]),
        weight_decay=float(p["weight_decay"]),
        schedule=str(p["schedule"]),
        batch_size=int(p["batch_size"]),
        num_classes=num_classes,
    )
