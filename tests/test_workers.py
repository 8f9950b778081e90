"""Worker pools, the progress display, `study show` of running trials, storage set-up and errors.

Fault tests (killed workers, a restarted database) are in test_faults.py.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState
from typer.testing import CliRunner, Result

from tunesvc import service
from tunesvc.cli import ProgressDisplay, app
from tunesvc.spec import parse_spec_dict
from tunesvc.worker import TrialResult, WorkerEvent, worker_devices

REPO = Path(__file__).resolve().parent.parent
SLOW = f"{REPO / 'tests' / 'objectives_fixtures' / 'slow.py'}:objective"
TUNESVC = str(Path(sys.executable).parent / "tunesvc")


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """The CLI in this process (its worker processes are real ones)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in (env or {}).items():
            mp.setenv(key, value)
        return CliRunner().invoke(app, list(args))


def grid(url: str, name: str, objective: str = SLOW, n: int = 2) -> None:
    values = list(range(n))
    spec = parse_spec_dict({"objective": objective, "sampler": "grid", "pruner": "none",
                            "params": {"x": {"values": values}, "y": {"values": values}}})
    service.create_study(name, spec, url)


@pytest.mark.parametrize(
    ("device", "workers", "gpus", "expected"),
    [
        ("cuda", 3, 2, ["cuda:0", "cuda:1", "cuda:0"]),
        ("auto", 2, 4, ["cuda:0", "cuda:1"]),
        ("auto", 2, 0, ["cpu", "cpu"]),
        ("cuda:1", 3, 2, ["cuda:1"] * 3),
        ("cpu", 2, 8, ["cpu", "cpu"]),
        ("cuda", 2, 0, ["cuda", "cuda"]),  # no GPU: training says so, clearly
    ],
)
def test_worker_devices(device: str, workers: int, gpus: int, expected: list[str]) -> None:
    assert worker_devices(device, workers, gpus) == expected


def _result(number: int, value: float | None, state: TrialState = TrialState.COMPLETE,
            outcome: str = "completed") -> TrialResult:
    return TrialResult(number, state, outcome, value, None, {"x": number})


def test_progress_display_plain_quiet_and_live() -> None:
    events = [
        WorkerEvent("claimed", 0, 0, device="cpu", direction="minimize"),
        WorkerEvent("epoch", 0, 0, epoch=3),
        WorkerEvent("finished", 0, 0, result=_result(0, 2.0)),
        WorkerEvent("finished", 1, 1, result=_result(1, 1.0)),
        WorkerEvent("finished", 1, 2, result=_result(2, None, TrialState.PRUNED, "pruned")),
        WorkerEvent("claimed", 1, 3, device="cpu"),
        WorkerEvent("epoch", 1, 3, epoch=7),
    ]
    plain, quiet, live = io.StringIO(), io.StringIO(), io.StringIO()
    for out, kwargs in ((plain, {}), (quiet, {"quiet": True}), (live, {"live": True})):
        with ProgressDisplay(out=out, **kwargs) as display:  # type: ignore[arg-type]
            for e in events:
                display(e)
        assert display.counts == {"complete": 2, "pruned": 1}
        assert display.best is not None and display.best.number == 1  # minimize
        assert (display.workers[1].trial, display.workers[1].epoch) == (3, 7)
    assert plain.getvalue().splitlines() == [
        "trial 0 complete [completed] value=2 x=0",
        "trial 1 complete [completed] value=1 x=1",
        "trial 2 pruned [pruned] x=2",
    ]
    assert quiet.getvalue() == ""
    table = live.getvalue()
    assert "finished: 2 complete, 1 pruned" in table
    assert "best: trial 1 complete [completed] value=1" in table
    assert "worker" in table and "epoch" in table


