"""Population mode through the worker (`study run --population K`): every member a full trial.

Tolerance against the same study run one trial at a time: a member's losses within a relative
1e-4 of the lone trial's, and its accuracies within one validation sample (1/360). A member and
the lone trial make the same float32 operations but for the batched matrix products of the
population (one bmm per layer for all members), which sum in another order: single products
differ in the last bit or two (~1e-7 relative), and a few epochs of training carry that along
(tests/test_population.py measures it against `fit`). Between two population runs, where the
members around a trial differ (one was pruned, another joined), nothing differs: bit for bit.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from test_faults import finish
from typer.testing import CliRunner

from tunesvc import service
from tunesvc.cli import app
from tunesvc.spec import parse_spec_dict
from tunesvc.storage import open_storage
from tunesvc.training import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parent.parent
TUNESVC = str(Path(sys.executable).parent / "tunesvc")
BATCHNORM = str(REPO / "tests" / "objectives_fixtures" / "batchnorm_mlp.py")
LOSS_REL, ACC_ABS = 1e-4, 1.5 / 360  # see the module docstring; 360 validation samples


def create(url: str, name: str, *, n_trials: int, epochs: int, pruner: str = "none",
           hidden: list[int] | None = None, **extra: Any) -> None:
    spec = parse_spec_dict({
        "objective": "digits_mlp", "sampler": "random", "n_trials": n_trials,
        "epochs": epochs, "seed": 3, "pruner": pruner, **extra,
        "params": {"lr": {"low": 1e-3, "high": 1e-1, "log": True},
                   "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
                   "dropout": {"low": 0.0, "high": 0.3},
                   "hidden": {"values": hidden or [32]}},
    })
    service.create_study(name, spec, url)


def by_number(url: str, name: str) -> dict[int, optuna.trial.FrozenTrial]:
    return {t.number: t for t in optuna.load_study(study_name=name, storage=url).trials}


def close(a: list[Any], b: list[Any], *, rel: float = 0.0, abs_: float = 0.0) -> bool:
    return len(a) == len(b) and all(
        (x is None and y is None) or math.isclose(x, y, rel_tol=rel, abs_tol=abs_)
        for x, y in zip(a, b, strict=True)
    )


def test_a_population_gives_each_trial_what_one_at_a_time_gives(storage_url: str) -> None:
    """Two structures (hidden 16 and 32) in one study: two populations at once, refilled as
    members finish; every trial's params, curves and value match the one-at-a-time run."""
    create(storage_url, "alone", n_trials=6, epochs=2, hidden=[16, 32])
    create(storage_url, "pop", n_trials=6, epochs=2, hidden=[16, 32])
    service.run_study("alone", storage_url, device="cpu")
    ran = service.run_study("pop", storage_url, device="cpu", population=4)
    assert len(ran.ran) == 6 and ran.remaining == 0
    alone, pop = by_number(storage_url, "alone"), by_number(storage_url, "pop")
    assert sorted(pop) == sorted(alone) == list(range(6))
    assert len({t.params["hidden"] for t in pop.values()}) == 2
    for n, lone in alone.items():
        member = pop[n]
        assert member.state == lone.state == optuna.trial.TrialState.COMPLETE
        assert member.params == lone.params
        assert member.user_attrs["outcome"] == "completed"
        a, b = lone.user_attrs["curves"], member.user_attrs["curves"]
        assert b["epoch"] == a["epoch"] == [0, 1, 2]
        for key in ("train_loss", "val_loss"):
            assert close(a[key], b[key], rel=LOSS_REL), (n, key, a[key], b[key])
        for key in ("train_acc", "val_acc"):
            assert close(a[key], b[key], abs_=ACC_ABS), (n, key, a[key], b[key])
        assert close(list(lone.intermediate_values.values()),
                     list(member.intermediate_values.values()), abs_=ACC_ABS)
        assert member.value is not None and lone.value is not None
        assert math.isclose(member.value, lone.value, abs_tol=ACC_ABS)
        assert member.user_attrs["diagnosis"]["label"]


