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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tunesvc.curves import Curves
from tunesvc.presentation._figures import (
    TrialLike,
    curves_figure,
    curves_svg,
    diagnoses_figure,
    fmt,
    lr_wd_figure,
)
from tunesvc.storage import StudyReads, StudyRef, attrs

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


@dataclass(frozen=True)
class StudyFacts:
    """What a study's note and report say of it, read by SQL aggregates so that it costs the
    same at 100,000 trials as at 100: trials by state, by diagnosis label, the best trial, and a
    sample of finished trials (at most ``FIGURE_TRIALS``) for the figures."""

    counts: dict[str, int]
    diagnoses: dict[str, int]
    best: FrozenTrial | None
    sample: list[TrialLike]
    total_finished: int


FIGURE_TRIALS = 2000
"""Finished trials a study's figures show at most (the first ones, by number)."""
TRIAL_NOTES_ALL = 1000
"""Every trial of a study gets its dashboard note up to this many trials; after that only a
trial that is the best so far (each note rewrites every note's index in optuna-dashboard, so
notes cost more as a study grows). Every trial's diagnosis stays in its user attributes."""


def study_facts(ref: StudyRef) -> StudyFacts:
    """:class:`StudyFacts` of the study ``ref`` points at."""
    reads = StudyReads(ref.storage, ref.study_id)
    counts = reads.counts()
    state = reads.queue_state()
    if state is not None and state.unclaimed:
        counts["WAITING"] = counts.get("WAITING", 0) + state.unclaimed
    diagnoses = {str(k): v for k, v in sorted(reads.counts_by_field(
        attrs.DIAGNOSIS.key, "label").items(), key=lambda kv: -kv[1]) if k is not None}
    best_row = reads.best(ref.study.direction)
    best = None if best_row is None else ref.storage.get_trial(best_row.trial_id)
    sample: list[TrialLike] = []
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    for row in reads.trials((attrs.OUTCOME.key, attrs.DIAGNOSIS.key), states=finished):
        sample.append(row)
        if len(sample) >= FIGURE_TRIALS:
            break
    total = sum(counts.get(s.name, 0) for s in finished)
    return StudyFacts(counts, diagnoses, best, sample, total)


def study_note(study_name: str, user_attrs: dict[str, Any], facts: StudyFacts) -> str:
    """The Markdown note of a study: stage, parent, counts, best trial, spec."""
    stage = attrs.STAGE.get(user_attrs) or "-"
    parent = attrs.PARENT.get(user_attrs)
    states = {k.lower(): v for k, v in facts.counts.items()}
    lines = [f"## {study_name}", "",
             f"**Recipe stage:** {stage}", "",
             f"**Parent study:** {parent or '- (none)'}", "",
             f"**Trials:** {', '.join(f'{v} {k}' for k, v in sorted(states.items())) or '-'}",
             ""]
    lines += ["| diagnosis | trials |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in facts.diagnoses.items()] or ["| - | 0 |"]
    lines.append("")
    best = facts.best
    if best is not None:
        diagnosis = attrs.DIAGNOSIS.get(best)
        label = "-" if diagnosis is None else diagnosis.label
        params = ", ".join(f"{k} = {fmt(v)}" for k, v in best.params.items())
        lines += [f"**Best:** trial {best.number}, value {fmt(best.value)} ({label}): {params}",
                  ""]
    if facts.total_finished > len(facts.sample):
        lines += [f"The figures show the first {len(facts.sample)} of "
                  f"{facts.total_finished} finished trials. Trials after the first "
                  f"{TRIAL_NOTES_ALL} get a note when they are the best so far; every trial's "
                  "diagnosis is in its user attributes and in `tunesvc study trials`.", ""]
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


def record_study_note(ref: StudyRef) -> None:
    """Write the study's dashboard note and figures from its trials as they are now."""
    from optuna_dashboard import save_note, save_plotly_graph_object

    study = ref.study
    facts = study_facts(ref)
    direction = study.direction.name.lower()
    user_attrs = dict(study.user_attrs)
    save_note(study, study_note(study.study_name, user_attrs, facts))
    metric = attrs.METRIC.get(user_attrs) or "value"
    fig = lr_wd_figure(facts.sample, direction, metric)
    if fig is not None:
        save_plotly_graph_object(study, fig, graph_object_id=LR_WD_FIGURE_ID)
    bars = diagnoses_figure(facts.diagnoses)
    if bars is not None:
        save_plotly_graph_object(study, bars, graph_object_id=DIAGNOSES_FIGURE_ID)
    best = facts.best
    curves = attrs.CURVES.get(best) if best is not None else None
    if best is not None and curves is not None and len(curves):
        save_plotly_graph_object(
            study, curves_figure(curves, f"best trial {best.number}: learning curves"),
            graph_object_id=BEST_CURVES_FIGURE_ID)


@dataclass
class DashboardNotes:
    """The worker observer that writes tunesvc's dashboard notes: each finished trial's note
    and curves figure at once (after ``TRIAL_NOTES_ALL`` trials, only a new best's), the
    study's note and figures at most every ``STUDY_NOTE_EVERY_S`` and when the worker leaves.

    ``artifacts`` is the artifact store's folder (where the figures go).
    """

    artifacts: Path
    _study_note_at: float = field(default=-math.inf, repr=False)

    def trial_finished(self, ref: StudyRef, trial_id: int) -> None:
        frozen = ref.storage.get_trial(trial_id)
        if frozen.number < TRIAL_NOTES_ALL or self._is_best(ref, frozen):
            record_trial_notes(ref, trial_id, artifacts=self.artifacts)
        self.study_changed(ref, final=False)

    def study_changed(self, ref: StudyRef, *, final: bool) -> None:
        now = time.monotonic()
        if final or now - self._study_note_at >= STUDY_NOTE_EVERY_S:
            record_study_note(ref)
            self._study_note_at = now

    @staticmethod
    def _is_best(ref: StudyRef, trial: FrozenTrial) -> bool:
        if trial.state != TrialState.COMPLETE:
            return False
        best = StudyReads(ref.storage, ref.study_id).best(ref.study.direction)
        return best is not None and best.number == trial.number
