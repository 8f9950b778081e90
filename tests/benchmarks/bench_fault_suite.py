"""Mild and textbook faults on models and data beyond the built-ins, diagnosed by tunesvc.

Two models tunesvc does not ship: a residual MLP with LayerNorm on synthetic 6-class data
(scikit-learn's ``make_classification``) and a small CNN on scikit-learn's bundled 8x8 digits
as images. Each fault is the model's defaults with one thing changed, in a mild form (what a user
meets) and a textbook form, trained for real through :func:`tunesvc._training.fit`, several
seeds. Each run's ground truth is checked from its curves by a rule of this file, independent of
tunesvc's rules (see :func:`truth`); a run whose curves do not show its intended fault is
relabelled healthy when they show nothing wrong, else dropped, and the tables say how many.

Printed per model and form: precision and recall per label of :func:`diagnose` (with the best
validation accuracy of the model's runs as ``reference_acc``, as a study's worker passes it),
and what was said instead; the values-only table (:func:`diagnose_values` on the validation
accuracy, then on the validation loss, alone); and the precision of the pruner's label-driven
decisions (prune at once, early stop) taken epoch by epoch as the curves grow.

Trained curves are cached under ``$TUNESVC_FAULT_CACHE`` (default
``/tmp/tunesvc-fault-suite``), so a rerun takes seconds.

Run: ``python tests/benchmarks/bench_fault_suite.py [--models resmlp_synth6 digits_cnn]
[--seeds 0 1 2 3 4] [--epochs 30]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tunesvc.curves._curves import Curves
from tunesvc.training._fit import TrainingSetup, fit

CACHE_VERSION = 1
"""Bump when a model, data set or fault changes, so cached curves are not reused."""


def _split(x: np.ndarray, y: np.ndarray, n_val: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    order = np.random.default_rng(0).permutation(len(y))
    val, train = order[:n_val], order[n_val:]
    t = torch.tensor
    return (t(x[train], dtype=torch.float32), t(y[train]), t(x[val], dtype=torch.float32),
            t(y[val]))


def synth6() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """6 classes, 20 features (12 informative), 2 clusters per class: 8000 train, 2000 val."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=10000, n_features=20, n_informative=12, n_redundant=4, n_classes=6,
        n_clusters_per_class=2, class_sep=1.5, flip_y=0.0, random_state=0,
    )
    x = (x - x.mean(0)) / x.std(0)
    return _split(x, y.astype(np.int64), 2000)


def digits_images() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's 8x8 digits as 1x8x8 images in [0, 1]: 1297 train, 500 val."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return _split(x, np.asarray(bunch.target, dtype=np.int64), 500)


class ResidualMLP(nn.Module):
    """Pre-norm residual MLP: ``blocks`` of LayerNorm -> Linear -> GELU -> Linear, skip added."""

    def __init__(self, d_in: int, width: int, d_out: int, blocks: int = 2) -> None:
        super().__init__()
        self.stem = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(),
                          nn.Linear(2 * width, width))
            for _ in range(blocks)
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, d_out)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        out: Tensor = self.head(self.norm(h))
        return out


def small_cnn(channels: int) -> nn.Module:
    c = channels
    return nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * c * 16, 10),
    )


@dataclass(frozen=True)
class Model:
    """A model and data set with its defaults: ``build(width, rows)`` gives its setup."""

    name: str
    num_classes: int
    width: int
    build: Callable[[int, int | None], TrainingSetup]


def _resmlp(width: int, rows: int | None) -> TrainingSetup:
    xt, yt, xv, yv = synth6()
    if rows is not None:
        xt, yt = xt[:rows], yt[:rows]
    return TrainingSetup(
        model=lambda: ResidualMLP(20, width, 6), train=(xt, yt), val=(xv, yv),
        optimizer="adamw", lr=3e-3, weight_decay=1e-2, schedule="cosine", batch_size=256,
        num_classes=6,
    )


