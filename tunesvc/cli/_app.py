"""The ``tunesvc`` Typer app: its sub-apps, error handling and output helpers. The commands
live in :mod:`tunesvc.cli._study`, :mod:`tunesvc.cli._recipe` and :mod:`tunesvc.cli._storage`.

Only the CLI prints or exits. A :class:`TunesvcError` becomes one red line on stderr and its
exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import shlex
from collections.abc import Callable
from typing import Annotated, Any, ParamSpec, TypeVar

import typer

from tunesvc import __version__
from tunesvc._errors import TunesvcError

CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    help="Hyperparameter tuning for PyTorch models, on Optuna. Define a study once, run it "
    "on any number of workers, read every trial's learning curves and diagnosis.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=CONTEXT,
)
study_app = typer.Typer(help="Create, run and inspect studies.", no_args_is_help=True,
                        context_settings=CONTEXT)
app.add_typer(study_app, name="study")
storage_app = typer.Typer(help="Manage the database studies live in.", no_args_is_help=True,
                          context_settings=CONTEXT)
app.add_typer(storage_app, name="storage")

P = ParamSpec("P")
R = TypeVar("R")

StorageOpt = Annotated[
    str | None,
    typer.Option("--storage", metavar="URL", help="Database URL; else $TUNESVC_STORAGE, else "
                 "sqlite:///storage/tunesvc.db.", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print only JSON, for scripts.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tunesvc {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Hyperparameter tuning for PyTorch models, on Optuna."""
    quiet_optuna()


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


def fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return "-" if x is None else str(x)


def quoted(name: str) -> str:
    """A study name as a shell word, for the commands the CLI suggests."""
    return shlex.quote(name)


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO; tunesvc shows its own progress instead."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
