"""`tunesvc dashboard` in a real browser: headless Chromium renders the pages of a study that
`tunesvc recipe` produced, and the diagnosis written as trials finished is on them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from tunesvc import TunesvcError
from tunesvc.cli import app
from tunesvc.service import open_dashboard

REPO = Path(__file__).resolve().parent.parent
TUNESVC = str(Path(sys.executable).with_name("tunesvc"))
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT_COPY = Path("/tmp/tunesvc-dashboard.png")
runner = CliRunner()


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium, which `make install` installs; a missing one fails loudly."""
    if not CHROMIUM.exists():
        pytest.fail(f"no browser at {CHROMIUM}: run `make install` (it installs Debian's "
                    "chromium) before the dashboard's browser test")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def recipe_storage(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """A storage holding the studies of one small `tunesvc recipe` run, made by the installed
    command in a subprocess; with the environment that points at its artifacts."""
    folder = tmp_path_factory.mktemp("recipe")
    url = f"sqlite:///{folder / 'tunesvc.db'}"
    env = {**os.environ, "TUNESVC_ARTIFACTS": str(folder / "artifacts")}
    env.pop("TUNESVC_STORAGE", None)
    done = subprocess.run(
        [TUNESVC, "recipe", "digits_mlp", "--budget", "tiny,coarse_trials=4,refine_trials=2",
         "--name", "web", "--storage", url],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=400,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "best configuration" in done.stdout
    return url, env


@pytest.fixture(scope="module")
def dashboard(recipe_storage: tuple[str, dict[str, str]]) -> Iterator[str]:
    url, env = recipe_storage
    port = _free_port()
    proc = subprocess.Popen([TUNESVC, "dashboard", "--storage", url, "--port", str(port)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read() if proc.stdout else ""
                    pytest.fail(f"dashboard did not come up on port {port}: {out}")
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _chromium(binary: Path, profile: Path, *args: str) -> str:
    done = subprocess.run(
        [str(binary), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
         "--window-size=1400,2000", "--virtual-time-budget=8000", *args],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _study_id(base: str, name: str) -> int:
    with urllib.request.urlopen(f"{base}/api/studies", timeout=10) as response:
        summaries = json.load(response)["study_summaries"]
    return next(int(s["study_id"]) for s in summaries if s["study_name"] == name)


def test_study_and_trial_pages_show_the_diagnosis(
    chromium: Path, dashboard: str, recipe_storage: tuple[str, dict[str, str]], tmp_path: Path,
) -> None:
    url, _ = recipe_storage
    study = optuna.load_study(study_name="web-coarse", storage=url)
    trial = next(t for t in study.get_trials() if t.state.name == "COMPLETE")
    diagnosis = trial.user_attrs["diagnosis"]
    labels = {t.user_attrs["diagnosis"]["label"] for t in study.get_trials()}
    study_id = _study_id(dashboard, "web-coarse")
    profile = tmp_path / "chromium-profile"

    trial_url = f"{dashboard}/dashboard/studies/{study_id}/trials?numbers={trial.number}"
    dom = _chromium(chromium, profile, "--dump-dom", trial_url)
    assert f"Trial {trial.number}" in dom
    assert f"Diagnosis: {diagnosis['label']}" in dom
    assert diagnosis["advice"] in dom
    assert f"/artifacts/{study_id}/" in dom  # the learning-curves figure in the note

    study_url = f"{dashboard}/dashboard/studies/{study_id}"
    dom = _chromium(chromium, profile, "--dump-dom", study_url)
    assert "trials by diagnosis" in dom and all(label in dom for label in labels)
    assert "lr against weight_decay" in dom

    dom = _chromium(chromium, profile, "--dump-dom", f"{study_url}/note")
    assert "Recipe stage:" in dom and "coarse" in dom and diagnosis["label"] in dom

    shots = {}
    for name, page in (("trial", trial_url), ("study", study_url)):
        shots[name] = tmp_path / f"dashboard-{name}.png"
        _chromium(chromium, profile, f"--screenshot={shots[name]}", page)
        assert shots[name].stat().st_size > 20_000  # a rendered page, not a blank one
    shutil.copy(shots["trial"], SCREENSHOT_COPY)
    shutil.copy(shots["study"], SCREENSHOT_COPY.with_name("tunesvc-dashboard-study.png"))


def test_unreachable_storage_exits_with_the_url_and_reason() -> None:
    result = runner.invoke(app, ["dashboard", "--storage",
                                 "postgresql://bob:s3cret@127.0.0.1:1/nodb"])
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1
    assert "postgresql+psycopg://bob:***@127.0.0.1:1/nodb" in result.stderr
    assert "s3cret" not in result.stderr and "refused" in result.stderr


def test_binds_localhost_by_default_and_reports_a_taken_port(sqlite_url: str) -> None:
    board = open_dashboard(sqlite_url, port=0)
    try:
        host, port = board.server.server_address[:2]
        assert host == "127.0.0.1" and board.url == f"http://127.0.0.1:{port}/dashboard"
        with pytest.raises(TunesvcError, match=f"cannot listen on 127.0.0.1:{port}"):
            open_dashboard(sqlite_url, port=int(port))
    finally:
        board.shutdown()
