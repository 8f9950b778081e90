"""The built-in objectives: module protocol, offline data, and a short real training run each."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tunesvc._errors import ObjectiveError
from tunesvc.curves import CURVE_NAMES
from tunesvc.training import METRIC_DIRECTIONS, TrainingSetup, fit

REPO = Path(__file__).resolve().parent.parent
NAMES = ["digits_mlp", "mnist1d_mlp", "mnist1d_cnn"]
CACHE = "mnist1d_n5000_seed42.npz"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Runs in a fresh interpreter whose cwd is an empty folder: any socket use raises.
_GENERATE_OFFLINE = """
import sys

def no_network(event, args):
    if event.startswith("socket.") or event == "urllib.Request":
        raise RuntimeError(f"network use during data generation: {event}")

sys.addaudithook(no_network)
from objectives._data import mnist1d
x, y, xv, yv = mnist1d()
print(tuple(x.shape), tuple(xv.shape), int(y.min()), int(y.max()))
"""


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """MNIST-1D generated once, in a subprocess, cwd and cache dir both temporary."""
    cwd = tmp_path_factory.mktemp("cwd")
    data = tmp_path_factory.mktemp("data")
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "TUNESVC_DATA_DIR": str(data), "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-c", _GENERATE_OFFLINE],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return cwd, data, done.stdout


@pytest.fixture
def data_dir(generated: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TUNESVC_DATA_DIR", str(generated[1]))
    return generated[1]


def test_mnist1d_is_generated_offline_into_the_data_dir_only(
    generated: tuple[Path, Path, str],
) -> None:
    cwd, data, stdout = generated
    assert stdout.split() == ["(4000,", "40)", "(1000,", "40)", "0", "9"]
    assert list(cwd.iterdir()) == []  # nothing written where it ran (no mnist1d pickle)
    assert [p.name for p in data.iterdir()] == [CACHE]


def test_mnist1d_second_load_reuses_the_cache(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from objectives._data import mnist1d

    x, y, xv, yv = mnist1d()
    marked = tmp_path / "marked"
    marked.mkdir()
    np.savez(
        marked / CACHE,
        x=np.full((3, 40), 7.0, np.float32), y=np.zeros(3, np.int64),
        x_test=x[:2].numpy(), y_test=yv[:2].numpy(),
    )  # fmt: skip
    monkeypatch.setenv("TUNESVC_DATA_DIR", str(marked))
    again = mnist1d()
    assert again[0].shape == (3, 40) and float(again[0][0, 0]) == 7.0


def _objective(name: str) -> ModuleType:
    return importlib.import_module(f"objectives.{name}")


@pytest.mark.parametrize("name", NAMES)
def test_objective_module_protocol(name: str) -> None:
    module = _objective(name)
    assert module.METRIC in CURVE_NAMES
    assert METRIC_DIRECTIONS[module.METRIC] == module.DIRECTION
    assert isinstance(module.EPOCHS, int) and module.EPOCHS > 0
    assert set(module.SEARCH_SPACE) <= set(module.DEFAULTS)
    for spec in module.SEARCH_SPACE.values():
        assert "values" in spec or {"low", "high"} <= spec.keys()


@pytest.mark.parametrize("name", NAMES)
def test_defaults_train_for_two_epochs(name: str, data_dir: Path) -> None:
    module = _objective(name)
    setup = module.build(dict(module.DEFAULTS))
    assert isinstance(setup, TrainingSetup)

    result = fit(setup, epochs=2, seed=0, device="cpu", metric=module.METRIC)

    assert not result.diverged
    acc = result.curves.val_acc
    assert acc[0] < 0.25  # ten classes, untrained
    assert acc[2] > acc[0] + 0.2
    assert result.num_classes == 10


@pytest.mark.parametrize("name", NAMES)
def test_build_names_an_unknown_param(name: str, data_dir: Path) -> None:
    with pytest.raises(ObjectiveError, match="has no param 'lrate'"):
        _objective(name).build({"lrate": 0.1})


def test_build_applies_params_over_defaults() -> None:
    setup = _objective("digits_mlp").build({"lr": 0.05, "optimizer": "sgd"})
    assert (setup.lr, setup.optimizer, setup.weight_decay) == (0.05, "sgd", 1e-4)
