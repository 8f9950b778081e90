"""What users see in optuna-dashboard, written as trials finish, through its public API.

- On each trial, a note (Markdown) with its diagnosis (label, reason, evidence, advice), outcome
  and params, and a figure of its four learning curves: an SVG in the study's artifact store,
  shown inside the note.
- On each study, a note with the recipe stage, the parent study, counts by state and by
  diagnosis, the best trial and the spec; and plotly figures (``save_plotly_graph_object``): the
  learning rate against weight decay coloured by result, and the best trial's curves.

The figure builders return plotly figures and are shared with the static report.

Call :func:`record_trial_notes` when a trial finishes and :func:`record_study_note` after it.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from tunesvc.curves._curves import DIAGNOSIS_ATTR, OUTCOME_ATTR, Curves, curves_of

CURVES_ARTIFACT = "learning-curves.svg"
LR_WD_FIGURE_ID = "tunesvc-lr-vs-weight-decay"
BEST_CURVES_FIGURE_ID = "tunesvc-best-trial-curves"
DIAGNOSES_FIGURE_ID = "tunesvc-diagnoses"
STAGE_ATTR = "stage"
PARENT_ATTR = "parent"
SPEC_ATTR = "spec"
LR_NAMES = ("lr", "learning_rate")
WD_NAMES = ("weight_decay", "wd")

_COLORS = {"train_loss": "#1f77b4", "val_loss": "#ff7f0e", "train_acc": "#2ca02c",
           "val_acc": "#d62728"}


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "-" if not math.isfinite(x) else f"{x:.4g}"
    return "-" if x is None else str(x)


def _clean(xs: Sequence[float]) -> list[float | None]:
    return [x if x is not None and math.isfinite(x) else None for x in xs]


# --- figures -----------------------------------------------------------------------------------


def curves_figure(curves: Curves, title: str) -> go.Figure:
    """The four learning curves: losses on the left, accuracies on the right."""
    has_acc = any(math.isfinite(x) for x in curves.train_acc + curves.val_acc)
    fig = make_subplots(rows=1, cols=2 if has_acc else 1,
                        subplot_titles=("loss", "accuracy") if has_acc else ("loss",))
    for name in ("train_loss", "val_loss"):
        fig.add_trace(go.Scatter(x=curves.epoch, y=_clean(getattr(curves, name)), name=name,
                                 mode="lines+markers", line={"color": _COLORS[name]}),
                      row=1, col=1)
    if has_acc:
        for name in ("train_acc", "val_acc"):
            fig.add_trace(go.Scatter(x=curves.epoch, y=_clean(getattr(curves, name)), name=name,
                                     mode="lines+markers", line={"color": _COLORS[name]}),
                          row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title=title, height=360, margin={"l": 40, "r": 20, "t": 60, "b": 40})
    return fig


def curves_svg(curves: Curves, title: str) -> bytes:
    """The same four curves as a small SVG image, for the dashboard's trial page."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    fig = Figure(figsize=(8, 3))
    loss_ax, acc_ax = fig.subplots(1, 2)
    for name in ("train_loss", "val_loss"):
        loss_ax.plot(curves.epoch, getattr(curves, name), marker="o", ms=3, label=name,
                     color=_COLORS[name])
    for name in ("train_acc", "val_acc"):
        acc_ax.plot(curves.epoch, getattr(curves, name), marker="o", ms=3, label=name,
                    color=_COLORS[name])
    for ax, what in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(what, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="svg")
    return buf.getvalue()


def _param_names(trials: Sequence[FrozenTrial]) -> tuple[str | None, str | None]:
    names = {n for t in trials for n, v in t.params.items()
             if isinstance(v, int | float) and not isinstance(v, bool)}
    lr = next((n for n in LR_NAMES if n in names), None)
    wd = next((n for n in WD_NAMES if n in names), None)
    return lr, wd


def _result(t: FrozenTrial) -> str:
    outcome = t.user_attrs.get(OUTCOME_ATTR)
    if t.state == TrialState.COMPLETE:
        return "completed"
    return str(outcome or t.state.name.lower())


