"""The ``tunesvc`` command: thin Typer commands over the service layer.

Only this module prints or exits. A :class:`TunesvcError` becomes one red line on stderr and
its exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer

from tunesvc._errors import SpecError, TunesvcError
from tunesvc.service import _studies as service
from tunesvc.spec._spec import StudySpec, parse_param_option, parse_spec, parse_spec_dict
from tunesvc.storage._database import redact, resolve_url, upgrade_storage
from tunesvc.worker._pool import ProgressDisplay

app = typer.Typer(
    help="Hyperparameter tuning for PyTorch models, on Optuna. Define a study once, run it "
    "on any number of workers, read every trial's learning curves and diagnosis.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
study_app = typer.Typer(help="Create, run and inspect studies.", no_args_is_help=True)
app.add_typer(study_app, name="study")
storage_app = typer.Typer(help="Manage the database studies live in.", no_args_is_help=True)
app.add_typer(storage_app, name="storage")

P = ParamSpec("P")
R = TypeVar("R")

StorageOpt = Annotated[
    str | None,
    typer.Option("--storage", help="Database URL; else $TUNESVC_STORAGE, else "
                 "sqlite:///storage/tunesvc.db.", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print only JSON, for scripts.")]


def handles_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a TunesvcError into one red line and a non-zero exit; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except TunesvcError as e:
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            typer.secho("interrupted: the running trial was marked FAIL and queued again",
                        fg=typer.colors.YELLOW, err=True)
            raise typer.Exit(130) from None

    return wrapper


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return "-" if x is None else str(x)


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in params.items())


def _label(t: service.TrialInfo) -> str:
    return str((t.diagnosis or {}).get("label", "-"))


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _trial_line(t: service.TrialInfo) -> str:
    value = f"value={_fmt(t.value)} " if t.value is not None else ""
    detail = f" ({t.error})" if t.error else ""
    return (f"trial {t.number} {t.state.lower()} [{t.outcome or '-'}, {_label(t)}] "
            f"{value}{_params(t.params)}{detail}")


def _spec_from_options(
    spec_file: Path | None, objective: str | None, sampler: str | None, n_trials: int | None,
    epochs: int | None, params: list[str], direction: str | None, pruner: str | None,
) -> StudySpec:
    if spec_file is not None:
        if objective is not None:
            raise SpecError("give either --spec FILE or --objective, not both")
        try:
            text = spec_file.read_text()
        except OSError as e:
            raise SpecError(f"--spec {spec_file}: cannot read it ({e.strerror})") from None
        base = parse_spec(text).to_dict()
    elif objective is not None:
        base = {"objective": objective}
    else:
        raise SpecError("give --spec FILE or --objective NAME (e.g. --objective digits_mlp)")
    overrides = {"sampler": sampler, "n_trials": n_trials, "epochs": epochs,
                 "direction": direction, "pruner": pruner}
    base.update({k: v for k, v in overrides.items() if v is not None})
    if params:
        table = dict(base.get("params") or {})
        for option in params:
            name, param = parse_param_option(option)
            table[name] = param.to_dict()
        base["params"] = table
    return parse_spec_dict(base)


@study_app.command("create")
@handles_errors
def study_create(
    name: Annotated[str, typer.Argument(help="Study name; workers join it by this name.")],
    spec_file: Annotated[Path | None, typer.Option("--spec", help="A TOML study spec.")] = None,
    objective: Annotated[str | None, typer.Option(
        help="Built-in (digits_mlp), package.module:function or path/file.py:function.")] = None,
    sampler: Annotated[str | None, typer.Option(help="grid or random (default random).")] = None,
    n_trials: Annotated[int | None, typer.Option(
        help="Study-wide budget; a grid defaults to its size, random to 20.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per trial.")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="NAME=LOW..HIGH[,log][,int][,points=N] or NAME=[v1, v2] or a TOML "
        "table; repeatable.")] = None,
    direction: Annotated[str | None, typer.Option(help="maximize or minimize.")] = None,
    pruner: Annotated[str | None, typer.Option(
        help="diagnostic (default), median, hyperband or none.")] = None,
    from_check: Annotated[bool, typer.Option(
        "--from-check", help="Take lr's range from `tunesvc check`'s LR range test.")] = False,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a study from a spec file or from options. Everything is validated first."""
    url = resolve_url(storage)
    spec = _spec_from_options(spec_file, objective, sampler, n_trials, epochs, param or [],
                              direction, pruner)
    if from_check:
        from tunesvc.training._checks import with_checked_lr

        spec = with_checked_lr(spec)
    summary = service.create_study(name, spec, url)
    if as_json:
        print_json(summary.to_json())
        return
    typer.echo(f"created study {name!r} in {redact(url)}: {summary.planned} trials queued "
               f"({summary.sampler}, objective {summary.objective}, {summary.direction})")
    typer.echo(f"run it with: tunesvc study run {name}")


