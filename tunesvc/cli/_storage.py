"""``tunesvc storage ...``: the database studies live in."""

from __future__ import annotations

import typer

from tunesvc import service
from tunesvc.cli._app import StorageOpt, handles_errors, storage_app
from tunesvc.storage import resolve_url


@storage_app.command("upgrade")
@handles_errors
def storage_upgrade(storage: StorageOpt = None) -> None:
    """Upgrade the database's Optuna schema to this Optuna's (Optuna's own migration). Back
    the database up first; stop every worker using it."""
    result = service.upgrade_storage(resolve_url(storage))
    if result.changed:
        typer.echo(f"upgraded {result.storage}: schema {result.before} -> {result.after}")
    else:
        typer.echo(f"{result.storage} is up to date (schema {result.after})")
