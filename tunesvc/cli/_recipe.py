"""The recipe's commands: ``check``, ``recipe``, ``dashboard``, ``study refine``,
``study report``. Thin, as in :mod:`tunesvc.cli._app`: read options, call one function, print."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tunesvc import service
from tunesvc.cli._app import (
    JsonOpt,
    StorageOpt,
    app,
    fmt,
    handles_errors,
    print_json,
    print_table,
    quiet_optuna,
    quoted,
    study_app,
)
from tunesvc.presentation import DEFAULT_HOST, DEFAULT_PORT
from tunesvc.service import describe_budget
from tunesvc.spec import parse_fixed_params
from tunesvc.storage import resolve_url

if TYPE_CHECKING:
    from tunesvc.training import CheckReport

ParamOpt = Annotated[list[str] | None, typer.Option(
    "--param", metavar="NAME=VALUE", help="One value fixing one of the objective's params "
    "(lr=0.01, optimizer=sgd); repeatable.")]
DeviceOpt = Annotated[str | None, typer.Option(metavar="D", help="cpu, cuda, cuda:N or auto.")]


def _print_checks(report: CheckReport) -> None:
    print_table([[c.name, c.verdict, c.summary] for c in report.checks],
                ["check", "verdict", "what it found"])
    for c in report.checks:
        if c.verdict != "skipped":
            typer.echo(f"  {c.name}: " + ", ".join(f"{k}={fmt(v)}" for k, v in c.numbers.items()))
        if c.verdict == "fail" and c.advice:
            typer.secho(f"  try: {c.advice}", fg=typer.colors.YELLOW)
    if report.skipped:
        typer.echo(f"skipped: {', '.join(report.skipped)}")


@app.command("check")
@handles_errors
def check(
    objective: Annotated[str, typer.Argument(
        metavar="OBJECTIVE", help="Built-in name, module or path/file.py.")],
    param: ParamOpt = None,
    device: Annotated[str, typer.Option(metavar="D", help="cpu, cuda, cuda:N or auto.")] = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """Before tuning: initial loss against log(num_classes), overfit 5 minibatches, and an LR
    range test that suggests the LR range for a coarse study. Exits 1 if a check fails."""
    report = service.run_checks(objective, parse_fixed_params(param or []), device=device)
    if as_json:
        print_json(report.to_json())
    else:
        _print_checks(report)
        if report.suggested_lr is not None:
            lr = report.suggested_lr
            typer.echo(f"suggested: --param lr={lr.low:.3g}..{lr.high:.3g},log "
                       f"(or `tunesvc study create NAME --objective {objective} --from-check`)")
    if not report.ok:
        raise typer.Exit(1)


@app.command("recipe")
@handles_errors
def recipe(
    objective: Annotated[str, typer.Argument(
        metavar="OBJECTIVE", help="A structured objective (with build).")],
    budget: Annotated[str, typer.Option(
        metavar="LEVEL[,KEY=N]",
        help="; ".join(f"{level}: {describe_budget(b)}"
                       for level, b in service.BUDGETS.items())
        + ". Then KEY=N overrides: coarse_trials, coarse_epochs, top, refine_trials, "
        "refine_epochs, final_epochs.")] = "small",
    name: Annotated[str | None, typer.Option(
        metavar="PREFIX", help="Prefix of the studies: PREFIX-coarse, PREFIX-refine, "
        "PREFIX-final (default: OBJECTIVE-recipe).")] = None,
    param: ParamOpt = None,
    device: DeviceOpt = None,
    population: Annotated[int, typer.Option(
        metavar="K", help="Train the coarse search's trials K at once as one vectorized "
        "population.")] = 1,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check, coarse random search, refine, train the best longer; ends with the best
    configuration and what each stage found. Stops at the first failed check."""
    quiet_optuna()
    say = None if as_json else typer.echo
    result = service.run_recipe(objective, resolve_url(storage),
                                budget=service.parse_budget(budget),
                                prefix=name, params=parse_fixed_params(param or []),
                                device=device, progress=say, population=population)
    if as_json:
        print_json(result.to_json())
    else:
        if result.stopped:
            _print_checks(result.checks)
        print_table([[s.stage, s.study or "-", s.trials, fmt(s.best_value),
                      ", ".join(f"{k} {v}" for k, v in s.diagnoses.items()) or "-", s.note]
                     for s in result.stages],
                    ["stage", "study", "trials", "best", "diagnoses", "note"])
        if result.best is not None:
            typer.echo(f"best configuration ({result.best['study']}, value "
                       f"{fmt(result.best['value'])}): "
                       + " ".join(f"{k}={fmt(v)}" for k, v in result.best["params"].items()))
    if result.stopped:
        typer.secho(f"error: recipe stopped: {result.stopped}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


@app.command("dashboard")
@handles_errors
def dashboard(
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(
        metavar="H", help="Address to bind; 0.0.0.0 exposes it.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(metavar="P", help="Port to listen on.")] = DEFAULT_PORT,
) -> None:
    """optuna-dashboard on the same storage and artifacts, with tunesvc's notes and figures."""
    board = service.open_dashboard(resolve_url(storage), host, port)
    typer.echo(f"dashboard for {board.storage} (artifacts {board.artifacts}) at {board.url}")
    typer.echo("Ctrl-C stops it.")
    try:
        board.serve_forever()
    except KeyboardInterrupt:
        board.shutdown()


@study_app.command("refine")
@handles_errors
def study_refine(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The parent study.")],
    into: Annotated[str, typer.Option(
        "--into", metavar="NEW", help="Name of the new, refined study.")],
    top: Annotated[int, typer.Option(
        metavar="K", help="Narrow around this many best trials.")] = 3,
    epochs: Annotated[int | None, typer.Option(
        metavar="E", help="Epochs per trial (default: 2x the parent's; structured "
        "objectives only).")] = None,
    sampler: Annotated[str | None, typer.Option(
        metavar="S", help="grid or random (default: parent's).")] = None,
    n_trials: Annotated[int | None, typer.Option(
        metavar="N", help="Budget (default: parent's; a grid runs all its cells).")] = None,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A new study linked to NAME, its ranges narrowed around NAME's top trials (widened where
    the best sit at an edge), with more epochs and the same sampler."""
    quiet_optuna()
    result = service.refine_study(name, into, resolve_url(storage), top=top, epochs=epochs,
                                  sampler=sampler, n_trials=n_trials)
    if as_json:
        print_json(result.to_json())
        return
    per_trial = "" if result.epochs is None else f", {result.epochs} epochs"
    typer.echo(f"created study {into!r} from the top {len(result.top)} trials of {name!r}: "
               f"{result.planned} trials queued ({result.sampler}{per_trial})")
    for note in result.notes:
        typer.echo(f"  {note}")
    typer.echo(f"run it with: tunesvc study run {quoted(into)}")


@study_app.command("report")
@handles_errors
def study_report(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The study.")],
    out: Annotated[Path | None, typer.Option(
        metavar="DIR", help="Folder for NAME.html (default: .).")] = None,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write one static HTML file with the study's figures and tables, to share without a
    server."""
    result = service.write_report(name, resolve_url(storage), out)
    if as_json:
        print_json(result.to_json())
        return
    typer.echo(f"wrote {result.path} ({result.trials} trials)")
