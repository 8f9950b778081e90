"""Bad input is refused where it can first be known, in one line (issue 14, items 5 to 8 and the
"smaller" ones): study names, devices, param values, a structured objective's setup, --from-check
with an lr of its own, --epochs on a plain objective; and at run time, a plain objective whose
suggestions disagree with the spec stops the run and puts its trial back in the queue."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from tunesvc import ObjectiveError, SpecError, service
from tunesvc.cli import app
from tunesvc.spec import parse_fixed_params, parse_param_option, parse_spec_dict
from tunesvc.spec._spec import MAX_NAME_LENGTH, NAME_RULE, check_device, check_study_name

PLAIN = "tests/objectives_fixtures/plain.py"
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def one_line(err: str, *fragments: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


# --- names (item 5) ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["demo", "../escape", "/abs/path", "my study", "é-ß 2", "x" * 128,
                                  "a'b\"c", "$(rm -rf)"])
def test_names_are_data_bounded_and_printable(name: str) -> None:
    assert check_study_name(name) == name


@pytest.mark.parametrize(("name", "says"), [
    ("", "got an empty name"),
    ("x" * (MAX_NAME_LENGTH + 1), f"got {MAX_NAME_LENGTH + 1} characters"),
    ("a\tb", "which holds '\\t'"),
    ("new\nline", "which holds '\\n'"),
    ("bell\x07", "which holds '\\x07'"),
    (" padded", "got ' padded'"),
    ("padded ", "got 'padded '"),
])
def test_bad_names_are_refused_with_the_rule(name: str, says: str) -> None:
    with pytest.raises(SpecError) as e:
        check_study_name(name)
    assert str(e.value).startswith(f"study name: expected {NAME_RULE}; ") and says in str(e.value)


@given(st.text(max_size=200))
def test_a_name_is_accepted_exactly_when_it_follows_the_rule(name: str) -> None:
    ok = (0 < len(name) <= MAX_NAME_LENGTH and name.isprintable() and name.strip() == name)
    try:
        check_study_name(name)
    except SpecError:
        assert not ok
    else:
        assert ok


def test_a_600_character_name_is_refused_and_nothing_written(storage_url: str) -> None:
    name = "n" * 600
    code, _, err = cli("study", "create", name, "--objective", f"{PLAIN}:quadratic",
                       "--storage", storage_url)
    assert code == 2
    one_line(err, f"study name: expected {NAME_RULE}; got 600 characters")
    for args in (["study", "refine", "parent", "--into", name], ["recipe", "digits_mlp",
                                                                  "--name", name]):
        code, _, err = cli(*args, "--storage", storage_url)
        assert code == 2 and "study name: expected" in err and "Traceback" not in err


def test_a_name_that_looks_like_a_path_writes_inside_the_artifacts_folder(
    sqlite_url: str, tmp_path: Path
) -> None:
    spec = parse_spec_dict({"objective": "digits_mlp", "n_trials": 1, "epochs": 1,
                            "pruner": "none"})
    service.create_study("../escape", spec, sqlite_url)
    service.run_study("../escape", sqlite_url)
    artifacts = tmp_path / "artifacts"
    (checkpoint,) = tmp_path.rglob("checkpoint.pt")
    assert checkpoint.is_relative_to(artifacts / "checkpoints")
    assert not (tmp_path.parent / "escape").exists()


# --- devices and param values at create (items 6 and 7) --------------------------------------


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_forms(device: str) -> None:
    assert check_device(device) == device


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "mps", "", 3,
                                    "cuda:١"])
def test_bad_devices(device: object) -> None:
    with pytest.raises(SpecError, match="device: expected 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        check_device(device)


@pytest.mark.parametrize("option", ["hidden=[64, 128", "hidden={low = 1", "x=[1, 2,, 3]",
                                    "optimizer=[adamw, sgd]"])
def test_a_broken_list_or_table_is_an_error_not_a_string(option: str) -> None:
    with pytest.raises(SpecError, match="not a valid TOML (list|table)"):
        parse_param_option(option)


@pytest.mark.parametrize(("options", "says"), [
    (["hidden=[64, 128]"], "expected one value here, e.g. hidden=64"),
    (["lr=1e-4..1e-1"], "expected one value here"),
    (["hidden=[64, 128"], "not a valid TOML list"),
])
def test_fixed_params_take_one_value(options: list[str], says: str) -> None:
    with pytest.raises(SpecError, match=says.replace("[", r"\[")):
        parse_fixed_params(options)


BAD_CREATES = [
    (["--param", "lr=abc"], "params.lr: objective 'digits_mlp' takes a number for lr"),
    (["--param", "lr=1e-4-1e-1"], "got '1e-4-1e-1'; a range is LOW..HIGH"),
    (["--param", "hidden=[64, 128"], "--param hidden=[64, 128: not a valid TOML list"),
    (["--param", "hidden=[64, 'big']"], "takes a number for hidden (e.g. 64), got 'big'"),
    (["--param", "batch_size=-5"], "cannot train with batch_size = -5: batch_size must be an "
                                   "integer >= 1"),
    (["--param", "optimizer=adam"], "cannot train with optimizer = 'adam': unknown optimizer"),
    (["--param", "lr=-1..1"], "cannot train with lr = -1"),
    (["--param", "lr=1e-3..1e-2", "--from-check"], "--from-check takes lr's range from the "
                                                   "LR range test, but the spec also gives lr"),
]


@pytest.mark.parametrize(("extra", "says"), BAD_CREATES, ids=[" ".join(b[0]) for b in BAD_CREATES])
def test_structured_create_refuses_what_no_trial_could_train(
    sqlite_url: str, extra: list[str], says: str
) -> None:
    code, _, err = cli("study", "create", "x", "--objective", "digits_mlp", *extra,
                       "--storage", sqlite_url)
    assert code == 2
    one_line(err, says)
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()


def test_a_string_param_takes_words(sqlite_url: str) -> None:
    code, _, err = cli("study", "create", "x", "--objective", "digits_mlp", "--n-trials", "1",
                       "--param", 'optimizer=["adamw", "sgd"]', "--storage", sqlite_url)
    assert code == 0, err


def test_a_bad_device_in_a_spec_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    spec = tmp_path / "gpu.toml"
    spec.write_text('objective = "digits_mlp"\ndevice = "gpu"\n')
    code, _, err = cli("study", "create", "x", "--spec", str(spec), "--storage", sqlite_url)
    assert code == 2
    one_line(err, "device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'")


@pytest.mark.parametrize(("args", "says"), [
    (["--param", "lr=abc"], "--param lr: objective 'digits_mlp' takes a number for lr"),
    (["--param", "hidden=[64, 128]"], "--param hidden=[64, 128]: expected one value here"),
    (["--param", "hidden=[64, 128"], "--param hidden=[64, 128: not a valid TOML list"),
    (["--param", "batch_size=abc"], "takes a number for batch_size"),
    (["--device", "gpu"], "--device: expected 'auto', 'cpu', 'cuda' or 'cuda:N'"),
])
def test_check_refuses_bad_params_in_one_line(args: list[str], says: str) -> None:
    code, _, err = cli("check", "digits_mlp", *args)
    assert code == 2
    one_line(err, says)


def test_a_build_that_raises_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken_build.py"
    broken.write_text("DIRECTION = 'maximize'\nDEFAULTS = {'width': 4}\n"
                      "def build(params):\n    return int('not a number')\n")
    code, _, err = cli("check", str(broken), "--param", "width=8")
    assert code == 2
    one_line(err, "build(params) failed with width=8: ValueError: invalid literal")


# --- --from-check (item 8) ---------------------------------------------------------------------


def test_from_check_refuses_a_taken_name_before_it_runs_the_check(sqlite_url: str) -> None:
    assert cli("study", "create", "taken", "--objective", "digits_mlp", "--n-trials", "1",
               "--storage", sqlite_url)[0] == 0
    started = time.monotonic()
    code, _, err = cli("study", "create", "taken", "--objective", "digits_mlp", "--from-check",
                       "--storage", sqlite_url)
    assert code == 4
    one_line(err, "study 'taken' already exists")
    # No LR range test ran: its ~100 training iterations are what takes seconds here.
    assert "lr_range" not in err
    elapsed = time.monotonic() - started
    print(f"refused in {elapsed:.2f}s")  # shown with -s; the check itself takes ~5-9 s


def test_from_check_with_a_spec_file_lr_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text('objective = "digits_mlp"\n[params]\nlr = { low = 1e-3, high = 1e-1, '
                    'log = true }\n')
    code, _, err = cli("study", "create", "x", "--spec", str(spec), "--from-check",
                       "--storage", sqlite_url)
    assert code == 2
    one_line(err, "but the spec also gives lr (low = 0.001, high = 0.1, log = True")


# --- plain objectives: epochs, refine, run-time agreement (items 6 and "smaller") ------------


def test_epochs_on_a_plain_objective_is_refused_and_not_shown(sqlite_url: str) -> None:
    code, _, err = cli("study", "create", "p", "--objective", f"{PLAIN}:quadratic",
                       "--epochs", "5", "--storage", sqlite_url)
    assert code == 2
    one_line(err, "epochs: objective", "is a plain objective(trial)", "drop epochs (--epochs)")
    assert cli("study", "create", "p", "--objective", f"{PLAIN}:quadratic", "--n-trials", "1",
               "--storage", sqlite_url)[0] == 0
    code, out, _ = cli("study", "show", "p", "--storage", sqlite_url)
    assert code == 0 and '"epochs"' not in out and "spec: {" in out
    code, out, _ = cli("study", "create", "s", "--objective", "digits_mlp", "--n-trials", "1",
                       "--epochs", "2", "--storage", sqlite_url)
    assert code == 0
    assert '"epochs": 2' in cli("study", "show", "s", "--storage", sqlite_url)[1]


def test_refining_a_plain_study_without_params_says_so(sqlite_url: str) -> None:
    spec = parse_spec_dict({"objective": f"{PLAIN}:quadratic", "n_trials": 2})
    service.create_study("plain", spec, sqlite_url)
    service.run_study("plain", sqlite_url)
    code, _, err = cli("study", "refine", "plain", "--into", "fine", "--storage", sqlite_url)
    assert code == 2
    one_line(err, "study 'plain' declares no params, so refine has no range to narrow")
    code, _, err = cli("study", "refine", "plain", "--into", "fine", "--epochs", "4",
                       "--storage", sqlite_url)
    assert code == 2
    assert [s.name for s in service.list_studies(sqlite_url)] == ["plain"]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_plain_objective_that_disagrees_stops_the_run_and_keeps_its_budget(
    storage_url: str, workers: str
) -> None:
    """The spec's range lies outside what the objective suggests: only running it shows that.
    The run stops at the first trial with exit 2; the trial is queued again, not FAIL."""
    spec = parse_spec_dict({"objective": f"{PLAIN}:quadratic", "n_trials": 3,
                            "params": {"x": {"low": 20.0, "high": 30.0}}})
    service.create_study("m", spec, storage_url)
    code, out, err = cli("study", "run", "m", "--workers", workers, "--storage", storage_url)
    assert code == 2, out + err
    one_line(err, "param 'x': the spec declares float 20.0..30.0 but the objective suggests "
                  "float -10.0..10.0", "went back to the queue")
    trials = service.list_trials("m", storage_url)
    # No slot is spent: each trial went back to the queue, or, when another worker stopped it
    # first, ended `interrupted` with its slot queued again.
    assert {t.outcome for t in trials if t.state == "FAIL"} <= {"interrupted"}
    # Queued: the trials that went back (shown with their slots' params) and the slots never
    # claimed (no trial yet): all three.
    waiting = [t for t in trials if t.state == "WAITING"]
    assert len({t.params["x"] for t in waiting}) == len(waiting) >= 1
    summary = service.show_study("m", storage_url).summary
    assert summary.counts["WAITING"] == 3 and summary.done == 0


def test_a_grid_that_omits_a_suggested_param_stops_the_run(sqlite_url: str) -> None:
    spec = parse_spec_dict({"objective": f"{PLAIN}:quadratic", "sampler": "grid",
                            "params": {"x": {"values": [1.0, 2.0]}}})
    service.create_study("g", spec, sqlite_url)
    with pytest.raises(ObjectiveError, match="param 'y': the objective suggests it but the grid "
                       "spec does not declare it.*trial 0 went back to the queue"):
        service.run_study("g", sqlite_url)
    assert [t.state for t in service.list_trials("g", sqlite_url)] == ["WAITING"]
    assert service.show_study("g", sqlite_url).summary.counts == {"WAITING": 2}


def test_an_objective_that_swallows_the_disagreement_still_stops(
    sqlite_url: str, tmp_path: Path
) -> None:
    own = tmp_path / "swallow.py"
    own.write_text("def objective(trial):\n    try:\n"
                   "        return trial.suggest_float('x', 0.0, 1.0)\n"
                   "    except Exception:\n        return 0.5\n")
    spec = parse_spec_dict({"objective": f"{own}:objective", "direction": "maximize",
                            "n_trials": 2, "params": {"x": {"low": 2.0, "high": 3.0}}})
    service.create_study("s", spec, sqlite_url)
    with pytest.raises(ObjectiveError, match="went back to the queue"):
        service.run_study("s", sqlite_url)
    assert [t.state for t in service.list_trials("s", sqlite_url)] == ["WAITING"]
    assert service.show_study("s", sqlite_url).summary.counts == {"WAITING": 2}


def test_run_on_a_device_this_machine_lacks_exits_before_claiming(sqlite_url: str) -> None:
    spec = parse_spec_dict({"objective": f"{PLAIN}:quadratic", "n_trials": 2})
    service.create_study("c", spec, sqlite_url)
    for args in (["--device", "cuda"], ["--device", "cuda:3", "--workers", "2"]):
        code, _, err = cli("study", "run", "c", *args, "--storage", sqlite_url)
        assert code == 2
        one_line(err, "is not on this machine, which has 0 CUDA GPU(s)", "--device cpu")
    code, _, err = cli("study", "run", "c", "--device", "gpu", "--storage", sqlite_url)
    assert code == 2
    one_line(err, "--device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'")
    assert service.list_trials("c", sqlite_url) == []  # nothing claimed
    assert service.show_study("c", sqlite_url).summary.counts == {"WAITING": 2}


def test_a_cuda_spec_on_a_cpu_machine_exits_before_claiming(sqlite_url: str) -> None:
    spec = parse_spec_dict({"objective": "digits_mlp", "n_trials": 1, "device": "cuda",
                            "epochs": 1})
    service.create_study("gpu", spec, sqlite_url)
    code, _, err = cli("study", "run", "gpu", "--storage", sqlite_url)
    assert code == 2
    one_line(err, "device (in the spec): 'cuda' is not on this machine")
    assert service.show_study("gpu", sqlite_url).summary.counts == {"WAITING": 1}
    assert cli("study", "run", "gpu", "--device", "cpu", "--storage", sqlite_url)[0] == 0


# --- the dashboard names the metric ("smaller") -------------------------------------------------


def test_the_study_names_its_metric_for_optuna_dashboard(storage_url: str) -> None:
    service.create_study("m", parse_spec_dict({"objective": "digits_mlp", "n_trials": 1}),
                         storage_url)
    plain = parse_spec_dict({"objective": f"{PLAIN}:quadratic", "n_trials": 1})
    service.create_study("p", plain, storage_url)
    assert optuna.load_study(study_name="m", storage=storage_url).metric_names == ["val_acc"]
    # A plain objective that names no metric: its value is just that.
    assert optuna.load_study(study_name="p", storage=storage_url).metric_names == ["value"]


# --- the CLI's own edges ("smaller") ---------------------------------------------------------


def test_help_version_and_metavars() -> None:
    code, out, _ = cli("-h")
    assert code == 0 and "Usage: " in out and "study" in out
    code, out, _ = cli("--version")
    assert code == 0 and out.startswith("tunesvc ")
    for args in (["study", "create", "-h"], ["study", "run", "-h"], ["study", "refine", "-h"],
                 ["check", "-h"], ["recipe", "-h"], ["study", "trials", "-h"]):
        code, out, _ = cli(*args)
        assert code == 0 and "<list[str]>" not in out and "{name}" not in out, out
    out = cli("study", "create", "-h")[1]
    for shown in ("--spec FILE", "--objective REF", "--n-trials N", "--epochs E",
                  "--param NAME=VALUE", "[,step=S]", "--direction D", "--pruner P",
                  "--from-check"):
        assert shown in out, shown
    out = cli("recipe", "-h")[1]
    assert "--budget LEVEL[,KEY=N]" in out and "tiny: 4 coarse trials x 3 epochs" in out


def test_suggested_commands_quote_the_name(sqlite_url: str) -> None:
    code, out, _ = cli("study", "create", "my study", "--objective", f"{PLAIN}:quadratic",
                       "--n-trials", "1", "--storage", sqlite_url)
    assert code == 0 and "run it with: tunesvc study run 'my study'" in out


@pytest.mark.parametrize(("name", "file"), [
    ("demo", "demo.html"),
    ("../etc/x y", "_.._etc_x_y.html"),
    ("/abs", "_abs.html"),
    (".hidden", "_.hidden.html"),
    ("é", "_.html"),
])
def test_report_file_names_stay_in_their_folder(name: str, file: str) -> None:
    assert service.report_filename(name) == file
