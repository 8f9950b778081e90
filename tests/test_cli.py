"""The CLI through Typer's runner, and end to end through the installed `tunesvc` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesvc.cli import app

PLAIN = "tests/objectives_fixtures/plain.py"
runner = CliRunner()


def cli(*args: str, storage: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--storage", storage])
    return result.exit_code, result.stdout, result.stderr


def test_create_run_best_trials_json(storage_url: str, tmp_path: Path) -> None:
    spec = tmp_path / "grid.toml"
    spec.write_text(f'objective = "{PLAIN}:quadratic"\nsampler = "grid"\npruner = "none"\n'
                    "[params]\nx = { low = 0.0, high = 4.0, points = 3 }\ny = [0, 1]\n")
    code, out, _ = cli("study", "create", "g", "--spec", str(spec), storage=storage_url)
    assert code == 0 and "6 trials queued (grid" in out
    code, out, _ = cli("study", "run", "g", storage=storage_url)
    assert code == 0 and "ran 6 trials; 0 still queued; 6 complete" in out
    code, out, _ = cli("study", "run", "g", storage=storage_url)
    assert code == 0 and "study 'g' is finished" in out
    code, out, _ = cli("study", "best", "g", "--json", storage=storage_url)
    best = json.loads(out)
    assert code == 0 and best["number"] >= 0 and best["state"] == "COMPLETE"
    assert best["params"] == {"x": 2.0, "y": 0} and best["value"] == 0.0
    code, out, _ = cli("study", "trials", "g", "--json", storage=storage_url)
    trials = json.loads(out)
    assert len(trials) == 6 and {t["state"] for t in trials} == {"COMPLETE"}
    assert all({"number", "value", "params", "state", "diagnosis"} <= set(t) for t in trials)
    code, out, _ = cli("study", "list", "--json", storage=storage_url)
    assert [s["name"] for s in json.loads(out)] == ["g"]
    code, out, _ = cli("study", "show", "g", storage=storage_url)
    assert code == 0 and "6/6 done: 6 complete" in out


def test_create_from_options(storage_url: str) -> None:
    code, out, err = cli("study", "create", "o", "--objective", f"{PLAIN}:log_lr",
                         "--direction", "maximize", "--sampler", "grid", "--pruner", "none",
                         "--param", "lr=1e-4..1e-1,log,points=4", storage=storage_url)
    assert code == 0, err
    code, out, _ = cli("study", "run", "o", "--json", storage=storage_url)
    lrs = sorted(t["params"]["lr"] for t in json.loads(out)["ran"])
    assert lrs == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["study", "create", "x", "--objective", "nope"], "unknown objective 'nope'", 2),
        (["study", "create", "x", "--objective", "digits_mlp", "--sampler", "tpe"],
         "sampler: expected one of grid, random, got 'tpe'", 2),
        (["study", "create", "x", "--objective", "digits_mlp", "--param", "lr=0..1,log"],
         "params.lr: log = true needs low > 0, got low = 0", 2),
        (["study", "create", "x", "--objective", "digits_mlp", "--param", "lr=1..1"],
         "params.lr: low must be below high", 2),
        (["study", "create", "x", "--objective", "digits_mlp", "--sampler", "grid",
          "--param", "dropout=0.0..0.5"], "params.dropout: a grid needs finite points", 2),
        (["study", "create", "x"], "give --spec FILE or --objective NAME", 2),
        (["study", "run", "ghost"], "no study 'ghost'", 4),
        (["study", "show", "ghost"], "no study 'ghost'", 4),
        (["study", "best", "ghost"], "no study 'ghost'", 4),
    ],
)
def test_bad_input_is_one_line(sqlite_url: str, args: list[str], message: str, code: int) -> None:
    exit_code, out, err = cli(*args, storage=sqlite_url)
    assert exit_code == code
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert cli("study", "list", "--json", storage=sqlite_url)[1].strip() == "[]"


def test_existing_study_and_bad_storage(sqlite_url: str) -> None:
    args = ["study", "create", "e", "--objective", f"{PLAIN}:quadratic", "--n-trials", "1"]
    assert cli(*args, storage=sqlite_url)[0] == 0
    code, _, err = cli(*args, storage=sqlite_url)
    assert code == 4 and "study 'e' already exists" in err
    code, _, err = cli("study", "list", storage="postgresql://me:hunter2@127.0.0.1:1/db")
    assert code == 3 and "hunter2" not in err and "127.0.0.1:1" in err and "'db'" in err


def test_delete_needs_yes_without_a_terminal(sqlite_url: str) -> None:
    assert cli("study", "create", "d", "--objective", f"{PLAIN}:quadratic", "--n-trials", "1",
               storage=sqlite_url)[0] == 0
    code, _, err = cli("study", "delete", "d", storage=sqlite_url)
    assert code == 2 and "without --yes" in err
    assert cli("study", "delete", "d", "--yes", storage=sqlite_url)[0] == 0
    assert cli("study", "list", "--json", storage=sqlite_url)[1].strip() == "[]"


def test_installed_command_end_to_end(tmp_path: Path) -> None:
    """The installed `tunesvc` in a subprocess, on the default storage in a fresh folder."""
    exe = Path(sys.executable).parent / "tunesvc"
    env = {k: v for k, v in os.environ.items() if k != "TUNESVC_STORAGE"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), *args], cwd=tmp_path, env=env, text=True,
                              capture_output=True, timeout=300)

    created = run("study", "create", "demo", "--objective", "digits_mlp", "--n-trials", "3",
                  "--epochs", "3")
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "storage" / "tunesvc.db").is_file()
    ran = run("study", "run", "demo", "--quiet")
    assert ran.returncode == 0, ran.stderr
    trials = json.loads(run("study", "trials", "demo", "--json").stdout)
    assert len(trials) == 3 and all(t["state"] in ("COMPLETE", "PRUNED") for t in trials)
    assert all(t["diagnosis"]["label"] for t in trials)
    best = json.loads(run("study", "best", "demo", "--json").stdout)
    assert 0.5 < best["value"] <= 1.0
    bad = run("study", "create", "x", "--objective", "digits_mlp", "--param", "lr=0..1,log")
    assert bad.returncode == 2 and bad.stderr.startswith("error: params.lr: log = true")
    assert "Traceback" not in bad.stderr
