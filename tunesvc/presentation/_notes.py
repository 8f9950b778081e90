"""What users see in optuna-dashboard, written as trials finish, through its public API.

- On each trial, a note (Markdown) with its diagnosis (label, reason, evidence, advice), outcome
  and params, and a figure of its four learning curves: an SVG in the study's artifact store,
  shown inside the note.
- On each study, a note with the recipe stage, the parent study, counts by state and by
  diagnosis, the best trial and the spec; and plotly figures (``save_plotly_graph_object``): the
  learning rate against weight decay coloured by result, and the best trial's curves.

:class:`DashboardNotes` is the worker's observer that writes them (off the training path).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from tunesvc.curves import Curves
from tunesvc.presentation._figures import (
    curves_figure,
    curves_svg,
    diagnoses_figure,
    diagnosis_counts,
    fmt,
    lr_wd_figure,
)
from tunesvc.storage import StudyRef, attrs

CURVES_ARTIFACT = "learning-curves.svg"
LR_WD_FIGURE_ID = "tunesvc-lr-vs-weight-decay"
BEST_CURVES_FIGURE_ID = "tunesvc-best-trial-curves"
DIAGNOSES_FIGURE_ID = "tunesvc-diagnoses"
STUDY_NOTE_EVERY_S = 30.0
"""Least seconds between two rewrites of the study's dashboard note by one worker."""


def trial_note(trial: FrozenTrial, image_url: str | None = None) -> str:
    """The Markdown note of one finished trial: diagnosis first, then outcome and params."""
    diagnosis = attrs.DIAGNOSIS.get(trial)
    lines = []
    if diagnosis is not None:
        label = diagnosis.label
        at = f" (epoch {diagnosis.epoch})" if diagnosis.epoch is not None else ""
        lines += [f"## Trial {trial.number}: {label}", "",
                  f"**Diagnosis: {label}**{at}: {diagnosis.reason}", "",
                  f"**Advice:** {diagnosis.advice}", ""]
        if diagnosis.evidence:
            lines += ["| evidence | value |", "|---|---|"]
            lines += [f"| {k} | {fmt(v)} |" for k, v in diagnosis.evidence.items()]
            lines.append("")
    else:
        lines += [f"## Trial {trial.number}", "", "No diagnosis recorded.", ""]
    outcome = attrs.OUTCOME.get(trial) or trial.state.name.lower()
    value = f", value {fmt(trial.value)}" if trial.value is not None else ""
    lines.append(f"**Outcome:** {outcome}{value}")
    error = attrs.ERROR.get(trial)
    if error:
        lines.append(f"**Error:** `{error[:300]}`")
    params = ", ".join(f"{k} = {fmt(v)}" for k, v in trial.params.items())
    lines += ["", f"**Params:** {params or '-'}"]
    if image_url:
        lines += ["", f"![learning curves of trial {trial.number}]({image_url})"]
    return "\n".join(lines) + "\n"


