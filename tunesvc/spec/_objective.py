"""Objective references: what a spec's ``objective = "..."`` points at.

- ``"digits_mlp"``: a built-in module in ``objectives/``;
- ``"package.module"`` or ``"path/file.py"``: a module of yours;
- ``"package.module:function"`` or ``"path/file.py:function"``: a function of yours.

A module with ``build(params)`` is a *structured* objective: tunesvc suggests the params, builds
model, data and optimizer settings from them and runs its own training loop. Anything else is a
*plain* Optuna objective, ``def objective(trial) -> float``, run unmodified: a module's
``objective`` function, or the function a ``:function`` reference names.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from tunesvc._errors import ObjectiveError, SpecError
from tunesvc.spec._spec import Direction, ParamSpec, StudySpec, parse_params

BUILTIN_PACKAGE = "objectives"


@dataclass(frozen=True)
class Objective:
    """A resolved objective reference."""

    ref: str
    direction: str | None = None
    metric: str | None = None
    epochs: int | None = None
    search_space: dict[str, ParamSpec] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    build: Callable[[dict[str, Any]], Any] | None = None
    function: Callable[..., float] | None = None

    @property
    def structured(self) -> bool:
        return self.build is not None

    @property
    def param_names(self) -> set[str]:
        """The params a structured objective takes: its search space and its defaults."""
        return set(self.search_space) | set(self.defaults)

    def check_params(self, names: Iterable[str], where: str = "params.") -> None:
        """Raise :class:`SpecError` naming the first of ``names`` a structured objective does
        not take (``where`` prefixes it: ``params.`` in a spec, ``--param `` on the command
        line). A plain objective takes any name."""
        if not self.structured:
            return
        unknown = sorted(set(names) - self.param_names)
        if unknown:
            raise SpecError(f"{where}{unknown[0]}: objective {self.ref!r} has no such param; "
                            f"it takes {', '.join(sorted(self.param_names))}")


DEFAULT_EPOCHS = 10
"""Epochs per trial when neither the spec nor the objective says."""


@dataclass(frozen=True)
class ResolvedStudy:
    """A spec with what it leaves to its objective filled in: params, direction, epochs and the
    metric the trials' value is."""

    spec: StudySpec
    objective: Objective
    direction: Direction
    metric: str
    epochs: int


def resolve_study(spec: StudySpec, objective: Objective) -> ResolvedStudy:
    """Fill what ``spec`` leaves to ``objective`` (resolved once by the caller from
    ``spec.objective``): its search space, direction and epochs. Raises :class:`SpecError`
    when they disagree."""
    objective.check_params(spec.params)
    params = spec.params or (dict(objective.search_space) if objective.structured else {})
    declared = spec.direction or objective.direction
    if declared not in ("maximize", "minimize"):
        raise SpecError(f"direction: objective {spec.objective!r} does not declare one; add "
                        "direction = \"maximize\" or \"minimize\" to the spec")
    direction: Direction = "maximize" if declared == "maximize" else "minimize"
    if objective.direction and spec.direction and objective.direction != spec.direction:
        raise SpecError(f"direction: the spec says {spec.direction} but objective "
                        f"{spec.objective!r} declares {objective.direction}")
    epochs = spec.epochs or objective.epochs or DEFAULT_EPOCHS
    metric = objective.metric or "val_acc"
    resolved = replace(spec, params=dict(params), direction=direction, epochs=epochs)
    return ResolvedStudy(resolved, objective, direction, metric, epochs)


def builtin_objectives() -> list[str]:
    """Names of the built-in objectives shipped in ``objectives/``."""
    try:
        package = importlib.import_module(BUILTIN_PACKAGE)
    except ImportError:
        return []
    folder = Path(package.__file__ or "").parent
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))


def _import_module(ref: str, target: str) -> ModuleType:
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise ObjectiveError(f"objective {ref!r}: no file {target}")
            name = f"tunesvc_user_objective_{abs(hash(str(path.resolve())))}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ObjectiveError(f"objective {ref!r}: cannot load {target}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(target)
    except ObjectiveError:
        raise
    except ModuleNotFoundError as e:
        if e.name and target.startswith(e.name):
            hint = ""
            if "." not in target or target.startswith(BUILTIN_PACKAGE + "."):
                hint = f"; built-ins: {', '.join(builtin_objectives())}"
            raise ObjectiveError(
                f"unknown objective {ref!r}: no module {e.name!r}{hint}"
            ) from None
        raise ObjectiveError(_import_failed(ref, e)) from None
    except Exception as e:  # the user's module raised while importing: show its error
        raise ObjectiveError(_import_failed(ref, e)) from None


def _import_failed(ref: str, e: BaseException) -> str:
    return f"objective {ref!r} failed to import: {type(e).__name__}: {e}"


def resolve_objective(ref: str) -> Objective:
    """Import the objective ``ref`` names (raises :class:`ObjectiveError` with the reason)."""
    target, _, attr = ref.partition(":")
    target = target.strip()
    if not target:
        raise ObjectiveError(f"objective {ref!r}: expected a name, module or file before ':'")
    is_builtin = not target.endswith(".py") and "." not in target and "/" not in target
    module = _import_module(ref, f"{BUILTIN_PACKAGE}.{target}" if is_builtin else target)
    if attr:
        function = getattr(module, attr, None)
        if not callable(function):
            raise ObjectiveError(f"objective {ref!r}: {target} has no function {attr!r}")
        return Objective(ref=ref, direction=getattr(function, "direction", None),
                         function=function)
    build = getattr(module, "build", None)
    function = getattr(module, "objective", None)
    if not callable(build) and not callable(function):
        raise ObjectiveError(f"objective {ref!r}: {target} defines neither build(params) nor "
                             "objective(trial); name a function with 'module:function'")
    space_raw = getattr(module, "SEARCH_SPACE", None)
    try:
        space = parse_params(space_raw) if isinstance(space_raw, Mapping) else {}
    except Exception as e:
        raise ObjectiveError(f"objective {ref!r}: SEARCH_SPACE is invalid: {e}") from None
    return Objective(
        ref=ref,
        direction=getattr(module, "DIRECTION", None),
        metric=getattr(module, "METRIC", None),
        epochs=getattr(module, "EPOCHS", None),
        search_space=space,
        defaults=dict(getattr(module, "DEFAULTS", {}) or {}),
        build=build if callable(build) else None,
        function=None if callable(build) else function,
    )
