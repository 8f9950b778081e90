"""``tunesvc study ...``: create, run, list, show, best, trials, delete. Thin: each command
reads its options, calls one service function and prints the result."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from tunesvc import service
from tunesvc._errors import SpecError
from tunesvc.cli._app import (
    JsonOpt,
    StorageOpt,
    fmt,
    handles_errors,
    print_json,
    print_table,
    quiet_optuna,
    quoted,
    study_app,
)
from tunesvc.cli._progress import ProgressDisplay
from tunesvc.spec import NAME_RULE, read_spec_file, spec_from_options
from tunesvc.storage import redact, resolve_url


def _params(params: dict[str, object]) -> str:
    return " ".join(f"{k}={fmt(v)}" for k, v in params.items())


def _label(t: service.TrialInfo) -> str:
    return t.label or "-"


def _trial_line(t: service.TrialInfo) -> str:
    value = f"value={fmt(t.value)} " if t.value is not None else ""
    detail = f" ({t.error})" if t.error else ""
    return (f"trial {t.number} {t.state.lower()} [{t.outcome or '-'}, {_label(t)}] "
            f"{value}{_params(t.params)}{detail}")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {k.lower()}" for k, v in counts.items()) or "no trials"


@study_app.command("create")
@handles_errors
def study_create(
    name: Annotated[str, typer.Argument(metavar="NAME", help=f"Study name; workers join it by "
                                        f"this name ({NAME_RULE}).", show_default=False)],
    spec_file: Annotated[Path | None, typer.Option(
        "--spec", metavar="FILE", help="A TOML study spec.")] = None,
    objective: Annotated[str | None, typer.Option(
        metavar="REF",
        help="Built-in (digits_mlp), package.module:function or path/file.py:function.")] = None,
    sampler: Annotated[str | None, typer.Option(
        metavar="S", help="grid or random (default random).")] = None,
    n_trials: Annotated[int | None, typer.Option(
        metavar="N", help="Study-wide budget; a grid defaults to its size, random to 20.")] = None,
    epochs: Annotated[int | None, typer.Option(
        metavar="E", help="Epochs per trial (structured objectives; a plain objective runs "
        "its own loop and refuses it).")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", metavar="NAME=VALUE",
        help="NAME=LOW..HIGH[,log][,int][,points=N][,step=S], NAME=[v1, v2], a TOML table, or "
        "one value that fixes the param; repeatable.")] = None,
    direction: Annotated[str | None, typer.Option(
        metavar="D", help="maximize or minimize (default: the objective's).")] = None,
    pruner: Annotated[str | None, typer.Option(
        metavar="P", help="diagnostic (default), median, hyperband or none.")] = None,
    from_check: Annotated[bool, typer.Option(
        "--from-check", help="Take lr's range from `tunesvc check`'s LR range test (refused "
        "with an lr of your own).")] = False,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a study from a spec file or from options. Everything is validated first."""
    url = resolve_url(storage)
    quiet_optuna()
    spec = spec_from_options(None if spec_file is None else read_spec_file(spec_file),
                             objective=objective, sampler=sampler, n_trials=n_trials,
                             epochs=epochs, direction=direction, pruner=pruner,
                             params=param or [])
    summary = service.create_study(name, spec, url, from_check=from_check)
    if as_json:
        print_json(summary.to_json())
        return
    typer.echo(f"created study {name!r} in {redact(url)}: {summary.planned} trials queued "
               f"({summary.sampler}, objective {summary.objective}, {summary.direction})")
    typer.echo(f"run it with: tunesvc study run {quoted(name)}")