def test_show_lists_running_trials_with_worker_and_heartbeat(pg_url: str, tmp_path: Path) -> None:
    grid(pg_url, "live")
    env = {"TUNESVC_HEARTBEAT_S": "1", "SLOW_STEPS": "60", "SLOW_STEP_S": "0.2",
           "SLOW_MARK_DIR": str(tmp_path)}
    proc = subprocess.Popen([TUNESVC, "study", "run", "live", "--storage", pg_url,
                             "--device", "cpu"], cwd=REPO, text=True,
                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not any(p.read_text() >= "3" for p in tmp_path.iterdir() if "-" in p.name):
            assert time.monotonic() < deadline, "no trial reached step 3 in 60s"
            time.sleep(0.1)
        detail = service.show_study("live", pg_url)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    (running,) = detail.workers
    assert running.number == 0 and running.params == {"x": 0, "y": 0}
    assert (running.host, running.pid, running.device) == (socket.gethostname(), proc.pid, "cpu")
    assert running.epoch >= 3
    # It beats every second: an age far under a minute says it beats (bounded generously).
    assert running.heartbeat_age_s is not None and 0 <= running.heartbeat_age_s < 30
    assert json.loads(json.dumps(detail.to_json()))["workers"][0]["pid"] == proc.pid
    assert proc.returncode == 130


def test_shared_n_trials_budget_across_workers(storage_url: str, tmp_path: Path) -> None:
    grid(storage_url, "budget", n=3)
    result = cli("study", "run", "budget", "--storage", storage_url, "--workers", "2",
                 "--n-trials", "5", env={"SLOW_STEPS": "1", "SLOW_STEP_S": "0"})
    assert result.exit_code == 0, result.output
    assert "ran 5 trials; 4 still queued" in result.stdout
    counts = service.show_study("budget", storage_url).summary.counts
    assert counts == {"COMPLETE": 5, "WAITING": 4}


def test_missing_objective_fails_worker_and_leaves_study_untouched(
    pg_url: str, tmp_path: Path
) -> None:
    own = tmp_path / "mine.py"
    own.write_text((REPO / "tests" / "objectives_fixtures" / "slow.py").read_text())
    grid(pg_url, "away", objective=f"{own}:objective")
    own.unlink()  # as on a machine that lacks the user's file
    for workers in ("1", "2"):
        result = cli("study", "run", "away", "--storage", pg_url, "--workers", workers)
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.strip().splitlines()
        assert f"objective '{own}:objective': no file {own}" in line
        assert "this machine cannot run study 'away'; the study is untouched" in line
    assert service.show_study("away", pg_url).summary.counts == {"WAITING": 4}


def test_password_never_shown_nor_stored(pg_url: str, tmp_path: Path) -> None:
    # The test server trusts local connections, so any password works, and must not leak.
    url = pg_url.replace("postgres@", "postgres:s3cret-pw@")
    grid(url, "secret")
    # A real process, so that what its worker processes print is seen too.
    result = subprocess.run([TUNESVC, "study", "run", "secret", "--storage", url, "--workers",
                             "2"], cwd=REPO, capture_output=True, text=True, timeout=90,
                            env={**os.environ, "SLOW_STEPS": "2", "SLOW_STEP_S": "0"})
    assert result.returncode == 0, result.stderr
    show = cli("study", "show", "secret", "--storage", url, "--json")
    for text in (result.stdout, result.stderr, show.stdout, show.stderr):
        assert "s3cret-pw" not in text
    study = optuna.load_study(study_name="secret", storage=pg_url)
    stored = json.dumps([[t.user_attrs, t.system_attrs] for t in study.trials]
                        + [study.user_attrs], default=str)
    assert "s3cret-pw" not in stored and "4 complete" in result.stdout


@pytest.mark.parametrize(
    ("url", "workers", "place"),
    [
        ("postgresql://postgres:s3cret@127.0.0.1:1/test", "2", "database 'test' on 127.0.0.1:1"),
        ("postgresql://postgres:s3cret@127.0.0.1:5432/no_such_db", "1",
         "database 'no_such_db' on 127.0.0.1:5432"),
        ("mysql://root:s3cret@127.0.0.1:1/test", "1", "database 'test' on 127.0.0.1:1"),
    ],
)
def test_unreachable_storage_is_one_line(url: str, workers: str, place: str) -> None:
    result = cli("study", "run", "any", "--storage", url, "--workers", workers)
    assert result.exit_code == 3, result.output
    (line,) = result.stderr.strip().splitlines()
    assert place in line and "s3cret" not in result.output and line.startswith("error: cannot")


def test_old_schema_is_named_and_upgraded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    assert service.list_studies(url) == []  # creates the current schema
    assert not service.upgrade_storage(url).changed
    with sqlite3.connect(tmp_path / "old.db") as conn:  # as an older Optuna left it
        conn.execute("UPDATE alembic_version SET version_num = 'v3.0.0.d'")
    listed = cli("study", "list", "--storage", url)
    assert listed.exit_code == 3
    head = optuna.storages.RDBStorage(url, skip_compatibility_check=True).get_head_version()
    assert listed.stderr.strip() == (
        f"error: storage {url} was set up by an older Optuna (schema v3.0.0.d, this Optuna "
        f"{optuna.__version__} needs {head}); run `tunesvc storage upgrade --storage '{url}'` "
        "(back it up first)")
    newer = tmp_path / "newer.db"
    assert service.list_studies(f"sqlite:///{newer}") == []
    with sqlite3.connect(newer) as conn:  # as a newer Optuna would leave it
        conn.execute("UPDATE alembic_version SET version_num = 'v9.9.9.z'")
    refused = cli("study", "list", "--storage", f"sqlite:///{newer}")
    assert refused.exit_code == 3 and "set up by a newer Optuna (schema v9.9.9.z)" in \
        refused.stderr
    upgraded = cli("storage", "upgrade", "--storage", url)
    assert upgraded.exit_code == 0, upgraded.output
    assert f"upgraded {url}: schema v3.0.0.d -> " in upgraded.stdout
    assert cli("study", "list", "--storage", url).exit_code == 0
    again = cli("storage", "upgrade", "--storage", url)
    assert "is up to date" in again.stdout


def test_shared_postgres_script_and_wrong_password(tmp_path: Path) -> None:
    """storage/postgres.sh starts a password-protected server, prints its URL, stops it."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="tunesvc-pg-"))
    root.chmod(0o755)  # the server runs as the postgres OS user
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    script = [str(REPO / "storage" / "postgres.sh")]
    env = {**os.environ, "TUNESVC_PG_DIR": str(root / "pg")}
    try:
        started = subprocess.run([*script, "start", "--listen", "127.0.0.1", "--port", port],
                                 env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stderr
        url = started.stdout.strip()
        assert url.startswith("postgresql://tunesvc:")
        assert url.endswith(f"@127.0.0.1:{port}/tunesvc")
        assert subprocess.run([*script, "url"], env=env, capture_output=True, text=True,
                              timeout=30).stdout.strip() == url
        assert service.list_studies(url) == []
        password = url.split(":")[2].split("@")[0]
        wrong = cli("study", "list", "--storage", url.replace(password, "not-it"))
        assert wrong.exit_code == 3
        (line,) = wrong.stderr.strip().splitlines()
        assert f"database 'tunesvc' on 127.0.0.1:{port}" in line
        assert "password authentication failed" in line and "not-it" not in line
    finally:
        subprocess.run([*script, "stop"], env=env, capture_output=True, timeout=60)
    status = subprocess.run([*script, "status"], env=env, capture_output=True, text=True,
                            timeout=30)
    assert status.stdout.strip() == "stopped"
    subprocess.run(["rm", "-rf", str(root)], timeout=30)


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A database of its own on this machine's MariaDB/MySQL."""
    admin = sqlalchemy.create_engine("mysql+pymysql://root@127.0.0.1:3306/test")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    yield f"mysql://root@127.0.0.1:3306/{name}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE {name}")
    admin.dispose()


def test_two_workers_on_mysql(mysql_url: str) -> None:
    grid(mysql_url, "maria")
    result = cli("study", "run", "maria", "--storage", mysql_url, "--workers", "2",
                 env={"SLOW_STEPS": "2", "SLOW_STEP_S": "0.05", "TUNESVC_HEARTBEAT_S": "1"})
    assert result.exit_code == 0, result.output
    trials = service.list_trials("maria", mysql_url)
    assert sorted((t.params["x"], t.params["y"]) for t in trials if t.state == "COMPLETE") == [
        (0, 0), (0, 1), (1, 0), (1, 1)]
    assert len(trials) == 4