def _cnn(width: int, rows: int | None) -> TrainingSetup:
    xt, yt, xv, yv = digits_images()
    if rows is not None:
        xt, yt = xt[:rows], yt[:rows]
    return TrainingSetup(
        model=lambda: small_cnn(width), train=(xt, yt), val=(xv, yv),
        optimizer="adamw", lr=3e-3, weight_decay=1e-4, schedule="cosine", batch_size=64,
        num_classes=10,
    )


MODELS = {
    "resmlp_synth6": Model("resmlp_synth6", 6, 64, _resmlp),
    "digits_cnn": Model("digits_cnn", 10, 16, _cnn),
}


def last_layer(m: nn.Module) -> nn.Module:
    layers = [x for x in m.modules() if isinstance(x, nn.Linear | nn.Conv2d)]
    return layers[-1]


def scaled(setup: TrainingSetup, factor: float, *, only_last: bool = False) -> TrainingSetup:
    """``setup`` with its Linear, Conv and LayerNorm weights and biases (or the last layer's)
    times ``factor``."""
    make = setup.model
    assert not isinstance(make, nn.Module)

    def model() -> nn.Module:
        m = make()
        layers = [last_layer(m)] if only_last else [
            x for x in m.modules() if isinstance(x, nn.Linear | nn.Conv2d | nn.LayerNorm)
        ]
        with torch.no_grad():
            for layer in layers:
                assert isinstance(layer, nn.Linear | nn.Conv2d | nn.LayerNorm)
                layer.weight.mul_(factor)
                if layer.bias is not None:
                    layer.bias.mul_(factor)
        return m

    return replace(setup, model=model)


@dataclass(frozen=True)
class Fault:
    """One recipe: ``make(model)`` is the model's setup with one thing changed."""

    name: str
    label: str
    form: str  # "mild" or "textbook"
    make: Callable[[Model], TrainingSetup]


def _d(m: Model, **changes: Any) -> TrainingSetup:
    """The model's defaults with ``changes`` (``width`` and ``rows`` go to its build)."""
    setup = m.build(changes.pop("width", m.width), changes.pop("rows", None))
    if "lr_x" in changes:
        changes["lr"] = setup.lr * changes.pop("lr_x")
    return replace(setup, **changes)


def _step(m: Model, at: float, gamma: float) -> TrainingSetup:
    return _d(m, schedule="step", step_at=at, gamma=gamma)


def _tiny_init(m: Model, factor: float, lr: float) -> TrainingSetup:
    """Every layer's weights times ``factor``, trained by SGD without weight decay: SGD's steps
    shrink with the gradient, so a small start sits near the zero saddle before it learns."""
    return scaled(_d(m, optimizer="sgd", lr=lr, weight_decay=0.0), factor)


def _overfit(m: Model, rows: int, batch_size: int, schedule: str, width: int | None = None
             ) -> TrainingSetup:
    """``rows`` train rows, no weight decay (the CNN also twice as wide: digits are easy)."""
    return _d(m, rows=rows, weight_decay=0.0, batch_size=batch_size, schedule=schedule,
              width=width or m.width)


PerModel = dict[str, Callable[[Model], TrainingSetup]]


def _per_model(recipes: PerModel) -> Callable[[Model], TrainingSetup]:
    return lambda m: recipes[m.name](m)