def test_pruning_one_member_leaves_the_others_curves_as_they_were(storage_url: str) -> None:
    """The same study run as a population with Optuna's median pruner and with none: the
    pruned members stop early, and every trial's curves are the unpruned run's, bit for bit
    (a pruned one's are their beginning), though the members around each trial differ."""
    settings = {"n_startup_trials": 2, "n_warmup_steps": 1}
    create(storage_url, "free", n_trials=8, epochs=3)
    create(storage_url, "pruned", n_trials=8, epochs=3, pruner="median",
           pruner_settings=settings)
    service.run_study("free", storage_url, device="cpu", population=4)
    service.run_study("pruned", storage_url, device="cpu", population=4)
    free, pruned = by_number(storage_url, "free"), by_number(storage_url, "pruned")
    stopped = [n for n, t in pruned.items() if t.user_attrs["outcome"] in
               ("pruned", "early_stopped")]
    assert stopped, {n: t.user_attrs["outcome"] for n, t in pruned.items()}
    assert [n for n, t in pruned.items() if t.state.name == "PRUNED"]
    for n, t in pruned.items():
        mine, full = t.user_attrs["curves"], free[n].user_attrs["curves"]
        length = len(mine["epoch"])
        assert length == 4 or n in stopped
        for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
            assert mine[key] == full[key][:length], (n, key)


def test_a_setup_that_cannot_be_vectorized_says_why_and_trains_alone(sqlite_url: str) -> None:
    spec = parse_spec_dict({"objective": BATCHNORM, "n_trials": 3, "pruner": "none"})
    service.create_study("bn", spec, sqlite_url)
    result = CliRunner().invoke(app, ["study", "run", "bn", "--population", "4", "--device",
                                      "cpu", "--storage", sqlite_url])
    assert result.exit_code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("population:")]
    assert len(notes) == 1, result.stderr  # one line per reason, not one per trial
    assert "BatchNorm" in notes[0] and "trains alone" in notes[0]
    assert "ran 3 trials; 0 still queued; 3 complete" in result.stdout


def test_a_plain_objective_says_it_runs_one_trial_at_a_time(sqlite_url: str) -> None:
    plain = f"{REPO / 'tests' / 'objectives_fixtures' / 'plain.py'}:quadratic"
    spec = parse_spec_dict({"objective": plain, "sampler": "grid", "pruner": "none",
                            "params": {"x": {"values": [0.0, 1.0]}, "y": [0, 1]}})
    service.create_study("plain", spec, sqlite_url)
    result = CliRunner().invoke(app, ["study", "run", "plain", "--population", "3",
                                      "--storage", sqlite_url])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("population: 3 ignored: a plain objective") == 1
    assert "ran 4 trials; 0 still queued; 4 complete" in result.stdout


@pytest.mark.parametrize("args, spec_extra, message", [
    (["--population", "0"], {}, "error: --population: expected an integer >= 1, got 0"),
    ([], {"population": "x"},
     "error: population: expected an integer >= 1, got population = 'x'"),
])
def test_a_bad_population_is_one_line_and_writes_nothing(
    sqlite_url: str, tmp_path: Path, args: list[str], spec_extra: dict[str, Any], message: str
) -> None:
    spec = tmp_path / "s.toml"
    body = 'objective = "digits_mlp"\nn_trials = 2\nepochs = 1\npruner = "none"\n'
    spec.write_text(body + "".join(f"{k} = {v!r}\n".replace("'", '"')
                                   for k, v in spec_extra.items()))
    created = CliRunner().invoke(app, ["study", "create", "s", "--spec", str(spec),
                                       "--storage", sqlite_url])
    if spec_extra:
        assert created.exit_code == 2 and created.stderr.strip() == message
        assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()
        return
    assert created.exit_code == 0, created.stderr
    ran = CliRunner().invoke(app, ["study", "run", "s", *args, "--storage", sqlite_url])
    assert ran.exit_code == 2 and ran.stderr.strip() == message
    storage = open_storage(sqlite_url)
    study_id = storage.get_study_id_from_name("s")
    assert storage.get_all_trials(study_id, deepcopy=False) == []


def test_n_trials_bounds_a_population_exactly(sqlite_url: str) -> None:
    create(sqlite_url, "some", n_trials=5, epochs=1)
    first = service.run_study("some", sqlite_url, device="cpu", n_trials=3, population=4)
    assert len(first.ran) == 3 and first.counts == {"COMPLETE": 3, "WAITING": 2}
    rest = service.run_study("some", sqlite_url, device="cpu", population=4)
    assert len(rest.ran) == 2 and rest.counts == {"COMPLETE": 5} and rest.remaining == 0


def test_a_pool_runs_a_population_per_worker_from_the_spec(sqlite_url: str) -> None:
    """`population = 3` in the spec, `--workers 2`: each worker claims several trials before
    it trains one (a population of its own), and every slot completes exactly once."""
    create(sqlite_url, "pool", n_trials=6, epochs=1, population=3)
    assert service.show_study("pool", sqlite_url).spec["population"] == 3
    events: list[Any] = []
    ran = service.run_study("pool", sqlite_url, device="cpu", workers=2,
                            on_event=events.append)
    assert sorted(t.number for t in ran.ran) == list(range(6)) and ran.remaining == 0
    assert ran.counts == {"COMPLETE": 6}

    def claims_before_training(worker: int) -> int:
        mine = [e.kind for e in events if e.worker == worker]
        return mine[:mine.index("epoch")].count("claimed") if "epoch" in mine else 0

    assert max(claims_before_training(w) for w in (0, 1)) >= 2