def study_note(study_name: str, user_attrs: dict[str, Any], trials: Sequence[FrozenTrial],
               direction: str) -> str:
    """The Markdown note of a study: stage, parent, counts, best trial, spec."""
    stage = attrs.STAGE.get(user_attrs) or "-"
    parent = attrs.PARENT.get(user_attrs)
    states = Counter(t.state.name.lower() for t in trials)
    lines = [f"## {study_name}", "",
             f"**Recipe stage:** {stage}", "",
             f"**Parent study:** {parent or '- (none)'}", "",
             f"**Trials:** {', '.join(f'{v} {k}' for k, v in sorted(states.items())) or '-'}",
             ""]
    counts = diagnosis_counts(trials)
    lines += ["| diagnosis | trials |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in counts.items()] or ["| - | 0 |"]
    lines.append("")
    best = attrs.best_of(trials, direction)
    if best is not None:
        diagnosis = attrs.DIAGNOSIS.get(best)
        label = "-" if diagnosis is None else diagnosis.label
        params = ", ".join(f"{k} = {fmt(v)}" for k, v in best.params.items())
        lines += [f"**Best:** trial {best.number}, value {fmt(best.value)} ({label}): {params}",
                  ""]
    notes = attrs.REFINE_NOTES.get(user_attrs) or []
    lines += [f"- {note}" for note in notes]
    if notes:
        lines.append("")
    spec = attrs.SPEC.get(user_attrs)
    if spec is not None:
        lines += ["**Spec:**", "", "```json", json.dumps(spec.to_dict(), indent=1), "```", ""]
    return "\n".join(lines)


def curves_artifact_name(number: int) -> str:
    return f"trial-{number}-{CURVES_ARTIFACT}"


def _curves_artifact(study: optuna.Study, trial: FrozenTrial, curves: Curves,
                     artifacts: Path) -> str:
    """Upload the trial's curves SVG once; its artifact id. It is a study artifact because
    Optuna refuses artifacts on a finished trial; the trial's note shows it."""
    from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact

    filename = curves_artifact_name(trial.number)
    for meta in get_all_artifact_meta(study):
        if meta.filename == filename:
            return meta.artifact_id
    artifacts.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(artifacts))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / filename
        path.write_bytes(curves_svg(curves, f"{study.study_name}, trial {trial.number}"))
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study,
                               mimetype="image/svg+xml")


def record_trial_notes(ref: StudyRef, trial_id: int, *, artifacts: Path | None = None) -> None:
    """Write the dashboard note of the finished trial ``trial_id``; with ``artifacts`` (the
    artifact store's folder), upload its learning-curves figure and show it in the note."""
    from optuna_dashboard import save_note

    study, study_id = ref.study, ref.study_id
    trial = optuna.trial.Trial(study, trial_id)
    frozen = ref.storage.get_trial(trial_id)
    image_url = None
    curves = attrs.CURVES.get(frozen)
    if artifacts is not None and curves is not None and len(curves):
        artifact_id = _curves_artifact(study, frozen, curves, artifacts)
        image_url = f"/artifacts/{study_id}/{artifact_id}"
    save_note(trial, trial_note(frozen, image_url))


def record_study_note(study: optuna.Study) -> None:
    """Write the study's dashboard note and figures from its trials as they are now."""
    from optuna_dashboard import save_note, save_plotly_graph_object

    trials = study.get_trials(deepcopy=False)
    direction = study.direction.name.lower()
    user_attrs = dict(study.user_attrs)
    save_note(study, study_note(study.study_name, user_attrs, trials, direction))
    metric = attrs.METRIC.get(user_attrs) or "value"
    fig = lr_wd_figure(trials, direction, metric)
    if fig is not None:
        save_plotly_graph_object(study, fig, graph_object_id=LR_WD_FIGURE_ID)
    bars = diagnoses_figure(trials)
    if bars is not None:
        save_plotly_graph_object(study, bars, graph_object_id=DIAGNOSES_FIGURE_ID)
    best = attrs.best_of(trials, direction)
    curves = attrs.CURVES.get(best) if best is not None else None
    if best is not None and curves is not None and len(curves):
        save_plotly_graph_object(
            study, curves_figure(curves, f"best trial {best.number}: learning curves"),
            graph_object_id=BEST_CURVES_FIGURE_ID)


@dataclass
class DashboardNotes:
    """The worker observer that writes tunesvc's dashboard notes: each finished trial's note
    and curves figure at once, the study's note and figures at most every
    ``STUDY_NOTE_EVERY_S`` (they read every trial) and when the worker leaves.

    ``artifacts`` is the artifact store's folder (where the figures go).
    """

    artifacts: Path
    _study_note_at: float = field(default=-math.inf, repr=False)

    def trial_finished(self, ref: StudyRef, trial_id: int) -> None:
        record_trial_notes(ref, trial_id, artifacts=self.artifacts)
        self.study_changed(ref, final=False)

    def study_changed(self, ref: StudyRef, *, final: bool) -> None:
        now = time.monotonic()
        if final or now - self._study_note_at >= STUDY_NOTE_EVERY_S:
            record_study_note(ref.study)
            self._study_note_at = now
