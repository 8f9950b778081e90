"""``tunesvc check`` and ``study create --from-check``: the recipe's first three steps on an
objective's :class:`~tunesvc.TrainingSetup` (the checks themselves are
:mod:`tunesvc.training._checks`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tunesvc._errors import ObjectiveError, SpecError
from tunesvc.spec import Objective, RangeParam, StudySpec, resolve_objective

if TYPE_CHECKING:
    from tunesvc.training import TrainingSetup
    from tunesvc.training._checks import CheckReport

CHECKS = ("initial_loss", "overfit_batches", "lr_range")


def build_setup(objective: Objective, params: Mapping[str, Any]) -> TrainingSetup:
    """The objective's :class:`TrainingSetup` for its defaults updated with ``params``."""
    from tunesvc.training import TrainingSetup  # torch: loaded only by commands that train

    assert objective.build is not None
    objective.check_params(params, where="--param ")
    setup = objective.build({**objective.defaults, **params})
    if not isinstance(setup, TrainingSetup):
        raise ObjectiveError(f"objective {objective.ref!r}: build(params) returned a "
                             f"{type(setup).__name__}, expected a TrainingSetup")
    return setup


def run_checks(
    objective: str | Objective,
    params: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    device: str = "cpu",
    stop_at_failure: bool = False,
) -> CheckReport:
    """Run the three checks on ``objective`` (a reference or a resolved one) with its defaults
    updated by ``params``: the initial loss against log(num_classes), overfitting a few
    minibatches, the LR range test.

    A plain ``objective(trial)`` has no setup to check: every check is skipped and says why.
    With ``stop_at_failure`` the checks after a failed one are skipped.
    """
    from tunesvc.training._checks import CheckReport, CheckResult, check_setup

    resolved = resolve_objective(objective) if isinstance(objective, str) else objective
    params = dict(params or {})
    if not resolved.structured:
        why = "skipped: a plain objective(trial) has no model, data or loss to check"
        advice = "Write it as a structured objective with build(params) to get these checks."
        checks = [CheckResult(n, "skipped", why, advice=advice) for n in CHECKS]
        return CheckReport(resolved.ref, params, checks, None)
    setup = build_setup(resolved, params)
    checks, suggested = check_setup(setup, seed=seed, device=device,
                                    stop_at_failure=stop_at_failure)
    return CheckReport(resolved.ref, params, checks, suggested)


def with_checked_lr(spec: StudySpec, objective: Objective | None = None) -> StudySpec:
    """``spec`` with its ``lr`` range taken from the LR range test (``study create --from-check``);
    a spec without params gets the objective's search space with that range. The range keeps
    the ``points`` of the spec's (or the objective's) ``lr``, so a grid study still has a grid.
    Raises :class:`ObjectiveError` when the test cannot suggest a range, with the reason."""
    from tunesvc.training._checks import suggest_lr_range

    objective = objective or resolve_objective(spec.objective)
    if not objective.structured:
        raise ObjectiveError(f"--from-check: objective {spec.objective!r} is a plain "
                             "objective(trial); the LR range test needs build(params)")
    params = dict(spec.params or objective.search_space)
    lr = params.get("lr")
    if lr is not None and not isinstance(lr, RangeParam):
        raise SpecError("--from-check: params.lr is a list of values; drop it or --from-check")
    check, suggested = suggest_lr_range(build_setup(objective, {}))
    if suggested is None:
        raise ObjectiveError(f"--from-check: {check.summary}; {check.advice}")
    own = objective.search_space.get("lr")
    points = lr.points if isinstance(lr, RangeParam) else None
    points = points or (own.points if isinstance(own, RangeParam) else None)
    params["lr"] = RangeParam("lr", suggested.low, suggested.high, log=True, points=points)
    return spec.with_params(params)