@study_app.command("run")
@handles_errors
def study_run(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The study to run.")],
    workers: Annotated[int, typer.Option(
        "--workers", "-w", metavar="K", help="Worker processes on this machine. One worker "
        "with the diagnostic pruner repeats a run exactly; with several, rung rankings see "
        "trials finish in another order.")] = 1,
    n_trials: Annotated[int | None, typer.Option(
        metavar="N", help="Run at most this many trials in this command.")] = None,
    timeout: Annotated[float | None, typer.Option(
        metavar="S", help="Start no new trial after this many seconds.")] = None,
    device: Annotated[str | None, typer.Option(
        metavar="D", help="cpu, cuda (workers spread over the GPUs), cuda:N (pinned) or auto; "
        "default: the spec's.")] = None,
    population: Annotated[int | None, typer.Option(
        metavar="K", help="Trials each worker trains at once as one vectorized population "
        "(structured objectives); default: the spec's population (1).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary.")] = False,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run queued trials until the study's budget or grid is used up. Start it on as many
    machines as you like: each trial runs exactly once."""
    url = resolve_url(storage)
    quiet_optuna()
    live = sys.stdout.isatty() and not (quiet or as_json)
    with ProgressDisplay(live=live, quiet=quiet or as_json) as display:
        summary = service.run_study(name, url, n_trials=n_trials, timeout=timeout, device=device,
                                    workers=workers, on_event=display,
                                    population=population)
    if as_json:
        print_json(summary.to_json())
    elif summary.already_finished:
        typer.echo(f"study {name!r} is finished: no queued trials left "
                   f"({_counts(summary.counts)}); see `tunesvc study best {quoted(name)}`")
    else:
        typer.echo(f"ran {len(summary.ran)} trials; {summary.remaining} still queued; "
                   f"{_counts(summary.counts)}")
        if summary.best is not None:
            typer.echo(f"best: {_trial_line(summary.best)}")


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
             fmt(s.best.value if s.best else None)] for s in studies]
    print_table(rows, ["study", "objective", "sampler", "direction", "done", "best"])


@study_app.command("show")
@handles_errors
def study_show(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The study to show.")],
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
    name: Annotated[str, typer.Argument(metavar="NAME", help="The study.")],
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the best completed trial and, for a structured objective, its checkpoint (the
    model's and optimizer's state_dict at the trial's last epoch; torch.load reads it)."""
    best = service.best_trial(name, resolve_url(storage))
    if as_json:
        print_json({"number": best.number, "value": best.value, "params": best.params,
                    "state": best.state, "diagnosis": best.diagnosis,
                    "checkpoint": best.checkpoint})
        return
    typer.echo(_trial_line(best))
    if best.checkpoint is not None:
        typer.echo(f"checkpoint: {best.checkpoint}")


@study_app.command("trials")
@handles_errors
def study_trials(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The study.")],
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
    as_csv: Annotated[bool, typer.Option(
        "--csv", help="Print CSV: number, state, outcome, value, epochs, diagnosis, then one "
        "param_NAME column per param.")] = False,
) -> None:
    """List every trial with state, value, params and diagnosis (--json and --csv stream, at
    any size)."""
    url = resolve_url(storage)
    if as_json or as_csv:
        chunks = service.study_trials_csv(name, url) if as_csv else service.trials_json(
            service.iter_trials(name, url))
        for chunk in chunks:
            sys.stdout.write(chunk)
        return
    trials = service.list_trials(name, url)
    rows = [[str(t.number), t.state, t.outcome or "-", fmt(t.value), str(t.epochs), _label(t),
             _params(t.params)] for t in trials]
    print_table(rows, ["#", "state", "outcome", "value", "epochs", "diagnosis", "params"])


@study_app.command("delete")
@handles_errors
def study_delete(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The study to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Delete it even while workers run its trials (they stop with an "
        "error at their next write).")] = False,
    storage: StorageOpt = None,
) -> None:
    """Delete a study, all its trials and its checkpoints. Refused while workers that still
    beat run its trials, unless --force."""
    url = resolve_url(storage)
    if not yes:
        if not sys.stdin.isatty():
            raise SpecError(f"refusing to delete {name!r} without --yes (no terminal to ask)")
        typer.confirm(f"delete study {name!r} and all its trials from {redact(url)}?",
                      abort=True)
    service.delete_study(name, url, force=force)
    typer.echo(f"deleted study {name!r}")
