"""Figures of a study and its trials, shared by the dashboard notes and the static report:
plotly figures for interactive pages, a small SVG of a trial's curves for its note."""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from optuna.trial import TrialState

from tunesvc.curves import Curves
from tunesvc.storage import attrs

if TYPE_CHECKING:  # plotly loads when a figure is built: the CLI's start stays fast
    import plotly.graph_objects as go

class TrialLike(Protocol):
    """What a figure reads of a trial: a ``FrozenTrial``, or a row the storage's reads give."""

    @property
    def number(self) -> int: ...

    @property
    def state(self) -> TrialState: ...

    @property
    def value(self) -> float | None: ...

    @property
    def params(self) -> dict[str, Any]: ...

    @property
    def user_attrs(self) -> dict[str, Any]: ...


LR_NAMES = ("lr", "learning_rate")
WD_NAMES = ("weight_decay", "wd")

_COLORS = {"train_loss": "#1f77b4", "val_loss": "#ff7f0e", "train_acc": "#2ca02c",
           "val_acc": "#d62728"}


def fmt(x: Any) -> str:
    """A number as the notes and the report show it: 4 significant digits, ``-`` if none."""
    if isinstance(x, float):
        return "-" if not math.isfinite(x) else f"{x:.4g}"
    return "-" if x is None else str(x)


def _clean(xs: Sequence[float]) -> list[float | None]:
    return [x if x is not None and math.isfinite(x) else None for x in xs]


def curves_figure(curves: Curves, title: str) -> go.Figure:
    """The four learning curves: losses on the left, accuracies on the right."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

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


def _param_names(trials: Sequence[TrialLike]) -> tuple[str | None, str | None]:
    names = {n for t in trials for n, v in t.params.items()
             if isinstance(v, int | float) and not isinstance(v, bool)}
    lr = next((n for n in LR_NAMES if n in names), None)
    wd = next((n for n in WD_NAMES if n in names), None)
    return lr, wd


def _result(t: TrialLike) -> str:
    if t.state == TrialState.COMPLETE:
        return "completed"
    return attrs.OUTCOME.get(t) or t.state.name.lower()


def lr_wd_figure(trials: Sequence[TrialLike], direction: str, metric: str = "value"
                 ) -> go.Figure | None:
    """Learning rate against weight decay, one point per finished trial, coloured by its value;
    pruned, diverged and failed trials as grey crosses. The band where good configurations
    lie shows as the bright points. Without a weight decay param: learning rate against value.
    ``None`` when the trials have no learning rate param."""
    import plotly.graph_objects as go

    finished = [t for t in trials if t.state.is_finished()]
    lr, wd = _param_names(finished)
    if lr is None or not finished:
        return None
    done = [t for t in finished if t.state == TrialState.COMPLETE and t.value is not None
            and math.isfinite(t.value) and lr in t.params]
    others = [t for t in finished if t not in done and lr in t.params]

    def y_of(t: TrialLike) -> float | None:
        if wd is None:
            return t.value if t.value is not None and math.isfinite(t.value) else None
        return float(t.params[wd]) if wd in t.params else None

    def hover(t: TrialLike) -> str:
        diagnosis = attrs.DIAGNOSIS.get(t)
        label = "-" if diagnosis is None else diagnosis.label
        return (f"trial {t.number}<br>{_result(t)}, {metric} {fmt(t.value)}<br>"
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
    by_result: dict[str, list[TrialLike]] = {}
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


def diagnoses_figure(counts: Mapping[str, int]) -> go.Figure | None:
    """Trials by diagnosis label (``counts``: see :func:`diagnosis_counts`), one bar per label;
    ``None`` before any diagnosis."""
    import plotly.graph_objects as go

    if not counts:
        return None
    fig = go.Figure(go.Bar(x=list(counts), y=list(counts.values()), text=list(counts.values()),
                           marker={"color": "#4c78a8"}))
    fig.update_layout(title="trials by diagnosis", height=360, yaxis={"title": "trials"})
    return fig




def diagnosis_counts(trials: Sequence[TrialLike]) -> dict[str, int]:
    """Trials by diagnosis label, most common first."""
    counts = Counter(d.label for d in map(attrs.DIAGNOSIS.get, trials) if d is not None)
    return dict(counts.most_common())
