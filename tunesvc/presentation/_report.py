"""``tunesvc study report``: one static HTML file with a study's figures and tables.

The same content the dashboard shows (study note, learning rate against weight decay, each
trial's diagnosis and learning curves), with plotly.js inlined so the file opens offline.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime

import optuna
from optuna.trial import FrozenTrial

from tunesvc.presentation._figures import (
    curves_figure,
    diagnoses_figure,
    diagnosis_counts,
    fmt,
    lr_wd_figure,
)
from tunesvc.storage import attrs

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 14px; }
th { background: #f3f3f3; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
section.trial { border-top: 1px solid #ddd; margin-top: 1.5em; }
.label { font-weight: bold; }
"""


def _e(x: object) -> str:
    return html.escape(fmt(x))


def _table(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _trial_section(t: FrozenTrial) -> str:
    d = attrs.DIAGNOSIS.get(t)
    parts = [f'<section class="trial" id="trial-{t.number}"><h3>Trial {t.number}: '
             f'{_e(d.label if d is not None else "no diagnosis")}</h3>']
    if d is not None:
        at = f" (epoch {d.epoch})" if d.epoch is not None else ""
        parts.append(f'<p><span class="label">Diagnosis: {_e(d.label)}</span>'
                     f'{html.escape(at)}: {_e(d.reason)}</p>')
        parts.append(f"<p><b>Advice:</b> {_e(d.advice)}</p>")
        if d.evidence:
            parts.append(_table(["evidence", "value"], [[k, v] for k, v in d.evidence.items()]))
    outcome = attrs.OUTCOME.get(t) or t.state.name.lower()
    params = ", ".join(f"{k} = {fmt(v)}" for k, v in t.params.items())
    parts.append(f"<p><b>Outcome:</b> {_e(outcome)}, value {_e(t.value)}; "
                 f"<b>params:</b> {html.escape(params)}</p>")
    curves = attrs.CURVES.get(t)
    if curves is not None and len(curves):
        fig = curves_figure(curves, f"trial {t.number}: learning curves")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False))
    parts.append("</section>")
    return "\n".join(parts)


def render_report(study: optuna.Study) -> str:
    """The whole report of ``study`` as one HTML document."""
    import plotly.offline

    trials = study.get_trials(deepcopy=False)
    user_attrs = dict(study.user_attrs)
    direction = study.direction.name.lower()
    name = html.escape(study.study_name)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    best = attrs.best_of(trials, direction)
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>tunesvc report: {name}</title><style>{_STYLE}</style>",
        f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>",
        f"<h1>Study {name}</h1>",
        f"<p>Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. "
        f"<b>Recipe stage:</b> {_e(attrs.STAGE.get(user_attrs) or '-')}; "
        f"<b>parent study:</b> {_e(attrs.PARENT.get(user_attrs) or '-')}; "
        f"<b>direction:</b> {direction}.</p>",
        "<h2>Trials by state and by diagnosis</h2>",
        _table(["state", "trials"], [[k, v] for k, v in sorted(states.items())]),
        _table(["diagnosis", "trials"], [[k, v] for k, v in diagnosis_counts(trials).items()]),
    ]
    if best is not None:
        best_diagnosis = attrs.DIAGNOSIS.get(best)
        label = "-" if best_diagnosis is None else best_diagnosis.label
        out.append("<h2>Best configuration</h2>")
        out.append(_table(["trial", "value", "diagnosis", *best.params],
                          [[best.number, best.value, label, *best.params.values()]]))
    notes = attrs.REFINE_NOTES.get(user_attrs) or []
    if notes:
        out.append("<h2>Refined from the parent</h2><ul>"
                   + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    for title, fig in (("Learning rate against weight decay", lr_wd_figure(trials, direction)),
                       ("Trials by diagnosis", diagnoses_figure(diagnosis_counts(trials)))):
        if fig is not None:
            out.append(f"<h2>{title}</h2>")
            out.append(fig.to_html(full_html=False, include_plotlyjs=False))
    rows = []
    for t in trials:
        d = attrs.DIAGNOSIS.get(t)
        rows.append([t.number, t.state.name.lower(), attrs.OUTCOME.get(t), t.value,
                     None if d is None else d.label,
                     ", ".join(f"{k}={fmt(v)}" for k, v in t.params.items())])
    out += ["<h2>All trials</h2>",
            _table(["#", "state", "outcome", "value", "diagnosis", "params"], rows),
            "<h2>Each trial</h2>", *(_trial_section(t) for t in trials)]
    spec = attrs.SPEC.get(user_attrs)
    if spec is not None:
        out.append(f"<h2>Spec</h2><pre>{html.escape(json.dumps(spec.to_dict(), indent=2))}"
                   "</pre>")
    out.append("</body></html>")
    return "\n".join(out)
