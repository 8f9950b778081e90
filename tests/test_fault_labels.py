"""The labelled fault-injection suite, fast subset: real training of digits_mlp with each fault,
two seeds, every run diagnosed with its fault's label. The full suite with precision and recall
per label is ``tests/benchmarks/bench_fault_labels.py``."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tunesvc.curves._diagnosis import diagnose


def _bench() -> ModuleType:
    path = Path(__file__).parent / "benchmarks" / "bench_fault_labels.py"
    spec = importlib.util.spec_from_file_location("bench_fault_labels", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _bench()
EPOCHS = 15


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: threads only add contention on 2 cores
    yield None
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("name", "expected", "fault"), BENCH.FAULTS, ids=[f[0] for f in BENCH.FAULTS]
)
def test_fault_gets_its_label(name: str, expected: str, fault: object) -> None:
    labels = []
    for seed in (0, 1):
        d = diagnose(BENCH.run("digits_mlp", fault, seed, EPOCHS), num_classes=10)
        labels.append((d.label, d.reason))
    assert [label for label, _ in labels] == [expected, expected], labels


def test_precision_recall() -> None:
    pairs = [("a", "a"), ("a", "b"), ("b", "b"), ("b", "b")]
    assert BENCH.precision_recall(pairs) == {"a": (1.0, 0.5, 2), "b": (2 / 3, 1.0, 2)}
