"""Mild faults on a model beyond the built-ins, fast subset: real training of the residual MLP on
synthetic 6-class data, one seed, each run checked by the suite's own ground-truth rule and then
diagnosed. The full suite, with both models, five seeds and the tables, is
``tests/benchmarks/bench_fault_suite.py``."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tunesvc.curves._curves import Curves
from tunesvc.curves._diagnosis import ADVICE, CLIMB_ADVICE, diagnose, diagnose_values

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _suite() -> ModuleType:
    path = Path(__file__).parent / "benchmarks" / "bench_fault_suite.py"
    spec = importlib.util.spec_from_file_location("bench_fault_suite", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


SUITE = _suite()
MODEL = SUITE.MODELS["resmlp_synth6"]
FAULTS = {f.name: f for f in SUITE.FAULTS}
# (fault, the label its curves must show and be diagnosed with)
CASES = [
    ("weight decay pulls it back", "diverged"),  # issue 15's slow climb
    ("step x0.1 at 25%", "decay_too_early"),  # issue 15: was read as plateau
    ("step x0.1 at 60%", "healthy"),  # flat before a late step: no plateau
    ("constant lr x0.3", "plateau"),
    ("too small or too regularized", "underfitting"),  # against the study's best
]


@pytest.fixture(scope="module")
def runs() -> dict[str, Curves]:
    names = ["defaults (cosine)"] + [name for name, _ in CASES]
    return {name: SUITE.run(MODEL, FAULTS[name], 0, 30, cache=False) for name in names}


def best_acc(c: Curves) -> float:
    return max(x for x in c.val_acc if math.isfinite(x))


@pytest.mark.parametrize(("name", "label"), CASES, ids=[c[0] for c in CASES])
def test_mild_fault_gets_its_label(runs: dict[str, Curves], name: str, label: str) -> None:
    curves = runs[name]
    reference = max(best_acc(c) for c in runs.values())
    assert SUITE.truth(FAULTS[name], curves, 6, reference) == label  # the run shows its fault
    d = diagnose(curves, num_classes=6, reference_acc=reference)
    assert d.label == label, d.reason
    if label == "diverged":
        assert d.advice == CLIMB_ADVICE
    if label == "underfitting":
        # Without the study's best to compare with, 0.8 train accuracy is no underfitting.
        assert diagnose(curves, num_classes=6).label != "underfitting"


def test_a_decay_ahead_holds_back_the_plateau(runs: dict[str, Curves]) -> None:
    """Mid-run, the step-at-60% run sits flat at a constant rate: a pruner that knows the
    decay is coming must not stop it as a plateau; one that does not know, does."""
    c = runs["step x0.1 at 60%"]
    blind, told = [], []
    for i in range(len(c.epoch)):
        ahead = any(x < c.lr[i] for x in c.lr[i + 1 :])
        blind.append(diagnose(SUITE.prefix(c, i), num_classes=6).label)
        told.append(diagnose(SUITE.prefix(c, i), num_classes=6, lr_decay_ahead=ahead).label)
    assert "plateau" in blind
    assert "plateau" not in told


def test_values_alone_never_claim_a_plateau(runs: dict[str, Curves]) -> None:
    for curves in runs.values():
        for values, direction in ((curves.val_acc, "maximize"), (curves.val_loss, "minimize")):
            d = diagnose_values(values, direction)  # type: ignore[arg-type]
            assert d.label in ("diverged", "bad_init", "inconclusive", "healthy"), d.reason
            assert d.advice != ADVICE["plateau"]