FAULTS: list[Fault] = [
    Fault("defaults (cosine)", "healthy", "textbook", _d),
    Fault("cosine, lr x3", "healthy", "mild", lambda m: _d(m, lr_x=3.0)),
    Fault("step x0.1 at 60%", "healthy", "mild", lambda m: _step(m, 0.6, 0.1)),
    Fault("last layer x20", "bad_initial_loss", "textbook", _per_model({
        "resmlp_synth6": lambda m: scaled(_d(m), 20.0, only_last=True),
        "digits_cnn": lambda m: scaled(_d(m), 100.0, only_last=True),
    })),
    Fault("last layer x5", "bad_initial_loss", "mild", _per_model({
        "resmlp_synth6": lambda m: scaled(_d(m), 5.0, only_last=True),
        "digits_cnn": lambda m: scaled(_d(m), 40.0, only_last=True),
    })),
    Fault("lr x1000", "diverged", "textbook", lambda m: _d(m, lr_x=1000.0)),
    # SGD just below the learning rate that blows up at once: it learns, then loses it.
    Fault("sgd at the edge of stability", "diverged", "mild", _per_model({
        "resmlp_synth6": lambda m: _d(m, optimizer="sgd", lr=1.0, schedule="constant"),
        "digits_cnn": lambda m: _d(m, optimizer="sgd", lr=0.5, schedule="constant"),
    })),
    # AdamW's decoupled decay shrinks the weights by lr * weight_decay per step whatever the
    # gradient: strong enough, it undoes what the gradient learned, slowly (issue 15's slow
    # climb: train loss back up towards log(classes), train accuracy back towards chance).
    Fault("weight decay pulls it back", "diverged", "mild", _per_model({
        "resmlp_synth6": lambda m: _d(m, weight_decay=10.0),
        "digits_cnn": lambda m: _d(m, lr=0.01, weight_decay=30.0, schedule="constant"),
    })),
    # A small init under SGD sits near the zero saddle before it learns; LayerNorm rescales
    # small activations, so the residual MLP needs its LayerNorm weights small too.
    Fault("tiny init, sgd", "bad_init", "textbook", _per_model({
        "resmlp_synth6": lambda m: _tiny_init(m, 1e-4, 0.05),
        "digits_cnn": lambda m: _tiny_init(m, 0.15, 0.05),
    })),
    Fault("small init, sgd", "bad_init", "mild", _per_model({
        "resmlp_synth6": lambda m: _tiny_init(m, 5e-4, 0.05),
        "digits_cnn": lambda m: _tiny_init(m, 0.25, 0.05),
    })),
    Fault("constant lr", "plateau", "textbook", lambda m: _d(m, schedule="constant")),
    Fault("constant lr x0.3", "plateau", "mild",
          lambda m: _d(m, lr_x=0.3, schedule="constant")),
    Fault("step x0.01 at 10%", "decay_too_early", "textbook", lambda m: _step(m, 0.1, 0.01)),
    Fault("step x0.1 at 25%", "decay_too_early", "mild", lambda m: _step(m, 0.25, 0.1)),
    Fault("few rows, no regularization", "overfitting", "textbook", _per_model({
        "resmlp_synth6": lambda m: _overfit(m, 60, 10, "constant"),
        "digits_cnn": lambda m: _overfit(m, 30, 3, "constant", width=32),
    })),
    Fault("fewer rows, no weight decay", "overfitting", "mild", _per_model({
        "resmlp_synth6": lambda m: _overfit(m, 600, 32, "cosine"),
        "digits_cnn": lambda m: _overfit(m, 60, 6, "constant", width=32),
    })),
    Fault("lr x0.0001", "underfitting", "textbook",
          lambda m: _d(m, lr_x=1e-4, schedule="constant")),
    Fault("too small or too regularized", "underfitting", "mild", _per_model({
        "resmlp_synth6": lambda m: _d(m, width=8),
        "digits_cnn": lambda m: _d(m, weight_decay=10.0),
    })),
]
"""Every recipe, on every model. Digits are easy: a 1-channel CNN still reaches 0.9, so the
CNN's underfitting is its weight decay; the residual MLP's is its width (8, as in issue 15)."""


def cache_dir() -> Path:
    return Path(os.environ.get("TUNESVC_FAULT_CACHE") or "/tmp/tunesvc-fault-suite")


def run(model: Model, fault: Fault, seed: int, epochs: int, *, cache: bool = True) -> Curves:
    """Curves of one real training run, from the cache when this exact run was trained before
    (``cache``; tests train afresh)."""
    key = f"v{CACHE_VERSION}-{model.name}-{fault.name}-{seed}-{epochs}"
    path = cache_dir() / (key.replace(" ", "_").replace("/", "_") + ".json")
    if cache:
        try:
            return Curves.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError):
            pass
    curves = fit(fault.make(model), epochs=epochs, seed=seed, device="cpu").curves
    if not cache:
        return curves
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(curves.to_json()))
    os.replace(tmp, path)
    return curves


