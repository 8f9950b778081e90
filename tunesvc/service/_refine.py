"""``tunesvc study refine``: a child study whose ranges close in on its parent's best trials
(the narrowing itself is the pure :func:`tunesvc.spec.refine_params`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tunesvc._errors import SpecError, StudyExistsError, TunesvcError
from tunesvc.service._studies import create_study, list_trials, opened, show_study
from tunesvc.spec import DEFAULT_EPOCHS, Direction, parse_spec_dict, refine_params
from tunesvc.storage import attrs


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{v} {k.lower()}" for k, v in counts.items()) or "no trials"


@dataclass(frozen=True)
class RefineResult:
    """A refined study: its summary, the parent, the top trials read, and what changed."""

    study: str
    parent: str
    top: list[dict[str, Any]]
    params_before: dict[str, Any]
    params_after: dict[str, Any]
    notes: list[str]
    epochs: int
    sampler: str
    planned: int

    def to_json(self) -> dict[str, Any]:
        return {"study": self.study, "parent": self.parent, "top": self.top,
                "params_before": self.params_before, "params_after": self.params_after,
                "notes": self.notes, "epochs": self.epochs, "sampler": self.sampler,
                "planned": self.planned}


def refine_study(
    name: str,
    into: str,
    url: str,
    *,
    top: int = 3,
    epochs: int | None = None,
    sampler: str | None = None,
    n_trials: int | None = None,
    stage: str = "refine",
) -> RefineResult:
    """Create study ``into`` from study ``name``'s top ``top`` completed trials.

    Ranges narrow around those trials (widen where the best sits at an edge); epochs default to
    twice the parent's; the sampler, seed, pruner and budget are the parent's unless given.
    """
    if top < 1:
        raise SpecError(f"--top: expected an integer >= 1, got {top}")
    if epochs is not None and epochs < 1:
        raise SpecError(f"--epochs: expected an integer >= 1, got {epochs}")
    if into == name:
        raise StudyExistsError(f"--into {into!r} is the parent study itself; pick a new name")
    with opened(url) as storage:
        taken = any(s.study_name == into for s in storage.get_all_studies())
    if taken:
        raise StudyExistsError(f"study {into!r} already exists; pick another --into name or "
                               f"`tunesvc study delete {into}`")
    detail = show_study(name, url)
    trials = [t for t in list_trials(name, url)
              if t.state == "COMPLETE" and t.value is not None]
    if not trials:
        raise TunesvcError(f"study {name!r} has no completed trial to refine from "
                           f"({_counts(detail.summary.counts)}); run it first "
                           f"with `tunesvc study run {name}`")
    direction: Direction = "maximize" if detail.summary.direction == "maximize" else "minimize"
    sign = 1.0 if direction == "maximize" else -1.0
    best = sorted(trials, key=lambda t: (-sign * (t.value or 0.0), t.number))[:top]
    parent_spec = parse_spec_dict(detail.spec)
    params, notes = refine_params(parent_spec.params, [(t.params, t.value or 0.0) for t in best],
                                  direction)
    new_epochs = epochs or 2 * (parent_spec.epochs or DEFAULT_EPOCHS)
    raw = {**parent_spec.to_dict(), "epochs": new_epochs,
           "params": {n: p.to_dict() for n, p in params.items()}}
    if sampler is not None:
        raw["sampler"] = sampler
    if n_trials is not None:
        raw["n_trials"] = n_trials
    elif raw.get("sampler") == "grid":
        raw.pop("n_trials", None)  # a narrowed grid runs all its cells
    else:
        raw["n_trials"] = parent_spec.n_trials or detail.summary.planned
    spec = parse_spec_dict(raw)
    summary = create_study(into, spec, url, user_attrs=[
        attrs.STAGE.item(stage), attrs.PARENT.item(name), attrs.REFINE_NOTES.item(notes),
        attrs.REFINED_FROM.item([t.number for t in best])])
    return RefineResult(
        study=into, parent=name,
        top=[{"number": t.number, "value": t.value, "params": t.params} for t in best],
        params_before={n: p.to_dict() for n, p in parent_spec.params.items()},
        params_after={n: p.to_dict() for n, p in params.items()},
        notes=notes, epochs=new_epochs, sampler=spec.sampler, planned=summary.planned,
    )
