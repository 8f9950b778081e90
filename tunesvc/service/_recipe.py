"""``tunesvc recipe``: the whole tuning recipe in one call.

1. **check**: initial loss, overfit a few minibatches, LR range test
   (:mod:`tunesvc.training._checks`); the first failed check stops the recipe with its advice.
2. **coarse**: a random search over the objective's space, with the LR range the test
   suggested, for few epochs.
3. **refine**: a child study narrowed around the coarse study's top trials, more epochs.
4. **final**: the best refined configuration trained longer.

Every study is linked to its parent and carries its stage (``stage`` and ``parent`` user
attributes), so the dashboard and ``study report`` show where it came from.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from tunesvc._errors import SpecError, StudyExistsError, TunesvcError
from tunesvc.service._check import run_checks
from tunesvc.service._refine import refine_study
from tunesvc.service._results import RunSummary
from tunesvc.service._run import run_study
from tunesvc.service._studies import best_trial, create_study, opened, show_study
from tunesvc.spec import (
    ChoiceParam,
    ParamSpec,
    check_device,
    check_study_name,
    parse_spec_dict,
    resolve_objective,
    resolve_study,
)
from tunesvc.storage import attrs
from tunesvc.worker import TrialResult

if TYPE_CHECKING:
    from tunesvc.training import CheckReport


@dataclass(frozen=True)
class Budget:
    """How much each stage may spend."""

    coarse_trials: int = 12
    coarse_epochs: int = 5
    top: int = 3
    refine_trials: int = 8
    refine_epochs: int = 10
    final_epochs: int = 20


BUDGETS = {
    "tiny": Budget(coarse_trials=4, coarse_epochs=3, top=2, refine_trials=3, refine_epochs=3,
                   final_epochs=4),
    "small": Budget(),
    "medium": Budget(coarse_trials=30, coarse_epochs=8, top=5, refine_trials=20,
                     refine_epochs=16, final_epochs=40),
}


def describe_budget(budget: Budget) -> str:
    """A budget in words, for help texts and the README.

    >>> describe_budget(BUDGETS["tiny"])
    '4 coarse trials x 3 epochs, top 2, 3 refined trials x 3 epochs, final 4 epochs'
    """
    b = budget
    return (f"{b.coarse_trials} coarse trials x {b.coarse_epochs} epochs, top {b.top}, "
            f"{b.refine_trials} refined trials x {b.refine_epochs} epochs, final "
            f"{b.final_epochs} epochs")


def parse_budget(text: str) -> Budget:
    """``small`` (the default), ``tiny``, ``medium``, optionally followed by overrides:
    ``tiny,coarse_trials=6,final_epochs=10``.

    >>> parse_budget("tiny,coarse_trials=6").coarse_trials
    6
    """
    head, *rest = [part.strip() for part in text.split(",")]
    if "=" in head:
        head, rest = "small", [head, *rest]
    if head not in BUDGETS:
        raise SpecError(f"--budget: expected one of {', '.join(BUDGETS)} optionally followed by "
                        f"KEY=N overrides, got {text!r}")
    budget = BUDGETS[head]
    keys = [f.name for f in fields(Budget)]
    for part in rest:
        key, _, value = part.partition("=")
        if key not in keys:
            raise SpecError(f"--budget: unknown key {key!r}; keys: {', '.join(keys)}")
        if not value.isdigit() or int(value) < 1:
            raise SpecError(f"--budget {key}: expected an integer >= 1, got {value!r}")
        budget = replace(budget, **{key: int(value)})
    return budget


@dataclass(frozen=True)
class StageRow:
    """What one stage found."""

    stage: str
    study: str | None
    trials: str
    best_value: float | None
    best_params: dict[str, Any]
    diagnoses: dict[str, int]
    note: str

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "study": self.study, "trials": self.trials,
                "best_value": self.best_value, "best_params": self.best_params,
                "diagnoses": self.diagnoses, "note": self.note}


@dataclass(frozen=True)
class RecipeResult:
    """The recipe's outcome: a row per stage, the check report, and the best configuration
    (``None`` when a check stopped it; ``stopped`` says why)."""

    objective: str
    checks: CheckReport
    stages: list[StageRow] = field(default_factory=list)
    best: dict[str, Any] | None = None
    stopped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"objective": self.objective, "checks": self.checks.to_json(),
                "stages": [s.to_json() for s in self.stages], "best": self.best,
                "stopped": self.stopped}


def default_prefix(objective: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_]+", "-", objective.split(":")[0].removesuffix(".py"))
    return f"{stem.strip('-').split('-')[-1] or 'objective'}-recipe"


def _run(name: str, url: str, device: str | None,
         progress: Callable[[str], None]) -> RunSummary:
    def on_result(result: TrialResult) -> None:
        value = "" if result.value is None else f" value={result.value:.4g}"
        progress(f"  {name}: trial {result.number} {result.outcome}{value}")

    return run_study(name, url, device=device, on_result=on_result)


def _row(stage: str, name: str, url: str, note: str) -> StageRow:
    detail = show_study(name, url)
    s = detail.summary
    trials = ", ".join(f"{v} {k.lower()}" for k, v in s.counts.items())
    return StageRow(stage, name, trials, s.best.value if s.best else None,
                    s.best.params if s.best else {}, detail.diagnoses, note)


def run_recipe(
    objective: str,
    url: str,
    *,
    budget: Budget | None = None,
    prefix: str | None = None,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str | None = None,
    progress: Callable[[str], None] | None = None,
    population: int = 1,
) -> RecipeResult:
    """Check ``objective``, then coarse search, refine and train the best longer.

    Studies are named ``<prefix>-coarse``, ``<prefix>-refine`` and ``<prefix>-final``; none of
    them may exist yet. ``params`` fixes params for every stage (``{"optimizer": "sgd"}``).
    ``population`` > 1 trains the coarse search's trials that many at once (its spec's
    ``population``): a coarse random search of lr x weight_decay in one vectorized pass.
    """
    if population < 1:
        raise SpecError(f"--population: expected an integer >= 1, got {population}")
    budget = budget or Budget()
    say = progress or (lambda _line: None)
    prefix = prefix or default_prefix(objective)
    names = {stage: f"{prefix}-{stage}" for stage in ("coarse", "refine", "final")}
    for study_name in names.values():
        check_study_name(study_name)
    if device is not None:
        check_device(device, "--device")
    with opened(url, create=True) as storage:
        existing = {s.study_name for s in storage.get_all_studies()}
    taken = sorted(existing & set(names.values()))
    if taken:
        raise StudyExistsError(f"study {taken[0]!r} already exists; pick another --name or "
                               f"delete the recipe's studies ({', '.join(names.values())})")
    resolved = resolve_objective(objective)
    if not resolved.structured:
        raise TunesvcError(f"objective {objective!r} is a plain objective(trial); the recipe "
                           "needs a structured objective with build(params) (use `tunesvc "
                           "study create` for plain ones)")
    fixed = dict(params or {})

    say("stage 1/4: checks")
    checks = run_checks(resolved, fixed, seed=seed, stop_at_failure=True)
    failed = checks.first_failure
    check_note = "; ".join(f"{c.name} {c.verdict}" for c in checks.checks)
    rows = [StageRow("check", None, f"{len(checks.checks)} checks", None, {}, {}, check_note)]
    if failed is not None:
        stopped = (f"check {failed.name} failed: {failed.summary}. "
                   f"{failed.advice or ''}").strip()
        return RecipeResult(objective, checks, rows, None, stopped)

    say("stage 2/4: coarse random search")
    space: dict[str, ParamSpec] = dict(resolved.search_space)
    if checks.suggested_lr is not None and "lr" in space:
        space["lr"] = checks.suggested_lr
    for key, value in fixed.items():
        space[key] = ChoiceParam(key, (value,))
    coarse = parse_spec_dict({
        "objective": objective, "sampler": "random", "n_trials": budget.coarse_trials,
        "epochs": budget.coarse_epochs, "seed": seed, "population": population,
        "params": {k: p.to_dict() for k, p in space.items()},
    })
    create_study(names["coarse"], coarse, url, resolved=resolve_study(coarse, resolved),
                 user_attrs=[attrs.STAGE.item("coarse"), attrs.CHECK.item(checks.to_json())])
    _run(names["coarse"], url, device, say)
    lr_note = (f"lr {checks.suggested_lr.low:.3g}..{checks.suggested_lr.high:.3g} from the LR "
               "range test" if checks.suggested_lr is not None else "the objective's space")
    rows.append(_row("coarse", names["coarse"], url, lr_note))
    if rows[-1].best_value is None:
        return RecipeResult(objective, checks, rows, None,
                            f"no trial of {names['coarse']} completed ({rows[-1].trials}); see "
                            f"`tunesvc study trials {shlex.quote(names['coarse'])}` for why, "
                            "or give the coarse search more with --budget "
                            "coarse_trials=N,coarse_epochs=N")

    say("stage 3/4: refine")
    refined = refine_study(names["coarse"], names["refine"], url, top=budget.top,
                           epochs=budget.refine_epochs, n_trials=budget.refine_trials)
    _run(names["refine"], url, device, say)
    widened = [n for n in refined.notes if "widened" in n]
    rows.append(_row("refine", names["refine"], url,
                     f"around the top {len(refined.top)} of {names['coarse']}"
                     + (f"; {'; '.join(widened)}" if widened else "")))

    say("stage 4/4: train the best configuration longer")
    best = best_trial(names["refine"], url)
    final = parse_spec_dict({
        "objective": objective, "sampler": "grid", "epochs": budget.final_epochs, "seed": seed,
        "pruner": "none", "params": {k: {"values": [v]} for k, v in best.params.items()},
    })
    create_study(names["final"], final, url, resolved=resolve_study(final, resolved),
                 user_attrs=[attrs.STAGE.item("final"), attrs.PARENT.item(names["refine"]),
                             attrs.FROM_TRIAL.item(best.number)])
    _run(names["final"], url, device, say)
    rows.append(_row("final", names["final"], url,
                     f"trial {best.number} of {names['refine']} for {budget.final_epochs} epochs"))
    final_best = rows[-1]
    winner = final_best if final_best.best_value is not None else rows[-2]
    return RecipeResult(objective, checks, rows, {
        "study": winner.study, "value": winner.best_value, "params": winner.best_params,
    })