@study_app.command("run")
@handles_errors
def study_run(
    name: Annotated[str, typer.Argument(help="The study to run.")],
    workers: Annotated[int, typer.Option(
        "--workers", "-w", help="Worker processes on this machine.")] = 1,
    n_trials: Annotated[int | None, typer.Option(
        help="Run at most this many trials in this command.")] = None,
    timeout: Annotated[float | None, typer.Option(
        help="Start no new trial after this many seconds.")] = None,
    device: Annotated[str | None, typer.Option(
        help="cpu, cuda (workers spread over the GPUs), cuda:N (pinned) or auto; "
        "default: the spec's.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary.")] = False,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run queued trials until the study's budget or grid is used up. Start it on as many
    machines as you like: each trial runs exactly once."""
    url = resolve_url(storage)
    live = sys.stdout.isatty() and not (quiet or as_json)
    with ProgressDisplay(live=live, quiet=quiet or as_json) as display:
        summary = service.run_study(name, url, n_trials=n_trials, timeout=timeout, device=device,
                                    workers=workers, on_event=display)
    if as_json:
        print_json(summary.to_json())
    elif summary.already_finished:
        typer.echo(f"study {name!r} is finished: no queued trials left "
                   f"({_counts(summary.counts)}); see `tunesvc study best {name}`")
    else:
        typer.echo(f"ran {len(summary.ran)} trials; {summary.remaining} still queued; "
                   f"{_counts(summary.counts)}")
        if summary.best is not None:
            typer.echo(f"best: {_trial_line(summary.best)}")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {k.lower()}" for k, v in counts.items()) or "no trials"


@study_app.command("list")
@handles_errors
def study_list(storage: StorageOpt = None, as_json: JsonOpt = False) -> None:
    """List the studies in the storage."""
    studies = service.list_studies(resolve_url(storage))
    if as_json:
        print_json([s.to_json() for s in studies])
        return
    if not studies:
        typer.echo("no studies yet; create one with `tunesvc study create NAME --objective "
                   "digits_mlp`")
        return
    rows = [[s.name, s.objective, s.sampler, s.direction, f"{s.finished}/{s.planned}",
             _fmt(s.best.value if s.best else None)] for s in studies]
    print_table(rows, ["study", "objective", "sampler", "direction", "done", "best"])


@study_app.command("show")
@handles_errors
def study_show(
    name: Annotated[str, typer.Argument(help="The study to show.")],
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a study: its spec, trials by state and diagnosis, the best trial, running ones."""
    detail = service.show_study(name, resolve_url(storage))
    if as_json:
        print_json(detail.to_json())
        return
    s = detail.summary
    typer.echo(f"study {s.name} ({detail.storage})")
    typer.echo(f"  objective {s.objective}, {s.sampler}, {s.direction}, "
               f"{s.finished}/{s.planned} done: {_counts(s.counts)}")
    typer.echo(f"  diagnoses: {_counts(detail.diagnoses)}")
    typer.echo("  spec: " + json.dumps(detail.spec))
    typer.echo(f"  best: {_trial_line(s.best) if s.best else '-'}")
    for w in detail.workers:
        age = "-" if w.heartbeat_age_s is None else f"{w.heartbeat_age_s:.0f}s ago"
        typer.echo(f"  running: trial {w.number} on {w.host or '-'} pid {w.pid or '-'} "
                   f"{w.device or '-'}, epoch {w.epoch}, heartbeat {age} {_params(w.params)}")


@study_app.command("best")
@handles_errors
def study_best(
    name: Annotated[str, typer.Argument(help="The study.")],
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the best completed trial."""
    best = service.best_trial(name, resolve_url(storage))
    if as_json:
        print_json({"number": best.number, "value": best.value, "params": best.params,
                    "state": best.state, "diagnosis": best.diagnosis})
        return
    typer.echo(_trial_line(best))


@study_app.command("trials")
@handles_errors
def study_trials(
    name: Annotated[str, typer.Argument(help="The study.")],
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List every trial with state, value, params and diagnosis."""
    trials = service.list_trials(name, resolve_url(storage))
    if as_json:
        print_json([t.to_json() for t in trials])
        return
    rows = [[str(t.number), t.state, t.outcome or "-", _fmt(t.value), str(t.epochs), _label(t),
             _params(t.params)] for t in trials]
    print_table(rows, ["#", "state", "outcome", "value", "epochs", "diagnosis", "params"])


@study_app.command("delete")
@handles_errors
def study_delete(
    name: Annotated[str, typer.Argument(help="The study to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    storage: StorageOpt = None,
) -> None:
    """Delete a study and all its trials."""
    url = resolve_url(storage)
    if not yes:
        if not sys.stdin.isatty():
            raise SpecError(f"refusing to delete {name!r} without --yes (no terminal to ask)")
        typer.confirm(f"delete study {name!r} and all its trials from {redact(url)}?",
                      abort=True)
    service.delete_study(name, url)
    typer.echo(f"deleted study {name!r}")


@storage_app.command("upgrade")
@handles_errors
def storage_upgrade(storage: StorageOpt = None) -> None:
    """Upgrade the database's Optuna schema to this Optuna's (Optuna's own migration). Back
    the database up first; stop every worker using it."""
    result = upgrade_storage(resolve_url(storage))
    if result.changed:
        typer.echo(f"upgraded {result.storage}: schema {result.before} -> {result.after}")
    else:
        typer.echo(f"{result.storage} is up to date (schema {result.after})")


def main() -> None:
    app()


from tunesvc.cli import _recipe as _cli_recipe  # noqa: E402,F401  (registers recipe commands)