def lr_wd_figure(trials: Sequence[FrozenTrial], direction: str, metric: str = "value"
                 ) -> go.Figure | None:
    """Learning rate against weight decay, one point per finished trial, coloured by its value;
    pruned, diverged and failed trials as grey crosses. The band where good configurations
    lie shows as the bright points. Without a weight decay param: learning rate against value.
    ``None`` when the trials have no learning rate param."""
    finished = [t for t in trials if t.state.is_finished()]
    lr, wd = _param_names(finished)
    if lr is None or not finished:
        return None
    done = [t for t in finished if t.state == TrialState.COMPLETE and t.value is not None
            and math.isfinite(t.value) and lr in t.params]
    others = [t for t in finished if t not in done and lr in t.params]

    def y_of(t: FrozenTrial) -> float | None:
        if wd is None:
            return t.value if t.value is not None and math.isfinite(t.value) else None
        return float(t.params[wd]) if wd in t.params else None

    def hover(t: FrozenTrial) -> str:
        label = (t.user_attrs.get(DIAGNOSIS_ATTR) or {}).get("label", "-")
        return (f"trial {t.number}<br>{_result(t)}, {metric} {_fmt(t.value)}<br>"
                f"diagnosis: {label}")

    values = [float(t.value or 0.0) for t in done]
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=[t.params[lr] for t in done], y=[y_of(t) for t in done], mode="markers",
        name="completed", text=[hover(t) for t in done], hoverinfo="text",
        marker={"size": 11, "color": values, "colorscale": "Viridis",
                "cmin": min(values) if len(set(values)) > 1 else None,
                "cmax": max(values) if len(set(values)) > 1 else None,
                "reversescale": direction == "minimize", "showscale": True,
                "colorbar": {"title": {"text": metric}}, "line": {"width": 1, "color": "#333"}},
    ))
    by_result: dict[str, list[FrozenTrial]] = {}
    for t in others:
        by_result.setdefault(_result(t), []).append(t)
    symbols = {"pruned": "x", "diverged": "triangle-up", "failed": "x-thin-open"}
    for result, ts in sorted(by_result.items()):
        if wd is None:
            continue  # no value to place them by
        fig.add_trace(go.Scatter(
            x=[t.params[lr] for t in ts], y=[y_of(t) for t in ts], mode="markers", name=result,
            text=[hover(t) for t in ts], hoverinfo="text",
            marker={"size": 9, "color": "#999", "symbol": symbols.get(result, "x")},
        ))
    fig.update_xaxes(type="log", title_text=lr)
    if wd is not None:
        fig.update_yaxes(type="log", title_text=wd)
        title = f"{lr} against {wd}, coloured by {metric}"
    else:
        fig.update_yaxes(title_text=metric)
        title = f"{metric} against {lr}"
    fig.update_layout(title=title, height=420, legend={"orientation": "h", "y": -0.2})
    return fig


def diagnoses_figure(trials: Sequence[FrozenTrial]) -> go.Figure | None:
    """Trials by diagnosis label, one bar per label; ``None`` before any diagnosis."""
    counts = diagnosis_counts(trials)
    if not counts:
        return None
    fig = go.Figure(go.Bar(x=list(counts), y=list(counts.values()), text=list(counts.values()),
                           marker={"color": "#4c78a8"}))
    fig.update_layout(title="trials by diagnosis", height=360, yaxis={"title": "trials"})
    return fig


# --- notes -------------------------------------------------------------------------------------