# Ground truth: what a run's curves show, by rules of this file written from the faults'
# mechanisms, independent of tunesvc's rules (other quantities, other thresholds).

def shows(label: str, c: Curves, num_classes: int, reference: float) -> bool:
    """Whether the curves ``c`` of one run show ``label`` (``reference``: the model's best
    validation accuracy over the suite)."""
    n = len(c.epoch)
    tl, ta, va, vl, lr = c.train_loss, c.train_acc, c.val_acc, c.val_loss, c.lr
    chance = 1 / num_classes
    if label == "bad_initial_loss":
        return abs(tl[0] - math.log(num_classes)) > 0.5 * math.log(num_classes)
    if label == "diverged":
        if not all(math.isfinite(x) for x in tl + vl):
            return True
        if max(tl[1:]) >= 2.5 * tl[0]:
            return True  # a blow-up, recovered or not
        fell_back = max(ta) - ta[-1] >= 0.2 and (
            tl[-1] >= 1.2 * min(tl) or ta[-1] <= chance + 0.05
        )
        stuck_after_spike = max(tl[1:4]) >= 1.5 * tl[0] and max(ta[-5:]) <= chance + 0.05
        return fell_back or stuck_after_spike
    if label == "bad_init":
        flat = all(abs(x - tl[0]) <= 0.02 * tl[0] for x in tl[:4])
        return flat and min(tl) <= 0.75 * tl[0]
    if label == "plateau":  # the mean of the last 30% of epochs no better than the 30% before
        k = max(3, round(0.3 * (n - 1)))
        return (
            max(lr) == min(lr)
            and max(va) - va[0] >= 0.2
            and sum(va[-k:]) / k - sum(va[-2 * k : -k]) / k < 0.01
        )
    if label == "decay_too_early":
        drops = [i for i in range(1, n) if lr[i] <= lr[i - 1] / 5]
        if not drops or drops[0] - 1 > 0.3 * (n - 1):
            return False
        settled = min(drops[0] + 3, n - 1)
        return max(va[settled:]) - va[settled] < 0.015 and va[settled] - va[0] >= 0.2
    if label == "overfitting":
        m = min(range(n), key=lambda i: vl[i])
        return (
            m < 0.75 * (n - 1)
            and vl[-1] >= 1.1 * vl[m]
            and tl[-1] < tl[m]
            and ta[-1] - va[-1] >= 0.08
        )
    if label == "underfitting":
        return (
            max(va) <= reference - 0.08
            and abs(ta[-1] - va[-1]) <= 0.05
            and not shows("diverged", c, num_classes, reference)
        )
    if label == "healthy":
        faults = ("bad_initial_loss", "diverged", "bad_init", "plateau", "decay_too_early",
                  "overfitting")
        return max(va) >= reference - 0.04 and not any(
            shows(f, c, num_classes, reference) for f in faults
        )
    raise ValueError(label)


def truth(fault: Fault, c: Curves, num_classes: int, reference: float) -> str | None:
    """The run's label: its fault's when its curves show it, ``healthy`` when they show no
    fault at all (a mild fault that did no harm), else ``None`` (dropped)."""
    if shows(fault.label, c, num_classes, reference):
        return fault.label
    return "healthy" if shows("healthy", c, num_classes, reference) else None


@dataclass
class Run:
    model: Model
    fault: Fault
    seed: int
    curves: Curves
    truth: str | None = None


def prefix(c: Curves, upto: int) -> Curves:
    """The curves as they stood after evaluation ``upto`` (0-based index)."""
    return Curves(**{k: list(v[: upto + 1]) for k, v in vars(c).items()})


def precision_recall(pairs: list[tuple[str, str]]) -> dict[str, tuple[float, float, int]]:
    """Per expected label: (precision, recall, support) from (expected, predicted) pairs."""
    out = {}
    for label in sorted({e for e, _ in pairs}):
        tp = sum(1 for e, p in pairs if e == label and p == label)
        predicted = sum(1 for _, p in pairs if p == label)
        actual = sum(1 for e, _ in pairs if e == label)
        out[label] = (tp / predicted if predicted else 0.0, tp / actual, actual)
    return out


