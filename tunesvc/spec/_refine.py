"""Refining a study: a child study whose ranges close in on the parent's best trials.

:func:`refine_params` is the pure core. For each numeric param it narrows the range to span the
top trials plus a margin, in log space for log params; when the best trial sits at an edge of
its range, the optimum may lie outside it, so that range is widened past that edge instead. A
categorical param keeps the values the top trials used.

Example::

    params = {"lr": RangeParam("lr", 1e-4, 1e-1, log=True)}
    top = [({"lr": 3e-3}, 0.97), ({"lr": 1e-3}, 0.96)]
    new, notes = refine_params(params, top, "maximize")
    new["lr"]  # RangeParam("lr", ~5e-4, ~6e-3, log=True)

The service that makes a child study from a parent's top trials is
:func:`tunesvc.service.refine_study`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

from tunesvc.spec._spec import (
    ChoiceParam,
    Direction,
    ParamSpec,
    ParamValue,
    RangeParam,
)

EDGE_FRACTION = 0.1
"""The best trial is "at the edge" when it lies within this fraction of the range's width of
``low`` or ``high`` (in log space for log params)."""
MARGIN_FRACTION = 0.1
"""A narrowed range spans the top trials plus this fraction of the old width on each side."""
MIN_WIDTH_FRACTION = 0.2
"""A narrowed range keeps at least this fraction of the old width."""
WIDEN_FRACTION = 0.5
"""A range whose best trial sits at an edge grows past that edge by this fraction of its width."""

TopTrial = tuple[Mapping[str, ParamValue], float]


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _describe(p: RangeParam) -> str:
    return f"{_fmt(p.low)}..{_fmt(p.high)}{' (log)' if p.log else ''}"


def _to_space(p: RangeParam, x: float) -> float:
    return math.log(x) if p.log else x


def _from_space(p: RangeParam, t: float) -> float:
    return math.exp(t) if p.log else t


def _sig(x: float, up: bool) -> float:
    """``x`` rounded to 3 significant digits, up or down, so bounds read well."""
    if x == 0 or not math.isfinite(x):
        return x
    unit = 10.0 ** (math.floor(math.log10(abs(x))) - 2)
    if unit == 0.0:
        return x  # subnormal: no digits to round to
    k = math.ceil(x / unit - 1e-9) if up else math.floor(x / unit + 1e-9)
    return float(f"{k * unit:.3g}")


def _snap(p: RangeParam, low: float, high: float, values: list[float]) -> tuple[float, float]:
    """Put a new range onto what ``p`` can take (integers, the old step grid, 3 significant
    digits), still covering ``values``."""
    if p.step is not None:
        low = p.low + round((low - p.low) / p.step) * p.step
        high = p.low + round((high - p.low) / p.step) * p.step
    elif p.is_int:
        low, high = float(round(low)), float(round(high))
    else:
        low, high = _sig(low, up=False), _sig(high, up=True)
    if values:
        low, high = min(low, min(values)), max(high, max(values))
    if p.is_int and p.log:
        low = max(low, 1.0)
    return low, high


def _refine_range(p: RangeParam, values: list[float], best: float) -> tuple[RangeParam, str]:
    lo, hi = _to_space(p, p.low), _to_space(p, p.high)
    width = hi - lo
    ts = [_to_space(p, v) for v in values]
    tb = _to_space(p, best)
    at_low = tb - lo <= EDGE_FRACTION * width
    at_high = hi - tb <= EDGE_FRACTION * width
    if at_low or at_high:
        new_lo = lo - WIDEN_FRACTION * width if at_low else lo
        new_hi = hi + WIDEN_FRACTION * width if at_high else hi
        low, high = _from_space(p, new_lo), _from_space(p, new_hi)
        # A linear range that does not cross zero keeps its sign (a dropout rate, a layer count).
        if not p.log and p.low >= 0:
            low = max(low, 0.0)
        if p.is_int and not p.log and p.low >= 1:
            low = max(low, 1.0)
        low, high = _snap(p, low, high, values)
        edge = "low" if at_low else "high"
        bound = p.low if at_low else p.high
        widened = replace(p, low=low, high=high)
        if (low, high) == (p.low, p.high):
            return p, (f"{p.name}: the best trial ({_fmt(best)}) sits at the {edge} edge of "
                       f"{_describe(p)}, which cannot go past {_fmt(bound)}; kept the range")
        return widened, (f"{p.name}: the best trial ({_fmt(best)}) sits at the {edge} edge of "
                         f"{_describe(p)}; widened to {_describe(widened)} instead of narrowing")
    margin = MARGIN_FRACTION * width
    new_lo, new_hi = max(lo, min(ts) - margin), min(hi, max(ts) + margin)
    short = MIN_WIDTH_FRACTION * width - (new_hi - new_lo)
    if short > 0:  # the top trials agree closely: keep a minimum width, centred on them
        new_lo, new_hi = new_lo - short / 2, new_hi + short / 2
        if new_lo < lo:
            new_lo, new_hi = lo, new_hi + (lo - new_lo)
        if new_hi > hi:
            new_lo, new_hi = new_lo - (new_hi - hi), hi
    low = max(p.low, _from_space(p, new_lo))
    high = min(p.high, _from_space(p, new_hi))
    low, high = _snap(p, low, high, values)
    low, high = max(low, p.low), min(high, p.high)
    if high <= low or (low, high) == (p.low, p.high):
        return p, f"{p.name}: the top {len(values)} spread over {_describe(p)}; kept it"
    narrowed = replace(p, low=low, high=high)
    return narrowed, (f"{p.name}: narrowed {_describe(p)} to {_describe(narrowed)} around the "
                      f"top {len(values)}")


def refine_params(
    params: Mapping[str, ParamSpec], top_trials: Sequence[TopTrial], direction: Direction
) -> tuple[dict[str, ParamSpec], list[str]]:
    """New ranges from the parent's ``params`` and its ``top_trials`` (``(params, value)``
    pairs); the best of them by ``direction`` decides whether a range sits at an edge.

    Returns the new params and one note per param saying what changed and why.
    """
    if not top_trials:
        raise ValueError(f"top_trials must hold at least one trial, but got {top_trials=}")
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', but got {direction=}")
    sign = 1.0 if direction == "maximize" else -1.0
    best_params = max(top_trials, key=lambda tv: sign * tv[1])[0]
    out: dict[str, ParamSpec] = {}
    notes: list[str] = []
    for name, p in params.items():
        values = [t[0][name] for t in top_trials if name in t[0]]
        if not values or name not in best_params:
            out[name] = p
            notes.append(f"{name}: not in the top trials' params; kept it")
        elif isinstance(p, ChoiceParam):
            kept = tuple(v for v in p.values if v in values)
            out[name] = ChoiceParam(name, kept) if kept else p
            if len(kept) == len(p.values) or not kept:
                notes.append(f"{name}: the top trials used every value; kept {list(p.values)}")
            else:
                notes.append(f"{name}: kept {list(kept)}, the values the top "
                             f"{len(top_trials)} used")
        else:
            numbers = [float(v) for v in values if isinstance(v, int | float)
                       and not isinstance(v, bool)]
            best = best_params[name]
            if not numbers or not isinstance(best, int | float) or isinstance(best, bool):
                out[name] = p
                notes.append(f"{name}: the top trials hold no numbers for it; kept it")
                continue
            out[name], note = _refine_range(p, numbers, float(best))
            notes.append(note)
    return out, notes
