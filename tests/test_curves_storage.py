"""Curves written by a worker process are read back, complete, by another process."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tunesvc import CURVES_ATTR, Curves, EpochRecord, curves_of, service
from tunesvc.spec import parse_spec_dict


def test_round_trip_keeps_nan_out_of_json() -> None:
    curves = Curves()
    curves.append(EpochRecord(0, 2.3, 2.31, 0.1, None, 0.1, 0.0))
    curves.append(EpochRecord(1, math.nan, math.inf, 0.5, 0.4, 0.1, 1.5))
    data = curves.to_json()
    assert data["train_loss"] == [2.3, None] and data["val_acc"] == [None, 0.4]
    back = Curves.from_json(data)
    assert back.epoch == [0, 1] and math.isnan(back.train_loss[1]) and back.val_acc[1] == 0.4


def test_ragged_json_is_padded() -> None:
    back = Curves.from_json({"epoch": [0, 1, 2], "val_acc": [0.1], "train_loss": [1, 2, 3, 4]})
    assert len(back.val_acc) == 3 and math.isnan(back.val_acc[2])
    assert back.train_loss == [1.0, 2.0, 3.0]


def test_worker_curves_readable_from_another_process(storage_url: str, tmp_path: Path) -> None:
    spec = parse_spec_dict({"objective": "digits_mlp", "n_trials": 2, "epochs": 3,
                            "pruner": "none", "params": {"lr": {"values": [3e-3, 1e-2]}}})
    service.create_study("c", spec, storage_url)
    env = {**os.environ, "TUNESVC_STORAGE": storage_url}
    subprocess.run([sys.executable, "-m", "tunesvc", "study", "run", "c", "--quiet"],
                   check=True, env=env, cwd=tmp_path, timeout=300, capture_output=True)
    study = optuna.load_study(study_name="c", storage=storage_url)
    assert len(study.trials) == 2
    for trial in study.trials:
        curves = curves_of(trial)
        assert curves is not None and curves.epoch == [0, 1, 2, 3]
        for name in ("train_loss", "val_loss", "train_acc", "val_acc", "lr", "seconds"):
            column = getattr(curves, name)
            assert len(column) == 4 and all(math.isfinite(x) for x in column), name
        # epoch 0 is the untrained model: chance-level accuracy, loss near log(10)
        assert curves.val_acc[0] < 0.3 and curves.train_loss[0] == pytest.approx(math.log(10),
                                                                                 rel=0.15)
        # every epoch's report went through the worker's background writer before the trial
        # was told COMPLETE, in order, none lost
        assert trial.intermediate_values == pytest.approx(dict(enumerate(curves.val_acc)))
        assert isinstance(trial.user_attrs[CURVES_ATTR], dict)
