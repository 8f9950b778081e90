"""One worker running the same spec and seed twice gives the same trials, pruning included:
states, values, outcomes and learning curves (wall times aside), exactly."""

from __future__ import annotations

import optuna
import pytest

from tunesvc import service
from tunesvc.spec import parse_spec_dict
from tunesvc.storage import attrs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trials(name: str, url: str) -> list[tuple[object, ...]]:
    out = []
    for t in optuna.load_study(study_name=name, storage=url).trials:
        curves = attrs.CURVES.get(t)
        assert curves is not None
        shape = {k: v for k, v in curves.to_json().items() if k != "seconds"}
        diagnosis = attrs.DIAGNOSIS.get(t)
        out.append((t.number, t.state, t.value, attrs.OUTCOME.get(t), t.params,
                    t.intermediate_values, shape, None if diagnosis is None else diagnosis.label))
    return out


def test_same_spec_and_seed_twice_give_the_same_trials(sqlite_url: str) -> None:
    spec = parse_spec_dict({
        "objective": "digits_mlp", "sampler": "random", "n_trials": 6, "epochs": 4,
        "seed": 7, "params": {"lr": {"low": 1e-4, "high": 1.0, "log": True},
                              "hidden": {"values": [16, 64]}},
    })
    for name in ("first", "second"):
        service.create_study(name, spec, sqlite_url)
        service.run_study(name, sqlite_url)
    first, second = _trials("first", sqlite_url), _trials("second", sqlite_url)
    assert first == second
    # The study prunes or stops some trials, so the decisions themselves were repeated.
    outcomes = {row[3] for row in first}
    assert outcomes - {"completed"}, outcomes
