"""The README's example objectives run as written."""

from __future__ import annotations

import re
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
