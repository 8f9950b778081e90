"""The ``tunesvc`` command: thin Typer commands over :mod:`tunesvc.service`.

Only this package prints or exits. A :class:`~tunesvc.TunesvcError` becomes one red line on
stderr and its exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from tunesvc.cli import _recipe, _storage, _study  # noqa: F401 - each registers its commands
from tunesvc.cli._app import app
from tunesvc.cli._progress import ProgressDisplay


def main() -> None:
    """The ``tunesvc`` console script."""
    app()


__all__ = ["ProgressDisplay", "app", "main"]