# --- faults, with the installed `tunesvc` in subprocesses ------------------------------------


def start(url: str, name: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "TUNESVC_HEARTBEAT_S": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([TUNESVC, "study", "run", name, "--storage", url, "--device", "cpu",
                             *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(proc: subprocess.Popen[str], condition: Callable[[], bool], timeout: float,
             what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"waiting for {what}: worker exited with {proc.returncode} or still "
                        f"running after {timeout}s; stdout: {out[-1000:]} stderr: {err[-2000:]}")
        time.sleep(0.05)


def checkpoints(url: str, name: str) -> dict[int, Path]:
    uid = optuna.load_study(study_name=name, storage=url).user_attrs["uid"]
    folder = Path(os.environ["TUNESVC_ARTIFACTS"]) / "checkpoints" / uid
    return {int(p.parent.name.removeprefix("slot-")): p for p in folder.glob("slot-*/*.pt")}


def epochs_saved(path: Path) -> int:
    state = load_checkpoint(path)
    return 0 if state is None else len(state["curves"]["epoch"])


def test_sigkill_mid_run_then_run_again_completes_every_slot_once(
    pg_url: str, tmp_path: Path
) -> None:
    """A population of 4 SIGKILLed mid-training; the next `study run --population 4` fails
    the four lost trials (no heartbeat), queues them again on their slots and resumes each
    from its slot's checkpoint (the epochs trained before the kill are the checkpoint's, wall
    times and all) beside the slots never started: 6 slots, 6 COMPLETE, 4 lost, 10 trials."""
    create(pg_url, "kill", n_trials=6, epochs=60)
    first = start(pg_url, "kill", "--population", "4")

    def four_trained_some() -> bool:
        saved = checkpoints(pg_url, "kill")
        return all(slot in saved and epochs_saved(saved[slot]) >= 3 for slot in range(4))

    wait_for(first, four_trained_some, 90, "four members with 2 epochs checkpointed")
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    saved = {slot: load_checkpoint(p) for slot, p in checkpoints(pg_url, "kill").items()}
    second = start(pg_url, "kill", "--population", "4")
    code, out, err = finish(second, 150)
    assert code == 0, err
    trials = optuna.load_study(study_name="kill", storage=pg_url).trials
    assert Counter(t.state.name for t in trials) == {"COMPLETE": 6, "FAIL": 4}
    complete = sorted(t.user_attrs["slot"] for t in trials if t.state.name == "COMPLETE")
    assert complete == list(range(6))
    lost = [t for t in trials if t.state.name == "FAIL"]
    assert {t.user_attrs["outcome"] for t in lost} == {"lost"}
    for t in lost:
        retry = trials[t.user_attrs["retried_as"]]
        assert retry.user_attrs["retry_of"] == t.number and retry.state.name == "COMPLETE"
        assert retry.params == t.params
        slot = t.user_attrs["slot"]
        state = saved[slot]
        assert state is not None
        done = len(state["curves"]["epoch"])
        curves = retry.user_attrs["curves"]
        assert curves["epoch"] == list(range(61))
        assert curves["seconds"][:done] == state["curves"]["seconds"][:done]  # resumed


def test_sigterm_fails_every_member_as_interrupted_and_queues_it_again(
    pg_url: str, tmp_path: Path
) -> None:
    create(pg_url, "term", n_trials=6, epochs=200)
    proc = start(pg_url, "term", "--population", "4")
    wait_for(proc, lambda: len(checkpoints(pg_url, "term")) == 4, 90, "four members training")
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc, 30)
    assert code == 130, err
    trials = service.list_trials("term", pg_url)
    assert Counter(t.state for t in trials) == {"FAIL": 4, "WAITING": 4}
    assert {t.outcome for t in trials if t.state == "FAIL"} == {"interrupted"}
    failed = sorted(t.params["lr"] for t in trials if t.state == "FAIL")
    assert sorted(t.params["lr"] for t in trials if t.state == "WAITING") == failed


def test_the_recipe_refuses_a_bad_population_before_it_writes(tmp_path: Path) -> None:
    db = tmp_path / "recipe.db"
    result = CliRunner().invoke(app, ["recipe", "digits_mlp", "--population", "0",
                                      "--storage", f"sqlite:///{db}"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --population: expected an integer >= 1, got 0"
    assert not db.exists()