def trial_note(trial: FrozenTrial, image_url: str | None = None) -> str:
    """The Markdown note of one finished trial: diagnosis first, then outcome and params."""
    diagnosis = trial.user_attrs.get(DIAGNOSIS_ATTR)
    lines = []
    if isinstance(diagnosis, dict):
        label = diagnosis.get("label", "-")
        at = f" (epoch {diagnosis['epoch']})" if diagnosis.get("epoch") is not None else ""
        lines += [f"## Trial {trial.number}: {label}", "",
                  f"**Diagnosis: {label}**{at}: {diagnosis.get('reason', '')}", "",
                  f"**Advice:** {diagnosis.get('advice', '')}", ""]
        evidence = diagnosis.get("evidence") or {}
        if evidence:
            lines += ["| evidence | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in evidence.items()]
            lines.append("")
    else:
        lines += [f"## Trial {trial.number}", "", "No diagnosis recorded.", ""]
    outcome = trial.user_attrs.get(OUTCOME_ATTR) or trial.state.name.lower()
    value = f", value {_fmt(trial.value)}" if trial.value is not None else ""
    lines.append(f"**Outcome:** {outcome}{value}")
    error = trial.user_attrs.get("error")
    if error:
        lines.append(f"**Error:** `{str(error)[:300]}`")
    params = ", ".join(f"{k} = {_fmt(v)}" for k, v in trial.params.items())
    lines += ["", f"**Params:** {params or '-'}"]
    if image_url:
        lines += ["", f"![learning curves of trial {trial.number}]({image_url})"]
    return "\n".join(lines) + "\n"


def diagnosis_counts(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    counts = Counter(str(t.user_attrs[DIAGNOSIS_ATTR].get("label", "-")) for t in trials
                     if isinstance(t.user_attrs.get(DIAGNOSIS_ATTR), dict))
    return dict(counts.most_common())


def best_of(trials: Sequence[FrozenTrial], direction: str) -> FrozenTrial | None:
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None
            and math.isfinite(t.value)]
    if not done:
        return None
    sign = 1.0 if direction == "maximize" else -1.0
    return max(done, key=lambda t: (sign * float(t.value or 0.0), -t.number))


def study_note(study_name: str, user_attrs: dict[str, Any], trials: Sequence[FrozenTrial],
               direction: str) -> str:
    """The Markdown note of a study: stage, parent, counts, best trial, spec."""
    stage = user_attrs.get(STAGE_ATTR, "-")
    parent = user_attrs.get(PARENT_ATTR)
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
    best = best_of(trials, direction)
    if best is not None:
        label = (best.user_attrs.get(DIAGNOSIS_ATTR) or {}).get("label", "-")
        params = ", ".join(f"{k} = {_fmt(v)}" for k, v in best.params.items())
        lines += [f"**Best:** trial {best.number}, value {_fmt(best.value)} ({label}): {params}",
                  ""]
    for note in user_attrs.get("refine_notes") or []:
        lines.append(f"- {note}")
    if user_attrs.get("refine_notes"):
        lines.append("")
    spec = user_attrs.get(SPEC_ATTR)
    if spec is not None:
        lines += ["**Spec:**", "", "```json", json.dumps(spec, indent=1), "```", ""]
    return "\n".join(lines)


# --- writing them -------------------------------------------------------------------------------


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


def record_trial_notes(
    trial: optuna.trial.Trial, frozen: FrozenTrial, *, study_id: int,
    artifacts: Path | None = None,
) -> None:
    """Write the dashboard note of ``trial`` (``frozen`` is it, finished); with ``artifacts``
    (the artifact store's folder), upload its learning-curves figure and show it in the note.
    ``study_id`` is the study's database id, which the dashboard's artifact URLs use."""
    from optuna_dashboard import save_note

    image_url = None
    curves = curves_of(frozen)
    if artifacts is not None and curves is not None and len(curves):
        artifact_id = _curves_artifact(trial.study, frozen, curves, artifacts)
        image_url = f"/artifacts/{study_id}/{artifact_id}"
    save_note(trial, trial_note(frozen, image_url))


def record_study_note(study: optuna.Study) -> None:
    """Write the study's dashboard note and figures from its trials as they are now."""
    from optuna_dashboard import save_note, save_plotly_graph_object

    trials = study.get_trials(deepcopy=False)
    direction = study.direction.name.lower()
    attrs = dict(study.user_attrs)
    save_note(study, study_note(study.study_name, attrs, trials, direction))
    metric = _metric(attrs)
    fig = lr_wd_figure(trials, direction, metric)
    if fig is not None:
        save_plotly_graph_object(study, fig, graph_object_id=LR_WD_FIGURE_ID)
    bars = diagnoses_figure(trials)
    if bars is not None:
        save_plotly_graph_object(study, bars, graph_object_id=DIAGNOSES_FIGURE_ID)
    best = best_of(trials, direction)
    curves = curves_of(best) if best is not None else None
    if best is not None and curves is not None and len(curves):
        save_plotly_graph_object(
            study, curves_figure(curves, f"best trial {best.number}: learning curves"),
            graph_object_id=BEST_CURVES_FIGURE_ID)


def _metric(attrs: dict[str, Any]) -> str:
    """The objective's metric name (val_acc, ...) for axis titles; "value" if unknown."""
    from tunesvc._errors import TunesvcError
    from tunesvc.spec._objective import resolve_objective

    spec = attrs.get(SPEC_ATTR)
    if not isinstance(spec, dict) or not isinstance(spec.get("objective"), str):
        return "value"
    try:
        return resolve_objective(spec["objective"]).metric or "value"
    except TunesvcError:
        return "value"