def label_table(pairs: list[tuple[str, str]]) -> list[str]:
    lines = ["| label | precision | recall | runs | said instead |", "|---|---|---|---|---|"]
    for label, (p, r, n) in precision_recall(pairs).items():
        instead = Counter(got for e, got in pairs if e == label and got != label)
        said = ", ".join(f"{k} {v}" for k, v in instead.most_common()) or "-"
        lines.append(f"| {label} | {p:.2f} | {r:.2f} | {n} | {said} |")
    foreign = Counter(p for e, p in pairs if p not in {e for e, _ in pairs})
    if foreign:
        lines.append(f"| (not in the suite) | - | - | - | {dict(foreign)} |")
    return lines


VALUES_OK = {
    "diverged": {"diverged", "inconclusive"},
    "bad_init": {"bad_init"},
    "bad_initial_loss": {"healthy", "inconclusive"},
    "underfitting": {"healthy", "inconclusive"},
    "healthy": {"healthy", "inconclusive"},
}
"""What a diagnosis from one reported curve may honestly say of a run with each true label:
what the curve shows (a collapse, a flat start), ``inconclusive`` for what needs the LR or
train curves, ``healthy`` where the curve itself shows nothing wrong. Labels not listed:
``inconclusive`` only."""


def values_table(runs: list[Run]) -> list[str]:
    """diagnose_values on the validation accuracy (maximize) and loss (minimize) alone."""
    from tunesvc.curves._diagnosis import diagnose_values

    said: dict[tuple[str, str], Counter[str]] = {}
    for r in runs:
        assert r.truth is not None
        for metric, direction in (("val_acc", "maximize"), ("val_loss", "minimize")):
            values = getattr(r.curves, metric)
            d = diagnose_values(values, direction, steps=r.curves.epoch)  # type: ignore[arg-type]
            said.setdefault((r.truth, metric), Counter())[d.label] += 1
    lines = ["| true label | curve | runs | named it | honest | what it said |",
             "|---|---|---|---|---|---|"]
    for (label, metric), counts in sorted(said.items()):
        ok = VALUES_OK.get(label, {"inconclusive"})
        honest = sum(v for k, v in counts.items() if k in ok)
        named = str(counts[label]) if label in ok else "-"
        text = ", ".join(f"{k} {v}" for k, v in counts.most_common())
        lines.append(
            f"| {label} | {metric} | {sum(counts.values())} | {named} | {honest} | {text} |"
        )
    return lines


PRUNE_LABELS = ("diverged", "bad_initial_loss")
STOP_LABELS = ("overfitting", "plateau")


def decisions_table(runs: list[Run], *, values_only: bool = False,
                    schedule_known: bool = False) -> list[str]:
    """The label-driven part of LearningCurvePruner, epoch by epoch as the curves grow: the
    first epoch whose diagnosis prunes (diverged, bad_initial_loss) or early-stops (overfitting,
    plateau) ends the run. Right when the run's true label is one of that action's labels;
    ``lost`` is the best validation accuracy the whole run reached minus the best at the
    decision (what stopping there gave up). ``schedule_known``: the diagnosis is told whether
    the learning rate will still fall (``lr_decay_ahead``), as a runner that knows the schedule
    can tell it."""
    from tunesvc.curves._diagnosis import diagnose, diagnose_values

    rows: dict[str, list[tuple[bool, float, str]]] = {"prune": [], "early_stop": []}
    for r in runs:
        c = r.curves
        for i in range(len(c.epoch)):
            if values_only:
                d = diagnose_values(c.val_acc[: i + 1], "maximize", steps=c.epoch[: i + 1])
            else:
                ahead = schedule_known and any(x < c.lr[i] for x in c.lr[i + 1 :])
                d = diagnose(prefix(c, i), num_classes=r.model.num_classes,
                             lr_decay_ahead=ahead)
            action = ("prune" if d.label in PRUNE_LABELS
                      else "early_stop" if d.label in STOP_LABELS else None)
            if action is None:
                continue
            best = [x for x in c.val_acc if math.isfinite(x)]
            upto = [x for x in c.val_acc[: i + 1] if math.isfinite(x)]
            lost = (max(best) - max(upto)) if best and upto else 0.0
            right = r.truth in (PRUNE_LABELS if action == "prune" else STOP_LABELS)
            rows[action].append((right, lost, f"{r.truth} as {d.label}"))
            break
    lines = ["| action | decisions | right | precision | wrong ones (true as said) | "
             "lost >= 0.01 | mean lost | max lost |", "|---|---|---|---|---|---|---|---|"]
    for action, got in rows.items():
        if not got:
            lines.append(f"| {action} | 0 | 0 | - | - | - | - | - |")
            continue
        right = sum(1 for ok, _, _ in got if ok)
        wrong = Counter(what for ok, _, what in got if not ok)
        lost = [x for _, x, _ in got]
        lines.append(
            f"| {action} | {len(got)} | {right} | {right / len(got):.2f} | "
            f"{', '.join(f'{k} {v}' for k, v in wrong.most_common()) or '-'} | "
            f"{sum(1 for x in lost if x >= 0.01)} | {sum(lost) / len(lost):.3f} | "
            f"{max(lost):.3f} |"
        )
    return lines


