"""Fault tests with real processes: kill a worker, stop one, restart PostgreSQL, race on a grid.

Every test bounds its waits and asserts exact counts. Workers run as the installed ``tunesvc``
in subprocesses, with a one-second heartbeat (a lost trial is failed within about two seconds).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from tunesvc import service
from tunesvc.spec import parse_spec_dict

REPO = Path(__file__).resolve().parent.parent
SLOW = f"{REPO / 'tests' / 'objectives_fixtures' / 'slow.py'}:objective"
TUNESVC = str(Path(sys.executable).parent / "tunesvc")
PG_VERSION = sorted(os.listdir("/etc/postgresql"))[0] if os.path.isdir("/etc/postgresql") else "15"
PG_CLUSTER = ["pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, "main"]


def grid(url: str, name: str, n: int = 4) -> None:
    """A grid of n x n cells over the slow objective (x, y in 0..n-1)."""
    values = list(range(n))
    spec = parse_spec_dict({"objective": SLOW, "sampler": "grid", "pruner": "none",
                            "params": {"x": {"values": values}, "y": {"values": values}}})
    service.create_study(name, spec, url)


def start(url: str, name: str, marks: Path, *args: str, steps: int = 6,
          step_s: float = 0.25) -> subprocess.Popen[str]:
    env = {**os.environ, "TUNESVC_HEARTBEAT_S": "1", "SLOW_STEPS": str(steps),
           "SLOW_STEP_S": str(step_s), "SLOW_MARK_DIR": str(marks)}
    return subprocess.Popen([TUNESVC, "study", "run", name, "--storage", url, *args],
                            cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def marked(marks: Path) -> list[tuple[int, int]]:
    """(pid, trial number) of every trial that reported a step so far."""
    out = []
    for p in marks.iterdir():
        pid, _, number = p.name.partition("-")
        if number.isdigit():
            out.append((int(pid), int(number)))
    return out


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"worker still running after {timeout}s; stderr: {err[-2000:]}")
    return proc.returncode, out, err


def assert_every_cell_complete_once(url: str, name: str, n: int = 4) -> list[service.TrialInfo]:
    trials = service.list_trials(name, url)
    complete = [(t.params["x"], t.params["y"]) for t in trials if t.state == "COMPLETE"]
    assert sorted(complete) == [(x, y) for x in range(n) for y in range(n)]
    assert not [t for t in trials if t.state in ("RUNNING", "WAITING")]
    return trials


def test_four_workers_race_on_16_cells(pg_url: str, tmp_path: Path) -> None:
    grid(pg_url, "race")
    proc = start(pg_url, "race", tmp_path, "--workers", "4", steps=2, step_s=0.05)
    code, out, err = finish(proc, 90)
    assert code == 0, err
    trials = assert_every_cell_complete_once(pg_url, "race")
    assert len(trials) == 16
    assert len({t.number for t in trials}) == 16
    assert "ran 16 trials; 0 still queued; 16 complete" in out


def test_sigkill_worker_mid_trial_is_retried(pg_url: str, tmp_path: Path) -> None:
    """Four workers on the 16-cell grid; one is SIGKILLed mid-trial. Another fails its trial
    within about two heartbeats and runs it again: every cell COMPLETE exactly once."""
    grid(pg_url, "kill")
    proc = start(pg_url, "kill", tmp_path, "--workers", "4", steps=8, step_s=0.25)
    wait_for(lambda: len({pid for pid, _ in marked(tmp_path)}) >= 2, 60, "two busy workers")
    victim_pid, victim_trial = marked(tmp_path)[0]
    os.kill(victim_pid, signal.SIGKILL)
    retried: list[service.TrialInfo] = []

    def retry_queued() -> bool:
        retried[:] = [t for t in service.list_trials("kill", pg_url) if t.state == "FAIL"]
        return bool(retried)

    # With a 1 s heartbeat the lost trial is failed within about 2 s; the bound is generous
    # so a loaded machine does not fail the test (the latency belongs in a benchmark).
    wait_for(retry_queued, 60, "the killed worker's trial to be failed")
    code, out, err = finish(proc, 120)
    assert code == 0, err
    trials = assert_every_cell_complete_once(pg_url, "kill")
    assert len(trials) == 17  # 16 cells + the one retry
    (lost,) = [t for t in trials if t.state == "FAIL"]
    assert lost.number == victim_trial and lost.outcome == "lost"
    frozen = optuna.load_study(study_name="kill", storage=pg_url).trials
    (retry,) = [t for t in frozen if t.user_attrs.get("retry_of") == victim_trial]
    assert retry.user_attrs["slot"] == frozen[victim_trial].user_attrs["slot"]
    assert frozen[victim_trial].user_attrs["retried_as"] == retry.number
    assert [h["reason"] for h in retry.user_attrs["retry_history"]] == ["lost"]
    assert retry.user_attrs["retry_history"][0]["worker"]["pid"] == victim_pid
    assert retry.state.name == "COMPLETE" and retry.params == lost.params


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_requeues_and_leaves_nothing_running(
    pg_url: str, tmp_path: Path, workers: str
) -> None:
    grid(pg_url, "term", n=2)
    proc = start(pg_url, "term", tmp_path, "--workers", workers, steps=40, step_s=0.25)
    wait_for(lambda: len(marked(tmp_path)) >= int(workers), 60, "trials under way")
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc, 30)  # stops within seconds; bounded generously
    assert code == 130, err
    trials = service.list_trials("term", pg_url)
    states = Counter(t.state for t in trials)
    # Each interrupted cell is queued again (a trial each); the cells never started are
    # queued slots (no trial yet): 4 cells still to run, none lost.
    assert states == {"FAIL": int(workers), "WAITING": int(workers)}, states
    assert service.show_study("term", pg_url).summary.counts == {
        "FAIL": int(workers), "WAITING": 4}
    assert {t.outcome for t in trials if t.state == "FAIL"} == {"interrupted"}
    retried = {(t.params["x"], t.params["y"]) for t in trials if t.state == "WAITING"}
    assert retried == {(t.params["x"], t.params["y"]) for t in trials if t.state == "FAIL"}
    service.run_study("term", pg_url)
    done = [(t.params["x"], t.params["y"]) for t in service.list_trials("term", pg_url)
            if t.state == "COMPLETE"]
    assert sorted(done) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_killing_the_parent_of_a_pool_loses_no_cell(storage_url: str, tmp_path: Path) -> None:
    """`study run --workers 2`, its parent killed with SIGKILL mid-trial: each worker sees its
    parent gone within about PARENT_CHECK_S, stops as SIGTERM would stop it (its trial FAIL,
    `interrupted`, queued again) and exits without a traceback; a second run completes every
    cell exactly once."""
    grid(storage_url, "orphans", n=2)
    proc = start(storage_url, "orphans", tmp_path, "--workers", "2", steps=200, step_s=0.1)
    wait_for(lambda: len({pid for pid, _ in marked(tmp_path)}) == 2, 60, "two busy workers")
    children = {pid for pid, _ in marked(tmp_path)}
    os.kill(proc.pid, signal.SIGKILL)
    # The children hold the parent's stdout and stderr: they are closed when both have exited.
    code, out, err = finish(proc, 60)
    assert code == -signal.SIGKILL
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    for pid in children:
        wait_for(lambda pid=pid: not _alive(pid), 10, f"worker {pid} to be reaped")
    trials = service.list_trials("orphans", storage_url)
    interrupted = [t for t in trials if t.state == "FAIL"]
    assert len(interrupted) == 2 and {t.outcome for t in interrupted} == {"interrupted"}
    assert not [t for t in trials if t.state == "RUNNING"]
    second = start(storage_url, "orphans", tmp_path, steps=1, step_s=0.0)
    code, out, err = finish(second, 120)
    assert code == 0, err
    trials = assert_every_cell_complete_once(storage_url, "orphans", n=2)
    assert len(trials) == 6  # 4 cells + the 2 interrupted ones queued again
    assert service.show_study("orphans", storage_url).summary.done == 4


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie nobody reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_postgresql_restart_mid_study(
    pg_url: str, pg_engine: sqlalchemy.engine.Engine, tmp_path: Path
) -> None:
    """The server restarts while two workers train: they retry and carry on; no trial is lost
    or run twice.

    The server stays down for 2 s. A bare ``restart`` can be over in a few hundred
    milliseconds, between two of the workers' calls; their pooled connections are then
    replaced by the pre-ping without an error, and the test would not see an outage at all.
    With 2 s down, the heartbeats (every 1 s) and the reports (every 0.25 s) meet it.
    """
    grid(pg_url, "restart", n=3)
    proc = start(pg_url, "restart", tmp_path, "--workers", "2", steps=8, step_s=0.25)
    try:
        wait_for(lambda: len(marked(tmp_path)) >= 2, 60, "trials under way")
        subprocess.run([*PG_CLUSTER, "stop"], check=True, timeout=60, capture_output=True)
        time.sleep(2.0)
        subprocess.run([*PG_CLUSTER, "start"], check=True, timeout=60, capture_output=True)
    finally:
        if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode != 0:
            subprocess.run([*PG_CLUSTER, "start"], timeout=60, capture_output=True)
        pg_engine.dispose()  # its pooled connections died with the server
    code, out, err = finish(proc, 120)
    assert code == 0, err
    assert "database unreachable, retrying" in err  # the workers did meet the restart
    trials = assert_every_cell_complete_once(pg_url, "restart", n=3)
    assert len(trials) == 9 and {t.state for t in trials} == {"COMPLETE"}


def test_two_workers_share_one_sqlite_file(sqlite_url: str, tmp_path: Path) -> None:
    grid(sqlite_url, "lite")
    proc = start(sqlite_url, "lite", tmp_path, "--workers", "2", steps=3, step_s=0.02)
    code, out, err = finish(proc, 90)
    assert code == 0, err
    assert "database is locked" not in err
    trials = assert_every_cell_complete_once(sqlite_url, "lite")
    assert len(trials) == 16


def test_retried_trial_resumes_from_checkpoint(sqlite_url: str, tmp_path: Path) -> None:
    """A structured trial killed mid-training is run again by a second worker, which resumes
    from the slot's checkpoint instead of training from scratch."""
    from tunesvc.training import load_checkpoint

    spec = parse_spec_dict({"objective": "digits_mlp", "sampler": "grid", "pruner": "none",
                            "epochs": 30, "params": {"hidden": {"values": [32]}}})
    service.create_study("ckpt", spec, sqlite_url)
    uid = optuna.load_study(study_name="ckpt", storage=sqlite_url).user_attrs["uid"]
    checkpoint = (Path(os.environ["TUNESVC_ARTIFACTS"]) / "checkpoints" / uid / "slot-0"
                  / "checkpoint.pt")
    first = start(sqlite_url, "ckpt", tmp_path, "--device", "cpu")

    def trained_some() -> bool:
        state = load_checkpoint(checkpoint) if checkpoint.exists() else None
        return state is not None and len(state["curves"]["epoch"]) >= 4

    wait_for(trained_some, 90, "a checkpoint with 3 epochs")
    first.kill()
    first.communicate(timeout=10)
    saved = load_checkpoint(checkpoint)
    assert saved is not None
    done = len(saved["curves"]["epoch"])
    second = start(sqlite_url, "ckpt", tmp_path, "--device", "cpu")
    code, out, err = finish(second, 120)
    assert code == 0, err
    study = optuna.load_study(study_name="ckpt", storage=sqlite_url)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    retry = study.trials[1]
    assert retry.user_attrs["retry_of"] == 0 and retry.user_attrs["slot"] == 0
    curves = retry.user_attrs["curves"]
    assert curves["epoch"] == list(range(31))
    # The epochs trained before the kill come from the checkpoint, wall times and all.
    assert curves["seconds"][:done] == saved["curves"]["seconds"][:done]


