"""``tunesvc check`` and ``study create --from-check``: the recipe's first three steps on an
objective's :class:`~tunesvc.TrainingSetup` (the checks themselves are
:mod:`tunesvc.training._checks`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tunesvc._errors import ObjectiveError, SpecError, TrainingError
from tunesvc.spec import (
    ChoiceParam,
    Objective,
    ParamSpec,
    RangeParam,
    ResolvedStudy,
    StudySpec,
    check_device,
    resolve_objective,
)

if TYPE_CHECKING:
    from tunesvc.training import CheckReport, TrainingSetup

CHECKS = ("initial_loss", "overfit_batches", "lr_range")


def build_setup(
    objective: Objective, params: Mapping[str, Any], where: str = "--param "
) -> TrainingSetup:
    """The objective's :class:`TrainingSetup` for its defaults updated with ``params``. A
    ``build(params)`` that raises, or returns no setup, is an :class:`ObjectiveError` in one
    line naming the params (``where`` prefixes a param's name in messages)."""
    from tunesvc.training import TrainingSetup  # torch: loaded only by commands that train

    assert objective.build is not None
    objective.check_params(params, where=where)
    objective.check_values({k: [v] for k, v in params.items()}, where=where)
    try:
        setup = objective.build({**objective.defaults, **params})
    except ObjectiveError:
        raise
    except Exception as e:  # the user's build raised: one line with what it was given
        given = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "its defaults"
        raise ObjectiveError(f"objective {objective.ref!r}: build(params) failed with "
                             f"{given}: {type(e).__name__}: {e}") from None
    if not isinstance(setup, TrainingSetup):
        raise ObjectiveError(f"objective {objective.ref!r}: build(params) returned a "
                             f"{type(setup).__name__}, expected a TrainingSetup")
    return setup


def check_setups(resolved: ResolvedStudy) -> None:
    """Build a structured objective's setup where the spec's search space has its corners
    (every param at its low end or first value, then at its high end or last value) and check
    the values training would refuse (``batch_size = -5``, an unknown optimizer), so that
    ``study create`` refuses them instead of every trial failing. Raises :class:`SpecError`.

    Two builds cost what starting two trials costs (the built-ins load cached data); params
    between the corners are not built, so a value only one draw reaches still fails its trial.
    """
    from tunesvc.training import check_setup_values  # the plain-value checks fit runs first

    objective = resolved.objective
    if not objective.structured:
        return
    corners = [{n: _corner(p, 0) for n, p in resolved.spec.params.items()},
               {n: _corner(p, -1) for n, p in resolved.spec.params.items()}]
    for corner in corners[: 1 if corners[0] == corners[1] else 2]:
        try:
            setup = build_setup(objective, corner, where="params.")
            check_setup_values(setup, resolved.epochs, 0.0)
        except (ObjectiveError, TrainingError) as e:
            given = ", ".join(f"{k} = {v!r}" for k, v in corner.items())
            raise SpecError(f"params: objective {objective.ref!r} cannot train with {given}: "
                            f"{e}") from None


def _corner(param: ParamSpec, end: int) -> Any:
    if isinstance(param, ChoiceParam):
        return param.values[end]
    value = param.low if end == 0 else param.high
    return int(value) if param.is_int else value


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
    from tunesvc.training import CheckReport, CheckResult, check_setup

    check_device(device, "--device")
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
    the ``points`` of the objective's own ``lr``, so a grid study still has a grid. A spec that
    gives lr itself is refused (:func:`check_lr_free`). Raises :class:`ObjectiveError` when the
    test cannot suggest a range, with the reason."""
    from tunesvc.training import suggest_lr_range

    objective = objective or resolve_objective(spec.objective)
    if not objective.structured:
        raise ObjectiveError(f"--from-check: objective {spec.objective!r} is a plain "
                             "objective(trial); the LR range test needs build(params)")
    check_lr_free(spec)
    params = dict(spec.params or objective.search_space)
    check, suggested = suggest_lr_range(build_setup(objective, {}))
    if suggested is None:
        raise ObjectiveError(f"--from-check: {check.summary}; {check.advice}")
    own = objective.search_space.get("lr")
    points = own.points if isinstance(own, RangeParam) else None
    params["lr"] = RangeParam("lr", suggested.low, suggested.high, log=True, points=points)
    return spec.with_params(params)


def check_lr_free(spec: StudySpec) -> None:
    """``--from-check`` sets lr's range; a spec that gives lr itself is refused, so neither
    silently wins (raises :class:`SpecError`)."""
    lr = spec.params.get("lr")
    if lr is not None:
        given = ", ".join(f"{k} = {v!r}" for k, v in lr.to_dict().items())
        raise SpecError(f"--from-check takes lr's range from the LR range test, but the spec "
                        f"also gives lr ({given}); drop --param lr (or params.lr) or "
                        "--from-check")
