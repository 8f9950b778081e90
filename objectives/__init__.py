"""Built-in objectives of tunesvc: small modules the ``tunesvc`` service can tune by name.

Each module defines ``DIRECTION``, ``METRIC``, ``EPOCHS``, ``SEARCH_SPACE`` (same schema as a
spec's ``[params]`` table), ``DEFAULTS`` (one good configuration) and ``build(params)``, which
returns a :class:`tunesvc.TrainingSetup`. Params missing from ``params`` take their defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tunesvc._errors import ObjectiveError


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
