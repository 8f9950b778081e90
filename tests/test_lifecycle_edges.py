"""A study's life at its edges (issue 14): its checkpoints are its own and go with it, a study
that workers still run is not deleted under them without --force, a lost trial says it was lost,
retried slots count once, and what users export from sweeps: the best trial's checkpoint and a
CSV of the trials. Real SQLite and PostgreSQL, real torch training, real processes."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from test_faults import wait_for
from typer.testing import CliRunner

from tunesvc import service
from tunesvc.cli import app
from tunesvc.spec import parse_spec_dict
from tunesvc.storage import attrs
from tunesvc.training import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parent.parent
SLOW = f"{REPO / 'tests' / 'objectives_fixtures' / 'slow.py'}:objective"
TUNESVC = str(Path(sys.executable).parent / "tunesvc")
runner = CliRunner()


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def curves(url: str, name: str) -> dict[str, Any]:
    (trial,) = optuna.load_study(study_name=name, storage=url).trials
    assert trial.state == TrialState.COMPLETE
    value: dict[str, Any] = trial.user_attrs["curves"]
    return value


# --- item 1: a checkpoint belongs to one study of one storage ----------------------------------


def test_a_recreated_or_same_named_study_trains_afresh(
    sqlite_url: str, pg_url: str, tmp_path: Path
) -> None:
    """The issue's scenario: `reuse` with dropout 0 runs and is deleted; `reuse` again with
    dropout 0.5 must train, not resume dropout 0's finished checkpoint (which gave 0.9443, the
    dropout-0 value, in 0.07 s). A PostgreSQL study of the same name, run while the SQLite one
    still holds its checkpoint, must not pick that up either."""

    def create_and_run(name: str, url: str, dropout: float) -> None:
        code, _, err = cli("study", "create", name, "--objective", "digits_mlp", "--sampler",
                           "grid", "--epochs", "2", "--pruner", "none", "--param",
                           f"dropout={dropout}", "--param", "hidden=64", "--storage", url)
        assert code == 0, err
        code, _, err = cli("study", "run", name, "--quiet", "--device", "cpu", "--storage", url)
        assert code == 0, err

    create_and_run("reuse", sqlite_url, 0.0)
    first = curves(sqlite_url, "reuse")
    old_folders = set((tmp_path / "artifacts" / "checkpoints").iterdir())
    assert len(old_folders) == 1
    create_and_run("reuse", pg_url, 0.5)  # same name, other storage, same artifacts folder
    on_pg = curves(pg_url, "reuse")
    code, _, err = cli("study", "delete", "reuse", "--yes", "--storage", sqlite_url)
    assert code == 0, err
    assert not any(folder.exists() for folder in old_folders)  # its checkpoints went with it
    create_and_run("reuse", sqlite_url, 0.5)
    again = curves(sqlite_url, "reuse")
    create_and_run("fresh", sqlite_url, 0.5)
    fresh = curves(sqlite_url, "fresh")
    assert again["val_acc"] == fresh["val_acc"] == on_pg["val_acc"]
    assert again["val_acc"] != first["val_acc"]
    # Trained, not resumed: a resumed run takes the checkpoint's wall times along.
    assert again["seconds"] != first["seconds"] and on_pg["seconds"] != first["seconds"]
    assert len({f.name for f in (tmp_path / "artifacts" / "checkpoints").iterdir()}) == 3


def test_the_best_trial_shows_its_checkpoint_and_csv_exports_the_trials(
    storage_url: str,
) -> None:
    spec = parse_spec_dict({"objective": "digits_mlp", "sampler": "grid", "epochs": 1,
                            "pruner": "none", "params": {"hidden": [16, 32], "lr": 3e-3}})
    service.create_study("ex", spec, storage_url)
    service.run_study("ex", storage_url, device="cpu")
    code, out, _ = cli("study", "best", "ex", "--json", "--storage", storage_url)
    best = json.loads(out)
    assert code == 0 and best["checkpoint"].endswith(f"slot-{best['number']}/checkpoint.pt")
    state = load_checkpoint(best["checkpoint"])
    assert state is not None and {"model", "optimizer"} <= set(state) and state["epoch"] == 1
    code, out, _ = cli("study", "best", "ex", "--storage", storage_url)
    assert code == 0 and f"checkpoint: {best['checkpoint']}" in out
    code, out, _ = cli("study", "trials", "ex", "--csv", "--storage", storage_url)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["number", "state", "outcome", "value", "epochs", "diagnosis",
                             "param_hidden", "param_lr"]
    assert [(r["number"], r["state"], r["param_hidden"]) for r in rows] == [
        ("0", "COMPLETE", "16"), ("1", "COMPLETE", "32")]
    assert all(r["outcome"] == "completed" and r["diagnosis"] and float(r["value"]) > 0.1
               and r["epochs"] == "1" and float(r["param_lr"]) == 3e-3 for r in rows)


def test_a_plain_best_trial_has_no_checkpoint(sqlite_url: str) -> None:
    spec = parse_spec_dict({"objective": "tests/objectives_fixtures/plain.py:quadratic",
                            "n_trials": 2})
    service.create_study("p", spec, sqlite_url)
    service.run_study("p", sqlite_url)
    code, out, _ = cli("study", "best", "p", "--json", "--storage", sqlite_url)
    assert code == 0 and json.loads(out)["checkpoint"] is None


# --- "smaller": piped run lines carry the label; lost trials; slots done -----------------------


def test_piped_run_lines_carry_the_diagnosis_label(sqlite_url: str) -> None:
    spec = parse_spec_dict({"objective": "tests/objectives_fixtures/plain.py:quadratic",
                            "n_trials": 2, "seed": 1})
    service.create_study("lbl", spec, sqlite_url)
    code, out, _ = cli("study", "run", "lbl", "--storage", sqlite_url)
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("trial ")]
    labels = [t.label for t in service.list_trials("lbl", sqlite_url)]
    assert len(lines) == 2 and all(labels)
    for line, label in zip(lines, labels, strict=True):
        assert f"[completed, {label}]" in line


def _lose_trial_0(url: str, name: str) -> None:
    """What happens to a trial whose worker dies: it claimed slot 0 and reported three steps;
    another worker finds its heartbeat stale, fails it as lost and queues its slot again."""
    from tunesvc.spec import Plan
    from tunesvc.storage import StudyQueue, open_storage

    storage = open_storage(url)
    study = optuna.load_study(study_name=name, storage=storage)
    queue = StudyQueue(storage, storage.get_study_id_from_name(name))
    where = attrs.Where("gone-host", 4242, "cpu", 0)
    claim = queue.claim(Plan.from_spec(attrs.study_spec(study, name)), where.to_json())
    assert claim is not None and claim.number == 0
    for step in range(1, 4):
        storage.set_trial_intermediate_value(claim.trial_id, step, float(step))
    time.sleep(1.1)  # its last heartbeat is now older than the grace period below (SQLite's
    # clock has whole seconds)
    (lost,) = queue.fail_lost(grace_s=0.01, max_lost_retries=3)
    assert lost.number == 0 and lost.retry is not None
    storage.engine.dispose()


def test_a_lost_trial_says_so_and_its_slot_counts_once(storage_url: str) -> None:
    spec = parse_spec_dict({"objective": "tests/objectives_fixtures/plain.py:quadratic",
                            "n_trials": 3})
    service.create_study("lost", spec, storage_url)
    _lose_trial_0(storage_url, "lost")
    service.run_study("lost", storage_url)
    trials = service.list_trials("lost", storage_url)
    assert [(t.number, t.state) for t in trials] == [
        (0, "FAIL"), (1, "COMPLETE"), (2, "COMPLETE"), (3, "COMPLETE")]
    lost = trials[0]
    assert lost.outcome == "lost" and lost.epochs == 3  # its last reported epoch
    assert lost.error == ("lost: its worker (pid 4242 on gone-host) stopped sending heartbeats; "
                          "its slot ran again as trial 1")
    summary = service.show_study("lost", storage_url).summary
    assert (summary.done, summary.planned) == (3, 3)
    code, out, _ = cli("study", "list", "--storage", storage_url)
    assert code == 0 and " 3/3 " in out
    code, out, _ = cli("study", "trials", "lost", "--storage", storage_url)
    assert out.splitlines()[1].split()[:5] == ["0", "FAIL", "lost", "-", "3"]
    code, out, _ = cli("study", "show", "lost", "--storage", storage_url)
    assert "3/3 done: 3 complete, 1 fail" in out


# --- item 4: deleting a study that workers run ---------------------------------------------------


def test_delete_refuses_a_study_workers_run_and_force_stops_them_cleanly(
    storage_url: str, tmp_path: Path
) -> None:
    spec = parse_spec_dict({"objective": SLOW, "n_trials": 4})
    service.create_study("busy", spec, storage_url)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "TUNESVC_HEARTBEAT_S": "1", "SLOW_STEPS": "200", "SLOW_STEP_S": "0.1",
           "SLOW_MARK_DIR": str(marks)}
    proc = subprocess.Popen([TUNESVC, "study", "run", "busy", "--storage", storage_url],
                            cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        wait_for(lambda: any(marks.iterdir()), 60, "a trial under way")
        code, _, err = cli("study", "delete", "busy", "--yes", "--storage", storage_url)
        assert code == 4 and err.count("\n") == 1
        assert (f"study 'busy' has 1 running trial(s) whose workers still beat (trial 0 on "
                f"{socket.gethostname()} pid {proc.pid})") in err
        assert "--force" in err
        assert [s.name for s in service.list_studies(storage_url)] == ["busy"]
        code, out, err = cli("study", "delete", "busy", "--yes", "--force",
                             "--storage", storage_url)
        assert code == 0, err
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 4, err
    assert "Traceback" not in err and "KeyError" not in err
    assert err.splitlines() == [f"error: study 'busy' was deleted while worker pid {proc.pid} "
                                "ran it; the worker stopped"]
    assert "busy" not in {s.name for s in service.list_studies(storage_url)}