def main() -> None:
    from tunesvc.curves._diagnosis import LABELS, diagnose

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--verbose", action="store_true", help="one line per run")
    args = parser.parse_args()
    torch.set_num_threads(1)

    started = time.perf_counter()
    runs: list[Run] = []
    for name in args.models:
        model = MODELS[name]
        for fault in FAULTS:
            for seed in args.seeds:
                runs.append(Run(model, fault, seed, run(model, fault, seed, args.epochs)))
    print(f"{len(runs)} runs trained or read from {cache_dir()} in "
          f"{time.perf_counter() - started:.0f} s; {args.epochs} epochs, seeds {args.seeds}\n")

    for name in args.models:
        model = MODELS[name]
        mine = [r for r in runs if r.model is model]
        reference = max(max((x for x in r.curves.val_acc if math.isfinite(x)), default=0.0)
                        for r in mine)
        kept: list[Run] = []
        for form in ("mild", "textbook"):
            pairs: list[tuple[str, str]] = []
            relabelled = dropped = 0
            for r in (r for r in mine if r.fault.form == form):
                r.truth = truth(r.fault, r.curves, model.num_classes, reference)
                if r.truth is None:
                    dropped += 1
                    if args.verbose:
                        print(f"DROP {name} | {r.fault.name} | seed {r.seed}")
                    continue
                relabelled += r.truth != r.fault.label
                d = diagnose(r.curves, num_classes=model.num_classes, reference_acc=reference)
                pairs.append((r.truth, d.label))
                kept.append(r)
                if args.verbose or d.label != r.truth:
                    mark = "ok  " if d.label == r.truth else "MISS"
                    print(f"{mark} {name} | {r.fault.name} | seed {r.seed} | true {r.truth}: "
                          f"{d.label}: {d.reason}")
            print(f"\n### {name}, {form} faults (reference_acc {reference:.3f}; "
                  f"{len(pairs)} runs kept, {relabelled} relabelled healthy, {dropped} dropped "
                  "as not showing their fault)\n")
            print("\n".join(label_table(pairs)) + "\n")
            assert {p for _, p in pairs} <= set(LABELS)
        print(f"### {name}, values only: diagnose_values on one validation curve "
              "(mild and textbook pooled)\n")
        print("\n".join(values_table(kept)) + "\n")
        for what, kwargs in (
            ("curves, as the pruner decides today", {}),
            ("curves, the schedule known (lr_decay_ahead)", {"schedule_known": True}),
            ("values only: the validation accuracy", {"values_only": True}),
        ):
            print(f"### {name}, the pruner's label-driven decisions epoch by epoch ({what}; "
                  "mild and textbook pooled)\n")
            print("\n".join(decisions_table(kept, **kwargs)) + "\n")


if __name__ == "__main__":
    main()
