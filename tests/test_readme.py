"""The README's example objectives run as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tunesvc import service
from tunesvc.spec import parse_spec_dict

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"```python\n# (\w+\.py)\n(.*?)```", re.S)


def examples() -> dict[str, str]:
    return {name: body for name, body in BLOCK.findall(README.read_text())}


def test_readme_has_both_examples() -> None:
    assert set(examples()) == {"my_objective.py", "plain_objective.py"}
    assert len(examples()["my_objective.py"].splitlines()) <= 40


@pytest.mark.parametrize(("name", "ref", "extra"), [
    ("my_objective.py", "{path}", {"epochs": 3}),
    ("plain_objective.py", "{path}:objective", {"direction": "maximize"}),
])
def test_readme_example_runs(tmp_path: Path, sqlite_url: str, name: str, ref: str,
                             extra: dict[str, object]) -> None:
    path = tmp_path / name
    path.write_text(examples()[name])
    spec = parse_spec_dict({"objective": ref.format(path=path), "n_trials": 2,
                            "pruner": "none", **extra})
    service.create_study("readme", spec, sqlite_url)
    summary = service.run_study("readme", sqlite_url)
    assert [t.state for t in summary.ran] == ["COMPLETE", "COMPLETE"]
    assert summary.best is not None and summary.best.value is not None
    assert summary.best.value > 0.5


RECIPE = re.compile(r"## The recipe\n+```sh\n(.*?)```", re.S)
SPEC_BLOCK = re.compile(r"```toml\n(.*?)```", re.S)
# Each README number, and the smaller one the test runs instead (every key must be found).
SHRINK = {
    "n_trials = 16": "n_trials = 2",
    "epochs = 10": "epochs = 1",
    "--n-trials 24": "--n-trials 2",
    "--epochs 5": "--epochs 1",
    "--budget small": "--budget tiny,coarse_trials=2,coarse_epochs=1,top=1,refine_trials=1,"
                      "refine_epochs=1,final_epochs=1",
}


def test_the_recipe_runs_in_a_fresh_folder_after_the_examples_above_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_torch_thread: None
) -> None:
    """What a new user does: create `coarse` from the random example's spec file, then follow
    the recipe top to bottom, in a fresh folder on the default storage (each budget shrunk, as
    SHRINK lists, so that this takes seconds; the dashboard, which serves until stopped, is
    left out). Before issue 14 the recipe created `coarse` a second time."""
    from typer.testing import CliRunner

    from tunesvc.cli import app

    text = README.read_text()
    found = {key for key in SHRINK if key in text}
    assert found == set(SHRINK), f"README no longer says {set(SHRINK) - found}"
    (random_spec,) = [b for b in SPEC_BLOCK.findall(text) if 'sampler = "random"' in b]
    (block,) = RECIPE.findall(text)
    lines = [shlex.split(line, comments=True) for line in block.splitlines()]
    assert lines[-1] == ["tunesvc", "dashboard"]
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    monkeypatch.chdir(fresh)
    for key, value in SHRINK.items():
        random_spec = random_spec.replace(key, value)
    (fresh / "coarse.toml").write_text(random_spec)
    commands = [["tunesvc", "study", "create", "coarse", "--spec", "coarse.toml"],
                ["tunesvc", "study", "run", "coarse", "--quiet"], *lines[:-1]]
    for words in commands:
        line = " ".join(words)
        for key, value in SHRINK.items():
            line = line.replace(key, value)
        args = shlex.split(line)
        assert args[0] == "tunesvc"
        result = CliRunner().invoke(app, args[1:])
        assert result.exit_code == 0, f"{line}: {result.output}"
    assert [p.name for p in (fresh / "reports").iterdir()] == ["lr-fine.html"]
    assert sorted(p.name for p in fresh.iterdir()) == ["coarse.toml", "reports", "storage"]
