"""``tunesvc study report``: one static HTML file with a study's figures and tables.

The same content the dashboard shows (study note, learning rate against weight decay, each
trial's diagnosis and learning curves), with plotly.js inlined so the file opens offline.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import optuna
import plotly.offline
from optuna.trial import FrozenTrial

from tunesvc._errors import StudyNotFoundError, TunesvcError
from tunesvc.curves._curves import DIAGNOSIS_ATTR, OUTCOME_ATTR, curves_of
from tunesvc.presentation._notes import (
    PARENT_ATTR,
    SPEC_ATTR,
    STAGE_ATTR,
    best_of,
    curves_figure,
    diagnoses_figure,
    diagnosis_counts,
    lr_wd_figure,
)
from tunesvc.storage._database import open_storage, redact, storage_errors

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 14px; }
th { background: #f3f3f3; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
section.trial { border-top: 1px solid #ddd; margin-top: 1.5em; }
.label { font-weight: bold; }
"""


@dataclass(frozen=True)
class ReportResult:
    study: str
    path: Path
    trials: int

    def to_json(self) -> dict[str, object]:
        return {"study": self.study, "path": str(self.path), "trials": self.trials}


def _fmt(x: object) -> str:
    if isinstance(x, float):
        return "-" if not math.isfinite(x) else f"{x:.4g}"
    return "-" if x is None else str(x)


def _e(x: object) -> str:
    return html.escape(_fmt(x))


def _table(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _trial_section(t: FrozenTrial) -> str:
    d = t.user_attrs.get(DIAGNOSIS_ATTR)
    parts = [f'<section class="trial" id="trial-{t.number}"><h3>Trial {t.number}: '
             f'{_e(d.get("label") if isinstance(d, dict) else "no diagnosis")}</h3>']
    if isinstance(d, dict):
        at = f" (epoch {d['epoch']})" if d.get("epoch") is not None else ""
        parts.append(f'<p><span class="label">Diagnosis: {_e(d.get("label"))}</span>'
                     f'{html.escape(at)}: {_e(d.get("reason", ""))}</p>')
        parts.append(f"<p><b>Advice:</b> {_e(d.get('advice', ''))}</p>")
        evidence = d.get("evidence") or {}
        if evidence:
            parts.append(_table(["evidence", "value"], [[k, v] for k, v in evidence.items()]))
    outcome = t.user_attrs.get(OUTCOME_ATTR) or t.state.name.lower()
    params = ", ".join(f"{k} = {_fmt(v)}" for k, v in t.params.items())
    parts.append(f"<p><b>Outcome:</b> {_e(outcome)}, value {_e(t.value)}; "
                 f"<b>params:</b> {html.escape(params)}</p>")
    curves = curves_of(t)
    if curves is not None and len(curves):
        fig = curves_figure(curves, f"trial {t.number}: learning curves")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False))
    parts.append("</section>")
    return "\n".join(parts)


def render_report(study: optuna.Study) -> str:
    """The whole report of ``study`` as one HTML document."""
    trials = study.get_trials(deepcopy=False)
    attrs = dict(study.user_attrs)
    direction = study.direction.name.lower()
    name = html.escape(study.study_name)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    best = best_of(trials, direction)
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>tunesvc report: {name}</title><style>{_STYLE}</style>",
        f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>",
        f"<h1>Study {name}</h1>",
        f"<p>Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. "
        f"<b>Recipe stage:</b> {_e(attrs.get(STAGE_ATTR, '-'))}; "
        f"<b>parent study:</b> {_e(attrs.get(PARENT_ATTR) or '-')}; "
        f"<b>direction:</b> {direction}.</p>",
        "<h2>Trials by state and by diagnosis</h2>",
        _table(["state", "trials"], [[k, v] for k, v in sorted(states.items())]),
        _table(["diagnosis", "trials"], [[k, v] for k, v in diagnosis_counts(trials).items()]),
    ]
    if best is not None:
        label = (best.user_attrs.get(DIAGNOSIS_ATTR) or {}).get("label", "-")
        out.append("<h2>Best configuration</h2>")
        out.append(_table(["trial", "value", "diagnosis", *best.params],
                          [[best.number, best.value, label, *best.params.values()]]))
    notes = attrs.get("refine_notes") or []
    if notes:
        out.append("<h2>Refined from the parent</h2><ul>"
                   + "".join(f"<li>{html.escape(str(n))}</li>" for n in notes) + "</ul>")
    for title, fig in (("Learning rate against weight decay", lr_wd_figure(trials, direction)),
                       ("Trials by diagnosis", diagnoses_figure(trials))):
        if fig is not None:
            out.append(f"<h2>{title}</h2>")
            out.append(fig.to_html(full_html=False, include_plotlyjs=False))
    rows = []
    for t in trials:
        d = t.user_attrs.get(DIAGNOSIS_ATTR)
        rows.append([t.number, t.state.name.lower(), t.user_attrs.get(OUTCOME_ATTR), t.value,
                     d.get("label") if isinstance(d, dict) else None,
                     ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())])
    out += ["<h2>All trials</h2>",
            _table(["#", "state", "outcome", "value", "diagnosis", "params"], rows),
            "<h2>Each trial</h2>", *(_trial_section(t) for t in trials)]
    spec = attrs.get(SPEC_ATTR)
    if spec is not None:
        out.append(f"<h2>Spec</h2><pre>{html.escape(json.dumps(spec, indent=2))}</pre>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(name: str, url: str, out_dir: Path | None = None) -> ReportResult:
    """Write ``<out_dir>/<name>.html`` (default: the current folder) for study ``name``."""
    storage = open_storage(url)
    with storage_errors(url):
        names = [s.study_name for s in storage.get_all_studies()]
        if name not in names:
            raise StudyNotFoundError(f"no study {name!r} in {redact(url)}")
        study = optuna.load_study(study_name=name, storage=storage)
        text = render_report(study)
        count = len(study.get_trials(deepcopy=False))
    folder = out_dir or Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.html"
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise TunesvcError(f"--out {folder}: cannot write the report ({e.strerror})") from None
    return ReportResult(name, path, count)