BIG = 10_000


def big_study(url: str, name: str, left: int) -> None:
    """A random study over the slow objective whose first 10,000 trials have finished (written
    in bulk, as workers would have left them) and ``left`` slots are still queued."""
    from bulk_trials import fill_finished
    from optuna.distributions import IntDistribution

    spec = parse_spec_dict({"objective": SLOW, "sampler": "random", "n_trials": BIG + left,
                            "params": {"x": {"low": 0, "high": 3}, "y": {"low": 0, "high": 3}}})
    service.create_study(name, spec, url)
    storage = optuna.storages.RDBStorage(url)
    fill_finished(storage, storage.get_study_id_from_name(name), BIG, budget=BIG + left,
                  distributions={"x": IntDistribution(0, 3), "y": IntDistribution(0, 3)})
    storage.engine.dispose()


def test_sigkill_and_sigterm_in_a_study_of_10000_trials(pg_url: str, tmp_path: Path) -> None:
    """The fault tests' promises hold on a big study: 10,000 finished trials, 8 slots left.
    Three workers; one is SIGKILLed mid-trial and its trial retried on its slot; then SIGTERM
    stops the run with nothing RUNNING; a last run completes every slot exactly once."""
    big_study(pg_url, "big", left=8)
    proc = start(pg_url, "big", tmp_path, "--workers", "3", steps=40, step_s=0.1)
    wait_for(lambda: len({pid for pid, _ in marked(tmp_path)}) >= 2, 60, "two busy workers")
    victim_pid, victim_trial = marked(tmp_path)[0]
    os.kill(victim_pid, signal.SIGKILL)
    storage = optuna.storages.RDBStorage(pg_url)
    study_id = storage.get_study_id_from_name("big")

    def new_trials(*states: optuna.trial.TrialState) -> list[optuna.trial.FrozenTrial]:
        return [t for t in storage.get_all_trials(study_id, deepcopy=False, states=states)
                if t.number >= BIG]

    wait_for(lambda: any(t.user_attrs.get("outcome") == "lost"
                         for t in new_trials(optuna.trial.TrialState.FAIL)),
             60, "the killed worker's trial to be failed as lost")
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc, 60)
    assert code == 130, err
    assert not new_trials(optuna.trial.TrialState.RUNNING)
    code, out, err = finish(start(pg_url, "big", tmp_path, steps=2, step_s=0.01), 120)
    assert code == 0, err
    done = new_trials(optuna.trial.TrialState.COMPLETE)
    assert sorted(t.user_attrs["slot"] for t in done) == list(range(BIG, BIG + 8))
    (lost,) = [t for t in new_trials(optuna.trial.TrialState.FAIL)
               if t.user_attrs["outcome"] == "lost"]
    assert lost.number == victim_trial
    (retry,) = [t for t in done if t.user_attrs["slot"] == lost.user_attrs["slot"]]
    assert retry.params == lost.params
    by_number = {t.number: t for t in new_trials(*optuna.trial.TrialState)}
    chain = [retry.number]  # the retry may itself have been interrupted by SIGTERM and retried
    while chain[-1] != victim_trial:
        chain.append(by_number[chain[-1]].user_attrs["retry_of"])
    assert all(by_number[n].user_attrs["slot"] == lost.user_attrs["slot"] for n in chain)
    assert not new_trials(optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    summary = service.show_study("big", pg_url).summary
    assert (summary.done, summary.planned) == (BIG + 8, BIG + 8)
    storage.engine.dispose()
